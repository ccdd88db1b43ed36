"""The project's own error types: each carries a one-line message meant for the user."""


class VaeganError(Exception):
    """A problem the user can fix (bad file, bad option); reported as one line, exit code 2."""


class DataError(VaeganError):
    """A data file that cannot be read or does not hold a valid data set."""


class ConfigError(VaeganError):
    """A configuration or command-line value that is not valid."""


class CheckpointError(VaeganError):
    """A checkpoint or run folder that is missing, corrupt or incompatible."""
