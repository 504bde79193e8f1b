"""Bybit risk limits and OKX position tiers as perp MM tables (RISK_MODEL §3): the venues'
worked examples, bybit-uta and okx-mc accounts, and properties (a larger position never has
a smaller MM; Bybit's MM is continuous across tier bounds, OKX's steps up by the published
rate change because it applies a tier's rate to the whole position)."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.ingest.venue_tables import apply_margin_tables, bybit_risk_limits, okx_position_tiers
from monitor.models.margin import Account, Balance, Perp, evaluate_account, perp_tier, tiered_perp_mm_usd
from monitor.risk_params import PerpTierTable, RiskParams
from tests.unit.test_venue_tables import BYBIT_RISK_LIMIT, OKX_POSITION_TIERS

PARAMS = RiskParams()
BYBIT = PARAMS.unified.bybit_uta
OKX = PARAMS.unified.okx_mc


def _risk_limit(symbol: str, rows: list[tuple[str, str]]) -> dict[str, Any]:
    """A risk-limit response in Bybit's documented shape, deductions blank (to be derived)."""
    return {"retCode": 0, "retMsg": "OK", "result": {"category": "linear", "list": [
        {"id": i + 1, "symbol": symbol, "riskLimitValue": cap, "maintenanceMargin": mmr,
         "mmDeduction": ""} for i, (cap, mmr) in enumerate(rows)]}}


# Bybit help "Maintenance Margin (USDT Contract)" (bybit.com/en/help-center/article/
# Maintenance-Margin-USDT-Contract, updated 2025-09-05), illustration: XYZUSDT tiers
# 0–1,000 2%, >1,000–2,000 2.5%, >2,000–3,000 3%, >3,000–4,000 3.5%, >4,000–5,000 4%; a
# long of 100 contracts at 35 USDT is a position value of 3,500 USDT; "any excess beyond a
# particular tier is subject to the calculation based on the MMR of the new tier".
XYZUSDT = bybit_risk_limits(_risk_limit("XYZUSDT", [
    ("1000", "0.02"), ("2000", "0.025"), ("3000", "0.03"), ("4000", "0.035"), ("5000", "0.04")]))["XYZUSDT"]

TABLES: dict[str, PerpTierTable] = {
    "bybit:builtin:BTCUSDT": BYBIT.perp_tables["BTCUSDT"],
    "bybit:recorded:BTCUSDT": bybit_risk_limits(BYBIT_RISK_LIMIT)["BTCUSDT"],
    "bybit:help:XYZUSDT": XYZUSDT,
    "okx:builtin:BTC-USDT": OKX.perp_tables["BTC-USDT"],
    "okx:recorded:BTC-USDT": okx_position_tiers(OKX_POSITION_TIERS)["BTC-USDT"],
}


def _mm_at(table: PerpTierTable, size: float, price: float = 100.0) -> float:
    """MM of a position of ``size`` in the table's basis (USD notional or coins) at ``price``."""
    qty = size / price if table.basis == "usd" else size
    return tiered_perp_mm_usd(qty * price, qty, table)


def test_bybit_help_example_tier_by_tier() -> None:
    by_tiers = 1_000 * 0.02 + 1_000 * 0.025 + 1_000 * 0.03 + 500 * 0.035
    assert tiered_perp_mm_usd(100 * 35.0, 100, XYZUSDT) == pytest.approx(by_tiers)
    # Bybit "Margin Parameters": MM = value × MMR − deduction, deduction from the lower tiers
    assert XYZUSDT.tiers[3].mm_deduction_usd == pytest.approx(
        1_000 * 0.005 + 2_000 * 0.005 + 3_000 * 0.005)


def test_bybit_help_btcusdt_rates() -> None:
    """Same page: BTCUSDT at 2,000,000 USDT or below 0.5%; at 2,600,000 USDT 0.56%."""
    btc = BYBIT.perp_tables["BTCUSDT"]
    assert perp_tier(2_000_000, 20, btc).mmr_ratio == 0.005
    assert perp_tier(2_600_000, 26, btc).mmr_ratio == 0.0056
    assert tiered_perp_mm_usd(2_600_000, 26, btc) == pytest.approx(
        2_000_000 * 0.005 + 600_000 * 0.0056)
    assert "2025-09-05" in BYBIT.perp_tables_source


def test_okx_whole_position_takes_the_tier_rate() -> None:
    """OKX help "Multi-currency margin mode: cross margin trading" (okx.com/help/
    iv-multi-currency-margin-mode-cross-margin-trading): Maintenance Margin = ∑(Position
    value × Tier maintenance rate); the tier by contracts (``minSz``–``maxSz``)."""
    btc = OKX.perp_tables["BTC-USDT"]
    assert tiered_perp_mm_usd(1_000_000, 10, btc) == pytest.approx(1_000_000 * 0.004)
    assert tiered_perp_mm_usd(1_001_000, 10.01, btc) == pytest.approx(1_001_000 * 0.005)
    # the tier goes by quantity: a price move does not change it
    assert perp_tier(5_000_000, 10, btc) == perp_tier(500_000, 10, btc)
    assert "2026-08-31" in OKX.perp_tables_source


def _perp_account(model: str, symbol: str, qty: float, cash_usd: float) -> Account:
    return Account(account_id="p", venue=model.split("-", maxsplit=1)[0], model=model,
                   balances=(Balance(asset="USDT", amount=cash_usd, price_key="USDT"),),
                   perps=(Perp(symbol=symbol, qty=qty, entry_price=100_000, price_key="BTC"),))


