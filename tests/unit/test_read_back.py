"""The replay's read-back of alerts, acks and snapshots: records that are not liqmon's are
skipped and logged (never a traceback), and count toward nothing the judge waits for."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import pytest
from aiokafka import TopicPartition

from monitor.protocol import Alert, MarketAck, RiskSnapshot, encode
from streams import topics
from streams.kafka.replay import ReadBack, ReplayHooks


@dataclass
class _Record:
    offset: int
    value: bytes


class _Consumer:
    """``getmany`` hands out the records given, once."""

    def __init__(self, by_topic: dict[str, list[bytes]]) -> None:
        self._batches = {TopicPartition(topic, 0): [_Record(n, v) for n, v in enumerate(values)]
                         for topic, values in by_topic.items()}

    async def getmany(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[Any, list[_Record]]:
        out, self._batches = self._batches, {}
        return out


def _alert(alert_id: str) -> Alert:
    return Alert(alert_id=alert_id, ts_ms=1, kind="peg_deviation", severity="warning", venue="okx",
                 asset="USDe", stage=None, message="m", evidence={}, config_hash="c")


def test_foreign_records_are_skipped_logged_and_count_toward_nothing(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[str] = []
    snapshot = RiskSnapshot(ts_ms=5, hf_bands={"<1": 2})
    ack = MarketAck(run="r1", config_hash="c", alerts=2, partition=0, deadletters=0, events=10, ack_wall_s=1.0)
    consumer = _Consumer({
        topics.ALERTS: [_alert("a1").to_json(), b"not json", b'{"alert_id": "x"}', _alert("a2").to_json(),
                        _alert("a1").to_json()],
        topics.RISK_SNAPSHOTS: [b"\x00\x01", encode(snapshot), b"[]", encode(snapshot)],
        topics.ACKS: [b"junk", encode(ack)],
    })
    read_back = ReadBack(consumer, "r1", ReplayHooks(on_alert=lambda a: seen.append(a.alert_id)))  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="liqmon.replay"):
        asyncio.run(read_back.drain(0))
    assert seen == ["a1", "a2"] and sorted(read_back.alerts) == ["a1", "a2"]
    assert read_back.raw_alert_records == 3  # the re-delivered a1 counts, the junk does not
    assert read_back.snapshots.records == 2 and read_back.snapshots.snapshots == [snapshot]
    assert read_back.foreign_records == 4
    assert read_back.acks.market == {0: ack}
    skipped = [r.getMessage() for r in caplog.records if "malformed" in r.getMessage()]
    assert len(skipped) == 4 and any("alerts.cascade" in m and "offset 1" in m for m in skipped)


class _SkippingConsumer:
    """A partition of alerts whose first fetch skips a record; after ``seek`` the fetch
    starts at the offset asked for (``again``: the record is there on the second read)."""

    def __init__(self, values: list[bytes], skip: int, again: bool) -> None:
        self.tp = TopicPartition(topics.ALERTS, 0)
        self.log = [_Record(n, v) for n, v in enumerate(values)]
        self.fetches = [[r for r in self.log if r.offset != skip]]
        self.again, self.skip, self.seeks = again, skip, []

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append(offset)
        self.fetches = [[r for r in self.log if r.offset >= offset and (self.again or r.offset != self.skip)]]

    async def getmany(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[Any, list[_Record]]:
        return {self.tp: self.fetches.pop(0)} if self.fetches else {}


@pytest.mark.parametrize("again", [True, False])
def test_a_fetch_that_skips_a_record_is_read_again_from_it(again: bool, caplog: pytest.LogCaptureFixture) -> None:
    seen: list[str] = []
    ids = ["a0", "a1", "a2", "a3", "a4"]
    consumer = _SkippingConsumer([_alert(i).to_json() for i in ids], skip=2, again=again)
    read_back = ReadBack(consumer, "r1", ReplayHooks(on_alert=lambda a: seen.append(a.alert_id)))  # type: ignore[arg-type]
    read_back.order.expected[consumer.tp] = 0
    with caplog.at_level(logging.WARNING, logger="liqmon.replay"):
        for _ in range(4):
            asyncio.run(read_back.drain(0))
    # read again from the missing offset; a gap there again is the log's and is passed
    assert seen == (ids if again else ["a0", "a1", "a3", "a4"]) and consumer.seeks[0] == 2
    assert read_back.raw_alert_records == len(seen) and read_back.order.expected[consumer.tp] == 5
    assert any("fetched offset 3, expected 2" in r.getMessage() for r in caplog.records)
