"""A capture routed in a child process, beside the stages.

An inline replay spends about half its time in ingest (read, parse, books, batches) and
half in the stages. :class:`IngestProcess` runs :func:`replay.routing.route_capture` in a
child process and hands its output to the caller in capture order, so the two halves run
on two cores and the replay's output is the one in-process routing gives, item for item.

The child is a fresh interpreter (``sys.executable`` on this process's ``sys.path``) that
imports liqmon's modules only, never the caller's main module: it starts the same from
``liqmon replay``, a test, or a script read from stdin. It sends its items in pickled
chunks of ``CHUNK_ITEMS`` over a pipe, from a thread that keeps up to ``AHEAD_MESSAGES``
of them ready; when the caller is slower (a paced replay) the full queue holds the child
back, so it never reads far ahead. Dead letters are not sent: the inline replay only
counts them, and the counts come with every message. The child ignores SIGINT: an
interrupt is the parent's to handle, and the child is stopped when the parent closes it.
An error in the child (a file that is not a capture, a bug) is raised again in the
parent, and a child that dies without a word is an :class:`IngestProcessError` naming
its exit code.

Not used by the Kafka replayer: there the worker's stages already run beside the
replayer's ingest, and routing in a child measured no faster (29.9–30.7 s against
29.2–30.0 s for the synthetic day: two cores, CPU-bound either way).
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import nullcontext, suppress
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from types import TracebackType

from monitor.config import EngineConfig
from monitor.ingest.frames import Ingest, IngestOutput, IngestStats
from monitor.protocol import DeadLetter
from replay.capture import AheadWriter
from replay.gcpause import gc_paused
from replay.routing import ReplayStats, route_capture

__all__ = ["CHUNK_ITEMS", "IngestProcess", "IngestProcessError"]

#: Items per message: large enough that a message's cost is small against its items'.
CHUNK_ITEMS = 256
#: Messages the child holds ready beyond what the pipe holds (a message of the synthetic
#: day is ≈ 220 KB: a few MB ahead at most).
AHEAD_MESSAGES = 16
#: Seconds to wait for the child to end on its own before it is terminated.
_JOIN_S = 5.0


class IngestProcessError(RuntimeError):
    """The ingest process ended without finishing the capture, or its error cannot be carried."""


@dataclass(frozen=True)
class _Chunk:
    """Items routed, with the ingest's counts and the span of event time routed so far."""

    stats: IngestStats
    #: ``route_capture``'s ``stats``: the first and last receive times routed.
    span: ReplayStats
    items: list[tuple[int, IngestOutput]]
    #: The last chunk: the capture is routed to its end.
    end: bool = False


@dataclass(frozen=True)
class _Failed:
    """An exception raised in the child."""

    error: BaseException


@dataclass(frozen=True)
class _Job:
    """What the child routes: ``route_capture``'s arguments, and whether to pause the collector."""

    path: Path
    config: EngineConfig
    from_ms: int | None
    to_ms: int | None
    gc_pause: bool


class _ParentGone(Exception):
    """The pipe to the parent broke: it stopped reading (an interrupt, an error)."""


def _sender(conn: Connection) -> AheadWriter:
    """The child's messages, sent from a thread of their own up to ``AHEAD_MESSAGES`` ahead
    of the parent. The pipe holds less than one message: without the queue, routing would
    stop each time the parent is in the middle of one."""

    def send(message: bytes) -> None:
        try:
            conn.send_bytes(message)
        except OSError as exc:
            raise _ParentGone from exc

    return AheadWriter(send, AHEAD_MESSAGES, "liqmon-ingest-send")


def _failure(exc: BaseException) -> bytes:
    """A :class:`_Failed` message; an exception whose arguments do not rebuild it goes as text."""
    try:
        message = pickle.dumps(_Failed(exc), protocol=pickle.HIGHEST_PROTOCOL)
        pickle.loads(message)
    except Exception:
        message = pickle.dumps(_Failed(IngestProcessError(f"{type(exc).__name__}: {exc}")))
    return message


def _route(sender: AheadWriter, job: _Job) -> None:
    """Route the capture and send its items in chunks, each with the counts so far."""
    ingest, span = Ingest(job.config), ReplayStats()

    def send(items: list[tuple[int, IngestOutput]], end: bool = False) -> None:
        chunk = _Chunk(ingest.stats, span, items, end)
        sender.write(pickle.dumps(chunk, protocol=pickle.HIGHEST_PROTOCOL))

    items: list[tuple[int, IngestOutput]] = []
    for ts, item in route_capture(job.path, ingest, job.from_ms, job.to_ms, span):
        if isinstance(item, DeadLetter):
            continue
        items.append((ts, item))
        if len(items) >= CHUNK_ITEMS:
            send(items)
            items = []
    send(items, end=True)


