"""Feed lag and shedding, the pure parts: lag levels with hysteresis, the ``feed_lag`` alert
ingest makes of a lag ``feed_status`` frame (deterministic id, resolved on ``normal``, a bad
frame dead-lettered), the coalescing plan, the lag arithmetic, and which channels each venue
lets be coalesced (never trades, liquidations or book diffs)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from monitor.config import EngineConfig
from monitor.ingest.feed_lag import FeedLagThresholds, LagLevel, lag_status_raw
from monitor.ingest.frames import FEED_STATUS_CHANNEL, Ingest
from monitor.protocol import Alert, DeadLetter
from streams.feeds.base import FrameRoute
from streams.feeds.overload import ReaderLag, coalesce
from streams.feeds.venues.binance import BinanceSpot, BinanceUsdm
from streams.feeds.venues.bybit import BybitLinear
from streams.feeds.venues.hyperliquid import Hyperliquid
from streams.feeds.venues.okx import Okx

T0 = 1_760_130_000_000


def test_levels_rise_at_a_threshold_and_fall_below_the_clear_ratio() -> None:
    level = LagLevel(FeedLagThresholds(warning_s=2.0, high_s=10.0, critical_s=30.0, clear_ratio=0.5))
    seen = [level.observe(x) for x in (0.5, 2.0, 1.5, 0.99, 12.0, 31.0, 20.0, 14.0, 4.0, 0.0)]
    assert seen == [None, (0, 1), None, (1, 0), (0, 2), (2, 3), None, (3, 2), (2, 1), (1, 0)]


def test_thresholds_must_be_ordered() -> None:
    with pytest.raises(ValidationError):
        FeedLagThresholds(warning_s=5.0, high_s=3.0)


def lag_frame(previous: int, level: int, lag_s: float, **extra: Any) -> dict[str, Any]:
    evidence = {"event_lag_s": lag_s, "backlog_s": 0.0, "backlog_frames": 0, "backlog_bytes": 0, "shed_frames": 7}
    return lag_status_raw(previous, level, lag_s, evidence | extra)


def feed(ingest: Ingest, raw: Any, ts_ms: int) -> list[Alert | DeadLetter]:
    out = ingest.feed("okx", FEED_STATUS_CHANNEL, raw, ts_ms, orjson.dumps(raw))
    return [x for x in out if isinstance(x, Alert | DeadLetter)]


def test_a_lag_frame_becomes_feed_lag_with_a_deterministic_id_and_normal_resolves() -> None:
    runs = []
    for _ in range(2):
        ingest = Ingest(EngineConfig())
        runs.append(feed(ingest, lag_frame(0, 2, 12.5), T0) + feed(ingest, lag_frame(2, 0, 1.0), T0 + 5_000))
    first, second = runs
    assert [a.alert_id for a in first] == [a.alert_id for a in second]  # type: ignore[union-attr]
    raised, resolved = first
    assert isinstance(raised, Alert) and isinstance(resolved, Alert)
    assert (raised.kind, raised.severity, raised.venue, raised.ts_ms) == ("feed_lag", "high", "okx", T0)
    assert raised.evidence == {"level": "high", "previous_level": "normal", "lag_s": 12.5, "event_lag_s": 12.5,
                               "backlog_s": 0.0, "backlog_frames": 0.0, "backlog_bytes": 0.0, "shed_frames": 7.0,
                               "resolved": False}
    assert (resolved.severity, resolved.evidence["resolved"], resolved.evidence["previous_level"]) == (
        "info", True, "high")
    assert raised.alert_id != resolved.alert_id


@pytest.mark.parametrize("raw", [
    lag_frame(0, 0, 1.0),  # no change
    {**lag_frame(0, 1, 3.0), "level": "panic"},
    lag_frame(0, 1, -3.0),
    {**lag_frame(0, 1, 3.0), "backlog_bytes": "many"},
    {**lag_frame(0, 1, 3.0), "lag_s": None},
])
def test_a_bad_lag_frame_is_a_dead_letter(raw: dict[str, Any]) -> None:
    [out] = feed(Ingest(EngineConfig()), raw, T0)
    assert isinstance(out, DeadLetter) and out.reason in {"wrong_value", "wrong_type"}


def test_coalesce_keeps_the_last_frame_per_key_and_every_unkeyed_frame_in_order() -> None:
    keys = ["a", None, "b", "a", None, "a", "b", None]
    kept, shed = coalesce(keys)
    assert kept == [1, 4, 5, 6, 7]
    assert shed == {"a": 2, "b": 1}
    assert coalesce([None, None]) == ([0, 1], {})


def test_reader_lag_is_the_larger_of_event_time_lag_and_backlog_drain_time() -> None:
    lag = ReaderLag(10.0)
    lag.on_frame(500, T0 + 900, T0)  # 0.9 s behind the venue's stamp
    lag.on_frame(500, T0 + 1_000, T0 + 700)  # 0.3 s: the smallest is the reader's share
    first = lag.sample(11.0, 40, 4_000)  # 1,000 bytes read in 1 s; 4,000 waiting
    assert (first.event_lag_s, first.backlog_s, first.lag_s) == (0.3, 0.0, 0.3)  # one tick is no backlog yet
    lag.on_frame(1_000, T0 + 2_000, None)
    second = lag.sample(12.0, 30, 3_000)  # still 3,000 waiting: 3 s of draining, the smaller of 4 and 3
    assert (second.event_lag_s, second.backlog_s, second.lag_s) == (None, 3.0, 3.0)
    quiet = lag.sample(13.0, 0, 0)  # nothing read, nothing waiting
    assert (quiet.event_lag_s, quiet.backlog_s, quiet.lag_s) == (None, 0.0, 0.0)
    lag.on_frame(10, T0, T0 + 50)  # a clock behind the venue's is no lag
    assert lag.sample(14.0, 0, 0).lag_s == 0.0
    lag.sample(15.0, 3, 900)
    stuck = lag.sample(16.0, 3, 900)  # bytes waited two whole ticks and none was read
    assert stuck.backlog_s == pytest.approx(1.0)


@pytest.mark.parametrize(("adapter", "coalescible", "kept_whole"), [
    (BinanceSpot(), ["btcusdt@bookTicker", "btcusdt@depth20@100ms", "btcusdt@depth5"],
     ["btcusdt@aggTrade", "btcusdt@trade", "btcusdt@depth@100ms", "btcusdt@depth", "!bookTicker"]),
    (BinanceUsdm(), ["btcusdt@markPrice@1s", "!markPrice@arr", "btcusdt@bookTicker"],
     ["!forceOrder@arr", "btcusdt@forceOrder", "btcusdt@aggTrade", "btcusdt@depth@100ms"]),
    (BybitLinear(), [], ["orderbook.50.BTCUSDT", "allLiquidation.BTCUSDT", "publicTrade.BTCUSDT"]),
    (Okx(), ["bbo-tbt", "books5", "tickers", "mark-price"], ["books", "trades", "liquidation-orders"]),
    (Hyperliquid(), ["l2Book", "bbo"], ["trades"]),
])
def test_only_whole_state_channels_are_coalescible(adapter: Any, coalescible: list[str], kept_whole: list[str]) -> None:
    assert all(adapter.coalescible(FrameRoute(c, c)) for c in coalescible)
    assert not any(adapter.coalescible(FrameRoute(c, c)) for c in kept_whole)


def test_binance_peeks_the_stream_without_decoding_and_venues_give_their_timestamps() -> None:
    spot = BinanceSpot()
    frame = b'{"stream":"btcusdt@bookTicker","data":{"u":1,"s":"BTCUSDT"}}'
    assert spot.peek_route(frame) == spot.route(orjson.loads(frame))
    assert spot.peek_route(b'{"data":{},"stream":"x"}') is None
    assert spot.peek_route(b'{"stream":"a\\"b","data":{}}') is None  # an escape: decode it instead
    assert spot.event_ts_ms({"stream": "s", "data": {"e": "depthUpdate", "E": T0}}) == T0
    assert spot.event_ts_ms({"stream": "s", "data": {"u": 1}}) is None  # spot bookTicker has none
    assert BybitLinear().event_ts_ms({"topic": "t", "ts": T0, "data": {}}) == T0
    assert Okx().event_ts_ms({"arg": {}, "data": [{"ts": str(T0)}]}) == T0
    assert Hyperliquid().event_ts_ms({"channel": "trades", "data": [{"time": T0}]}) == T0
    assert Hyperliquid().event_ts_ms({"channel": "l2Book", "data": {"time": True}}) is None
