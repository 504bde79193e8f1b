"""Publishing ingest output to Kafka, shared by the live feeds (and usable by any producer).

The same routing as the replayer (:mod:`streams.kafka.replay`): a batch goes to the
partition of its asset (``replay.replayer.partition_for``), a quote-currency batch
(``broadcast``) to every partition, a dead letter to ``deadletter`` keyed by its reason;
alerts go to ``alerts.cascade`` keyed by ``alert_id``.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer

from monitor.ingest.frames import Routed
from monitor.protocol import Alert, DeadLetter
from replay.replayer import partition_for
from streams import topics
from streams.kafka.security import kafka_client_options

__all__ = ["KafkaPublisher", "Sink", "topic_partitions"]


class Sink(Protocol):
    """Where the live runner sends its output (Kafka in production, a list in tests)."""

    async def send(self, item: Routed | DeadLetter) -> None: ...

    async def send_alert(self, alert: Alert) -> None: ...

    async def flush(self) -> None: ...


async def topic_partitions(producer: AIOKafkaProducer, topic: str, tries: int = 100) -> list[int]:
    """The partitions of ``topic`` (waits for metadata, up to ``tries`` × 0.1 s)."""
    for _ in range(tries):
        parts = await producer.partitions_for(topic)
        if parts:
            return sorted(parts)
        await asyncio.sleep(0.1)
    raise RuntimeError(f"topic {topic} has no partitions")


class KafkaPublisher:
    """Routes batches, dead letters and alerts to their topics on one producer."""

    def __init__(self, producer: AIOKafkaProducer, partitions: list[int], max_pending: int = 5_000) -> None:
        self.producer = producer
        self.partitions = partitions
        self.max_pending = max_pending
        self._pending: list[asyncio.Future[Any]] = []
        self.records = 0

    @classmethod
    async def start(cls, bootstrap: str) -> KafkaPublisher:
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=1 << 20, max_request_size=8 << 20,
            **kafka_client_options(),
        )
        await producer.start()
        try:
            partitions = await topic_partitions(producer, topics.MARKET)
        except BaseException:
            await producer.stop()
            raise
        return cls(producer, partitions)

    async def _send(self, topic: str, value: bytes, key: bytes, partition: int | None = None) -> None:
        self._pending.append(await self.producer.send(topic, value, key=key, partition=partition))
        self.records += 1
        if len(self._pending) > self.max_pending:
            await self.flush()

    async def send(self, item: Routed | DeadLetter) -> None:
        if isinstance(item, DeadLetter):
            await self._send(topics.DEADLETTER, item.encode(), item.reason.encode())
            return
        value = item.batch.encode()
        key = item.batch.asset.encode()
        if item.broadcast:
            for p in self.partitions:
                await self._send(topics.MARKET, value, key, p)
        else:
            part = self.partitions[partition_for(item.batch.asset, len(self.partitions))]
            await self._send(topics.MARKET, value, key, part)

    async def send_alert(self, alert: Alert) -> None:
        await self._send(topics.ALERTS, alert.to_json(), alert.alert_id.encode())

    async def flush(self) -> None:
        pending, self._pending = self._pending, []
        if pending:
            await asyncio.gather(*pending)

    async def stop(self) -> None:
        try:
            await self.flush()
        finally:
            await self.producer.stop()
