"""A venue's rate limit held on its REST host for what ``Retry-After`` asks (RFC 9110
§10.2.3: seconds or an HTTP date), whichever request met it."""

from __future__ import annotations

import pytest

from streams.backoff import retry_after_s
from streams.feeds.rest import RateLimitHolds

WALL_MS = 1_760_140_800_000  # 2025-10-11T00:00:00Z


class Clock:
    def __init__(self) -> None:
        self.now_s = 100.0

    def monotonic(self) -> float:
        return self.now_s

    def wall_ms(self) -> int:
        return WALL_MS + int((self.now_s - 100.0) * 1000)

    async def sleep(self, seconds: float) -> None:
        self.now_s += seconds


@pytest.mark.parametrize(("value", "seconds"), [
    ("7", 7.0), (" 120 ", 120.0), ("Sat, 11 Oct 2025 00:01:30 GMT", 90.0), ("Fri, 10 Oct 2025 23:00:00 GMT", 0.0),
    ("", None), ("-5", None), ("soon", None), ("1.5", None), ("Sat, 11 Oct 2025 00:01:30", None)])
def test_retry_after_is_seconds_or_an_http_date(value: str, seconds: float | None) -> None:
    assert retry_after_s({"Retry-After": value}, WALL_MS) == seconds
    assert retry_after_s({}, WALL_MS) is None


def test_a_hold_is_on_the_host_and_said_once(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    holds = RateLimitHolds(clock)
    spot, also_spot, futures = ("https://api.binance.com/api/v3/depth", "https://api.binance.com/api/v3/other",
                                "https://fapi.binance.com/fapi/v1/depth")
    holds.hold(spot, 429, {"Retry-After": "60"}, "binance-spot")
    assert holds.remaining_s(also_spot) == 60.0 and holds.remaining_s(futures) == 0.0
    clock.now_s += 20
    holds.hold(also_spot, 429, {"Retry-After": "10"}, "binance-spot")  # shorter than the hold left: kept
    holds.hold(spot, 418, {"Retry-After": "300"}, "binance-spot")  # longer: extends it
    assert holds.remaining_s(spot) == 300.0
    holds.hold(futures, 429, {}, "binance-usdm")  # no Retry-After: the request's own backoff
    assert holds.remaining_s(futures) == 0.0
    clock.now_s += 301
    assert holds.remaining_s(spot) == 0.0
    said = [r.getMessage() for r in caplog.records]
    assert said == ["binance-spot: api.binance.com answered 429: no request to it for 60 s, as its Retry-After asks"]
