"""Publishing ingest output to Kafka, shared by the live feeds (and usable by any producer).

The same routing as the replayer (:mod:`streams.kafka.replay`): a batch goes to the
partition of its asset (``replay.replayer.partition_for``), a quote-currency batch
(``broadcast``) to every partition, a dead letter to ``deadletter`` keyed by its reason;
alerts go to ``alerts.cascade`` keyed by ``alert_id``.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer

from monitor.ingest.frames import Routed
from monitor.protocol import Alert, DeadLetter
from replay.replayer import partition_for
from streams import topics
from streams.kafka.security import kafka_client_options

__all__ = ["ITEM_KINDS", "KafkaPublisher", "Sink", "item_kind", "topic_partitions"]


#: The kinds of published item (:func:`item_kind`).
ITEM_KINDS = ("alert", "batch", "deadletter")


def item_kind(item: object) -> str:
    """``alert``, ``deadletter`` or ``batch``: the kind of a published item (a metric's label)."""
    if isinstance(item, Alert):
        return "alert"
    if isinstance(item, DeadLetter):
        return "deadletter"
    return "batch"


class Sink(Protocol):
    """Where the live runner sends its output (Kafka in production, a list in tests)."""

    #: Items the broker did not take after they were sent (the producer's error), by :func:`item_kind`.
    failed: Counter[str]

    async def send(self, item: Routed | DeadLetter) -> None: ...

    async def send_alert(self, alert: Alert) -> None: ...

    async def flush(self) -> None: ...

    def unconfirmed(self) -> Counter[str]:
        """Items sent whose records the broker has not yet answered for, by :func:`item_kind`."""
        ...


async def topic_partitions(producer: AIOKafkaProducer, topic: str, tries: int = 100) -> list[int]:
    """The partitions of ``topic`` (waits for metadata, up to ``tries`` × 0.1 s)."""
    for _ in range(tries):
        parts = await producer.partitions_for(topic)
        if parts:
            return sorted(parts)
        await asyncio.sleep(0.1)
    raise RuntimeError(f"topic {topic} has no partitions")


class _Delivery:
    """The records of one item: the item counts once in ``failed`` when any of them fails."""

    __slots__ = ("counted", "failed", "kind")

    def __init__(self, kind: str, failed: Counter[str]) -> None:
        self.kind = kind
        self.failed = failed
        self.counted = False

    def __call__(self, future: asyncio.Future[Any]) -> None:
        # Every record's error is read (else asyncio logs it as never retrieved); the item counts once.
        if not future.cancelled() and future.exception() is not None and not self.counted:
            self.counted = True
            self.failed[self.kind] += 1


class KafkaPublisher:
    """Routes batches, dead letters and alerts to their topics on one producer. A record the
    broker does not take (the producer's error, once its retries are spent) is counted in
    :attr:`failed` by the kind of its item, never raised: the session goes on."""

    def __init__(self, producer: AIOKafkaProducer, partitions: list[int], max_pending: int = 5_000) -> None:
        self.producer = producer
        self.partitions = partitions
        self.max_pending = max_pending
        self._pending: list[tuple[asyncio.Future[Any], _Delivery]] = []
        self.records = 0
        self.failed: Counter[str] = Counter()

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

    async def _send(self, delivery: _Delivery, topic: str, value: bytes, key: bytes, partition: int | None = None,
                    ) -> None:
        future = await self.producer.send(topic, value, key=key, partition=partition)
        future.add_done_callback(delivery)
        self._pending.append((future, delivery))
        self.records += 1
        if len(self._pending) > self.max_pending:
            await self.flush()

    async def send(self, item: Routed | DeadLetter) -> None:
        delivery = _Delivery(item_kind(item), self.failed)
        if isinstance(item, DeadLetter):
            await self._send(delivery, topics.DEADLETTER, item.encode(), item.reason.encode())
            return
        value = item.batch.encode()
        key = item.batch.asset.encode()
        if item.broadcast:
            for p in self.partitions:
                await self._send(delivery, topics.MARKET, value, key, p)
        else:
            part = self.partitions[partition_for(item.batch.asset, len(self.partitions))]
            await self._send(delivery, topics.MARKET, value, key, part)

    async def send_alert(self, alert: Alert) -> None:
        await self._send(_Delivery(item_kind(alert), self.failed), topics.ALERTS, alert.to_json(),
                         alert.alert_id.encode())

    async def flush(self) -> None:
        """Wait until the broker has answered for every record sent (failures are counted in
        :attr:`failed`). A flush given up on (cancelled, timed out) leaves the records it
        waited for in :meth:`unconfirmed` until they are answered."""
        if self._pending:
            await asyncio.wait([future for future, _ in self._pending])  # never cancels them
            self._pending = [(future, item) for future, item in self._pending if not future.done()]

    def unconfirmed(self) -> Counter[str]:
        """Items sent with a record the broker has not answered for yet, by kind (a broadcast
        batch once, whatever its partitions; an item already counted in :attr:`failed`, not)."""
        waiting = dict.fromkeys(item for future, item in self._pending if not future.done() and not item.counted)
        return Counter(item.kind for item in waiting)

    async def stop(self) -> None:
        try:
            await self.flush()
        finally:
            await self.producer.stop()
