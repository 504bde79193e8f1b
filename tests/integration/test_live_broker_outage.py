"""``liqmon live`` while its broker is away: the session keeps reading its venues, holds at
most ``[live] publish_backlog_items`` for the broker and sheds the oldest beyond that (each
counted in ``liqmon_publish_dropped_total``), resumes publishing when the broker returns,
and a session that ends during the outage ends within ``publish_drain_s``, saying what the
broker never got. Before: the backlog grew without bound (≈ 0.6 MB/s here, for as long as
the outage lasted) and the session's end raised the producer's error out of the run."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest
from prometheus_client import CollectorRegistry

from monitor.config import EngineConfig
from monitor.metrics import Metrics
from streams.feeds.runner import LiveRunner, LiveStats
from streams.kafka.broker import EmbeddedBroker, start_broker
from streams.kafka.publish import KafkaPublisher
from streams.kafka.replay import ensure_topics
from tests.integration.test_feeds_binance import ack
from tests.integration.test_feeds_harness import Conn, live_config, ws_server

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.timeout(240)]


async def quotes(conn: Conn) -> None:
    """USDe quotes as fast as the loop sends them, 2,000 a second: a batch every flush."""
    await ack(conn)
    i = 0
    while True:
        await conn.send({"stream": "usdeusdt@bookTicker", "data": {
            "u": i, "s": "USDEUSDT", "b": "0.9999", "B": "50000", "a": "1.0001", "A": "50000"}})
        i += 1
        if i % 20 == 0:
            await asyncio.sleep(0.01)


async def until(done: Callable[[], bool], what: str, timeout_s: float = 60.0, every: Callable[[], None] = lambda: None,
                ) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        every()
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        await asyncio.sleep(0.05)


@dataclass
class Session:
    runner: LiveRunner
    publisher: KafkaPublisher
    metrics: Metrics
    stop: asyncio.Event
    run: asyncio.Future[LiveStats]


@asynccontextmanager
async def session(broker: EmbeddedBroker, **live: float) -> AsyncIterator[Session]:
    """A live session publishing to ``broker``, running and past its first 50 records."""
    await ensure_topics(broker.bootstrap, 8)
    publisher = await KafkaPublisher.start(broker.bootstrap)
    metrics = Metrics(CollectorRegistry())
    async with ws_server([quotes]) as ws:
        cfg = live_config("binance-spot", ws.url, ("usdeusdt@bookTicker",)).model_copy(update=live)
        runner = LiveRunner(EngineConfig(), cfg, publisher, metrics=metrics)
        stop = asyncio.Event()
        run = asyncio.ensure_future(runner.run(None, stop))
        await until(lambda: publisher.records > 50, "records published")
        yield Session(runner, publisher, metrics, stop, run)


def dropped(metrics: Metrics, kind: str = "batch") -> float:
    return metrics.registry.get_sample_value("liqmon_publish_dropped_total", {"kind": kind}) or 0.0


async def test_a_broker_away_is_a_bounded_backlog_and_publishing_resumes_when_it_returns() -> None:
    broker = await asyncio.to_thread(start_broker)
    try:
        async with session(broker, publish_backlog_items=20) as live:
            broker.stop()
            most = [0]

            def watch() -> None:
                most[0] = max(most[0], live.runner.backlog_items)

            await until(lambda: sum(live.runner.stats.unpublished.values()) > 20, "the oldest shed", every=watch)
            assert most[0] <= 20 and dropped(live.metrics) == live.runner.stats.unpublished["batch"] > 20
            assert live.metrics.registry.get_sample_value("liqmon_publish_backlog_items") <= 20
            broker = await asyncio.to_thread(start_broker, broker.port)  # back, at the same address
            await ensure_topics(broker.bootstrap, 8)
            at_return, shed_at_return = live.publisher.records, sum(live.runner.stats.unpublished.values())
            await until(lambda: live.publisher.records > at_return + 100, "publishing resumed")
            await until(lambda: live.runner.backlog_items < 5, "the backlog drained")
            live.stop.set()
            stats = await asyncio.wait_for(live.run, 60)
        # What was shed, and the records in flight when the broker went that it never took:
        # each counted, none raised; the broker confirmed everything sent after its return.
        assert stats.unconfirmed is None and sum(stats.unpublished.values()) >= shed_at_return
        assert dropped(live.metrics) == stats.unpublished["batch"]
    finally:
        broker.stop()


async def test_a_session_ending_while_the_broker_is_away_ends_in_time_and_says_so() -> None:
    broker = await asyncio.to_thread(start_broker)
    try:
        async with session(broker, publish_drain_s=2.0) as live:
            broker.stop()
            await asyncio.sleep(1.0)
            live.stop.set()
            started = time.monotonic()
            stats = await asyncio.wait_for(live.run, 60)  # before: the producer's error raised here
            took_s = time.monotonic() - started
        assert took_s < 2.0 + 5.0, took_s
        assert stats.unconfirmed is not None or sum(stats.unpublished.values()) > 0
    finally:
        broker.stop()
