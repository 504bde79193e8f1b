"""A bounded retry queue in front of an HTTP sink: alerts outlive a receiver outage.

``send`` only enqueues, so the delivery agent never waits on a receiver (a receiver that
is down cannot hold up a rebalance). One drain task, started inside the running loop on
the first alert, delivers in order: the alert at the head is retried with capped,
jittered backoff for as long as the outage lasts, then the rest follow with their own
ids (at-least-once; receivers de-duplicate by ``alert_id``).

The queue is bounded. When it is full the oldest waiting alert is dropped; an alert the
receiver refuses for good (a 4xx other than 408/425/429) is dropped too. Either way the
drop is logged with the alert id and counted in ``liqmon_alerts_dropped_total{sink,
reason}``: never silent. The queue lives in memory: what waits in it when the worker
stops is logged with its count.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from typing import Protocol

from monitor.metrics import Metrics
from monitor.protocol import Alert
from streams.sinks.alert_sinks import PostOutcome, RetryPolicy, Sleep

__all__ = ["DEFAULT_QUEUE_RETRY", "Deliverer", "RetryQueueSink"]

log = logging.getLogger(__name__)

#: Outer retries of the head alert: 1 s doubling to at most 30 s, for as long as it takes.
DEFAULT_QUEUE_RETRY = RetryPolicy(max_attempts=1, base_delay_s=1.0, max_delay_s=30.0)
#: 2**20 × any base delay is far above any cap: stop growing the exponent there.
_MAX_BACKOFF_EXPONENT = 20


class Deliverer(Protocol):
    """A sink that says how a delivery ended (``WebhookSink``, ``AlertmanagerSink``)."""

    async def deliver(self, alert: Alert) -> PostOutcome: ...

    async def close(self) -> None: ...


class RetryQueueSink:
    """Queues alerts for one :class:`Deliverer` and retries the head until it is taken."""

    def __init__(
        self,
        inner: Deliverer,
        *,
        name: str,
        max_queued: int,
        metrics: Metrics | None = None,
        retry: RetryPolicy = DEFAULT_QUEUE_RETRY,
        rng: random.Random | None = None,
        sleep: Sleep | None = None,
    ) -> None:
        if max_queued < 1:
            raise ValueError(f"max_queued must be >= 1, got {max_queued}")
        self.inner = inner
        self.name = name
        self.max_queued = max_queued
        self.failures = 0
        self.delivered = 0
        self.dropped = 0
        self.retries = 0
        self._metrics = metrics
        self._retry = retry
        self._rng = rng if rng is not None else random.Random()
        self._sleep: Sleep = sleep if sleep is not None else asyncio.sleep
        self._waiting: deque[Alert] = deque()
        self._in_flight: Alert | None = None
        self._wake = asyncio.Event()
        self._drainer: asyncio.Task[None] | None = None

    @property
    def depth(self) -> int:
        """Alerts not yet delivered: the waiting ones plus the one in flight."""
        return len(self._waiting) + (self._in_flight is not None)

    async def send(self, alert: Alert) -> None:
        """Enqueue one alert (drops the oldest waiting one when full); never blocks."""
        if len(self._waiting) >= self.max_queued:
            self._drop(self._waiting.popleft(), "overflow")
        self._waiting.append(alert)
        self._set_depth()
        self._wake.set()
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.get_running_loop().create_task(
                self._drain_forever(), name=f"{self.name}-retry-queue"
            )

    async def join(self) -> None:
        """Wait until every queued alert was delivered or dropped (tests, shutdown)."""
        while self.depth:
            await asyncio.sleep(0.01)

    def _drop(self, alert: Alert, reason: str) -> None:
        self.dropped += 1
        self.failures += 1
        if self._metrics is not None:
            self._metrics.alerts_dropped_total.labels(self.name, reason).inc()
        log.error("%s: alert %s dropped undelivered (%s; %d dropped so far)",
                  self.name, alert.alert_id, reason, self.dropped)

    def _set_depth(self) -> None:
        if self._metrics is not None:
            self._metrics.alert_queue_depth.labels(self.name).set(self.depth)

    async def _drain_forever(self) -> None:
        while True:
            if not self._waiting:
                self._wake.clear()
                await self._wake.wait()
                continue
            self._in_flight = self._waiting.popleft()
            try:
                await self._deliver_head(self._in_flight)
            finally:
                self._in_flight = None
                self._set_depth()

    async def _deliver_head(self, alert: Alert) -> None:
        """Deliver one alert, retrying while the receiver is unavailable."""
        retry_index = 0
        while True:
            outcome = await self.inner.deliver(alert)
            if outcome is PostOutcome.DELIVERED:
                self.delivered += 1
                if retry_index:
                    log.warning("%s: receiver back; alert %s delivered after %d retries (%d waiting)",
                                self.name, alert.alert_id, retry_index, len(self._waiting))
                return
            if outcome is PostOutcome.REJECTED:
                self._drop(alert, "rejected")
                return
            if retry_index == 0:
                log.warning("%s: receiver unavailable; alert %s kept for retry (%d waiting)",
                            self.name, alert.alert_id, len(self._waiting))
            self.retries += 1
            await self._sleep(self._retry.delay_s(min(retry_index, _MAX_BACKOFF_EXPONENT), self._rng))
            retry_index += 1

    async def close(self) -> None:
        """Stop retrying (logging what is left undelivered) and close the inner sink."""
        left = self.depth
        if self._drainer is not None:
            self._drainer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._drainer
            self._drainer = None
        if left:
            log.error("%s: %d alert(s) left undelivered at shutdown", self.name, left)
        await self.inner.close()
