"""Alert sinks against real HTTP servers on 127.0.0.1 (aiohttp), plus the cooldown layer."""

from __future__ import annotations

import asyncio
import io
import json
import random
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import pytest
from aiohttp import web

from benchmarks.e2e import start_loopback_app
from monitor.alerts import format_alert_line
from monitor.protocol import Alert
from streams.sinks.alert_sinks import (
    ALERT_ID_HEADER,
    AlertmanagerSink,
    CooldownSink,
    FanoutSink,
    PostOutcome,
    RetryPolicy,
    StdoutSink,
    WebhookSink,
    alert_key,
)
from streams.sinks.retry_queue import RetryQueueSink

T0_MS = 1_760_130_000_000  # 2025-10-10 21:00:00 UTC


def make_alert(**overrides: Any) -> Alert:
    fields: dict[str, Any] = {
        "alert_id": "peg_deviation:binance-spot:USDe:1760130000000",
        "ts_ms": T0_MS,
        "kind": "peg_deviation",
        "severity": "warning",
        "venue": "binance-spot",
        "asset": "USDe",
        "stage": None,
        "message": "USDe trades 120 bps below peg on binance-spot.",
        "evidence": {"deviation_bps": -120.0},
        "config_hash": "cfg-1234",
    }
    fields.update(overrides)
    return Alert(**fields)


@dataclass
class Receiver:
    """A local HTTP receiver: answers with `statuses` in order, then 200; may hang."""

    statuses: list[int] = field(default_factory=list)
    hang: bool = False
    requests: list[tuple[dict[str, str], Any]] = field(default_factory=list)
    got_request: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    #: What a GET answers (Alertmanager's firing alerts), and the GETs' query strings.
    firing: list[dict[str, Any]] = field(default_factory=list)
    queries: list[list[tuple[str, str]]] = field(default_factory=list)
    #: Headers of every answer that is not a 200 (``Retry-After``).
    refusal_headers: dict[str, str] = field(default_factory=dict)

    async def handle_get(self, request: web.Request) -> web.Response:
        self.queries.append(list(request.query.items()))
        return web.json_response(self.firing)

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((dict(request.headers), await request.json()))
        self.got_request.set()
        if self.hang:
            await self.release.wait()
        status = self.statuses.pop(0) if self.statuses else 200
        return web.json_response({}, status=status, headers=self.refusal_headers if status != 200 else None)


@asynccontextmanager
async def serve(receiver: Receiver) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/{tail:.*}", receiver.handle)
    app.router.add_get("/{tail:.*}", receiver.handle_get)
    runner, port = await start_loopback_app(app, shutdown_timeout=1.0)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        receiver.release.set()
        await runner.cleanup()


class RecordingSleep:
    """Stands in for asyncio.sleep: records backoff delays instead of waiting them out."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay_s: float) -> None:
        self.delays.append(delay_s)


class ListSink:
    def __init__(self) -> None:
        self.failures = 0
        self.alerts: list[Alert] = []

    async def send(self, alert: Alert) -> None:
        self.alerts.append(alert)

    async def close(self) -> None:
        return None


class RaisingSink:
    failures = 0

    async def send(self, alert: Alert) -> None:
        raise RuntimeError("broken sink")

    async def close(self) -> None:
        raise RuntimeError("broken close")


# --- webhook -------------------------------------------------------------------------


async def test_webhook_delivers_json_with_alert_id_header() -> None:
    receiver = Receiver()
    async with serve(receiver) as base:
        sink = WebhookSink(f"{base}/hook", sleep=RecordingSleep())
        alert = make_alert()
        await sink.send(alert)
        await sink.close()
    assert (sink.sent, sink.failures, sink.attempts) == (1, 0, 1)
    headers, body = receiver.requests[0]
    assert body == alert.as_dict()
    assert headers[ALERT_ID_HEADER] == alert.alert_id
    assert headers["Idempotency-Key"] == alert.alert_id


@pytest.mark.parametrize(("retry_after", "asked_s"), [("12", 12.0), ("86400", 600.0)])
async def test_webhook_waits_what_retry_after_asks(retry_after: str, asked_s: float) -> None:
    """A receiver's 429 with ``Retry-After`` (Slack's and Discord's webhooks answer so): the
    next POST waits what it asks (up to ten minutes) on top of the backoff; before, the
    backoff's first quarter second, hammering a receiver that asked for quiet."""
    receiver = Receiver(statuses=[429, 429], refusal_headers={"Retry-After": retry_after})
    sleep = RecordingSleep()
    async with serve(receiver) as base:
        sink = WebhookSink(f"{base}/hook", retry=RetryPolicy(max_attempts=5, base_delay_s=1.0, max_delay_s=3.0),
                           rng=random.Random(7), sleep=sleep)
        await sink.send(make_alert())
        await sink.close()
    assert (sink.sent, sink.failures, len(receiver.requests)) == (1, 0, 3)
    asked = [d for d in sleep.delays if d >= 3.0 + 1e-9]
    assert asked == [asked_s, asked_s] and len(sleep.delays) == 4  # two backoff delays, two asked waits


