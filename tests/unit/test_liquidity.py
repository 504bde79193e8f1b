"""Liquidity processor, bookDepth parser and the real 10 Oct BTCUSDT withdrawal."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

from monitor.config import EngineConfig, LiquidityConfig
from monitor.events import BOOK_BANDS_BPS
from monitor.ingest.wire.bookdepth import parse_book_depth
from monitor.models.liquidity import LiquidityMonitor, ewma_weight
from monitor.protocol import Alert
from replay.capture import write_capture
from replay.importers import iter_book_depth
from replay.replayer import replay_inline

T0 = 1_760_000_000_000
CFG = LiquidityConfig(warmup_ms=0, warmup_updates=2, withdrawal_min_duration_ms=0)


def _row(bid_usd: float) -> list[float]:
    bands = [bid_usd] * len(BOOK_BANDS_BPS) + [bid_usd] * len(BOOK_BANDS_BPS)
    return [3, 0, 0, 0, 99.0, 101.0, 100.0, 200.0, *bands]


def test_ewma_weight_half_life() -> None:
    assert ewma_weight(1000, 1000) == 0.5
    assert ewma_weight(0, 1000) == 0.0


def test_withdrawal_on_cancels_and_restored() -> None:
    mon = LiquidityMonitor(CFG, "h")
    st = mon.book("v", "BTCUSDT", "BTC")
    out: list[Alert] = []
    for i in range(5):
        mon.on_book(st, T0 + i * 1000, _row(1e6), 1.0, out)
    assert mon.on_book(st, T0 + 6000, _row(1e5), 1.0, out) == 2
    assert out[-1].kind == "liquidity_withdrawal" and out[-1].severity == "high"
    assert mon.on_book(st, T0 + 7000, _row(9e5), 1.0, out) == 3
    assert out[-1].evidence["state"] == "restored"


def test_fills_are_not_a_withdrawal() -> None:
    mon = LiquidityMonitor(CFG, "h")
    st = mon.book("v", "BTCUSDT", "BTC")
    out: list[Alert] = []
    for i in range(5):
        mon.on_book(st, T0 + i * 1000, _row(1e6), 1.0, out)
    mon.on_trade(st, T0 + 5500, 2e6, -1.0)  # sellers hit the bids: the depth was filled
    assert mon.on_book(st, T0 + 6000, _row(1e5), 1.0, out) == 0
    assert out == []


def test_parse_book_depth_uses_the_trusted_bid_band() -> None:
    raw = {"e": "bookDepth", "E": T0, "s": "BTCUSDT", "bands": [
        {"pct": -5, "notional_usd": 500.0, "weighted_avg_price": 96.0},
        {"pct": -1, "notional_usd": 20.0, "weighted_avg_price": 121.0},  # stale, above asks
        {"pct": 1, "notional_usd": 300.0, "weighted_avg_price": 100.5},
        {"pct": 2, "notional_usd": 400.0, "weighted_avg_price": 101.0},
        {"pct": 5, "notional_usd": 900.0, "weighted_avg_price": 102.0},
    ]}
    ev = parse_book_depth("binance-usdm", raw, T0, {}, 60_000)
    n = len(BOOK_BANDS_BPS)
    assert list(ev.bands[:n]) == [500.0] * n
    assert list(ev.bands[n:]) == [300.0, 300.0, 300.0, 400.0, 900.0]


def test_real_btcusdt_bookdepth_withdrawal_between_2115_and_2130(
    oct10_dir: Path, tmp_path: Path
) -> None:
    capture = tmp_path / "bd.jsonl"
    write_capture(capture, list(iter_book_depth(oct10_dir / "btcusdt_binance_bookdepth.csv")))
    result = asyncio.run(replay_inline(capture, EngineConfig()))
    assert result.stats.deadletters == {}
    hits = [a for a in result.alerts if a.kind == "liquidity_withdrawal"
            and a.evidence["symbol"] == "BTCUSDT" and a.evidence["state"] == "withdrawn"]
    lo = int(dt.datetime(2025, 10, 10, 21, 15, tzinfo=dt.UTC).timestamp() * 1000)
    hi = int(dt.datetime(2025, 10, 10, 21, 30, tzinfo=dt.UTC).timestamp() * 1000)
    assert any(lo <= a.ts_ms <= hi for a in hits)
