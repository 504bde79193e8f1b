"""Records the broker never answers for: a session whose end cannot get them confirmed
counts every item they carry in ``liqmon_publish_dropped_total`` and its exit summary, by
kind (a broadcast batch once, whatever its partitions). Before: the end said only that the
broker did not confirm, and the items stayed uncounted."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from monitor.config import EngineConfig
from monitor.ingest.batch import Batch
from monitor.ingest.frames import Routed
from monitor.metrics import Metrics
from monitor.protocol import DeadLetter
from streams.feeds.runner import LiveRunner
from streams.kafka.publish import KafkaPublisher
from tests.integration.test_feeds_harness import live_config, ws_server
from tests.integration.test_live_broker_outage import quotes

pytestmark = pytest.mark.timeout(60)


class SilentProducer:
    """A producer whose broker takes every record and answers for none (until told to)."""

    def __init__(self) -> None:
        self.futures: list[asyncio.Future[Any]] = []

    async def send(self, topic: str, value: bytes, key: bytes, partition: int | None = None) -> asyncio.Future[Any]:
        self.futures.append(asyncio.get_running_loop().create_future())
        return self.futures[-1]

    def answer(self, count: int) -> None:
        for future in self.futures[:count]:
            if not future.done():
                future.set_result(None)


def _publisher() -> tuple[KafkaPublisher, SilentProducer]:
    producer = SilentProducer()
    return KafkaPublisher(producer, [0, 1, 2]), producer  # type: ignore[arg-type]


async def test_unconfirmed_counts_items_once_and_a_given_up_flush_keeps_them() -> None:
    publisher, producer = _publisher()
    await publisher.send(Routed(Batch(asset="USDT"), broadcast=True))  # three records, one item
    await publisher.send(Routed(Batch(asset="BTC"), broadcast=False))
    await publisher.send(DeadLetter("bad_json", "", "binance-spot", "c", 0, None, b""))
    assert publisher.unconfirmed() == Counter({"batch": 2, "deadletter": 1})
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(publisher.flush(), 0.1)
    assert not any(f.cancelled() for f in producer.futures)  # giving up never cancels the producer's
    producer.answer(2)  # two of the broadcast's three records: the item still waits
    assert publisher.unconfirmed() == Counter({"batch": 2, "deadletter": 1})
    producer.futures[3].set_exception(RuntimeError("refused"))  # the BTC batch: failed, counted there only
    await asyncio.sleep(0)  # its done-callback
    assert publisher.unconfirmed() == Counter({"batch": 1, "deadletter": 1}) and publisher.failed == Counter(
        {"batch": 1})
    producer.answer(5)
    await asyncio.wait_for(publisher.flush(), 1)
    assert publisher.unconfirmed() == Counter() and publisher.failed == Counter({"batch": 1})


async def test_a_session_ending_unconfirmed_counts_what_the_broker_did_not_answer_for() -> None:
    publisher, producer = _publisher()
    metrics = Metrics(CollectorRegistry())
    async with ws_server([quotes]) as ws:
        cfg = live_config("binance-spot", ws.url, ("usdeusdt@bookTicker",)).model_copy(
            update={"publish_drain_s": 0.5})
        runner = LiveRunner(EngineConfig(), cfg, publisher, metrics=metrics)
        stop = asyncio.Event()
        run = asyncio.ensure_future(runner.run(None, stop))
        while len(producer.futures) < 3:
            await asyncio.sleep(0.05)
        stop.set()
        stats = await asyncio.wait_for(run, 10)
    waiting = publisher.unconfirmed()
    assert stats.unconfirmed is not None and waiting["batch"] >= 3
    assert stats.unpublished == waiting  # every item the broker left unanswered, counted by kind
    for kind, count in waiting.items():
        assert metrics.registry.get_sample_value("liqmon_publish_dropped_total", {"kind": kind}) == count
