"""Run a per-second producer in a forked child process and read its results in order.

The child inherits the producer's state at the fork (copy-on-write), calls it for every
second and sends the results back in blocks through a pipe; the parent reads them as it
needs them, so both run at once on two cores. Where ``fork`` is not available the
producer runs in the calling process: the results are the same either way.
"""

from __future__ import annotations

import multiprocessing as mp
from collections import deque
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from typing import Generic, TypeVar

from replay.capture import can_fork

T = TypeVar("T")

#: Seconds per message from the child.
BLOCK = 64


def _produce(produce: Callable[[int], T], n: int, conn: Connection) -> None:
    """Child: send produce(0 .. n−1) in blocks of BLOCK, then close the pipe."""
    try:
        for start in range(0, n, BLOCK):
            conn.send([produce(t) for t in range(start, min(start + BLOCK, n))])
    finally:
        conn.close()


class ForkedFeed(Generic[T]):
    """``produce(t)`` for t = 0 .. n−1, computed in a child process (or inline)."""

    def __init__(self, produce: Callable[[int], T], n: int, forked: bool = True) -> None:
        self._produce = produce
        self._n = n
        self._proc: mp.process.BaseProcess | None = None
        self._conn: Connection | None = None
        #: Results received and not yet handed on.
        self._buffer: deque[T] = deque()
        if forked and can_fork():
            ctx = mp.get_context("fork")
            recv, send = ctx.Pipe(duplex=False)
            self._proc = ctx.Process(target=_produce, args=(produce, n, send), daemon=True,
                                     name="scenario-books")
            self._proc.start()
            send.close()
            self._conn = recv

    def __iter__(self) -> Iterator[T]:
        if self._conn is None:
            yield from (self._produce(t) for t in range(self._n))
            return
        try:
            for _ in range(self._n):
                if not self._buffer:
                    self._receive()
                yield self._buffer.popleft()
        finally:
            self.close()

    def _receive(self) -> None:
        if self._conn is None:
            raise RuntimeError("the scenario's book process is closed")
        try:
            block: list[T] = self._conn.recv()
        except EOFError:
            raise RuntimeError(self._failure()) from None
        self._buffer.extend(block)

    def ready(self) -> bool:
        """True when the next result can be had without waiting for the child (always,
        inline): the caller may do other work first."""
        return self._conn is None or bool(self._buffer) or self._conn.poll()

    def _failure(self) -> str:
        code = None
        if self._proc is not None:
            self._proc.join(timeout=5)
            code = self._proc.exitcode
        return f"the scenario's book process ended early (exit code {code})"

    def close(self) -> None:
        """Wait briefly for the child to exit (it may be blocked sending), stop it if it has
        not, and release the pipe."""
        proc = self._proc
        if proc is not None:
            proc.join(timeout=1)
            if proc.is_alive():
                proc.terminate()
                proc.join()
            self._proc = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None
