"""Work computed in forked child processes, handed back over pipes.

A batch command (``liqmon stress``) splits its work into parts: the first is computed in
the command's own process while forked children compute the others on the machine's other
cores. A fork shares the parent's memory as it was at the fork (a file's lines, a report
already computed: nothing is copied or sent); only what a child computes travels back.
:class:`Forked` hands back one result (pickled); :class:`ForkedStream` a sequence of byte
strings, one at a time, a child computing its next while the parent takes the last.

No thread is started: a child that is done before its parent asks waits on its pipe.
POSIX only (``os.fork``): :func:`cores` is 1 where there is no fork, and callers then
compute every part in their own process.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import struct
import sys
import traceback
from collections.abc import Callable, Iterable, Iterator
from typing import BinaryIO, Generic, TypeVar

if sys.platform != "win32":
    import fcntl

__all__ = ["Forked", "ForkedError", "ForkedStream", "cores"]

T = TypeVar("T")

#: Exit status of a child whose function raised (its traceback is sent instead of a result).
_RAISED = 3
#: A frame of :class:`ForkedStream`: a tag (data, raised, end) and the payload's length.
_FRAME = struct.Struct("<cQ")
_DATA, _ERROR, _END = b"D", b"E", b"Z"
#: A pipe's capacity asked for (Linux's default limit for a process without privilege).
_PIPE_BYTES = 1 << 20


class ForkedError(RuntimeError):
    """A forked child died or its function raised; the message says which and how."""


def cores() -> int:
    """CPU cores this process may run on; 1 where processes cannot be forked."""
    if not hasattr(os, "fork"):
        return 1
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data).cast("B")
    while view:
        view = view[os.write(fd, view):]


def _exit_text(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"


class _Child:
    """A forked child running ``work(write_fd)`` and nothing else: it leaves with
    ``os._exit`` (no ``atexit`` handlers, no flush of buffers inherited from the parent).
    The parent forks from its main thread; it reads the child's pipe, then reaps it."""

    def __init__(self, name: str, work: Callable[[int], int]) -> None:
        read_fd, write_fd = os.pipe()
        if sys.platform == "linux":  # a larger pipe: fewer, larger hand-overs
            with contextlib.suppress(OSError):
                fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, _PIPE_BYTES)
        pid = os.fork()
        if pid == 0:
            os.close(read_fd)
            status = _RAISED
            try:
                status = work(write_fd)
            finally:
                os._exit(status)
        os.close(write_fd)
        #: The child's process id.
        self.pid = pid
        self.name = name
        self.pipe: BinaryIO = os.fdopen(read_fd, "rb")
        self._status: int | None = None

    def reap(self) -> int:
        """Wait for the child to end (its pipe closed); its wait status."""
        self.pipe.close()
        if self._status is None:
            self._status = os.waitpid(self.pid, 0)[1]
        return self._status

    def failed(self, what: str) -> ForkedError:
        """The error of a child that ended without ``what``."""
        return ForkedError(f"the process {self.name} ended without {what} "
                           f"({_exit_text(self.reap())})")

    def raised(self, text: str) -> ForkedError:
        """The error of a child whose function raised (``text``: its traceback), reaped."""
        self.reap()
        return ForkedError(f"the process {self.name} raised:\n{text}")

    def cancel(self) -> None:
        """Stop the child (SIGKILL) and reap it, whatever it has not sent unread."""
        if self._status is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        self.reap()


def _name(fn: Callable[..., object], what: str | None) -> str:
    return what if what is not None else f"computing {getattr(fn, '__qualname__', repr(fn))}"


class Forked(Generic[T]):
    """``fn(*args)`` computed in a forked child; :meth:`result` waits for it and returns it
    (pickled back). The parent calls :meth:`result` or :meth:`cancel` once. ``what`` the
    child does names it in errors ("the process {what} …"; by default, the function's name)."""

    def __init__(self, fn: Callable[..., T], *args: object, what: str | None = None) -> None:
        def work(write_fd: int) -> int:
            try:
                payload, status = pickle.dumps((True, fn(*args)), protocol=pickle.HIGHEST_PROTOCOL), 0
            except BaseException:  # the parent raises it; the child must exit
                payload, status = pickle.dumps((False, traceback.format_exc())), _RAISED
            _write_all(write_fd, payload)
            return status

        self._child = _Child(_name(fn, what), work)
        #: The child's process id.
        self.pid = self._child.pid

    def result(self) -> T:
        """The child's return value; :class:`ForkedError` when it raised or died."""
        data = self._child.pipe.read()
        if not data:
            raise self._child.failed("a result")
        status = self._child.reap()
        try:
            ok, value = pickle.loads(data)
        except Exception as exc:  # a child killed while writing: cut short
            raise ForkedError(f"the process {self._child.name} sent a broken result "
                              f"({_exit_text(status)}: {exc})") from None
        if not ok:
            raise self._child.raised(value)
        return value  # type: ignore[no-any-return]

    def cancel(self) -> None:
        """Stop the child (SIGKILL) and reap it, its result unread."""
        self._child.cancel()


class ForkedStream:
    """The byte strings ``fn(*args)`` yields, computed in a forked child and taken one at a
    time with ``next()`` (a pipe holds little: the child computes one ahead, then waits).
    Iterate to the end, or :meth:`cancel`; :class:`ForkedError` when the child raised or died.
    ``what`` as for :class:`Forked`."""

    def __init__(self, fn: Callable[..., Iterable[bytes | memoryview]], *args: object,
                 what: str | None = None) -> None:
        def work(write_fd: int) -> int:
            try:
                for data in fn(*args):
                    view = memoryview(data)
                    _write_all(write_fd, _FRAME.pack(_DATA, view.nbytes))
                    _write_all(write_fd, view)
            except BaseException:  # the parent raises it; the child must exit
                text = traceback.format_exc().encode()
                _write_all(write_fd, _FRAME.pack(_ERROR, len(text)) + text)
                return _RAISED
            _write_all(write_fd, _FRAME.pack(_END, 0))
            return 0

        self._child = _Child(_name(fn, what), work)
        #: The child's process id.
        self.pid = self._child.pid

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        if self._child.pipe.closed:  # ended (or cancelled)
            raise StopIteration
        head = self._child.pipe.read(_FRAME.size)
        if len(head) < _FRAME.size:
            raise self._child.failed("its end")
        tag, size = _FRAME.unpack(head)
        data = self._child.pipe.read(size)
        if len(data) < size:
            raise self._child.failed("its end")
        if tag == _END:
            self._child.reap()
            raise StopIteration
        if tag == _ERROR:
            raise self._child.raised(data.decode())
        return data

    def cancel(self) -> None:
        """Stop the child (SIGKILL) and reap it, what it has not sent unread."""
        self._child.cancel()
