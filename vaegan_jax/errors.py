"""The project's own error types, each carrying a one-line message meant for the user, and `summary`, which turns
a library's error into such a line."""


class VaeganError(Exception):
    """A problem the user can fix (bad file, bad option); reported as one line, exit code 2."""


class DataError(VaeganError):
    """A data file that cannot be read or does not hold a valid data set."""


class ConfigError(VaeganError):
    """A configuration or command-line value that is not valid."""


class CheckpointError(VaeganError):
    """A checkpoint or run folder that is missing, corrupt or incompatible."""


class Interrupted(VaeganError):
    """Training stopped on a signal after saving a checkpoint (exit code 130)."""


class Diverged(VaeganError):
    """A loss or parameter became NaN or infinite (exit code 3)."""


def summary(err: BaseException) -> str:
    """`Type: first line` of the exception's root cause (at most 200 characters), for one-line errors.

    Libraries wrap the precise error: orbax raises one whose first line ends in the repr of a bound method
    from tensorstore's 'Error reading "x" in OCDBT database ...: Truncated stream'.
    """
    while err.__cause__ is not None:
        err = err.__cause__
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:200]}" if text else type(err).__name__
