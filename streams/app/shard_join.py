"""The aggregation side of the account shards, on the worker owning ``risk.signals``.

Before the global stage takes log record o it waits until every shard is through o
(:class:`monitor.stages.global_risk.shards.ShardJoin`, part of its checkpointed state). The
shards' steps are read from ``risk.shard-steps`` by a consumer of its own
(:class:`StepsInbox`) from the offset the state's join has read up to, and handed to the
join only inside the stage's record handling, so a checkpoint holds the join and the
offset it reflects together. A shard the stage waits for is poked on its ``risk.shards``
partition (its owner starts it then).
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from aiokafka import TopicPartition

from monitor.protocol import DeadLetter, RecordError
from monitor.stages.global_risk.shards import ShardJoin, ShardStep, decode_steps
from streams import topics
from streams.app.pipes import Pipes
from streams.app.shard_agent import LogReader

__all__ = ["POKE_EVERY_S", "StepsInbox", "await_shards", "take_joined"]

#: How often a shard the global stage waits for is poked.
POKE_EVERY_S = 1.0


class StepsInbox:
    """The shards' step records as read, until the global stage takes them."""

    def __init__(self, pipes: Pipes, offset: int) -> None:
        self.pipes = pipes
        self.offset = offset
        self.records: list[tuple[int, bytes]] = []
        self.arrived = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        # nothing read yet: from the first record the topic still holds
        reader = LogReader(self.pipes, TopicPartition(topics.SHARD_STEPS, 0), self.offset or None)
        await reader.start()
        try:
            while True:
                got = await reader.next(timeout_ms=500, max_records=5_000)
                if got:
                    self.records.extend((r.offset, bytes(r.value or b"")) for r in got)
                    self.arrived.set()
        finally:
            await reader.stop()

    def take(self) -> list[tuple[int, bytes]]:
        taken, self.records = self.records, []
        self.arrived.clear()
        return taken

    async def wait(self, timeout_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.arrived.wait(), timeout_s)

    def cancel(self) -> None:
        """Stop reading (the reader closes its consumer as it ends)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()


async def await_shards(pipes: Pipes, join: ShardJoin, inbox: StepsInbox, offset: int,
                       revoked: asyncio.Event | None = None) -> bool:
    """Until every shard is through log record ``offset`` (True), or the stage is no longer
    this worker's (``revoked`` set: False). Steps records that do not decode are
    dead-lettered. While it waits, each shard's distance from ``offset`` is exported
    (``liqmon_shard_behind_records``) and the time waited counted."""
    await _take_steps(pipes, join, inbox)  # the common case: nothing to wait for
    if join.ready(offset):
        return True
    metrics, started = pipes.metrics, time.monotonic()
    poked_s = 0.0
    try:
        while True:
            for shard, done in enumerate(join.through):
                metrics.shard_behind_records.labels(str(shard)).set(max(offset - done, 0))
            if revoked is not None and revoked.is_set():
                return False
            now = time.monotonic()
            if now - poked_s >= POKE_EVERY_S:
                poked_s = now
                for shard in join.lagging(offset):
                    await pipes.shards.send(key=b"", value=b"poke", partition=shard)
            await inbox.wait(0.25)
            await _take_steps(pipes, join, inbox)
            if join.ready(offset):
                return True
    finally:
        metrics.shard_wait_seconds_total.inc(time.monotonic() - started)
        for shard in range(join.shards):
            metrics.shard_behind_records.labels(str(shard)).set(0)


async def _take_steps(pipes: Pipes, join: ShardJoin, inbox: StepsInbox) -> None:
    """The steps read so far into the join; a record that does not decode is dead-lettered."""
    for at, value in inbox.take():
        try:
            join.add(decode_steps(value), at)
        except RecordError as exc:
            join.skip(at)
            await pipes.dead_letter(DeadLetter(exc.reason, exc.detail, value[:65536]))


async def take_joined(pipes: Pipes, join: ShardJoin, offset: int) -> list[ShardStep]:
    """Every shard's step on log record ``offset`` (:meth:`ShardJoin.take`, once
    :func:`await_shards` is through). A step that lacks a part whose record did not decode
    (and was dead-lettered) is dead-lettered too, with the shard and the parts it has, and
    counts as empty: the stage goes on, where it would fail on that record at every restart."""
    incomplete: list[RecordError] = []
    steps = join.take(offset, incomplete)
    for exc in incomplete:
        await pipes.dead_letter(DeadLetter(exc.reason, exc.detail, b""))
    return steps
