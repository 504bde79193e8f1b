"""Alert delivery from the worker: ``alerts.cascade`` → stdout / webhook / Alertmanager.

The topic is always written (by the engine agents). Delivery is a separate agent in the
same consumer group, so each alert is delivered by exactly one worker, behind a
per-(kind, venue, asset) cooldown where escalations always pass; webhook and
Alertmanager each sit behind a bounded retry queue (:mod:`streams.sinks.retry_queue`) that
outlives a receiver outage, and carry the deterministic alert id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any, cast

import faust
from mode import CrashingSupervisor

from monitor.metrics import Metrics
from monitor.protocol import Alert, RecordError
from streams import topics
from streams.settings import Settings
from streams.sinks.alert_sinks import AlertmanagerSink, AlertSink, CooldownSink, FanoutSink, StdoutSink, WebhookSink
from streams.sinks.retry_queue import Deliverer, RetryQueueSink

__all__ = ["SHUTDOWN_DRAIN_S", "Delivery", "attach_delivery", "build_delivery"]

log = logging.getLogger("liqmon.delivery")


#: How long a stopping worker lets its retry queues drain before it logs what is left.
SHUTDOWN_DRAIN_S = 3.0


@dataclass(frozen=True)
class Delivery:
    """The sink the agent sends to, and the retry queues inside it (drained at shutdown)."""

    sink: AlertSink
    queues: tuple[RetryQueueSink, ...]

    @property
    def pending(self) -> int:
        """Alerts handed to a retry queue and not yet delivered or dropped."""
        return sum(queue.depth for queue in self.queues)

    async def shutdown(self, drain_s: float = SHUTDOWN_DRAIN_S) -> None:
        """Give the queues ``drain_s`` to empty, then close every sink (logging leftovers)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(queue.join() for queue in self.queues)), drain_s)
        await self.sink.close()


def build_delivery(settings: Settings, metrics: Metrics | None = None) -> Delivery | None:
    """The configured sinks behind one cooldown and their retry queues, or None without a sink.

    Only builds: nothing here needs an event loop. The HTTP sinks start their tasks (retry
    queue, Alertmanager re-sender) on their first alert, inside the worker's loop.
    """
    sinks: list[AlertSink] = []
    if settings.alert_stdout:
        sinks.append(StdoutSink())
    http: dict[str, Deliverer] = {}
    if settings.webhook_url:
        http["webhook"] = WebhookSink(settings.webhook_url)
    if settings.alertmanager_url:
        http["alertmanager"] = AlertmanagerSink(
            settings.alertmanager_url, resend_interval_s=settings.alertmanager_resend_s
        )
    queues = tuple(
        RetryQueueSink(deliverer, name=name, max_queued=settings.alert_queue_max, metrics=metrics)
        for name, deliverer in http.items()
    )
    sinks.extend(queues)
    if not sinks:
        return None
    inner: AlertSink = sinks[0] if len(sinks) == 1 else FanoutSink(sinks)
    return Delivery(CooldownSink(inner, cooldown_ms=settings.alert_cooldown_ms), queues)


def attach_delivery(app: faust.App, settings: Settings, metrics: Metrics) -> bool:
    """Register the delivery agent when a sink is configured; returns whether it did."""
    delivery = build_delivery(settings, metrics)
    if delivery is None:
        return False
    sink = delivery.sink
    alerts_topic = app.topic(topics.ALERTS, key_serializer="raw", value_serializer="raw")
    delivered = metrics.topic_records_total.labels(topics.ALERTS, "in")

    # An alert's offset is committed only once every queue is empty (each alert handed to
    # them delivered, or dropped and counted): a worker that crashes with alerts waiting
    # for a receiver leaves them to the next owner of the partition, which sends them again
    # (at-least-once, same ids).
    held: list[tuple[Any, Any]] = []

    async def ack_delivered() -> None:
        if held and delivery.pending == 0:
            done = held[:]
            held.clear()
            for stream, event in done:
                await stream.ack(event)

    @app.agent(alerts_topic, name="deliver", supervisor_strategy=CrashingSupervisor)
    async def deliver(stream: faust.StreamT[bytes]) -> None:
        manual = cast(faust.Stream[bytes], stream).noack()
        async for event in manual.events():
            delivered.inc()
            held.append((manual, event))
            value = event.value if isinstance(event.value, bytes) else bytes(event.value or b"")
            try:
                alert = Alert.from_json(value)
            except RecordError as exc:
                log.error("undeliverable record on %s: %s", topics.ALERTS, exc.detail)
                metrics.deadletter_total.labels("invalid_alert").inc()
            else:
                await sink.send(alert)  # sinks never raise; failures are counted
            await ack_delivered()

    @app.timer(interval=1.0)  # type: ignore[untyped-decorator]
    async def ack_drained() -> None:
        await ack_delivered()

    # faust calls receivers as (app, partitions, signal=..., ...); mode types them as *args
    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def forget_held(sender: faust.App, revoked: set[Any], **_: Any) -> None:
        held[:] = [(s, e) for s, e in held if e.message.tp not in revoked]

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def close_sinks(sender: faust.App, **_: Any) -> None:
        await delivery.shutdown()

    return True
