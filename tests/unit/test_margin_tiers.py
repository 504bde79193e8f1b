"""Tiered maintenance margin (RISK_MODEL §3): Hyperliquid margin tables, Binance brackets;
the venues' worked examples and properties (monotone in size, continuous at tier bounds)."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.models.margin import (
    Account,
    Balance,
    Perp,
    evaluate_account,
    hyperliquid_margin_table,
    hyperliquid_mmr,
    perp_maintenance_margin_usd,
)
from monitor.risk_params import MarginTier, RiskParams, check_margin_table

PARAMS = RiskParams()
HL = PARAMS.unified.hyperliquid
TABLES = {
    **{f"hl:{coin}": table for coin, table in HL.margin_tables.items()},
    **{f"binance:{sym}": br for sym, br in PARAMS.unified.binance_pm.perp_brackets.items()},
    "binance:default": PARAMS.unified.binance_pm.default_perp_brackets,
}


def _mm_le(small_usd: float, large_usd: float) -> bool:
    """small ≤ large up to float rounding of notional × rate − deduction (≈1e-15 relative)."""
    return small_usd <= large_usd + 1e-12 * max(1.0, abs(large_usd))


def _hl_account(coin: str, qty: float, price: float, usdc: float) -> Account:
    return Account(
        account_id="hl", venue="hyperliquid", model="hyperliquid",
        balances=(Balance(asset="USDC", amount=usdc, price_key="USDC"),),
        perps=(Perp(symbol=coin, qty=qty, entry_price=price, price_key=coin),),
    )


def test_btc_2000_at_100k_is_liquidatable_under_the_published_tiers() -> None:
    """Issue example: $200M of BTC is past the 150M bound (20x above it)."""
    r = evaluate_account(_hl_account("BTC", 2_000, 100_000, 3_000_000),
                         {"USDC": 1.0, "BTC": 100_000.0}, PARAMS)
    # 200M × 2.5% − 150M × (2.5% − 1.25%) = 5M − 1.875M
    assert r.maintenance_margin_usd == pytest.approx(3_125_000)
    assert r.status == "liquidation"
    assert not r.backstop  # 3M is above 2/3 of 3.125M


def test_xrp_1m_at_2_5_is_healthy_at_20x() -> None:
    """Issue example: XRP's table starts at 20x, not the 10x of an unlisted coin."""
    r = evaluate_account(_hl_account("XRP", 1_000_000, 2.5, 100_000),
                         {"USDC": 1.0, "XRP": 2.5}, PARAMS)
    assert r.maintenance_margin_usd == pytest.approx(2_500_000 * 0.025)
    assert r.status == "normal"


def test_docs_doge_pilot_tiers_deduction() -> None:
    """Hyperliquid docs' pilot table (DOGE, testnet): 0–20k 10x, 20k–100k 5x, >100k 3x."""
    table = (MarginTier(lower_bound_usd=0, max_leverage=10),
             MarginTier(lower_bound_usd=20_000, max_leverage=5),
             MarginTier(lower_bound_usd=100_000, max_leverage=3))
    assert [t.mmr_ratio for t in table] == pytest.approx([0.05, 0.10, 1 / 6])
    # deduction(1) = 20k × (10% − 5%) = 1,000; deduction(2) = 1,000 + 100k × (1/6 − 10%)
    assert perp_maintenance_margin_usd(50_000, table) == pytest.approx(5_000 - 1_000)
    assert perp_maintenance_margin_usd(150_000, table) == pytest.approx(
        150_000 / 6 - (1_000 + 100_000 * (1 / 6 - 0.10)))


def test_table_lookup_by_symbol_and_fallback() -> None:
    assert hyperliquid_mmr("BTC", HL) == pytest.approx(0.0125)
    assert hyperliquid_mmr("BTC-PERP", HL, 200_000_000) == pytest.approx(0.025)
    assert hyperliquid_mmr("ETHUSDC", HL) == pytest.approx(0.02)
    assert hyperliquid_mmr("HYPE", HL, 25_000_000) == pytest.approx(0.10)
    assert hyperliquid_margin_table("kPEPE", HL)[1].lower_bound_usd == 20_000_000
    unknown = hyperliquid_margin_table("NOPE", HL)
    assert [(t.lower_bound_usd, t.max_leverage) for t in unknown] == [(0.0, 10.0)]
    assert "2026-12-04" in HL.margin_tables_source


