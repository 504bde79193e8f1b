"""Capped exponential backoff with jitter, written once, as a tenacity wait strategy.

Every wait in liqmon uses it: the feeds' reconnects, the HTTP sinks' retries (through
tenacity's retry loop) and the worker supervisor's wait for a broker. Jitter draws from an
injected ``random.Random`` so tests replay the same delays; sleeps are injected by callers.
A server's own ``Retry-After`` (:func:`retry_after_s`) is read here too, for the venues' REST
rate limits and the HTTP sinks' receivers.
"""

from __future__ import annotations

import email.utils
import random
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field
from tenacity import RetryCallState
from tenacity.wait import wait_base

__all__ = ["Backoff", "BackoffPolicy", "JitteredExponential", "retry_after_s"]


class BackoffPolicy(BaseModel):
    """Backoff: delay_n = min(max_s, initial_s × factor^n) × (1 − jitter_ratio × U[0,1))."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    initial_s: float = Field(default=0.5, gt=0)
    max_s: float = Field(default=30.0, gt=0)
    factor: float = Field(default=2.0, ge=1.0)
    jitter_ratio: float = Field(default=0.25, ge=0.0, le=1.0)
    #: A connection that delivered data for this long resets the backoff (feeds).
    healthy_after_s: float = Field(default=60.0, ge=0.0)


class JitteredExponential(wait_base):
    """tenacity wait: capped exponential, minus up to ``jitter_ratio`` of it.

    The "subtractive" jitter of the AWS Architecture Blog "Exponential Backoff and Jitter":
    with ``jitter_ratio`` 0.5 it is the post's "equal jitter" (c/2 + U(0, c/2)).
    """

    def __init__(self, policy: BackoffPolicy, rng: random.Random) -> None:
        self.policy = policy
        self.rng = rng

    def __call__(self, retry_state: RetryCallState) -> float:
        return self.delay_s(retry_state.attempt_number - 1)

    def delay_s(self, retry_index: int) -> float:
        """Delay after the ``retry_index``-th failure (0-based): capped exponential × jitter."""
        p = self.policy
        try:
            ceiling_s = min(p.max_s, p.initial_s * p.factor**retry_index)
        except OverflowError:  # factor^n beyond a float: long past the cap
            ceiling_s = p.max_s
        return ceiling_s * (1.0 - p.jitter_ratio * self.rng.random())


class Backoff:
    """The same delays for a loop that is not a retried call (a reconnect, a supervisor)."""

    def __init__(self, policy: BackoffPolicy, rng: random.Random) -> None:
        self.policy = policy
        self._wait = JitteredExponential(policy, rng)
        self.attempt = 0

    def next_delay(self) -> float:
        """Delay before the next attempt; each call counts one more failure."""
        delay_s = self._wait.delay_s(self.attempt)
        self.attempt += 1
        return delay_s

    def reset(self) -> None:
        self.attempt = 0


def retry_after_s(headers: Mapping[str, str], wall_ms: int) -> float | None:
    """Seconds a response's ``Retry-After`` asks to wait (RFC 9110 §10.2.3: a number of
    seconds or an HTTP date); None when it is absent or unreadable."""
    value = headers.get("Retry-After", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - wall_ms / 1000)
