"""Account figures against the venues' own help pages (RISK_MODEL §3): Binance Portfolio
Margin's worked example, Bybit's account MM rate formula with its risk-limit tiers, OKX's
margin ratio with its position tiers."""

from __future__ import annotations

import pytest

from monitor.models.margin import Account, Balance, Perp, evaluate_account
from monitor.risk_params import RiskParams, usd_tiers

PARAMS = RiskParams()


def test_binance_portfolio_margin_example() -> None:
    """Binance FAQ "Binance Portfolio Margin Pro Maintenance Margin Ratio Calculation"
    (binance.com/en-IN/support/faq/binance-portfolio-margin-pro-maintenance-margin-ratio-
    calculation-5e33af8e6ac04d57a1d0a3398e0a0752), "Collateral Calculation
    and Liquidation Example": BTC 0.1 with a 0.04 loan → margin MM 0.004 BTC; ETH 20 with a
    15 loan → 1.5 ETH (loan × MMR, 10% at 3x leverage per the Classic PM FAQ);
    BTCUSDT_PERP short 0.05 from 52,000, mark 40,000 → uPnL 600 USDT; BTCUSDT_20220624
    long 0.04 from 52,350, mark 42,000 → uPnL −414 USDT; both in the 0.5% MMR bracket.
    uniMMR = ΣEquity / ΣMM with equity = min(net × px × rate, net × px); the example's
    collateral rates are not given, so they are set to 1 here (the COIN-M leg, an inverse
    contract, is not modelled by liqmon and is left out)."""
    px = {"USDT": 1.0, "BTC": 40_000.0, "ETH": 3_000.0, "BTC-0624": 42_000.0}
    loan = 0.10
    acct = Account(
        account_id="binance-example", venue="binance", model="binance-pm",
        balances=(
            Balance(asset="USDT", amount=1_000 + 5_000, price_key="USDT"),
            Balance(asset="BTC", amount=0.1, price_key="BTC"),
            Balance(asset="BTC", amount=-0.04, price_key="BTC", loan_mmr=loan),
            Balance(asset="ETH", amount=20, price_key="ETH"),
            Balance(asset="ETH", amount=-15, price_key="ETH", loan_mmr=loan),
        ),
        perps=(
            Perp(symbol="BTCUSDT", qty=-0.05, entry_price=52_000, price_key="BTC", mmr=0.005),
            Perp(symbol="BTCUSDT_20220624", qty=0.04, entry_price=52_350, price_key="BTC-0624",
                 mmr=0.005),
        ),
        collateral_rates={a: usd_tiers((0, 1.0)) for a in ("USDT", "BTC", "ETH")},
    )
    r = evaluate_account(acct, px, PARAMS)
    margin_mm_usd = 0.004 * px["BTC"] + 1.5 * px["ETH"]  # the example's margin MM column
    futures_mm_usd = 0.005 * 0.05 * 40_000 + 0.005 * 0.04 * 42_000
    assert r.maintenance_margin_usd == pytest.approx(margin_mm_usd + futures_mm_usd)
    equity_usd = 6_000 + 0.06 * px["BTC"] + 5 * px["ETH"] + 600 - 414  # net balances + uPnL
    assert r.adjusted_equity_usd == pytest.approx(equity_usd)
    assert r.uni_mmr == pytest.approx(equity_usd / (margin_mm_usd + futures_mm_usd))
    assert r.venue_ratio == r.uni_mmr and r.venue_ratio_name == "uni_mmr"


def test_bybit_account_mm_rate_with_risk_limit_tiers() -> None:
    """Bybit help "Key Terms and Formulas in Unified Trading Account" (bybitglobal.com/en/
    help-center/article/Glossary-Unified-Trading-Account, updated 2025-09-02): Account MM
    Rate (cross margin) =
    Total Maintenance Margin / (Margin Balance − Haircut Loss + Order Loss); no orders here,
    so both losses are 0. The BTCUSDT perp's MM comes from the risk-limit table:
    2,500,000 USDT × 0.56% − 1,200."""
    acct = Account(account_id="b", venue="bybit", model="bybit-uta",
                   balances=(Balance(asset="USDT", amount=30_000, price_key="USDT"),),
                   perps=(Perp(symbol="BTCUSDT", qty=25, entry_price=100_000, price_key="BTC"),))
    r = evaluate_account(acct, {"USDT": 1.0, "BTC": 100_000.0}, PARAMS)
    mm_usd = 2_500_000 * 0.0056 - 1_200
    assert r.maintenance_margin_usd == pytest.approx(mm_usd)
    assert r.venue_ratio_name == "account_mm_rate"
    assert r.venue_ratio == pytest.approx(mm_usd / 30_000)
    # "Liquidation is triggered when the account's MMR reaches 100%": equity exactly at MM
    on_line = acct.model_copy(update={"balances": (
        Balance(asset="USDT", amount=mm_usd, price_key="USDT"),)})
    assert evaluate_account(on_line, {"USDT": 1.0, "BTC": 100_000.0}, PARAMS).status == "liquidation"


def test_okx_margin_ratio_with_position_tiers() -> None:
    """OKX help "Multi-currency margin mode: cross margin trading": Adjusted Equity =
    ∑(Currency equity × Discount rate × USD price), Maintenance Margin = ∑(Position value ×
    Tier maintenance rate); "Tiered maintenance margin ratio rules": liquidation when the
    margin ratio falls to 100% (equity equal to or less than MM). 60 BTC of BTC-USDT-SWAP
    is 6,000 contracts, in tier 3 (5,000.01–20,000 contracts, 0.75%)."""
    acct = Account(account_id="o", venue="okx", model="okx-mc",
                   balances=(Balance(asset="BTC", amount=1, price_key="BTC"),),
                   perps=(Perp(symbol="BTC-USDT-SWAP", qty=60, entry_price=100_000,
                               price_key="BTC"),))
    r = evaluate_account(acct, {"BTC": 100_000.0}, PARAMS)
    assert r.adjusted_equity_usd == pytest.approx(1 * 0.98 * 100_000)  # BTC 0–20: 0.98
    assert r.maintenance_margin_usd == pytest.approx(6_000_000 * 0.0075)
    assert r.venue_ratio_name == "margin_ratio"
    assert r.venue_ratio == pytest.approx(98_000 / 45_000)