async def test_an_alertmanager_503_with_an_http_date_retry_after_is_obeyed_through_the_retry_queue() -> None:
    """A 503 whose ``Retry-After`` is an HTTP date, met by the retry queue's outer retry too."""
    when = datetime.fromtimestamp(time.time() + 45, tz=UTC)
    receiver = Receiver(statuses=[503], refusal_headers={"Retry-After": format_datetime(when, usegmt=True)})
    sleep = RecordingSleep()
    async with serve(receiver) as base:
        inner = AlertmanagerSink(base, retry=RetryPolicy(max_attempts=1), sleep=sleep)
        queue = RetryQueueSink(inner, name="alertmanager", max_queued=10, sleep=sleep, rng=random.Random(1))
        await queue.send(make_alert())
        await asyncio.wait_for(queue.join(), 10)
        await queue.close()
    assert len(receiver.requests) == 2 and inner.sent == 1
    assert any(40.0 <= d <= 46.0 for d in sleep.delays), sleep.delays


async def test_webhook_retries_500_with_capped_jittered_backoff_then_succeeds() -> None:
    receiver = Receiver(statuses=[500, 500, 503])
    sleep = RecordingSleep()
    policy = RetryPolicy(max_attempts=5, base_delay_s=1.0, max_delay_s=3.0)
    async with serve(receiver) as base:
        sink = WebhookSink(f"{base}/hook", retry=policy, rng=random.Random(7), sleep=sleep)
        await sink.send(make_alert())
        await sink.close()
    assert (sink.sent, sink.failures, sink.attempts) == (1, 0, 4)
    # Every attempt is the same alert with the same id: the receiver can dedupe.
    ids = {headers[ALERT_ID_HEADER] for headers, _ in receiver.requests}
    assert len(receiver.requests) == 4
    assert ids == {make_alert().alert_id}
    # Equal jitter: delay n lies in [c/2, c] with c = min(3, 1 * 2**n).
    assert len(sleep.delays) == 3
    for n, delay in enumerate(sleep.delays):
        ceiling = min(3.0, 2.0**n)
        assert ceiling / 2 <= delay <= ceiling


async def test_webhook_slow_receiver_times_out_and_is_counted_not_raised() -> None:
    receiver = Receiver(hang=True)
    sleep = RecordingSleep()
    async with serve(receiver) as base:
        sink = WebhookSink(
            f"{base}/hook", timeout_s=0.2, retry=RetryPolicy(max_attempts=2), sleep=sleep
        )
        await sink.send(make_alert())
        await sink.close()
    assert (sink.sent, sink.failures, sink.attempts) == (0, 1, 2)
    assert len(receiver.requests) == 2
    assert len(sleep.delays) == 1


async def test_webhook_client_error_is_not_retried() -> None:
    receiver = Receiver(statuses=[400])
    async with serve(receiver) as base:
        sink = WebhookSink(f"{base}/hook", sleep=RecordingSleep())
        await sink.send(make_alert())
        await sink.close()
    assert (sink.sent, sink.failures, sink.attempts) == (0, 1, 1)


async def test_webhook_connection_refused_is_counted() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sink = WebhookSink(
        f"http://127.0.0.1:{port}/hook", retry=RetryPolicy(max_attempts=3), sleep=RecordingSleep()
    )
    await sink.send(make_alert())
    await sink.close()
    assert (sink.sent, sink.failures, sink.attempts) == (0, 1, 3)


def test_retry_policy_is_capped_and_rejects_nonsense() -> None:
    policy = RetryPolicy(max_attempts=10, base_delay_s=0.5, max_delay_s=4.0)
    rng = random.Random(1)
    delays = [policy.delay_s(n, rng) for n in range(10)]
    assert all(2.0 <= d <= 4.0 for d in delays[3:])
    assert delays[0] <= 0.5
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)


