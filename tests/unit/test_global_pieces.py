"""The pieces behind the global stage's facade (monitor/stages/global_risk/risk.py), each on its own."""

from __future__ import annotations

from monitor.config import LiquidityConfig
from monitor.protocol import Alert
from monitor.risk_params import RiskParams
from monitor.stages.global_risk.price_book import PriceBook
from monitor.stages.global_risk.spiral_clock import SpiralClock
from monitor.stages.global_risk.vacuum_watch import VacuumWatch

T0 = 1_760_130_000_000
MINUTE_MS = 60_000


def test_the_spiral_clock_arms_on_its_first_time_then_fires_once_a_boundary() -> None:
    clock = SpiralClock(RiskParams(), interval_ms=MINUTE_MS, tolerance_ratio=0.001)
    start = T0 - T0 % MINUTE_MS + 5_000
    assert not clock.due(start)  # arms for the next minute
    assert clock.next_spiral_ms == start - 5_000 + MINUTE_MS
    assert not clock.due(start + 30_000)
    assert clock.due(start + MINUTE_MS)
    assert not clock.due(start + MINUTE_MS + 1_000)
    assert clock.due(start + 5 * MINUTE_MS)  # a gap fires once, not once a missed minute
    assert clock.next_spiral_ms == start - 5_000 + 6 * MINUTE_MS


def test_depth_becomes_price_and_quantity_levels_below_mid() -> None:
    clock = SpiralClock(RiskParams(), interval_ms=MINUTE_MS, tolerance_ratio=0.001)
    clock.on_depth({"key": "ETH", "mid": 4_000.0, "bid_usd": [40_000.0, 40_000.0, 120_000.0, 120_000.0, 0.0]})
    (px_10, qty_10), (px_100, qty_100) = clock.ladders["ETH"]
    assert (px_10, px_100) == (4_000.0 * 0.999, 4_000.0 * 0.99)
    assert qty_10 == 40_000.0 / px_10 and qty_100 == 80_000.0 / px_100


def test_a_derived_key_waits_for_its_inputs_then_follows_either() -> None:
    book = PriceBook({"USDT": 1.0})
    book.register_derived(["rate:WBETH/ETH*ETH", "ETH"])
    changed: set[str] = set()
    book.take_changed(changed)
    assert changed == {"rate:WBETH/ETH*ETH"} and "rate:WBETH/ETH*ETH" not in book.prices
    book.prices.update({"rate:WBETH/ETH": 1.07, "ETH": 3_000.0})
    changed = {"ETH"}
    book.take_changed(changed)
    assert book.prices["rate:WBETH/ETH*ETH"] == 1.07 * 3_000.0 and "rate:WBETH/ETH*ETH" in changed
    assert book.pending_keys == set()


def test_the_vacuum_starts_and_ends_with_the_withdrawn_share() -> None:
    vacuum = VacuumWatch(LiquidityConfig(vacuum_min_books=2, vacuum_share_ratio=0.5), "h")
    out: list[Alert] = []

    def book(symbol: str, state: str) -> tuple[bool, list[str], float]:
        return vacuum.on_book(T0, {"venue": "binance-spot", "symbol": symbol, "state": state}, out)

    assert book("BTCUSDT", "withdrawn") == (False, ["binance-spot:BTCUSDT"], 1.0)  # one book is too few
    assert book("ETHUSDT", "warm") == (True, ["binance-spot:BTCUSDT"], 0.5)
    assert book("BTCUSDT", "restored") == (False, [], 0.0)
    assert [(a.kind, a.severity) for a in out] == [("liquidity_vacuum", "critical"), ("liquidity_vacuum", "info")]
    assert vacuum.withdrawn_ratio() == 0.0