def test_bad_tables_are_rejected() -> None:
    with pytest.raises(ValueError, match="start at 0"):
        check_margin_table("X", (MarginTier(lower_bound_usd=5, max_leverage=10),))
    with pytest.raises(ValueError, match="must not rise"):
        check_margin_table("X", (MarginTier(lower_bound_usd=0, max_leverage=5),
                                 MarginTier(lower_bound_usd=10, max_leverage=10)))


@settings(max_examples=200, deadline=None)
@given(name=st.sampled_from(sorted(TABLES)), a=st.floats(0, 2e9), b=st.floats(0, 2e9))
def test_larger_position_never_has_smaller_mm(name: str, a: float, b: float) -> None:
    table = TABLES[name]
    lo, hi = sorted((a, b))
    assert _mm_le(perp_maintenance_margin_usd(lo, table), perp_maintenance_margin_usd(hi, table))


@settings(max_examples=100, deadline=None)
@given(name=st.sampled_from(sorted(TABLES)), tier=st.integers(1, 20))
def test_mm_continuous_across_tier_bounds(name: str, tier: int) -> None:
    table = TABLES[name]
    bound = table[tier % (len(table) - 1) + 1].floor_usd if len(table) > 1 else 1e6
    eps = bound * 1e-12
    at = perp_maintenance_margin_usd(bound, table)
    below = perp_maintenance_margin_usd(bound - eps, table)
    above = perp_maintenance_margin_usd(bound + eps, table)
    # MM moves by at most (largest rate) × eps on either side of the bound: no jump
    assert math.isclose(below, at, abs_tol=eps + 1e-6)
    assert math.isclose(above, at, abs_tol=eps + 1e-6)


@settings(max_examples=100, deadline=None)
@given(
    levs=st.lists(st.integers(1, 50), min_size=1, max_size=4, unique=True),
    steps=st.lists(st.floats(1e3, 1e8), min_size=3, max_size=3),
    a=st.floats(0, 1e9),
    b=st.floats(0, 1e9),
)
def test_any_valid_table_is_monotone_and_continuous(
    levs: list[int], steps: list[float], a: float, b: float
) -> None:
    bounds = [0.0]
    for s in steps[: len(levs) - 1]:
        bounds.append(bounds[-1] + s)
    table = tuple(MarginTier(lower_bound_usd=x, max_leverage=lev)
                  for x, lev in zip(bounds, sorted(levs, reverse=True), strict=False))
    lo, hi = sorted((a, b))
    assert _mm_le(perp_maintenance_margin_usd(lo, table), perp_maintenance_margin_usd(hi, table))
    for t in table[1:]:
        left = t.floor_usd * t.mmr_ratio - sum(
            u.floor_usd * (u.mmr_ratio - p.mmr_ratio)
            for p, u in itertools.pairwise(table) if u.floor_usd <= t.floor_usd)
        assert perp_maintenance_margin_usd(t.floor_usd, table) == pytest.approx(left, rel=1e-9)


@settings(max_examples=100, deadline=None)
@given(coin=st.sampled_from(["BTC", "ETH", "SOL", "XRP", "HYPE", "OP", "NOPE"]),
       a=st.floats(0, 5e6), b=st.floats(0, 5e6), px=st.floats(1, 2e5))
def test_account_mm_monotone_in_position_size(coin: str, a: float, b: float, px: float) -> None:
    """A larger Hyperliquid position (long or short) never has a smaller account MM."""
    lo, hi = sorted((a, b))
    prices = {"USDC": 1.0, coin: px}
    for sign in (1.0, -1.0):
        mm_lo = evaluate_account(_hl_account(coin, sign * lo, px, 1e6), prices, PARAMS)
        mm_hi = evaluate_account(_hl_account(coin, sign * hi, px, 1e6), prices, PARAMS)
        assert _mm_le(mm_lo.maintenance_margin_usd, mm_hi.maintenance_margin_usd)