@pytest.mark.parametrize(("model", "symbol", "qty", "mm_usd"), [
    ("bybit-uta", "BTCUSDT", -25, 2_500_000 * 0.0056 - 1_200),
    ("okx-mc", "BTC-USDT-SWAP", 25, 2_500_000 * 0.005),
    ("okx-mc", "BTC-USDT-SWAP", 60, 6_000_000 * 0.0075),
])
def test_accounts_use_the_venue_tables(model: str, symbol: str, qty: float, mm_usd: float) -> None:
    r = evaluate_account(_perp_account(model, symbol, qty, 20_000), {"USDT": 1.0, "BTC": 100_000.0},
                         PARAMS)
    assert r.maintenance_margin_usd == pytest.approx(mm_usd)


def test_recorded_tables_replace_the_built_ins() -> None:
    doc = {"bybit_risk_limit": [BYBIT_RISK_LIMIT], "okx_position_tiers": [OKX_POSITION_TIERS]}
    p = apply_margin_tables(PARAMS, doc, "recorded 2026-12-04")
    px = {"USDT": 1.0, "BTC": 100_000.0}
    bybit = evaluate_account(_perp_account("bybit-uta", "BTCUSDT", 2, 10_000), px, p)
    assert bybit.maintenance_margin_usd == pytest.approx(200_000 * 0.0033)  # 150x tier
    okx = evaluate_account(_perp_account("okx-mc", "BTC-USDT-SWAP", 250, 10_000), px, p)
    assert okx.maintenance_margin_usd == pytest.approx(25_000_000 * 0.0075)  # past 200 BTC
    assert p.unified.bybit_uta.perp_tables_source == "recorded 2026-12-04"
    assert p.unified.okx_mc.perp_tables_source == "recorded 2026-12-04"
    assert PARAMS.unified.okx_mc.perp_tables["BTC-USDT"].tiers[-1].cap == 600  # not mutated


@settings(max_examples=200, deadline=None)
@given(name=st.sampled_from(sorted(TABLES)), a=st.floats(0, 5e9), b=st.floats(0, 5e9),
       px=st.floats(1, 2e5))
def test_larger_position_never_has_smaller_mm(name: str, a: float, b: float, px: float) -> None:
    table = TABLES[name]
    lo, hi = sorted((a, b))
    mm_lo, mm_hi = _mm_at(table, lo, px), _mm_at(table, hi, px)
    assert mm_lo <= mm_hi + 1e-12 * max(1.0, mm_hi)


@settings(max_examples=100, deadline=None)
@given(name=st.sampled_from(sorted(TABLES)), tier=st.integers(0, 20), px=st.floats(1, 2e5))
def test_mm_at_tier_bounds_continuous_or_step_as_published(name: str, tier: int, px: float) -> None:
    """Bybit (deduction form): no jump. OKX (whole position): a jump of exactly
    bound × price × (MMR_above − MMR_below), and no other."""
    table = TABLES[name]
    assert len(table.tiers) >= 2
    i = tier % (len(table.tiers) - 1)
    below, above = table.tiers[i], table.tiers[i + 1]
    bound = below.cap
    eps = bound * 1e-12
    at, left, right = _mm_at(table, bound, px), _mm_at(table, bound - eps, px), _mm_at(
        table, bound + eps, px)
    notional = bound if table.basis == "usd" else bound * px
    slack = notional * 1e-11 + 1e-6
    assert math.isclose(left, at, abs_tol=slack)  # a tier holds its own cap
    step = 0.0 if name.startswith("bybit") else notional * (above.mmr_ratio - below.mmr_ratio)
    assert math.isclose(right - at, step, abs_tol=slack)


@settings(max_examples=100, deadline=None)
@given(model=st.sampled_from([("bybit-uta", "BTCUSDT"), ("okx-mc", "BTC-USDT-SWAP")]),
       a=st.floats(0, 2_000), b=st.floats(0, 2_000), px=st.floats(1_000, 2e5))
def test_account_mm_monotone_in_position_size(
    model: tuple[str, str], a: float, b: float, px: float
) -> None:
    """A larger Bybit or OKX perp (long or short) never has a smaller account MM."""
    lo, hi = sorted((a, b))
    prices = {"USDT": 1.0, "BTC": px}
    for sign in (1.0, -1.0):
        mm_lo = evaluate_account(_perp_account(*model, sign * lo, 1e6), prices, PARAMS)
        mm_hi = evaluate_account(_perp_account(*model, sign * hi, 1e6), prices, PARAMS)
        assert mm_lo.maintenance_margin_usd <= mm_hi.maintenance_margin_usd * (1 + 1e-12) + 1e-9


@settings(max_examples=200, deadline=None)
@given(name=st.sampled_from(sorted(TABLES)), qty=st.floats(0, 1e5), p1=st.floats(1, 2e5),
       p2=st.floats(1, 2e5))
def test_mm_moves_at_most_units_times_price_move(name: str, qty: float, p1: float, p2: float) -> None:
    """The bound the account re-evaluation skip relies on (monitor.stages.global_risk.risk.status_slack_usd):
    a USD-basis table is continuous with rates ≤ 1; a quantity-basis one keeps its tier."""
    table = TABLES[name]
    moved = abs(tiered_perp_mm_usd(qty * p2, qty, table) - tiered_perp_mm_usd(qty * p1, qty, table))
    assert moved <= qty * abs(p2 - p1) * (1 + 1e-9) + 1e-6
