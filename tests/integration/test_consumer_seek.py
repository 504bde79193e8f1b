"""aiokafka's seek to the committed offsets, on the embedded broker: a partition whose
committed offset is 0, or that has none, stays where its fetches took it. The worker's
consumer sends such partitions back itself (:mod:`streams.kafka.faust_kafka`): records
fetched while the flow was stopped, and dropped, are read again."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import NewTopic
from aiokafka.structs import OffsetAndMetadata, TopicPartition

from streams.kafka.broker import embedded_broker
from streams.kafka.faust_kafka import uncommitted_stream_partitions
from streams.kafka.security import start_admin

pytestmark = [pytest.mark.broker, pytest.mark.timeout(120)]

TOPIC = "seek.back"
RECORDS = 8


async def _fill(bootstrap: str) -> None:
    admin = await start_admin(bootstrap)
    try:
        await admin.create_topics([NewTopic(TOPIC, 1, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for i in range(RECORDS):
            await producer.send_and_wait(TOPIC, b"%d" % i, partition=0)
    finally:
        await producer.stop()


async def _read_all(consumer: AIOKafkaConsumer) -> list[int]:
    offsets: list[int] = []
    for _ in range(50):
        for records in (await consumer.getmany(timeout_ms=200)).values():
            offsets += [record.offset for record in records]
        if len(offsets) >= RECORDS:
            break
    return offsets


async def _seek_back(bootstrap: str, commit: int | None) -> None:
    await _fill(bootstrap)
    consumer = AIOKafkaConsumer(TOPIC, bootstrap_servers=bootstrap, group_id="seek-back",
                                enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        tp = TopicPartition(TOPIC, 0)
        assert await _read_all(consumer) == list(range(RECORDS))
        if commit is not None:
            await consumer.commit({tp: OffsetAndMetadata(commit, "")})
        committed = await consumer.seek_to_committed()
        assert committed == {tp: commit}
        # The records fetched (say, then dropped with the flow stopped) are not read again.
        assert await consumer.position(tp) == RECORDS
        assert uncommitted_stream_partitions(committed, set(), "earliest") == [tp]
        consumer.seek(tp, 0)  # what the worker's consumer does for such a partition
        assert await _read_all(consumer) == list(range(RECORDS))
    finally:
        await consumer.stop()


@pytest.mark.parametrize("commit", [None, 0], ids=["no-commit", "committed-at-0"])
def test_aiokafka_leaves_an_uncommitted_partition_past_what_it_fetched(tmp_path: Path, commit: int | None) -> None:
    with embedded_broker(log_path=tmp_path / "broker.log") as broker:
        asyncio.run(_seek_back(broker.bootstrap, commit))
