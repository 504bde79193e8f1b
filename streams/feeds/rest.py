"""Requests to a venue's REST endpoints: one JSON request (the tables fetched at ``liqmon
live`` start), and the hold a venue's rate limit puts on every request to its host.

Binance answers a request over its rate limit with HTTP 429 and, to a client that goes on,
418 (an IP ban of 2 minutes to 3 days); both carry ``Retry-After``, "the number of seconds
required to wait, in the case of a 429, to prevent a ban, or, in the case of a 418, until
the ban is over" (Binance Spot API docs, "LIMITS" > "IP Limits"; the same on USDⓈ-M
futures). The limits are per IP, so the hold is on the host, whichever book asked.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from streams.backoff import retry_after_s
from streams.feeds.base import Clock

__all__ = ["RATE_LIMITED", "RateLimitHolds", "fetch_json"]

log = logging.getLogger(__name__)

#: HTTP statuses of a rate limit: 429 (over the limit) and 418 (banned for going on).
RATE_LIMITED = frozenset({418, 429})


async def fetch_json(http: aiohttp.ClientSession, url: str, post_json: Any = None) -> Any:
    """The JSON body of ``GET url`` (or ``POST url`` with ``post_json``); non-200 raises ClientResponseError."""
    call = http.get(url) if post_json is None else http.post(url, json=post_json)
    async with call as resp:
        body = await resp.read()
        if resp.status != 200:
            raise aiohttp.ClientResponseError(
                resp.request_info, (), status=resp.status, message=body[:200].decode(errors="replace"))
    return orjson.loads(body)


class RateLimitHolds:
    """Until when each REST host is not to be asked again (its rate limit's ``Retry-After``)."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._until: dict[str, float] = {}

    @staticmethod
    def host(url: str) -> str:
        return urlsplit(url).netloc

    def remaining_s(self, url: str) -> float:
        """Seconds left on the hold of ``url``'s host (0: none)."""
        until = self._until.get(self.host(url))
        return 0.0 if until is None else max(0.0, until - self._clock.monotonic())

    def hold(self, url: str, status: int, headers: Mapping[str, str], what: str) -> None:
        """A rate-limited answer to ``url``: hold its host for what ``Retry-After`` asks,
        said once per hold (a hold that only extends a longer one is not said again)."""
        seconds = retry_after_s(headers, self._clock.wall_ms())
        if seconds is None:
            return
        host, now = self.host(url), self._clock.monotonic()
        held_until = self._until.get(host, 0.0)
        if now + seconds <= held_until:
            return
        self._until[host] = now + seconds
        if held_until <= now:  # a new hold, not one extended
            ban = " (banned)" if status == 418 else ""
            log.error("%s: %s answered %d%s: no request to it for %.0f s, as its Retry-After asks",
                      what, host, status, ban, seconds)
