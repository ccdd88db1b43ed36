"""What the command-line entry points share: one-line errors, exit codes, signal handling."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import traceback
from typing import Any, Callable, Iterator, NoReturn
from contextlib import contextmanager
from pathlib import Path

from vaegan_jax.errors import VaeganError, summary

EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3
EXIT_LOST_PROCESS = 4
EXIT_INTERRUPTED = 130


def run(main: Callable[[list[str]], int], argv: list[str] | None = None) -> int:
    """Run a CLI main: project errors become one line on stderr and exit code 2 (3 diverged, 4 lost another process
    of a multi-process run, 130 interrupted); with --debug the line comes after the traceback, with the same code."""
    from vaegan_jax.errors import Diverged, Interrupted

    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    try:
        return main(argv)
    except Interrupted as err:
        print(str(err), file=sys.stderr)
        return EXIT_INTERRUPTED
    except Diverged as err:
        _report(err, debug)
        return EXIT_DIVERGED
    except VaeganError as err:
        _report(err, debug)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        if debug:
            raise
        print("aborted; checkpoints completed before the signal are kept", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as err:
        if debug or not _lost_another_process(err):
            raise
        print(f"error: lost contact with another process of this run, which may have failed ({summary(err)})",
              file=sys.stderr)
        return EXIT_LOST_PROCESS


def _report(err: Exception, debug: bool) -> None:
    """The `error:` line of a project error on stderr, after its traceback with --debug."""
    if debug:
        traceback.print_exception(err, file=sys.stderr)
    print(f"error: {err}", file=sys.stderr)


def _lost_another_process(err: Exception) -> bool:
    """Whether `err` is the runtime's failure of a collective in a multi-process run (a peer exited or hung)."""
    import jax

    return isinstance(err, jax.errors.JaxRuntimeError) and jax.process_count() > 1


def run_as_program(main: Callable[[list[str]], int]) -> NoReturn:
    """A script's entry point: `run` on sys.argv and exit with its code, keeping exit-time noise off the terminal."""
    if "--debug" not in sys.argv[1:]:
        sys.unraisablehook = _drop_closed_event_loop
    sys.exit(run(main))


def _drop_closed_event_loop(unraisable) -> None:
    """Silence asyncio's 'Event loop is closed', pass every other ignored exception on (to the default hook).

    A failed orbax restore leaves read tasks behind; at exit their callbacks find the loop closed and Python
    prints a traceback under the one-line error, which already said what broke.
    """
    error = unraisable.exc_value
    if isinstance(error, RuntimeError) and str(error) == "Event loop is closed":
        return
    sys.__unraisablehook__(unraisable)


def use_compilation_cache() -> None:
    """Keep compiled XLA programs between runs (a tiny run: about 27 s warm against 130 s cold on 2 cores).

    The folder is ~/.cache/vaegan_jax/xla unless JAX_COMPILATION_CACHE_DIR names another.
    """
    import jax

    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return
    jax.config.update("jax_compilation_cache_dir", str(Path.home() / ".cache" / "vaegan_jax" / "xla"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


@contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """An event set by SIGINT or SIGTERM, so the training loop can save and stop between epochs."""
    event = threading.Event()

    def handler(signum: int, frame: object) -> None:
        if event.is_set():
            raise KeyboardInterrupt
        print(f"\n{signal.Signals(signum).name}: saving a checkpoint after this epoch (again to abort)", file=sys.stderr)
        event.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield event
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def add_distributed_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags that make one process of a multi-process (multi-host) run."""
    group = parser.add_argument_group(
        "several processes",
        "Start one process per host, all with the same arguments (and with HOST:PORT, each its own "
        "--process-id); together they use every device of every host as one mesh, and process 0 alone "
        "prints and writes files. The run folder must be on a file system all processes see.",
    )
    group.add_argument("--coordinator", metavar="HOST:PORT",
                       help="address of process 0, where the processes meet; 'auto' reads the cluster's "
                       "environment (SLURM, Open MPI, Kubernetes, ...) instead of the two flags below")
    group.add_argument("--num-processes", type=int, metavar="N", help="how many processes take part")
    group.add_argument("--process-id", type=int, metavar="I", help="this process's number, 0..N-1")


def join_processes(args: argparse.Namespace) -> None:
    """Connect to the other processes named by `add_distributed_arguments`' flags, if any."""
    from vaegan_jax.sharding import init_distributed

    init_distributed(args.coordinator, args.num_processes, args.process_id)


def is_main_process() -> bool:
    """Whether this process prints the results (process 0 of a multi-process run)."""
    from vaegan_jax.sharding import is_main_process as main

    return main()


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line and exit code 2, like every other bad input.

    Options must be spelt out: `run` looks for --debug in the raw arguments, where an abbreviation would go unseen.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(allow_abbrev=False, **kwargs)

    def error(self, message: str) -> NoReturn:
        """Print `error: message (see --help)` and exit 2."""
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