#: What the child runs: this module imported by its name (so that what it pickles names
#: this module's classes), then :func:`child_main` on the pipe's descriptor.
_CHILD_CODE = "import sys; from replay.ingest_process import child_main; child_main(int(sys.argv[1]))"


def child_main(fd: int) -> None:
    """The child process: the job from stdin, the items to the pipe's write end ``fd``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # an interrupt is the parent's to handle
    job = pickle.load(sys.stdin.buffer)
    _run_job(Connection(fd, readable=False), job)


def _run_job(conn: Connection, job: _Job) -> None:
    """Route, report a failure; a parent gone is the end of the job."""
    sender = _sender(conn)
    try:
        with gc_paused() if job.gc_pause else nullcontext():
            _route(sender, job)
        sender.close()
    except _ParentGone:
        pass  # nothing to tell
    except BaseException as exc:  # every failure is carried to the parent
        with suppress(_ParentGone):
            sender.write(_failure(exc))
            sender.close()
    finally:
        conn.close()


class IngestProcess:
    """``route_capture`` of a capture in a child process; iterate :meth:`items`, then read
    :attr:`stats` and :attr:`span`. Use as a context manager: leaving it stops the child."""

    def __init__(self, path: Path, config: EngineConfig, from_ms: int | None = None, to_ms: int | None = None,
                 *, gc_pause: bool = False) -> None:
        read_fd, write_fd = os.pipe()
        try:
            self._proc = subprocess.Popen(  # a fresh interpreter: no copy of this one's threads or loop
                [sys.executable, "-c", _CHILD_CODE, str(write_fd)], stdin=subprocess.PIPE, pass_fds=(write_fd,),
                env={**os.environ, "PYTHONPATH": os.pathsep.join(p or os.getcwd() for p in sys.path)})
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        self._conn = Connection(read_fd, writable=False)
        assert self._proc.stdin is not None
        # a child that died at its start is reported by items(), with its exit code
        with suppress(BrokenPipeError), self._proc.stdin as job:
            job.write(pickle.dumps(_Job(path, config, from_ms, to_ms, gc_pause), protocol=pickle.HIGHEST_PROTOCOL))
        #: The ingest's counts when the child sent the items handed out so far, counted once
        #: the caller has taken every item of a message (final once :attr:`done`): a replay
        #: interrupted in the middle of a message reports what its stages were given.
        self.stats = IngestStats()
        #: The span of event time routed (``route_capture``'s ``stats``).
        self.span = ReplayStats()
        #: The capture has been routed to its end.
        self.done = False

    def items(self, on_idle: Callable[[], bool] | None = None) -> Iterator[tuple[int, IngestOutput]]:
        """(receive time, batch or feed alert) in capture order, as ``route_capture`` yields
        them (dead letters left out); raises the child's error where it happened.

        ``on_idle`` is called, again and again, while the child's next message is not there
        yet, until it returns False (it had nothing to do): work that may wait (a report's
        pending figures) is then done in time the caller would spend waiting."""
        while not self.done:
            if on_idle is not None:
                while not self._conn.poll() and on_idle():
                    pass
            message = self._take()
            yield from message.items
            self.stats, self.span = message.stats, message.span
            self.done = message.end

    def _take(self) -> _Chunk:
        """The child's next message (waits for it)."""
        try:
            message = pickle.loads(self._conn.recv_bytes())
        except (EOFError, OSError):  # no message, or the child gone in the middle of one
            code = self._wait(_JOIN_S)
            raise IngestProcessError(
                f"the ingest process ended before the end of the capture (exit code {code})"
            ) from None
        if isinstance(message, _Failed):
            raise message.error
        chunk: _Chunk = message
        return chunk

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self._proc.pid

    def alive(self) -> bool:
        """Whether the child process is running."""
        return self._proc.poll() is None

    def _wait(self, timeout_s: float) -> int | None:
        """The child's exit code (negative: the signal that ended it); None if still running."""
        try:
            return self._proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def close(self) -> None:
        """Stop the child (at once if it is still routing) and wait for it."""
        self._conn.close()
        if self.alive() and not self.done:
            self._proc.terminate()
        if self._wait(_JOIN_S) is None:
            self._proc.kill()
            self._proc.wait()

    def __enter__(self) -> IngestProcess:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
