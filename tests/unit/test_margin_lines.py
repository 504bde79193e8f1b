"""Liquidation lines exactly as the venues publish them (RISK_MODEL §3), one account per
model sitting exactly on each line, and one a cent on the safe side of it."""

from __future__ import annotations

import pytest

from monitor.models.margin import Account, Balance, Perp, account_status, evaluate_account
from monitor.risk_params import RiskParams

PARAMS = RiskParams()
PX = {"USDT": 1.0, "USDC": 1.0, "BTC": 100_000.0}


def _on_line(model: str, cash_usd: float, mmr: float | None = 0.01, qty: float = 1.0) -> Account:
    """Cash plus one BTC perp at its entry price: equity = cash, MM = notional × mmr."""
    cash = "USDC" if model == "hyperliquid" else "USDT"
    return Account(
        account_id="line",
        venue=model.split("-", maxsplit=1)[0],
        model=model,
        balances=(Balance(asset=cash, amount=cash_usd, price_key=cash),),
        perps=(Perp(symbol="BTC", qty=qty, entry_price=100_000, price_key="BTC", mmr=mmr),),
    )


@pytest.mark.parametrize(
    ("cash_usd", "status"),
    [
        (1_050.0, "liquidation"),  # uniMMR ≤ 105%
        (1_050.01, "reduce_only"),
        (1_200.0, "reduce_only"),  # 105% < uniMMR ≤ 120%
        (1_200.01, "margin_call"),
        (1_500.0, "margin_call"),  # 120% < uniMMR ≤ 150%
        (1_500.01, "normal"),
    ],
)
def test_binance_pm_lines_belong_to_the_worse_status(cash_usd: float, status: str) -> None:
    r = evaluate_account(_on_line("binance-pm", cash_usd), PX, PARAMS)
    assert r.maintenance_margin_usd == 1_000.0
    assert r.status == status


@pytest.mark.parametrize("model", ["bybit-uta", "okx-mc"])
def test_bybit_and_okx_liquidate_exactly_at_the_line(model: str) -> None:
    on = evaluate_account(_on_line(model, 1_000.0), PX, PARAMS)
    assert on.adjusted_equity_usd == on.maintenance_margin_usd == 1_000.0
    assert on.status == "liquidation"
    above = evaluate_account(_on_line(model, 1_000.01), PX, PARAMS)
    assert above.status != "liquidation"


def test_bybit_account_mm_rate_reaching_100pct_is_liquidation() -> None:
    r = evaluate_account(_on_line("bybit-uta", 1_000.0), PX, PARAMS)
    assert r.venue_ratio_name == "account_mm_rate"
    assert r.venue_ratio == 1.0
    assert r.status == "liquidation"


def test_hyperliquid_equity_at_mm_is_not_liquidated() -> None:
    # 0.8 BTC = $80,000 in BTC's first tier (40x): MM = 80,000 / 80 = 1,000
    on = evaluate_account(_on_line("hyperliquid", 1_000.0, mmr=None, qty=0.8), PX, PARAMS)
    assert on.maintenance_margin_usd == 1_000.0
    assert on.status == "margin_call"
    below = evaluate_account(_on_line("hyperliquid", 999.99, mmr=None, qty=0.8), PX, PARAMS)
    assert below.status == "liquidation"
    assert not below.backstop


def test_hyperliquid_backstop_strictly_below_two_thirds_of_mm() -> None:
    # notional 96,000 × 1/32 = 3,000 MM (exact in binary); equity / MM exactly 2/3 is not a
    # backstop ("drops below 2/3"), a cent less is.
    px = {**PX, "BTC": 96_000.0}
    acct = Account(
        account_id="bs", venue="hyperliquid", model="hyperliquid",
        balances=(Balance(asset="USDC", amount=2_000.0, price_key="USDC"),),
        perps=(Perp(symbol="BTC", qty=1, entry_price=96_000, price_key="BTC", mmr=0.03125),),
    )
    on = evaluate_account(acct, px, PARAMS)
    assert on.maintenance_margin_usd == 3_000.0
    assert on.uni_mmr == 2.0 / 3.0
    assert not on.backstop
    assert on.status == "liquidation"
    less = acct.model_copy(
        update={"balances": (Balance(asset="USDC", amount=1_999.99, price_key="USDC"),)}
    )
    assert evaluate_account(less, px, PARAMS).backstop


def test_negative_equity_is_liquidation_without_mm() -> None:
    for model in ("binance-pm", "bybit-uta", "okx-mc", "hyperliquid"):
        venue = PARAMS.unified.venue(model)
        assert account_status(None, -0.01, venue) == "liquidation"
        assert account_status(None, 0.0, venue) == "normal"
