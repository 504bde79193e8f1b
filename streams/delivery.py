"""Alert delivery from the worker: ``alerts.cascade`` → stdout / webhook / Alertmanager.

The topic is always written (by the engine agents). Delivery is a separate agent in the
same consumer group, so each alert is delivered by exactly one worker, behind a
per-(kind, venue, asset) cooldown where escalations always pass; webhook and
Alertmanager retry with capped, jittered backoff and carry the deterministic alert id.
"""

from __future__ import annotations

import logging

import faust
from mode import CrashingSupervisor
from pydantic import ValidationError

from monitor.alerts import Alert
from monitor.metrics import Metrics
from streams import topics
from streams.settings import Settings
from streams.sinks import AlertmanagerSink, AlertSink, CooldownSink, FanoutSink, StdoutSink, WebhookSink

__all__ = ["attach_delivery", "build_sink"]

log = logging.getLogger("liqmon.delivery")


def build_sink(settings: Settings) -> AlertSink | None:
    """The configured sinks behind one cooldown, or None when none is configured."""
    sinks: list[AlertSink] = []
    if settings.alert_stdout:
        sinks.append(StdoutSink())
    if settings.webhook_url:
        sinks.append(WebhookSink(settings.webhook_url))
    if settings.alertmanager_url:
        am = AlertmanagerSink(settings.alertmanager_url)
        am.start()
        sinks.append(am)
    if not sinks:
        return None
    inner: AlertSink = sinks[0] if len(sinks) == 1 else FanoutSink(sinks)
    return CooldownSink(inner, cooldown_ms=settings.alert_cooldown_ms)


def attach_delivery(app: faust.App, settings: Settings, metrics: Metrics) -> bool:
    """Register the delivery agent when a sink is configured; returns whether it did."""
    sink = build_sink(settings)
    if sink is None:
        return False
    alerts_topic = app.topic(topics.ALERTS, key_serializer="raw", value_serializer="raw")
    delivered = metrics.topic_records_total.labels(topics.ALERTS, "in")

    @app.agent(alerts_topic, name="deliver", supervisor_strategy=CrashingSupervisor)
    async def deliver(stream: faust.StreamT[bytes]) -> None:
        async for value in stream:
            delivered.inc()
            try:
                alert = Alert.model_validate_json(value)
            except ValidationError as exc:
                log.error("undeliverable record on %s: %s", topics.ALERTS, exc.errors()[0]["msg"])
                metrics.deadletter_total.labels("invalid_alert").inc()
                continue
            await sink.send(alert.model_dump(mode="json"))  # sinks never raise; failures are counted

    return True
