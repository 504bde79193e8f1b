"""Alert sinks: where liqmon alerts go after the engine emits them.

An alert is a :class:`monitor.protocol.Alert`, the alert JSON contract: ``alert_id`` (deterministic),
``ts_ms`` (event time), ``kind``, ``severity`` (info|warning|high|critical), ``venue``,
``asset``, ``stage``, ``message``, ``evidence`` (``evidence["resolved"] is True`` means the
condition cleared) and ``config_hash``.

Sinks:

- :class:`StdoutSink`: one human line per alert.
- :class:`WebhookSink`: JSON POST with retries (capped exponential backoff with jitter);
  every attempt carries the alert id in ``X-Liqmon-Alert-Id`` / ``Idempotency-Key`` so a
  receiver can drop the duplicates that at-least-once delivery produces.
- :class:`AlertmanagerSink`: Alertmanager's v2 API; keeps active alerts alive by re-sending
  them and resolves them (``endsAt``) when a resolved alert arrives for the same
  (kind, venue, asset).
- :class:`CooldownSink`: per-(kind, venue, asset) cooldown in front of any sink, so a
  cascade yields a readable handful of messages; escalations and resolutions always pass.
- :class:`FanoutSink`: delivers to several sinks concurrently.

No sink ever raises into the caller (cancellation aside): failures are logged and counted
in the sink's ``failures`` attribute.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import sys
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Any, Protocol, TextIO

import aiohttp
from tenacity import AsyncRetrying, RetryCallState, retry_if_result, stop_after_attempt, wait_none

from monitor.alerts import SEVERITY_RANK, format_alert_line
from monitor.protocol import Alert
from streams.backoff import BackoffPolicy, JitteredExponential, retry_after_s

__all__ = [
    "ALERT_ID_HEADER",
    "AlertKey",
    "AlertSink",
    "AlertmanagerSink",
    "CooldownSink",
    "FanoutSink",
    "PostOutcome",
    "RetryPolicy",
    "StdoutSink",
    "WebhookSink",
    "alert_key",
    "alertmanager_payload",
    "is_resolved",
]

log = logging.getLogger(__name__)

AlertKey = tuple[str, str | None, str | None]
Sleep = Callable[[float], Awaitable[None]]

ALERT_ID_HEADER = "X-Liqmon-Alert-Id"
_EVIDENCE_ANNOTATION_MAX_CHARS = 4000
_RETRYABLE_STATUS = frozenset({408, 425, 429})
#: The longest ``Retry-After`` a receiver is obeyed for (its alerts wait in the retry queue meanwhile).
MAX_RETRY_AFTER_S = 600.0


class PostOutcome(Enum):
    """How one delivery ended: taken, worth retrying later, or refused for good."""

    DELIVERED = "delivered"
    UNAVAILABLE = "unavailable"  # connection refused, timeout, 5xx, 408/425/429
    REJECTED = "rejected"  # any other 4xx, or an alert the sink cannot encode


class AlertSink(Protocol):
    """What every sink provides. ``send`` never raises; ``failures`` counts what failed."""

    failures: int

    async def send(self, alert: Alert) -> None: ...

    async def close(self) -> None: ...


def alert_key(alert: Alert) -> AlertKey:
    """The grouping key: (kind, venue, asset)."""
    return alert.kind, alert.venue, alert.asset


def is_resolved(alert: Alert) -> bool:
    """True when the alert says its condition cleared (``evidence.resolved is True``)."""
    return alert.evidence.get("resolved") is True


def _severity_rank(alert: Alert) -> int:
    return SEVERITY_RANK[alert.severity]


def _utc(ts_ms: int) -> datetime:
    return datetime.fromtimestamp(ts_ms / 1000, tz=UTC)


def _rfc3339(ts_ms: int) -> str:
    return _utc(ts_ms).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently an HTTP sink retries one delivery."""

    max_attempts: int = 5
    base_delay_s: float = 0.25
    max_delay_s: float = 10.0

    #: The backoff these delays make (None when a delay is 0: retries follow at once).
    _backoff: BackoffPolicy | None = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.base_delay_s < 0 or self.max_delay_s < 0:
            raise ValueError(f"invalid retry policy: {self}")
        if self.base_delay_s > 0 and self.max_delay_s > 0:
            backoff = BackoffPolicy(initial_s=self.base_delay_s, max_s=self.max_delay_s, factor=2.0, jitter_ratio=0.5)
            object.__setattr__(self, "_backoff", backoff)

    def wait(self, rng: random.Random) -> Callable[[RetryCallState], float]:
        """tenacity wait: equal-jitter capped exponential backoff, c/2 + U(0, c/2), c = min(cap, base*2^n).

        From the AWS Architecture Blog "Exponential Backoff and Jitter" (equal jitter): the
        delay keeps growing, the jitter spreads out retries from many workers.
        """
        return wait_none() if self._backoff is None else JitteredExponential(self._backoff, rng)

    def delay_s(self, retry_index: int, rng: random.Random) -> float:
        """Delay after the ``retry_index``-th failed attempt (0-based), see :meth:`wait`."""
        return 0.0 if self._backoff is None else JitteredExponential(self._backoff, rng).delay_s(retry_index)


