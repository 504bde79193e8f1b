"""Seeks back asked for again from a timer (``streams.app.pipes.Rewinds``): a stage whose
seek back was undone, and whose partition has no record left to come, is not left waiting.

faust's consumer hands a fetched batch to the stream record by record and sets its read
offset after each; a seek issued by the stage in the middle of that batch is overtaken by
the rest of it, and faust then drops the records read again below that read offset. When
those were the partition's last records (the run's end markers on ``risk.signals``), no
record came to ask for the seek again: the stage waited for ever.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from aiokafka.errors import IllegalStateError
from faust.types import TP
from prometheus_client import CollectorRegistry

from monitor.metrics import Metrics
from streams.app.checkpoint import InputCursor, Verdict
from streams.app.pipes import Pipes, Rewinds

SIGNALS = TP("risk.signals", 0)
MARKET = TP("market.batches", 3)


class _Consumer:
    """The worker's consumer as the pipes see it: where each partition was sent."""

    def __init__(self, assigned: set[TP]) -> None:
        self.assigned = assigned
        self.seeks: list[tuple[TP, int]] = []

    async def seek(self, tp: TP, offset: int) -> None:
        if tp not in self.assigned:
            raise IllegalStateError(f"No current assignment for partition {tp}")
        self.seeks.append((tp, offset))


class _Event:
    def __init__(self, tp: TP, offset: int) -> None:
        self.message = type("Message", (), {"topic": tp.topic, "partition": tp.partition, "offset": offset})()


class _Stream:
    async def ack(self, event: Any) -> bool:
        return True


def _pipes(consumer: _Consumer) -> Pipes:
    pipes = Pipes.__new__(Pipes)
    pipes.app = cast(Any, type("App", (), {"consumer": consumer})())
    pipes.metrics = Metrics(CollectorRegistry())
    pipes.rewinds = Rewinds()
    return pipes


def _rewinds_counted(pipes: Pipes, stage: str) -> float:
    return pipes.metrics.registry.get_sample_value("liqmon_rewinds_total", {"stage": stage}) or 0.0


def test_a_seek_back_whose_records_were_all_dropped_is_asked_for_again_without_a_record() -> None:
    consumer = _Consumer({SIGNALS})
    pipes = _pipes(consumer)
    cursor = InputCursor(40, retry_s=0.05)

    async def run() -> None:
        # The first record after a recovery is past the checkpoint's offset: seek back to 40.
        assert not await pipes.admit("global", cursor, _Stream(), _Event(SIGNALS, 43))
        # The rest of the batch (the partition's last records) arrives while that seek is
        # under way and is dropped; faust then drops the records read again from 40.
        assert not await pipes.admit("global", cursor, _Stream(), _Event(SIGNALS, 44))
        assert consumer.seeks == [(SIGNALS, 40)]
        await pipes.retry_rewinds()
        assert consumer.seeks == [(SIGNALS, 40)]  # not overdue yet
        await asyncio.sleep(0.06)
        await pipes.retry_rewinds()  # the timer asks again: nothing else would
        assert consumer.seeks == [(SIGNALS, 40), (SIGNALS, 40)]
        await pipes.retry_rewinds()
        assert len(consumer.seeks) == 2  # asked again only once retry_s has passed again
        assert await pipes.admit("global", cursor, _Stream(), _Event(SIGNALS, 40))
        await asyncio.sleep(0.06)
        await pipes.retry_rewinds()
        assert len(consumer.seeks) == 2 and len(pipes.rewinds) == 0  # seen through: forgotten

    asyncio.run(run())
    assert _rewinds_counted(pipes, "global") == 2.0


def test_a_revoked_partition_is_not_sought_again() -> None:
    consumer = _Consumer({SIGNALS, MARKET})
    pipes = _pipes(consumer)
    market, signals = InputCursor(7, retry_s=0.0), InputCursor(40, retry_s=0.0)

    async def run() -> None:
        assert not await pipes.admit("market", market, _Stream(), _Event(MARKET, 9))
        assert not await pipes.admit("global", signals, _Stream(), _Event(SIGNALS, 41))
        pipes.rewinds.forget({MARKET})  # revoked in a rebalance
        consumer.assigned.discard(SIGNALS)  # lost without a revocation seen: the seek fails
        consumer.seeks.clear()
        await pipes.retry_rewinds()
        assert consumer.seeks == [] and len(pipes.rewinds) == 0

    asyncio.run(run())
    assert signals.judge(40, 0.0) is Verdict.PROCESS
