"""The live session's publish backlog: bounded, the oldest shed and counted by kind, closed by
None (never shed); the exit summary's word on what the broker never got."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from monitor.ingest.batch import Batch
from monitor.ingest.frames import Routed
from monitor.protocol import DeadLetter
from streams.cmd.live import publish_summary
from streams.feeds.backlog import PublishBacklog
from streams.feeds.runner import LiveStats
from streams.kafka.publish import item_kind


def _dead(reason: str) -> DeadLetter:
    return DeadLetter(reason, "", "binance-spot", "c", 0, None, b"")


async def test_a_full_backlog_sheds_its_oldest_and_counts_it_by_kind() -> None:
    backlog: PublishBacklog[Routed | DeadLetter] = PublishBacklog(3)
    batch = Routed(Batch(asset="BTC"), broadcast=False)
    assert [backlog.put(x) for x in (_dead("a"), batch, _dead("b"))] == [None, None, None]
    assert backlog.put(_dead("c")) == "deadletter" and backlog.put(_dead("d")) == "batch"
    assert len(backlog) == 3
    assert [getattr(await backlog.get(), "reason", None) for _ in range(3)] == ["b", "c", "d"]


async def test_the_closing_none_is_never_shed_and_left_counts_what_was_not_taken() -> None:
    backlog: PublishBacklog[DeadLetter] = PublishBacklog(2)
    backlog.put(_dead("a"))
    backlog.put(_dead("b"))
    assert backlog.put(None) == "deadletter"  # the oldest makes room for the end
    assert backlog.left() == Counter({"deadletter": 1}) and len(backlog) == 0
    backlog.put(None)
    assert await asyncio.wait_for(backlog.get(), 1) is None


def test_a_backlog_holds_at_least_one_item() -> None:
    with pytest.raises(ValueError, match="at least one item"):
        PublishBacklog(0)


def test_item_kinds() -> None:
    assert [item_kind(x) for x in (_dead("a"), Routed(Batch(asset="BTC"), broadcast=True))] == ["deadletter", "batch"]


def test_the_exit_summary_says_what_the_broker_never_got() -> None:
    assert publish_summary(LiveStats()) == ""
    stats = LiveStats(unpublished=Counter({"batch": 1_200, "alert": 2}), unconfirmed="KafkaTimeoutError")
    assert publish_summary(stats) == ("; 1,202 items NOT published (2 alert, 1,200 batch): the broker was away"
                                       "; the broker did not confirm the last records (KafkaTimeoutError)")