@dataclass(frozen=True, slots=True)
class _Attempt:
    """One POST's result: an outcome, or ``None`` and the error that makes it worth a retry."""

    outcome: PostOutcome | None
    error: str = ""


def _worth_retry(attempt: _Attempt) -> bool:
    return attempt.outcome is None


def _last_attempt(state: RetryCallState) -> _Attempt:
    """What tenacity returns when the attempts run out: the last one (not an exception)."""
    assert state.outcome is not None
    last: _Attempt = state.outcome.result()
    return last


class _HttpPoster:
    """Shared HTTP plumbing: a lazily created session and POST with retries."""

    def __init__(
        self,
        *,
        timeout_s: float,
        retry: RetryPolicy,
        session: aiohttp.ClientSession | None,
        rng: random.Random | None,
        sleep: Sleep | None,
    ) -> None:
        self.failures = 0
        self.sent = 0
        self.attempts = 0
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._retry = retry
        self._session = session
        self._owns_session = session is None
        # Jitter only needs to differ between processes, not to be reproducible.
        self._rng = rng if rng is not None else random.Random()
        self._sleep: Sleep = sleep if sleep is not None else asyncio.sleep
        #: What the receiver's last ``Retry-After`` asks to wait before its next POST (0: nothing).
        self._asked_wait_s = 0.0

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
            self._owns_session = True
        return self._session

    async def _post_json(self, url: str, payload: Any, headers: Mapping[str, str]) -> PostOutcome:
        """POST until a 2xx, a non-retryable status, or the attempts run out (tenacity's loop)."""
        body = json.dumps(payload, separators=(",", ":"), default=str).encode()
        all_headers = {"Content-Type": "application/json", **headers}
        before = self.attempts
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._retry.max_attempts), wait=self._retry.wait(self._rng), sleep=self._sleep,
            retry=retry_if_result(_worth_retry), retry_error_callback=_last_attempt,
        )
        attempt: _Attempt = await retrying(self._post_once, url, body, all_headers)
        if attempt.outcome is not None:
            return attempt.outcome
        log.warning("POST %s failed after %d attempt(s): %s", url, self.attempts - before, attempt.error)
        return PostOutcome.UNAVAILABLE

    async def _post_once(self, url: str, body: bytes, headers: Mapping[str, str]) -> _Attempt:
        """One POST: delivered, rejected (a 4xx not worth retrying), or an error to retry."""
        if self._asked_wait_s > 0:  # whichever retry comes next (this sink's or its queue's)
            wait_s, self._asked_wait_s = self._asked_wait_s, 0.0
            await self._sleep(wait_s)
        self.attempts += 1
        try:
            async with self._client().post(url, data=body, headers=headers, timeout=self._timeout) as response:
                await response.read()
                if 200 <= response.status < 300:
                    return _Attempt(PostOutcome.DELIVERED)
                error = f"HTTP {response.status}"
                if response.status < 500 and response.status not in _RETRYABLE_STATUS:
                    log.warning("POST %s refused: %s", url, error)
                    return _Attempt(PostOutcome.REJECTED)
                self._obey_retry_after(url, response.headers)
                return _Attempt(None, error)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return _Attempt(None, f"{type(exc).__name__}: {exc}")

    def _obey_retry_after(self, url: str, headers: Mapping[str, str]) -> None:
        """A 429 or 503 (or any retryable answer) with ``Retry-After`` (RFC 9110 §10.2.3): the
        next POST waits what it asks, up to :data:`MAX_RETRY_AFTER_S`, on top of the backoff."""
        asked_s = retry_after_s(headers, time.time_ns() // 1_000_000)
        if asked_s is not None and asked_s > 0:
            self._asked_wait_s = min(asked_s, MAX_RETRY_AFTER_S)
            log.warning("POST %s: the receiver asks to wait %.0f s (Retry-After)", url, asked_s)

    async def close(self) -> None:
        """Close the HTTP session if this sink created it."""
        if self._owns_session and self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None


class StdoutSink:
    """Writes one human line per alert (see :func:`format_alert_line`)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.failures = 0
        self.sent = 0
        self._stream = stream

    async def send(self, alert: Alert) -> None:
        """Print the alert; never raises."""
        try:
            stream = self._stream if self._stream is not None else sys.stdout
            stream.write(format_alert_line(alert) + "\n")
            stream.flush()
            self.sent += 1
        except Exception:
            self.failures += 1
            log.exception("stdout sink failed for alert %r", alert.alert_id)

    async def close(self) -> None:
        """Nothing to release."""


class WebhookSink(_HttpPoster):
    """POSTs each alert as JSON; retries with capped, jittered backoff (at-least-once).

    ``send`` returns once the receiver answered 2xx, answered a non-retryable 4xx, or
    ``retry.max_attempts`` attempts failed; the last two count as a failure. Every attempt
    carries the alert id in the ``X-Liqmon-Alert-Id`` and ``Idempotency-Key`` headers.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 5.0,
        retry: RetryPolicy | None = None,
        headers: Mapping[str, str] | None = None,
        session: aiohttp.ClientSession | None = None,
        rng: random.Random | None = None,
        sleep: Sleep | None = None,
    ) -> None:
        super().__init__(
            timeout_s=timeout_s,
            retry=retry if retry is not None else RetryPolicy(),
            session=session,
            rng=rng,
            sleep=sleep,
        )
        self.url = url
        self._headers = dict(headers or {})

    async def deliver(self, alert: Alert) -> PostOutcome:
        """Deliver one alert and say how it ended; never raises."""
        try:
            headers = {**self._headers, ALERT_ID_HEADER: alert.alert_id, "Idempotency-Key": alert.alert_id}
            outcome = await self._post_json(self.url, alert.as_dict(), headers)
        except Exception:
            log.exception("webhook sink failed for alert %r", alert.alert_id)
            outcome = PostOutcome.REJECTED
        if outcome is PostOutcome.DELIVERED:
            self.sent += 1
        else:
            self.failures += 1
        return outcome

    async def send(self, alert: Alert) -> None:
        """Deliver one alert; never raises."""
        await self.deliver(alert)