# --- Alertmanager --------------------------------------------------------------------


async def test_alertmanager_fire_escalate_resend_resolve() -> None:
    receiver = Receiver()
    async with serve(receiver) as base:
        sink = AlertmanagerSink(base, extra_labels={"deployment": "test"}, sleep=RecordingSleep())
        await sink.send(make_alert())
        await sink.send(make_alert(alert_id="b", ts_ms=T0_MS + 60_000, severity="critical"))
        await sink.resend_active()
        resolved = make_alert(
            alert_id="c", ts_ms=T0_MS + 120_000, severity="info", evidence={"resolved": True}
        )
        await sink.send(resolved)
        await sink.close()
    assert sink.failures == 0
    assert sink.active == {}
    batches = [body for _, body in receiver.requests]
    assert len(batches) == 4

    (first,) = batches[0]
    assert first["labels"] == {
        "alertname": "LiqmonPegDeviation",
        "kind": "peg_deviation",
        "severity": "warning",
        "venue": "binance-spot",
        "asset": "USDe",
        "source": "liqmon",
        "deployment": "test",
        "alert_id": make_alert().alert_id,
    }
    assert first["annotations"]["message"] == make_alert().message
    # The first alert of a key asked Alertmanager for one already firing, by exactly its labels.
    assert sorted(receiver.queries[0]) == sorted([
        ("filter", 'alertname="LiqmonPegDeviation"'), ("filter", 'asset="USDe"'),
        ("filter", 'deployment="test"'), ("filter", 'kind="peg_deviation"'), ("filter", 'source="liqmon"'),
        ("filter", 'venue="binance-spot"'), ("active", "true"), ("silenced", "true"), ("inhibited", "true"),
    ])
    assert len(receiver.queries) == 1
    assert first["startsAt"] == "2025-10-10T21:00:00.000Z"
    assert "endsAt" not in first

    # Severity changed: the warning alert ends, the critical one starts.
    ended, started = batches[1]
    assert ended["labels"]["severity"] == "warning"
    assert ended["endsAt"] == "2025-10-10T21:01:00.000Z"
    assert started["labels"]["severity"] == "critical"
    assert "endsAt" not in started

    (resent,) = batches[2]
    assert resent["labels"]["severity"] == "critical"
    assert "endsAt" not in resent

    # Resolution carries the labels of the active alert (critical), not of the resolve
    # message (info), so Alertmanager matches the same alert.
    (final,) = batches[3]
    assert final["labels"]["severity"] == "critical" and final["labels"]["alert_id"] == "b"
    assert final["endsAt"] == "2025-10-10T21:02:00.000Z"


async def test_alertmanager_same_state_again_keeps_the_alert_that_opened_it() -> None:
    receiver = Receiver()
    async with serve(receiver) as base:
        sink = AlertmanagerSink(base, sleep=RecordingSleep())
        await sink.send(make_alert())
        await sink.send(make_alert(alert_id="again", ts_ms=T0_MS + 30_000, message="still 140 bps below"))
        await sink.close()
    (first,), (update,) = (body for _, body in receiver.requests)
    # One Alertmanager alert: same labels (the opening alert's id), newer annotations.
    assert update["labels"] == first["labels"] and update["labels"]["alert_id"] == make_alert().alert_id
    assert update["annotations"]["latest_alert_id"] == "again"
    assert update["annotations"]["message"] == "still 140 bps below"
    assert update["startsAt"] == first["startsAt"] and "endsAt" not in update


async def test_alertmanager_a_new_sink_takes_over_the_alert_left_firing() -> None:
    """After a restart (or a rebalance) the new sink resolves the alert another one opened."""
    left = {"labels": {"alertname": "LiqmonPegDeviation", "kind": "peg_deviation", "source": "liqmon",
                       "venue": "binance-spot", "asset": "USDe", "severity": "high", "alert_id": "opened-before"},
            "annotations": {"message": "USDe 300 bps below peg"}, "startsAt": "2025-10-10T20:58:00.000Z"}
    other_venue = {**left, "labels": {**left["labels"], "venue": "okx", "alert_id": "x"}}
    receiver = Receiver(firing=[other_venue, left])
    async with serve(receiver) as base:
        sink = AlertmanagerSink(base, sleep=RecordingSleep())
        resolved = make_alert(alert_id="c", ts_ms=T0_MS + 120_000, severity="info", evidence={"resolved": True})
        assert await sink.deliver(resolved) is PostOutcome.DELIVERED
        # Nothing firing for another key: its resolution has nothing to end.
        assert await sink.deliver(make_alert(alert_id="d", venue="bybit", evidence={"resolved": True})) \
            is PostOutcome.DELIVERED
        await sink.close()
    ((final,),) = [body for _, body in receiver.requests]
    assert final["labels"] == left["labels"]
    assert final["startsAt"] == "2025-10-10T20:58:00.000Z" and final["endsAt"] == "2025-10-10T21:02:00.000Z"
    assert ("filter", 'asset="USDe"') in receiver.queries[0] and len(receiver.queries) == 2


