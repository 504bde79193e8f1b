"""The worker's faust consumer: the fetch wait it passes to aiokafka, and its seek at the
end of a recovery (no record lost between the seek and faust emptying the agent queues, on
partitions with a commit and on those without)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiokafka.errors import IllegalStateError
from aiokafka.structs import ConsumerRecord
from faust.types import TP
from prometheus_client import CollectorRegistry

from monitor.config import EngineConfig
from monitor.metrics import Metrics
from streams import topics
from streams.app.faust_app import EMBEDDED_FETCH_MAX_WAIT_MS, create_app
from streams.kafka.faust_kafka import FAUST_FETCH_MAX_WAIT_MS, uncommitted_stream_partitions
from streams.settings import Settings


@pytest.mark.parametrize(
    ("env", "expected_ms"),
    [
        ({"broker_kind": "tansu"}, EMBEDDED_FETCH_MAX_WAIT_MS),
        ({"broker_kind": "kafka"}, FAUST_FETCH_MAX_WAIT_MS),
        ({"broker_kind": "tansu", "fetch_max_wait_ms": 321}, 321),
    ],
)
async def test_worker_consumer_gets_the_configured_fetch_wait(
    tmp_path: Path, env: dict[str, object], expected_ms: int
) -> None:
    settings = Settings(app_id="test-fetch-wait", partitions=2, data_dir=tmp_path, **env)  # type: ignore[arg-type]
    app = create_app(settings, EngineConfig(), "127.0.0.1:9", Metrics(CollectorRegistry()))
    thread = app.consumer._thread  # type: ignore[attr-defined]
    consumer = thread._create_worker_consumer(app.transport)
    try:
        assert consumer._fetch_max_wait_ms == expected_ms
    finally:
        await consumer.stop()
    assert EMBEDDED_FETCH_MAX_WAIT_MS < FAUST_FETCH_MAX_WAIT_MS


def _consumer(tmp_path: Path) -> Any:
    settings = Settings(app_id="test-seek", partitions=2, data_dir=tmp_path, broker_kind="tansu")
    app = create_app(settings, EngineConfig(), "127.0.0.1:9", Metrics(CollectorRegistry()))
    return app.consumer


async def test_the_seek_at_the_end_of_recovery_hands_nothing_to_the_agents(tmp_path: Path) -> None:
    """faust seeks to the committed offsets with the flow running, then empties the agent
    queues: a fetch landing in between would be emptied away behind the consumer's
    position. The seek runs with the flow stopped, and leaves it stopped for faust's
    recovery to resume once the queues are empty."""
    consumer = _consumer(tmp_path)
    tp = TP(topics.MARKET, 0)
    record = ConsumerRecord(topic=tp.topic, partition=0, offset=39, timestamp=0, timestamp_type=0,
                            key=b"", value=b"{}", checksum=None, serialized_key_size=0,
                            serialized_value_size=2, headers=())
    delivered: list[object] = []
    seen_flow: list[bool] = []

    async def fetch_during_seek() -> dict[TP, int]:
        seen_flow.append(consumer.flow_active)
        if len(seen_flow) == 1:  # the recovery's seek: a fetch completes meanwhile
            delivered.extend([m async for m in consumer.getmany(timeout=0.1)])
        return {tp: 20}

    async def records(timeout: float) -> tuple[dict[TP, list[Any]], set[TP]]:
        return {tp: [record]}, {tp}

    consumer.seek_to_committed = fetch_during_seek
    consumer._wait_next_records = records
    consumer.highwater = lambda tp: 40
    consumer.resume_flow()
    await consumer.perform_seek()
    assert seen_flow == [False, False]  # the recovery's seek, and getmany's own seek back
    assert delivered == []
    assert consumer.flow_active is False
    assert consumer._read_offset[tp] == 20
    # the caller (faust's recovery) resumes; the record is read again from offset 20
    consumer.resume_flow()
    assert [t for t, _ in [m async for m in consumer.getmany(timeout=0.1)]] == [tp]


async def test_a_failed_seek_restores_the_flow(tmp_path: Path) -> None:
    consumer = _consumer(tmp_path)

    async def broken() -> dict[TP, int]:
        raise TimeoutError("no coordinator")

    consumer.seek_to_committed = broken
    consumer.resume_flow()
    with pytest.raises(TimeoutError):
        await consumer.perform_seek()
    assert consumer.flow_active is True
    consumer.stop_flow()  # faust's own seek-back while stopped leaves the flow as it was
    with pytest.raises(TimeoutError):
        await consumer.perform_seek()
    assert consumer.flow_active is False


def test_partitions_aiokafka_does_not_seek_are_those_without_a_commit_above_0() -> None:
    """aiokafka's ``seek_to_committed`` seeks only commits above 0 (the premise is checked on
    the embedded broker in tests/integration/test_consumer_seek.py)."""
    market, alerts, changelog = TP(topics.MARKET, 0), TP(topics.ALERTS, 0), TP("liqmon-x-changelog", 0)
    committed = {market: 12, TP(topics.MARKET, 1): 0, alerts: None, changelog: None}
    assert uncommitted_stream_partitions(committed, {changelog.topic}, "earliest") == [TP(topics.MARKET, 1), alerts]
    # With "latest", a partition with no commit starts at the end anyway: nothing to read again.
    assert uncommitted_stream_partitions(committed, {changelog.topic}, "latest") == [TP(topics.MARKET, 1)]


async def test_the_seek_sends_partitions_without_a_commit_back_to_offset_0(tmp_path: Path) -> None:
    """A worker whose alerts all wait for a receiver has no commit on ``alerts.cascade``: the
    records its fetches dropped while the flow was stopped must be read again."""
    consumer = _consumer(tmp_path)
    changelogs = consumer.app.tables.changelog_topics
    assert changelogs  # the checkpoint tables' changelogs: faust's recovery places those
    changelog = TP(sorted(changelogs)[0], 0)
    alerts, market0, market1 = TP(topics.ALERTS, 0), TP(topics.MARKET, 0), TP(topics.MARKET, 1)
    committed = {market0: 12, market1: 0, alerts: None, changelog: None}
    sought: list[dict[TP, int]] = []

    class Thread:
        async def seek_to_committed(self) -> dict[TP, int | None]:
            return committed

    async def seek_wait(partitions: dict[TP, int]) -> None:
        sought.append(dict(partitions))

    consumer._thread = Thread()
    consumer.seek_wait = seek_wait
    assert await consumer.seek_to_committed() == committed
    assert sought == [{market1: 0, alerts: 0}]

    async def revoked(partitions: dict[TP, int]) -> None:
        raise IllegalStateError("not assigned")

    consumer.seek_wait = revoked  # revoked meanwhile: the next assignment starts them over
    assert await consumer.seek_to_committed() == committed
