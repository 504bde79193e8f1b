"""Errors the command line reports in one line (kept free of heavy imports)."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable

from replay.storage import STORAGE_ERRNOS

__all__ = [
    "EXIT_OUTPUT_FAILED",
    "KafkaReplayError",
    "OutputError",
    "UsageError",
    "run_writing_outputs",
]

#: An output could not be written (its reader gone, a full disk).
EXIT_OUTPUT_FAILED = 1


class KafkaReplayError(RuntimeError):
    """The replay could not be completed: one line saying what is missing."""


class OutputError(RuntimeError):
    """An output could not be written (a full disk, a file system gone read-only): one
    line naming the file, exit code 1."""


class UsageError(Exception):
    """A user error worth one line and exit code 2."""


def run_writing_outputs(command: Callable[[], int]) -> int:
    """``command()``'s exit code. Standard output read by a reader that leaves (``liqmon … |
    head``) ends it quietly, as Unix tools end; an output on storage that fails (a full disk,
    a file system gone read-only) is one line on stderr. Both exit 1."""
    try:
        return command()
    except BrokenPipeError:
        _detach_stdout()
        return EXIT_OUTPUT_FAILED
    except OSError as exc:
        if exc.errno not in STORAGE_ERRNOS:
            raise
        _detach_stdout()  # what is left in its buffer would fail again at exit
        where = f" {exc.filename}" if exc.filename else " its output"
        with contextlib.suppress(OSError):
            print(f"liqmon: error: cannot write{where}: {exc.strerror}", file=sys.stderr)
        return EXIT_OUTPUT_FAILED


def _detach_stdout() -> None:
    """Point standard output at /dev/null, so the interpreter's last flush of it does not
    fail again (the recipe of Python's documentation, "Note on SIGPIPE")."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