async def test_alertmanager_take_over_ignores_strangers_and_waits_for_an_unreachable_one() -> None:
    receiver = Receiver(firing=[{"unexpected": True}, {"labels": {"alertname": "Other", "kind": "x"}}])
    async with serve(receiver) as base:
        sink = AlertmanagerSink(base, sleep=RecordingSleep())
        assert await sink.deliver(make_alert()) is PostOutcome.DELIVERED
        await sink.close()
    ((opened,),) = [body for _, body in receiver.requests]
    assert opened["labels"]["alert_id"] == make_alert().alert_id and "endsAt" not in opened
    # Alertmanager unreachable: the alert waits (retry queue), nothing is held yet.
    down = AlertmanagerSink("http://127.0.0.1:1", retry=RetryPolicy(max_attempts=1), sleep=RecordingSleep())
    assert await down.deliver(make_alert()) is PostOutcome.UNAVAILABLE
    assert down.active == {}
    await down.close()


async def test_alertmanager_background_resend_while_active() -> None:
    receiver = Receiver()
    async with serve(receiver) as base:
        sink = AlertmanagerSink(base, resend_interval_s=0.01, sleep=RecordingSleep())
        await sink.send(make_alert())
        receiver.got_request.clear()
        sink.start()
        await asyncio.wait_for(receiver.got_request.wait(), timeout=10)
        await sink.close()
    assert len(receiver.requests) >= 2
    resent = receiver.requests[1][1]
    assert resent[0]["labels"]["kind"] == "peg_deviation"
    assert "endsAt" not in resent[0]


async def test_alertmanager_retry_of_a_failed_alert_posts_the_same_batch() -> None:
    # Alertmanager down while the severity changes: the retry must still end the warning
    # alert, although the sink's active set already moved on to the critical one.
    receiver = Receiver(statuses=[200, 503, 503])
    async with serve(receiver) as base:
        sink = AlertmanagerSink(base, retry=RetryPolicy(max_attempts=1), sleep=RecordingSleep())
        assert await sink.deliver(make_alert()) is PostOutcome.DELIVERED
        escalation = make_alert(alert_id="b", ts_ms=T0_MS + 60_000, severity="critical")
        assert await sink.deliver(escalation) is PostOutcome.UNAVAILABLE
        assert await sink.deliver(escalation) is PostOutcome.UNAVAILABLE
        assert await sink.deliver(escalation) is PostOutcome.DELIVERED
        await sink.close()
    first_try, retried = receiver.requests[1][1], receiver.requests[3][1]
    assert retried == first_try
    assert [(a["labels"]["severity"], "endsAt" in a) for a in retried] == [("warning", True), ("critical", False)]


async def test_alertmanager_failures_are_counted_not_raised() -> None:
    receiver = Receiver(statuses=[500, 500, 500, 500])
    async with serve(receiver) as base:
        sink = AlertmanagerSink(base, retry=RetryPolicy(max_attempts=2), sleep=RecordingSleep())
        await sink.send(make_alert())
        await sink.close()
    assert sink.failures == 1
    assert sink.sent == 0
    assert len(receiver.requests) == 2


# --- stdout and fan-out --------------------------------------------------------------


async def test_stdout_line_and_failure_counting() -> None:
    stream = io.StringIO()
    sink = StdoutSink(stream)
    await sink.send(make_alert(stage=4))
    assert stream.getvalue() == (
        "2025-10-10 21:00:00.000Z WARNING  peg_deviation stage 4 binance-spot/USDe: "
        "USDe trades 120 bps below peg on binance-spot.\n"
    )
    assert format_alert_line(
        make_alert(venue=None, asset=None, evidence={"resolved": True})
    ).endswith("peg_deviation - RESOLVED: USDe trades 120 bps below peg on binance-spot.")
    stream.close()
    await sink.send(make_alert())
    assert (sink.sent, sink.failures) == (1, 1)


