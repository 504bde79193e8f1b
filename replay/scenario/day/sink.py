"""Write a generated capture through a forked child process that gzips it.

Compressing on a thread of the generating process makes the two share one interpreter
lock: each chunk hands the lock back and forth, and on a busy machine the generator waits
for a compressing thread the scheduler has not run yet. A child process has its own
interpreter: the parent sends it the serialised chunks through a pipe and goes on
generating. The child writes the same gzip stream :func:`replay.capture.write_chunks`
writes (:data:`replay.capture.GZIP_LEVEL`, mtime 0), so the bytes do not depend on which
of the two wrote them; without ``fork`` that function is used.
"""

from __future__ import annotations

import gzip
import multiprocessing as mp
from collections.abc import Iterable
from multiprocessing.connection import Connection
from pathlib import Path

from replay.capture import GZIP_LEVEL, write_chunks
from replay.scenario.day.feed import can_fork

__all__ = ["write_capture_gzip"]


def _compress(path: Path, conn: Connection, parent_end: Connection) -> None:
    """Child: gzip every chunk received into ``path`` until an empty one arrives.

    A pipe closed before that means the parent stopped generating (it raises its own
    error), so the child just ends. The child's copy of the parent's end is closed first,
    or that end would never be closed everywhere.
    """
    parent_end.close()
    with path.open("wb") as fh, gzip.GzipFile(filename="", mode="wb", fileobj=fh, mtime=0,
                                              compresslevel=GZIP_LEVEL) as gz:
        try:
            while chunk := conn.recv_bytes():
                gz.write(chunk)
        except EOFError:
            pass
        finally:
            conn.close()


def write_capture_gzip(path: Path, chunks: Iterable[bytes]) -> None:
    """Write whole, newline-terminated capture lines gzipped to ``path`` (a ``.gz`` name).

    The chunks are compressed in a forked child process while the caller builds the next
    ones; an error in the child is raised here once the chunks are sent.
    """
    if not can_fork():
        write_chunks(path, chunks)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    ctx = mp.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_compress, args=(path, recv, send), daemon=True,
                       name="scenario-gzip")
    proc.start()
    recv.close()
    try:
        for chunk in chunks:
            if chunk:
                send.send_bytes(chunk)
        send.send_bytes(b"")
    except BrokenPipeError:
        pass  # the child ended early: its exit code says why, below
    finally:
        send.close()
        proc.join()
    if proc.exitcode != 0:
        raise RuntimeError(f"writing {path} failed in the gzip process (exit code {proc.exitcode})")