def _alertname(kind: str) -> str:
    return "Liqmon" + "".join(part.capitalize() for part in kind.split("_") if part)


def _key_labels(alert: Alert, extra_labels: Mapping[str, str] | None) -> dict[str, str]:
    """The labels of an alert's (kind, venue, asset) key: one liqmon condition."""
    kind, venue, asset = alert_key(alert)
    labels = {"alertname": _alertname(kind), "kind": kind, "source": "liqmon"}
    if venue is not None:
        labels["venue"] = venue
    if asset is not None:
        labels["asset"] = asset
    labels.update(extra_labels or {})
    return labels


def _without(labels: Mapping[str, str], names: tuple[str, ...]) -> dict[str, str]:
    return {k: v for k, v in labels.items() if k not in names}


def _same_key(labels: object, key_labels: Mapping[str, str]) -> bool:
    """An Alertmanager alert's labels belong to this (kind, venue, asset) key."""
    return isinstance(labels, Mapping) and _without(labels, ("severity", "alert_id")) == dict(key_labels)


def _same_state(a: Mapping[str, str], b: Mapping[str, str]) -> bool:
    """Two label sets of one condition at one severity (the opening alert's id aside)."""
    return _without(a, ("alert_id",)) == _without(b, ("alert_id",))


def _matchers(labels: Mapping[str, str], absent: Iterable[str]) -> list[tuple[str, str]]:
    """Alertmanager v2 ``filter`` matchers for exactly these labels (``x=""``: no label x)."""
    pairs = [*labels.items(), *((name, "") for name in absent if name not in labels)]
    return [("filter", f"{name}={json.dumps(value)}") for name, value in sorted(pairs)]


