"""Unified accounts (RISK_MODEL §3): golden figures, thresholds, engine sells, properties."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from monitor.models.margin import (
    Account,
    Balance,
    Perp,
    account_status,
    asset_equity_usd,
    bracket_for_notional,
    evaluate_account,
    hyperliquid_mmr,
    isolated_long_liquidation_price,
    isolated_short_liquidation_price,
    liquidate_account,
    perp_maintenance_margin_usd,
    tiered_collateral_value_usd,
)
from monitor.risk_params import RiskParams

PARAMS = RiskParams()
BTC_BRACKETS = PARAMS.unified.binance_pm.perp_brackets["BTCUSDT"]


def _acct(model: str, balances: list[tuple[str, float, str]], perps: list[Perp] | None = None,
          **kw: object) -> Account:
    return Account(
        account_id="a1",
        venue=model.split("-", maxsplit=1)[0],
        model=model,
        balances=tuple(Balance(asset=a, amount=x, price_key=k) for a, x, k in balances),
        perps=tuple(perps or ()),
        **kw,
    )


def test_isolated_long_liquidation_price_golden() -> None:
    mmr, cum = bracket_for_notional(0.1 * 100_000, BTC_BRACKETS)
    assert (mmr, cum) == (0.004, 0.0)
    assert round(isolated_long_liquidation_price(100_000, 10, 0.1, mmr, cum), 1) == 90_361.4
    short = isolated_short_liquidation_price(100_000, 10, -0.1, mmr, cum)
    assert short == pytest.approx(110_000 / 1.004)


def test_bracket_cum_and_continuity() -> None:
    mmr, cum = bracket_for_notional(1_000_000, BTC_BRACKETS)
    assert mmr == 0.0065
    assert cum == pytest.approx(50_000 * 0.001 + 600_000 * 0.0015)
    # MM is continuous across every bracket floor
    for tier in BTC_BRACKETS[1:]:
        below = perp_maintenance_margin_usd(tier.floor_usd - 1e-6, BTC_BRACKETS)
        above = perp_maintenance_margin_usd(tier.floor_usd + 1e-6, BTC_BRACKETS)
        assert above == pytest.approx(below, rel=1e-6)


def test_tiered_collateral_rates() -> None:
    tiers = ((0.0, 0.9), (1_000_000.0, 0.7))
    assert tiered_collateral_value_usd(1_500_000, tiers) == pytest.approx(1_250_000)
    assert tiered_collateral_value_usd(500_000, tiers) == pytest.approx(450_000)
    assert asset_equity_usd(-100, 2.0, tiers) == -200.0  # debts count at 100%
    assert asset_equity_usd(10, 1.0, ((0.0, 1.0),)) == 10.0


def test_binance_uni_mmr_and_haircut_only_on_positive_balances() -> None:
    a = _acct(
        "binance-pm",
        [
            ("USDe", 1_000_000, "USDe@binance"),
            ("BNSOL", 1_000, "BNSOL"),
            ("USDT", -700_000, "USDT"),
        ],
    )
    prices = {"USDe@binance": 1.0, "BNSOL": 200.0, "USDT": 1.0}
    r = evaluate_account(a, prices, PARAMS)
    # USDe: 200k at 90% + 800k at 80%; BNSOL 200k at 90%; USDT debt at 100%
    assert r.adjusted_equity_usd == pytest.approx(180_000 + 640_000 + 180_000 - 700_000)
    assert r.maintenance_margin_usd == pytest.approx(700_000 * 0.05)
    assert r.uni_mmr == pytest.approx(300_000 / 35_000)
    assert r.status == "normal"
    assert r.forced_sells == ()
    shocked = evaluate_account(a, {**prices, "USDe@binance": 0.65}, PARAMS, previous=r)
    assert shocked.status == "liquidation"
    assert shocked.driving_asset == "USDe"
    assert shocked.effective_leverage_change is not None
    assert shocked.effective_leverage_change > 0
    assert shocked.forced_sells[0].asset == "USDe"
    after, sells, uncovered = liquidate_account(a, {**prices, "USDe@binance": 0.65}, PARAMS)
    assert uncovered == 0.0
    assert sum(s.usd for s in sells) <= 650_000 + 200_000
    again = evaluate_account(after, {**prices, "USDe@binance": 0.65}, PARAMS)
    assert again.uni_mmr is not None
    assert again.uni_mmr >= PARAMS.unified.binance_pm.target_ratio - 1e-9


def test_engine_sells_healthy_collateral_to_cover_perp_loss() -> None:
    """October pattern: the engine also sells BNSOL and wBETH, not only the asset that fell."""
    a = _acct(
        "binance-pm",
        [("USDe", 1_000_000, "USDe@binance"), ("BNSOL", 1_000, "BNSOL"), ("WBETH", 25, "WBETH")],
        [Perp(symbol="ETHUSDT", qty=750, entry_price=4_000, price_key="ETH")],
    )
    prices = {"USDe@binance": 0.65, "BNSOL": 200.0, "WBETH": 4_000.0, "ETH": 2_800.0, "USDT": 1.0}
    r = evaluate_account(a, prices, PARAMS)
    assert r.status == "liquidation"
    assert r.adjusted_equity_usd < 0
    by_asset = {s.asset: s for s in r.forced_sells}
    assert by_asset["USDe"].usd == pytest.approx(650_000)
    assert by_asset["BNSOL"].usd == pytest.approx(200_000)
    assert by_asset["WBETH"].usd == pytest.approx(50_000)
    assert by_asset["ETHUSDT"].side == "sell"
    assert by_asset["ETHUSDT"].usd == pytest.approx(750 * 2_800)
    assert r.uncovered_shortfall_usd == 0.0


def test_status_thresholds() -> None:
    v = PARAMS.unified.binance_pm
    assert account_status(1.6, 1.0, v) == "normal"
    assert account_status(1.3, 1.0, v) == "margin_call"
    assert account_status(1.1, 1.0, v) == "reduce_only"
    assert account_status(1.0, 1.0, v) == "liquidation"
    assert account_status(None, -1.0, v) == "liquidation"
    assert account_status(None, 5.0, v) == "normal"


def test_no_mm_gives_null_ratio() -> None:
    r = evaluate_account(_acct("binance-pm", [("USDT", 10.0, "USDT")]), {"USDT": 1.0}, PARAMS)
    assert r.uni_mmr is None
    assert r.status == "normal"


def test_hyperliquid_mm_and_backstop() -> None:
    assert hyperliquid_mmr("BTC", PARAMS.unified.hyperliquid) == pytest.approx(0.0125)
    assert hyperliquid_mmr("ETH-PERP", PARAMS.unified.hyperliquid) == pytest.approx(0.02)
    a = _acct(
        "hyperliquid",
        [("USDC", 10_000, "USDC")],
        [Perp(symbol="BTC", qty=4, entry_price=100_000, price_key="BTC")],
    )
    # MM = 400k × 1.25% = 5,000 at 100k; equity 10k
    r = evaluate_account(a, {"USDC": 1.0, "BTC": 100_000.0}, PARAMS)
    assert r.maintenance_margin_usd == pytest.approx(5_000)
    assert r.status == "normal"
    # BTC 98,000: equity 10k − 8k = 2,000 < MM 4,900 and below 2/3 of it
    r2 = evaluate_account(a, {"USDC": 1.0, "BTC": 98_000.0}, PARAMS)
    assert r2.adjusted_equity_usd == pytest.approx(2_000)
    assert r2.status == "liquidation"
    assert r2.backstop  # 2,000 < 2/3 × 4,900
    assert r2.forced_sells[0].kind == "perp"


def test_bybit_account_mm_rate_is_inverse_ratio() -> None:
    a = _acct(
        "bybit-uta",
        [("USDe", 100_000, "USDe@bybit")],
        [Perp(symbol="BTCUSDT", qty=-5, entry_price=100_000, price_key="BTC", mmr=0.01)],
    )
    r = evaluate_account(a, {"USDe@bybit": 1.0, "BTC": 100_000.0}, PARAMS)
    assert r.adjusted_equity_usd == pytest.approx(90_000)  # $100k at 90%
    assert r.venue_ratio_name == "account_mm_rate"
    assert r.venue_ratio == pytest.approx(5_000 / 90_000)
    r2 = evaluate_account(a, {"USDe@bybit": 1.0, "BTC": 117_500.0}, PARAMS)
    assert r2.status == "liquidation"  # equity 2,500 < MM 5,875: account MM rate > 100%
    assert r2.venue_ratio is not None and r2.venue_ratio > 1.0


def test_okx_discounted_equity_and_account_override() -> None:
    a = _acct(
        "okx-mc",
        [("XYZ", 1_000, "XYZ"), ("USDT", -100, "USDT")],
        collateral_rates={"XYZ": [[0, 0.5]]},
    )
    r = evaluate_account(a, {"XYZ": 1.0, "USDT": 1.0}, PARAMS)
    assert r.adjusted_equity_usd == pytest.approx(400)
    assert r.gross_notional_usd == pytest.approx(100)
    with pytest.raises(ValidationError):
        _acct("okx-mc", [], collateral_rates={"XYZ": [[10, 0.5]]})
    with pytest.raises(ValidationError):
        Account.model_validate({"account_id": "x", "venue": "v", "model": "okx-mc", "bad": 1})


@settings(max_examples=60, deadline=None)
@given(
    amount=st.floats(1, 5e6),
    p_hi=st.floats(0.05, 2.0),
    cut=st.floats(0.0, 0.99),
    debt=st.floats(0, 1e6),
)
def test_uni_mmr_falls_when_haircut_asset_falls(
    amount: float, p_hi: float, cut: float, debt: float
) -> None:
    a = _acct(
        "binance-pm",
        [("USDe", amount, "USDe@binance"), ("USDT", -debt - 1.0, "USDT")],
        [Perp(symbol="BTCUSDT", qty=-1, entry_price=100_000, price_key="BTC")],
    )
    base = {"USDT": 1.0, "BTC": 100_000.0}
    hi = evaluate_account(a, {**base, "USDe@binance": p_hi}, PARAMS)
    lo = evaluate_account(a, {**base, "USDe@binance": p_hi * (1 - cut)}, PARAMS)
    assert hi.uni_mmr is not None and lo.uni_mmr is not None
    assert lo.uni_mmr <= hi.uni_mmr


@settings(max_examples=40, deadline=None)
@given(
    usde=st.floats(0, 2e6),
    bnsol=st.floats(0, 1e4),
    debt=st.floats(0, 2e6),
    eth_px=st.floats(500, 8000),
)
def test_engine_never_sells_more_than_held(
    usde: float, bnsol: float, debt: float, eth_px: float
) -> None:
    a = _acct(
        "binance-pm",
        [("USDe", usde, "USDe@binance"), ("BNSOL", bnsol, "BNSOL"), ("USDT", -debt, "USDT")],
        [Perp(symbol="ETHUSDT", qty=300, entry_price=4_000, price_key="ETH")],
    )
    prices = {"USDe@binance": 0.7, "BNSOL": 150.0, "USDT": 1.0, "ETH": eth_px}
    after, sells, uncovered = liquidate_account(a, prices, PARAMS)
    sold = {s.asset: s.usd for s in sells if s.kind == "collateral"}
    assert sold.get("USDe", 0.0) <= usde * 0.7 * (1 + 1e-9) + 1e-6
    assert sold.get("BNSOL", 0.0) <= bnsol * 150.0 * (1 + 1e-9) + 1e-6
    assert all(b.amount >= -1e-6 for b in after.balances if b.asset != "USDT")
    assert uncovered >= 0.0
