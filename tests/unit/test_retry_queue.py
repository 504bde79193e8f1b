"""The bounded retry queue in front of the HTTP sinks: outages, overflow, refusals."""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from monitor.metrics import Metrics
from monitor.protocol import Alert
from streams.sinks.alert_sinks import PostOutcome
from streams.sinks.retry_queue import RetryQueueSink


class FlakyReceiver:
    """A deliverer whose receiver is down until ``up`` is set; records what it took."""

    def __init__(self, *, up: bool = True, refuse: frozenset[str] = frozenset()) -> None:
        self.up = up
        self.refuse = refuse
        self.taken: list[str] = []
        self.attempts = 0
        self.closed = False

    async def deliver(self, alert: Alert) -> PostOutcome:
        self.attempts += 1
        if not self.up:
            return PostOutcome.UNAVAILABLE
        if alert.alert_id in self.refuse:
            return PostOutcome.REJECTED
        self.taken.append(str(alert.alert_id))
        return PostOutcome.DELIVERED

    async def close(self) -> None:
        self.closed = True


class YieldingSleep:
    """Stands in for asyncio.sleep: records the backoff and lets other tasks run."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay_s: float) -> None:
        self.delays.append(delay_s)
        await asyncio.sleep(0)


def alert(n: int) -> Alert:
    return Alert(alert_id=f"id-{n}", ts_ms=1_760_131_200_000 + n, kind="peg_deviation", severity="warning",
                 venue=None, asset=None, stage=None, message="", evidence={}, config_hash="c")


async def wait_until(condition: Any, rounds: int = 10_000) -> None:
    for _ in range(rounds):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


def dropped(metrics: Metrics, reason: str) -> float:
    value = metrics.registry.get_sample_value(
        "liqmon_alerts_dropped_total", {"sink": "webhook", "reason": reason})
    return 0.0 if value is None else value


async def test_outage_then_recovery_delivers_every_alert_in_order_with_its_id() -> None:
    receiver = FlakyReceiver(up=False)
    sleep = YieldingSleep()
    metrics = Metrics(CollectorRegistry())
    queue = RetryQueueSink(receiver, name="webhook", max_queued=100, metrics=metrics,
                           rng=random.Random(1), sleep=sleep)
    for n in range(20):
        await queue.send(alert(n))
    await wait_until(lambda: len(sleep.delays) >= 12)  # the outage lasts a dozen retries
    assert receiver.taken == [] and queue.depth == 20
    assert metrics.registry.get_sample_value("liqmon_alert_queue_depth", {"sink": "webhook"}) == 20
    receiver.up = True
    await asyncio.wait_for(queue.join(), 5)
    assert receiver.taken == [f"id-{n}" for n in range(20)]
    assert (queue.delivered, queue.dropped, dropped(metrics, "overflow")) == (20, 0, 0)
    # Backoff grows and stays under the cap (30 s) however long the outage.
    assert sleep.delays[0] <= 1.0 and max(sleep.delays) <= 30.0 and sleep.delays[-1] > 4.0
    await queue.close()
    assert receiver.closed


async def test_overflow_drops_the_oldest_waiting_alert_counted_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    receiver = FlakyReceiver(up=False)
    metrics = Metrics(CollectorRegistry())
    queue = RetryQueueSink(receiver, name="webhook", max_queued=3, metrics=metrics, sleep=YieldingSleep())
    await queue.send(alert(0))
    await wait_until(lambda: receiver.attempts >= 1)  # id-0 is in flight, retried
    with caplog.at_level(logging.ERROR, logger="streams.sinks.retry_queue"):
        for n in range(1, 6):
            await queue.send(alert(n))
    assert queue.depth == 4  # in flight + 3 waiting
    assert dropped(metrics, "overflow") == 2 and queue.dropped == 2
    logged = " ".join(record.getMessage() for record in caplog.records)
    assert "id-1" in logged and "id-2" in logged and "overflow" in logged
    receiver.up = True
    await asyncio.wait_for(queue.join(), 5)
    assert receiver.taken == ["id-0", "id-3", "id-4", "id-5"]
    await queue.close()


async def test_a_refused_alert_is_dropped_counted_and_the_rest_flow() -> None:
    receiver = FlakyReceiver(refuse=frozenset({"id-1"}))
    metrics = Metrics(CollectorRegistry())
    queue = RetryQueueSink(receiver, name="webhook", max_queued=10, metrics=metrics, sleep=YieldingSleep())
    for n in range(3):
        await queue.send(alert(n))
    await asyncio.wait_for(queue.join(), 5)
    assert receiver.taken == ["id-0", "id-2"]
    assert dropped(metrics, "rejected") == 1 and dropped(metrics, "overflow") == 0


async def test_close_logs_what_is_left_undelivered(caplog: pytest.LogCaptureFixture) -> None:
    receiver = FlakyReceiver(up=False)
    queue = RetryQueueSink(receiver, name="alertmanager", max_queued=10, sleep=YieldingSleep())
    for n in range(4):
        await queue.send(alert(n))
    await wait_until(lambda: receiver.attempts >= 2)
    with caplog.at_level(logging.ERROR, logger="streams.sinks.retry_queue"):
        await queue.close()
    assert "alertmanager: 4 alert(s) left undelivered" in caplog.text
    assert receiver.closed


def test_queue_bound_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_queued"):
        RetryQueueSink(FlakyReceiver(), name="webhook", max_queued=0)


def test_sinks_are_built_outside_any_event_loop() -> None:
    # The reported crash: building the Alertmanager sink started its task outside a loop.
    from streams.settings import Settings
    from streams.sinks.delivery import build_delivery

    settings = Settings(alertmanager_url="http://127.0.0.1:9", webhook_url="http://127.0.0.1:9/hook",
                        alert_queue_max=7)
    delivery = build_delivery(settings)
    assert delivery is not None
    assert [(q.name, q.max_queued) for q in delivery.queues] == [("webhook", 7), ("alertmanager", 7)]
    assert build_delivery(Settings()) is None