async def test_fanout_isolates_a_raising_sink() -> None:
    good = ListSink()
    fanout = FanoutSink([RaisingSink(), good])
    await fanout.send(make_alert())
    await fanout.close()
    assert len(good.alerts) == 1
    assert fanout.failures == 2


# --- cooldown ------------------------------------------------------------------------


def cascade_alerts() -> list[Alert]:
    """A synthetic crash half hour: repeated peg alerts on 2 venues, rising stages."""
    alerts: list[Alert] = []
    severities = ["warning"] * 5 + ["high"] * 10 + ["critical"] * 40 + ["high"] * 5
    for minute, severity in enumerate(severities):
        for venue in ("binance-spot", "bybit-spot"):
            ts_ms = T0_MS + minute * 30_000
            alerts.append(
                make_alert(
                    alert_id=f"peg:{venue}:{ts_ms}", ts_ms=ts_ms, severity=severity, venue=venue
                )
            )
    for index, stage in enumerate((1, 2, 4, 4, 5, 5, 6, 7, 7, 8)):
        ts_ms = T0_MS + index * 60_000
        alerts.append(
            make_alert(
                alert_id=f"stage:{stage}:{ts_ms}",
                ts_ms=ts_ms,
                kind="cascade_stage",
                severity="critical" if stage >= 5 else "high",
                venue=None,
                asset=None,
                stage=stage,
            )
        )
    return sorted(alerts, key=lambda a: (a.ts_ms, a.alert_id))


async def test_cooldown_turns_a_cascade_into_a_handful() -> None:
    inner = ListSink()
    sink = CooldownSink(inner, cooldown_ms=300_000)
    alerts = cascade_alerts()
    for alert in alerts:
        await sink.send(alert)
        await sink.send(alert)  # at-least-once redelivery upstream
    passed = [(a.kind, a.venue, a.severity, a.stage) for a in inner.alerts]
    peg_binance = [p for p in passed if p[:2] == ("peg_deviation", "binance-spot")]
    # first (warning), escalations (high at 2.5 min, critical at 7.5 min), then one reminder
    # per 5 minutes of event time, whatever the severity has fallen back to.
    assert [p[2] for p in peg_binance] == [
        "warning",
        "high",
        "critical",
        "critical",
        "critical",
        "critical",
        "high",
    ]
    stages = [p[3] for p in passed if p[0] == "cascade_stage"]
    assert stages == [1, 2, 4, 5, 6, 7, 8]
    assert len(inner.alerts) == 2 * 7 + 7
    assert sink.duplicates == len(alerts)
    assert sink.suppressed == len(alerts) - len(inner.alerts)
    assert sink.passed == len(inner.alerts)


async def test_cooldown_passes_resolution_once_and_refire_after_cooldown() -> None:
    inner = ListSink()
    sink = CooldownSink(inner, cooldown_ms=60_000)
    resolved = {"resolved": True}
    sequence = [
        make_alert(alert_id="r0", evidence=resolved),  # nothing was firing: dropped
        make_alert(alert_id="a"),
        make_alert(alert_id="b", ts_ms=T0_MS + 10_000, evidence=resolved),
        make_alert(alert_id="c", ts_ms=T0_MS + 20_000, evidence=resolved),  # already resolved
        make_alert(alert_id="d", ts_ms=T0_MS + 30_000),  # flap inside the cooldown
        make_alert(alert_id="e", ts_ms=T0_MS + 80_000),  # after the cooldown
        make_alert(alert_id="f", ts_ms=T0_MS + 90_000, venue="okx"),  # other key
    ]
    for alert in sequence:
        await sink.send(alert)
    assert [a.alert_id for a in inner.alerts] == ["a", "b", "e", "f"]
    assert alert_key(inner.alerts[-1]) == ("peg_deviation", "okx", "USDe")


async def test_cooldown_in_front_of_webhook_end_to_end() -> None:
    receiver = Receiver()
    async with serve(receiver) as base:
        webhook = WebhookSink(f"{base}/hook", sleep=RecordingSleep())
        sink = CooldownSink(webhook)
        for alert in cascade_alerts():
            await sink.send(alert)
        await sink.close()
    assert webhook.sent == sink.passed == len(receiver.requests)
    assert len({json.dumps(body, sort_keys=True) for _, body in receiver.requests}) == sink.passed
