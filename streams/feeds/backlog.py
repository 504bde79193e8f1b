"""What a live session has yet to publish: a bounded queue that sheds its oldest items.

While the broker answers, the backlog holds an item or two: the runner's pump hands each to
the producer as it comes. While the broker is away (a restart, a network cut), the producer
first fills its own buffer, then blocks the pump, and the backlog grows with the session's
batches, alerts and dead letters. Unbounded, a long outage would end the process out of
memory; bounded at ``[live] publish_backlog_items``, the oldest item makes room for the
newest (the newest state is what a monitor needs when the broker returns), and every item
shed is counted by kind (``liqmon_publish_dropped_total{kind}``, the exit summary). The
recording (``--record``) still holds every frame, so a replay of it recovers what was shed.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Generic, TypeVar

from streams.kafka.publish import item_kind

__all__ = ["PublishBacklog"]

T = TypeVar("T")


class PublishBacklog(Generic[T]):
    """Items in order, at most ``limit`` of them; ``None`` closes it (never shed: it is put last)."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"a backlog holds at least one item, not {limit}")
        self._queue: asyncio.Queue[T | None] = asyncio.Queue(maxsize=limit)

    def __len__(self) -> int:
        return self._queue.qsize()

    def put(self, item: T | None) -> str | None:
        """Append ``item``; the kind (:func:`streams.kafka.publish.item_kind`) of the oldest item
        it pushed out, for the caller to count (None: there was room)."""
        oldest = self._queue.get_nowait() if self._queue.full() else None
        self._queue.put_nowait(item)
        return None if oldest is None else item_kind(oldest)

    async def get(self) -> T | None:
        return await self._queue.get()

    def left(self) -> Counter[str]:
        """The items not taken yet, by kind (the closing ``None`` aside)."""
        out: Counter[str] = Counter()
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item is not None:
                out[item_kind(item)] += 1
        return out