def alertmanager_payload(
    alert: Alert, extra_labels: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The Alertmanager v2 postable alert for a liqmon alert (labels + annotations).

    Labels: alertname, kind, severity, source, venue, asset, and ``alert_id``, the liqmon
    alert that opened this Alertmanager alert. A later liqmon alert for the same state
    (same labels but the id) updates the annotations only, and names itself in
    ``latest_alert_id`` (see :meth:`AlertmanagerSink._apply`).
    """
    labels = {**_key_labels(alert, extra_labels), "severity": alert.severity, "alert_id": alert.alert_id}
    annotations: dict[str, str] = {
        "message": alert.message,
        "latest_alert_id": alert.alert_id,
        "config_hash": alert.config_hash,
    }
    if alert.stage is not None:
        annotations["stage"] = str(alert.stage)
    if alert.evidence:
        text = json.dumps(alert.evidence, sort_keys=True, separators=(",", ":"), default=str)
        annotations["evidence"] = text[:_EVIDENCE_ANNOTATION_MAX_CHARS]
    return {"labels": labels, "annotations": annotations}


@dataclass
class _ActiveAlert:
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_ms: int


class AlertmanagerSink(_HttpPoster):
    """Posts alerts to Alertmanager (``POST {base_url}/api/v2/alerts``).

    Alertmanager expires an alert without ``endsAt`` after its ``resolve_timeout``
    (default 5 min), so active alerts are re-sent every ``resend_interval_s`` by
    :meth:`resend_active` (run periodically after :meth:`start`). A resolved liqmon alert
    (``evidence.resolved is True``) posts the active alert with ``endsAt`` set; a change of
    severity for the same (kind, venue, asset) resolves the old alert and starts the new.

    The first time a (kind, venue, asset) comes up, the sink asks Alertmanager
    (``GET /api/v2/alerts``) for the alert a previous worker left firing for it, and goes
    on from that one: after a restart or a rebalance the resolution still reaches the alert
    that is firing (labels, ``alert_id`` included), and the same state is not opened twice.
    """

    def __init__(
        self,
        base_url: str,
        *,
        resend_interval_s: float = 60.0,
        timeout_s: float = 5.0,
        retry: RetryPolicy | None = None,
        extra_labels: Mapping[str, str] | None = None,
        generator_url: str | None = None,
        session: aiohttp.ClientSession | None = None,
        rng: random.Random | None = None,
        sleep: Sleep | None = None,
    ) -> None:
        super().__init__(
            timeout_s=timeout_s,
            retry=retry if retry is not None else RetryPolicy(max_attempts=3),
            session=session,
            rng=rng,
            sleep=sleep,
        )
        self.url = base_url.rstrip("/") + "/api/v2/alerts"
        self.resend_interval_s = resend_interval_s
        self._extra_labels = dict(extra_labels or {})
        self._generator_url = generator_url
        self._active: dict[AlertKey, _ActiveAlert] = {}
        #: Keys whose firing alert, if any, was taken over from Alertmanager already.
        self._looked_up: set[AlertKey] = set()
        # Postable batches of alerts whose delivery failed, by alert id: a retry re-posts
        # exactly what the first attempt would have (the active set has moved on).
        self._unsent: dict[str, list[dict[str, Any]]] = {}
        self._lock = asyncio.Lock()
        self._resender: asyncio.Task[None] | None = None

    @property
    def active(self) -> dict[AlertKey, dict[str, str]]:
        """Labels of the alerts currently held active, by (kind, venue, asset)."""
        return {key: dict(item.labels) for key, item in self._active.items()}

    def _postable(self, item: _ActiveAlert, ends_ms: int | None) -> dict[str, Any]:
        postable: dict[str, Any] = {
            "labels": item.labels,
            "annotations": item.annotations,
            "startsAt": _rfc3339(item.starts_ms),
        }
        if ends_ms is not None:
            # Alertmanager rejects endsAt before startsAt.
            postable["endsAt"] = _rfc3339(max(ends_ms, item.starts_ms))
        if self._generator_url:
            postable["generatorURL"] = self._generator_url
        return postable

    async def _post(self, batch: list[dict[str, Any]]) -> PostOutcome:
        if not batch:
            return PostOutcome.DELIVERED
        outcome = await self._post_json(self.url, batch, {})
        if outcome is PostOutcome.DELIVERED:
            self.sent += len(batch)
        else:
            self.failures += 1
        return outcome

    async def deliver(self, alert: Alert) -> PostOutcome:
        """Start, update or resolve the Alertmanager alert for this key; never raises.

        Also starts the re-sender, here inside the running loop, on the first alert.
        """
        try:
            self.start()
            alert_id = alert.alert_id
            async with self._lock:
                batch = self._unsent.pop(alert_id, None)
                if batch is None:
                    if not await self._take_over(alert):
                        return PostOutcome.UNAVAILABLE
                    batch = self._apply(alert)
                outcome = await self._post(batch)
                if outcome is PostOutcome.UNAVAILABLE:
                    self._unsent[alert_id] = batch
                return outcome
        except Exception:
            self.failures += 1
            log.exception("alertmanager sink failed for alert %r", alert.alert_id)
            return PostOutcome.REJECTED

    async def send(self, alert: Alert) -> None:
        """Start, update or resolve the Alertmanager alert for this key; never raises."""
        await self.deliver(alert)

    async def _take_over(self, alert: Alert) -> bool:
        """Hold the alert Alertmanager has firing for this key, once; False if unreachable."""
        key = alert_key(alert)
        if key in self._looked_up or key in self._active:
            return True
        labels = _key_labels(alert, self._extra_labels)
        params = _matchers(labels, ("venue", "asset"))
        params += [("active", "true"), ("silenced", "true"), ("inhibited", "true")]
        try:
            async with self._client().get(self.url, params=params, timeout=self._timeout) as response:
                if response.status != 200:
                    log.warning("GET %s: HTTP %d", self.url, response.status)
                    return False
                firing = await response.json()
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.warning("GET %s failed: %s", self.url, exc)
            return False
        mine = [a for a in firing if isinstance(a, dict) and _same_key(a.get("labels"), labels)]
        if mine:
            newest = max(mine, key=lambda a: str(a.get("startsAt", "")))
            starts_ms = int(datetime.fromisoformat(str(newest["startsAt"])).timestamp() * 1000)
            self._active[key] = _ActiveAlert(dict(newest["labels"]), dict(newest.get("annotations") or {}), starts_ms)
        self._looked_up.add(key)
        return True

    def _apply(self, alert: Alert) -> list[dict[str, Any]]:
        """Update the active set for one alert; return the postable alerts to send."""
        key = alert_key(alert)
        ts_ms = alert.ts_ms
        payload = alertmanager_payload(alert, self._extra_labels)
        previous = self._active.get(key)
        if is_resolved(alert):
            if previous is None:
                return []  # nothing firing for this key, here or in Alertmanager (_take_over)
            del self._active[key]
            return [self._postable(previous, ts_ms)]
        batch: list[dict[str, Any]] = []
        if previous is not None and not _same_state(previous.labels, payload["labels"]):
            batch.append(self._postable(previous, ts_ms))
            previous = None
        if previous is None:
            current = _ActiveAlert(payload["labels"], payload["annotations"], ts_ms)
        else:  # the same state again: the alert that opened it stays, its annotations move on
            current = _ActiveAlert(previous.labels, payload["annotations"], previous.starts_ms)
        self._active[key] = current
        batch.append(self._postable(current, None))
        return batch

    async def resend_active(self) -> None:
        """Re-post every active alert so Alertmanager keeps it firing; never raises."""
        try:
            async with self._lock:
                await self._post([self._postable(item, None) for item in self._active.values()])
        except Exception:
            self.failures += 1
            log.exception("alertmanager sink failed to re-send active alerts")

    async def _resend_forever(self) -> None:
        while True:
            await asyncio.sleep(self.resend_interval_s)
            await self.resend_active()

    def start(self) -> None:
        """Start re-sending active alerts every ``resend_interval_s`` (needs a running loop)."""
        if self._resender is None or self._resender.done():
            self._resender = asyncio.get_running_loop().create_task(
                self._resend_forever(), name="alertmanager-resend"
            )

    async def close(self) -> None:
        """Stop re-sending and close the HTTP session (active alerts then expire in AM)."""
        if self._resender is not None:
            self._resender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._resender
            self._resender = None
        await super().close()


@dataclass
class _KeyState:
    last_ts_ms: int
    last_rank: int
    last_stage: int | None
    firing: bool


class CooldownSink:
    """Per-(kind, venue, asset) cooldown in front of another sink.

    Passes an alert when it is the first for its key, an escalation (higher severity, or
    a higher cascade stage), a resolution of a condition that was passed as firing, or when
    ``cooldown_ms`` of event time has passed since the last alert passed for that key.
    Everything else is suppressed and counted. Alert ids already seen are dropped, so
    at-least-once redelivery upstream never repeats a message. Uses event time only
    (``ts_ms``), so a replay suppresses exactly what live would have.
    """

    def __init__(
        self,
        inner: AlertSink,
        *,
        cooldown_ms: int = 300_000,
        max_remembered_ids: int = 100_000,
    ) -> None:
        self.inner = inner
        self.cooldown_ms = cooldown_ms
        self.failures = 0
        self.passed = 0
        self.suppressed = 0
        self.duplicates = 0
        self._max_ids = max_remembered_ids
        self._seen_ids: OrderedDict[str, None] = OrderedDict()
        self._state: dict[AlertKey, _KeyState] = {}

    def should_pass(self, alert: Alert) -> bool:
        """Decide for one alert and record the decision (pure bookkeeping, no I/O)."""
        if alert.alert_id in self._seen_ids:
            self.duplicates += 1
            return False
        self._seen_ids[alert.alert_id] = None
        if len(self._seen_ids) > self._max_ids:
            self._seen_ids.popitem(last=False)
        key = alert_key(alert)
        ts_ms = alert.ts_ms
        rank = _severity_rank(alert)
        stage = alert.stage
        resolved = is_resolved(alert)
        state = self._state.get(key)
        if state is None:
            passes = not resolved
        elif resolved:
            passes = state.firing
        else:
            escalation = rank > state.last_rank or (
                stage is not None and state.last_stage is not None and stage > state.last_stage
            )
            passes = escalation or ts_ms - state.last_ts_ms >= self.cooldown_ms
        if passes:
            self._state[key] = _KeyState(ts_ms, rank, stage, firing=not resolved)
            self.passed += 1
        else:
            self.suppressed += 1
        return passes

    async def send(self, alert: Alert) -> None:
        """Forward the alert to the inner sink if it passes; never raises."""
        try:
            passes = self.should_pass(alert)
        except Exception:
            self.failures += 1
            log.exception("cooldown failed for alert %r; forwarding it", alert.alert_id)
            passes = True
        if passes:
            await self.inner.send(alert)

    async def close(self) -> None:
        """Close the inner sink."""
        await self.inner.close()


class FanoutSink:
    """Delivers each alert to several sinks concurrently; one slow sink delays no other."""

    def __init__(self, sinks: Iterable[AlertSink]) -> None:
        self.sinks = list(sinks)
        self.failures = 0

    async def send(self, alert: Alert) -> None:
        """Send to every sink; never raises."""
        results = await asyncio.gather(
            *(sink.send(alert) for sink in self.sinks), return_exceptions=True
        )
        for result in results:
            if isinstance(result, Exception):
                self.failures += 1
                log.error("sink raised for alert %r: %r", alert.alert_id, result)

    async def close(self) -> None:
        """Close every sink."""
        results = await asyncio.gather(
            *(sink.close() for sink in self.sinks), return_exceptions=True
        )
        for result in results:
            if isinstance(result, Exception):
                self.failures += 1
                log.error("sink close failed: %r", result)
