"""Collateral-rate tier bases (RISK_MODEL §3): USD-value floors (Binance) and coin-quantity
floors (Bybit collateral value ratio, OKX discount rate), the venues' worked examples."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from monitor.models.margin import Account, asset_equity_usd, evaluate_account
from monitor.risk_params import CollateralTiers, RiskParams, qty_tiers, usd_tiers

PARAMS = RiskParams()

# Bybit help "Understanding Collateral Value Ratios in Unified Trading Account" (updated
# 2025-09-18), example table: BTC by quantity 0–10 0.98, 10–20 0.95, 20–30 0.9, 30–40 0.85,
# 40–50 0.8, above 50 nothing.
BYBIT_EXAMPLE_BTC = qty_tiers((0, 0.98), (10, 0.95), (20, 0.9), (30, 0.85), (40, 0.8), (50, 0))


def test_bybit_example_quantity_tiers() -> None:
    # 35 BTC: 10 × 0.98 + 10 × 0.95 + 10 × 0.9 + 5 × 0.85 = 32.55 BTC of collateral
    assert asset_equity_usd(35, 60_000, BYBIT_EXAMPLE_BTC) == pytest.approx(32.55 * 60_000)
    # 9.8 + 9.5 + 9 + 8.5 + 8 = 44.8 BTC; past 50 BTC nothing more counts, at any price
    assert asset_equity_usd(80, 60_000, BYBIT_EXAMPLE_BTC) == pytest.approx(44.8 * 60_000)
    assert asset_equity_usd(80, 30_000, BYBIT_EXAMPLE_BTC) == pytest.approx(44.8 * 30_000)
    # debts count at 100% whatever the basis
    assert asset_equity_usd(-2, 60_000, BYBIT_EXAMPLE_BTC) == -120_000


def test_usd_floors_overstate_collateral_after_a_drop() -> None:
    """The issue's BTC example: the same tiers set at $100k agree, then differ by ~1.5%."""
    by_qty = qty_tiers((0, 0.95), (100, 0.9))
    by_usd = usd_tiers((0, 0.95), (10_000_000, 0.9))
    assert asset_equity_usd(150, 100_000, by_qty) == pytest.approx(
        asset_equity_usd(150, 100_000, by_usd))
    venue_rule = asset_equity_usd(150, 70_000, by_qty)  # 140 BTC × 70k = 9.80M
    usd_rule = asset_equity_usd(150, 70_000, by_usd)  # 10M × 0.95 + 0.5M × 0.9 = 9.95M
    assert venue_rule == pytest.approx(9_800_000)
    assert usd_rule / venue_rule - 1 == pytest.approx(0.0153, abs=1e-4)


def test_account_input_accepts_both_bases() -> None:
    a = Account.model_validate({
        "account_id": "q", "venue": "bybit", "model": "bybit-uta",
        "balances": [{"asset": "BTC", "amount": 35, "price_key": "BTC"}],
        "collateral_rates": {
            "BTC": {"basis": "qty", "tiers": [[0, 0.98], [10, 0.95], [20, 0.9], [30, 0.85],
                                              [40, 0.8], [50, 0]]},
            "ETH": [[0, 0.9], [1_000_000, 0.5]],
        },
    })
    assert a.collateral_rates is not None
    assert a.collateral_rates["BTC"] == BYBIT_EXAMPLE_BTC
    assert a.collateral_rates["ETH"].basis == "usd"
    r = evaluate_account(a, {"BTC": 60_000.0}, PARAMS)
    assert r.adjusted_equity_usd == pytest.approx(32.55 * 60_000)


@pytest.mark.parametrize("bad", [
    {"basis": "coins", "tiers": [[0, 1]]},
    {"basis": "qty", "tiers": [[5, 1]]},
    {"basis": "qty", "tiers": [[0, 1.5]]},
    {"basis": "qty"},
    "0.9",
])
def test_bad_tiers_are_rejected(bad: object) -> None:
    with pytest.raises(ValidationError):
        CollateralTiers.model_validate(bad)


def test_built_in_tables_use_the_venues_basis() -> None:
    u = PARAMS.unified
    assert u.binance_pm.collateral_rates["BTC"].basis == "usd"
    assert u.bybit_uta.collateral_rates["BTC"].basis == "qty"
    assert u.okx_mc.collateral_rates["BTC"].basis == "qty"


@settings(max_examples=100, deadline=None)
@given(qty=st.floats(0, 500), p1=st.floats(1, 2e5), p2=st.floats(1, 2e5),
       basis=st.sampled_from(["usd", "qty"]))
def test_collateral_moves_at_most_units_times_price_move(
    qty: float, p1: float, p2: float, basis: str
) -> None:
    """The bound the account re-evaluation skip relies on (monitor.stages.global_risk.risk.status_slack_usd)."""
    tiers = CollateralTiers(basis=basis, tiers=((0, 0.95), (100, 0.9), (5_000_000, 0.5)))
    moved = abs(asset_equity_usd(qty, p2, tiers) - asset_equity_usd(qty, p1, tiers))
    assert moved <= qty * abs(p2 - p1) * (1 + 1e-9) + 1e-6
