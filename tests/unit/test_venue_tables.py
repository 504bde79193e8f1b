"""Venue margin tables read from the venues' documented responses (monitor.ingest.venue_tables)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from monitor.config import EngineConfig
from monitor.ingest.frames import Ingest
from monitor.ingest.venue_tables import (
    VenueTableError,
    apply_margin_tables,
    bybit_collateral_tiers,
    bybit_risk_limits,
    hyperliquid_margin_tables,
    okx_discount_tiers,
    okx_position_tiers,
)
from monitor.models.margin import Account, Balance, Perp, evaluate_account
from monitor.risk_params import RiskParams

# Hyperliquid docs (Info endpoint › Perpetuals, "Retrieve perpetuals metadata"): BTC on
# table 56 ("tiered 40x": 40x to 150M, 20x above), an asset on flat table id 20 (20x).
HL_META: dict[str, Any] = {
    "universe": [
        {"name": "BTC", "szDecimals": 5, "maxLeverage": 40, "marginTableId": 56},
        {"name": "XRP", "szDecimals": 0, "maxLeverage": 20, "marginTableId": 20},
        {"name": "NEW", "szDecimals": 0, "maxLeverage": 3, "marginTableId": 3,
         "onlyIsolated": True},
    ],
    "marginTables": [
        [56, {"description": "tiered 40x", "marginTiers": [
            {"lowerBound": "0.0", "maxLeverage": 40},
            {"lowerBound": "150000000.0", "maxLeverage": 20}]}],
    ],
}
# Bybit API v5 "Get Tiered Collateral Ratio" response example.
BYBIT_COLLATERAL: dict[str, Any] = {
    "retCode": 0, "retMsg": "OK",
    "result": {"list": [{"currency": "BTC", "collateralRatioList": [
        {"minQty": "0", "maxQty": "1000000", "collateralRatio": "0.85"},
        {"minQty": "1000000", "maxQty": "", "collateralRatio": "0"}]}]},
    "retExtInfo": "{}", "time": 1739848984945,
}
# OKX API v5 "Get discount rate and interest-free quota" response example.
OKX_DISCOUNT: dict[str, Any] = {
    "code": "0", "msg": "",
    "data": [{"amt": "0", "ccy": "BTC", "collateralRestrict": False, "discountLv": "1",
              "minDiscountRate": "0", "details": [
                  {"discountRate": "0.98", "liqPenaltyRate": "0.02", "maxAmt": "20",
                   "minAmt": "0", "tier": "1", "disCcyEq": "1000"},
                  {"discountRate": "0.9775", "liqPenaltyRate": "0.0225", "maxAmt": "25",
                   "minAmt": "20", "tier": "2", "disCcyEq": "2000"}]}],
}

# Bybit API v5 "Get Risk Limit" (bybit-exchange.github.io/docs/v5/market/risk-limit) fields;
# BTCUSDT's first two tiers as recorded from the API on 2026-09-17 (300,000 USDT at 0.33%
# MMR, 150x; 2,000,000 at 0.5%, 100x), the third as Bybit's help page gives it (2,600,000 at
# 0.56%) with its mmDeduction left blank, as the API leaves the first tier's.
BYBIT_RISK_LIMIT: dict[str, Any] = {
    "retCode": 0, "retMsg": "OK",
    "result": {"category": "linear", "nextPageCursor": "", "list": [
        {"id": 2, "symbol": "BTCUSDT", "riskLimitValue": "2000000", "maintenanceMargin": "0.005",
         "initialMargin": "0.01", "isLowestRisk": 0, "maxLeverage": "100.00", "mmDeduction": "510"},
        {"id": 1, "symbol": "BTCUSDT", "riskLimitValue": "300000", "maintenanceMargin": "0.0033",
         "initialMargin": "0.0066", "isLowestRisk": 1, "maxLeverage": "150.00", "mmDeduction": ""},
        {"id": 3, "symbol": "BTCUSDT", "riskLimitValue": "2600000", "maintenanceMargin": "0.0056",
         "initialMargin": "0.0111", "isLowestRisk": 0, "maxLeverage": "90.00", "mmDeduction": ""}]},
    "retExtInfo": {}, "time": 1789632000000,
}
# OKX API v5 "Get position tiers" (okx.com/docs-v5/en/#public-data-rest-api-get-position-tiers)
# fields; BTC-USDT's first three tiers as recorded on 2026-08-31 (contracts of 0.01 BTC).
OKX_POSITION_TIERS: dict[str, Any] = {
    "code": "0", "msg": "",
    "data": [
        {"baseMaxLoan": "", "imr": f"{imr}", "instFamily": "BTC-USDT", "instId": "",
         "maxLever": lev, "maxSz": mx, "minSz": mn, "mmr": f"{mmr}", "optMgnFactor": "",
         "quoteMaxLoan": "", "tier": str(i + 1), "uly": "BTC-USDT"}
        for i, (mn, mx, mmr, imr, lev) in enumerate([
            ("0", "1000", 0.004, 0.01, "100"), ("1000.01", "5000", 0.005, 0.015, "66.66"),
            ("5000.01", "20000", 0.0075, 0.02, "50")])
    ],
}


def test_hyperliquid_meta_tables() -> None:
    tables = hyperliquid_margin_tables(HL_META)
    assert [(t.lower_bound_usd, t.max_leverage) for t in tables["BTC"]] == [
        (0.0, 40.0), (150_000_000.0, 20.0)]
    assert [(t.lower_bound_usd, t.max_leverage) for t in tables["XRP"]] == [(0.0, 20.0)]
    assert tables["NEW"][0].mmr_ratio == pytest.approx(1 / 6)


def test_bybit_and_okx_quantity_tiers() -> None:
    btc = bybit_collateral_tiers(BYBIT_COLLATERAL)["BTC"]
    assert btc.basis == "qty"
    assert btc.tiers == ((0.0, 0.85), (1_000_000.0, 0.0))
    okx = okx_discount_tiers(OKX_DISCOUNT)["BTC"]
    assert okx.basis == "qty"
    assert okx.tiers == ((0.0, 0.98), (20.0, 0.9775))


def test_bybit_risk_limits_sorted_with_blank_deductions_derived() -> None:
    btc = bybit_risk_limits([BYBIT_RISK_LIMIT])["BTCUSDT"]
    assert btc.basis == "usd"
    assert [(t.cap, t.mmr_ratio) for t in btc.tiers] == [
        (300_000, 0.0033), (2_000_000, 0.005), (2_600_000, 0.0056)]
    # blank first: 0; blank third: 510 + 2,000,000 × (0.56% − 0.5%) (Bybit "Margin Parameters")
    assert [t.mm_deduction_usd for t in btc.tiers] == pytest.approx([0, 510, 1_710])
    assert bybit_risk_limits(BYBIT_RISK_LIMIT) == {"BTCUSDT": btc}  # one response, not a list


def test_okx_position_tiers_in_coins() -> None:
    btc = okx_position_tiers([OKX_POSITION_TIERS])["BTC-USDT"]
    assert btc.basis == "qty"
    assert [t.cap for t in btc.tiers] == pytest.approx([10, 50, 200])
    assert [t.mmr_ratio for t in btc.tiers] == [0.004, 0.005, 0.0075]
    assert {t.mm_deduction_usd for t in btc.tiers} == {0.0}



@pytest.mark.parametrize(("part", "resp", "field"), [
    ("bybit_risk_limit", {"retCode": 10001, "retMsg": "params error", "result": {}},
     r"bybit_risk_limit.result.list: expected a JSON list"),
    ("bybit_risk_limit", [BYBIT_RISK_LIMIT, {"result": {"list": [{"symbol": "X"}]}}],
     r"bybit_risk_limit\[1\].result.list\[0\].riskLimitValue"),
    ("bybit_risk_limit", {"result": {"list": [
        {"symbol": "X", "riskLimitValue": "1", "maintenanceMargin": "0.02"},
        {"symbol": "X", "riskLimitValue": "2", "maintenanceMargin": "0.01"}]}},
     "X: .*MM rates must not fall"),
    ("okx_position_tiers", {"data": [{"instFamily": "DOGE-USDT", "maxSz": "5", "mmr": "0.01"}]},
     "no contract value"),
    ("okx_position_tiers", {"data": [{"instFamily": "BTC-USDT", "maxSz": "5", "mmr": "1.5"}]},
     "BTC-USDT"),
    ("okx_position_tiers", {"data": [{"instFamily": "BTC-USD", "maxSz": "500", "mmr": "0.005"}]},
     r"data\[0\].instFamily: BTC-USD is an inverse family"),
    # a published deduction that would make MM jump at the 300,000 bound (510 is continuous)
    ("bybit_risk_limit", {"result": {"list": [
        {"symbol": "X", "riskLimitValue": "300000", "maintenanceMargin": "0.0033"},
        {"symbol": "X", "riskLimitValue": "2000000", "maintenanceMargin": "0.005",
         "mmDeduction": "0"}]}}, "X: .*discontinuous"),
])
def test_bad_tier_responses_name_the_field(part: str, resp: Any, field: str) -> None:
    with pytest.raises(VenueTableError, match=field):
        apply_margin_tables(RiskParams(), {part: resp}, "x")


def test_apply_replaces_the_built_ins_and_names_the_source() -> None:
    doc = {"hyperliquid": HL_META, "bybit": BYBIT_COLLATERAL, "okx": OKX_DISCOUNT}
    params = apply_margin_tables(RiskParams(), doc, "recorded meta 2026-12-04")
    hl = params.unified.hyperliquid
    assert hl.margin_tables_source == "recorded meta 2026-12-04"
    assert set(hl.margin_tables) == {"BTC", "XRP", "NEW"}
    assert params.unified.okx_mc.collateral_rates["BTC"].tiers[1] == (20.0, 0.9775)
    assert params.unified.okx_mc.collateral_rates["USDT"].basis == "qty"  # built-in kept
    # OKX: 30 BTC = 20 × 0.98 + 10 × 0.9775 BTC of collateral under the response's tiers
    # (the built-in table has 0.95 above 25 BTC)
    acct = Account(account_id="o", venue="okx", model="okx-mc",
                   balances=(Balance(asset="BTC", amount=30, price_key="BTC"),))
    r = evaluate_account(acct, {"BTC": 100_000.0}, params)
    assert r.adjusted_equity_usd == pytest.approx((19.6 + 9.775) * 100_000)
    built_in = evaluate_account(acct, {"BTC": 100_000.0}, RiskParams())
    assert built_in.adjusted_equity_usd == pytest.approx((19.6 + 4.8875 + 4.75) * 100_000)
    # Hyperliquid: an unlisted coin of the recorded universe uses its own table
    hl_acct = Account(account_id="h", venue="hyperliquid", model="hyperliquid",
                      balances=(Balance(asset="USDC", amount=1_000, price_key="USDC"),),
                      perps=(Perp(symbol="NEW", qty=600, entry_price=10, price_key="NEW"),))
    assert evaluate_account(hl_acct, {"USDC": 1.0, "NEW": 10.0}, params
                            ).maintenance_margin_usd == pytest.approx(1_000)


@pytest.mark.parametrize(("path", "value", "field"), [
    (("universe", 0, "marginTableId"), 57, "margin table 57 is not in marginTables"),
    (("universe", 0, "name"), "", r"meta\.universe\[0\]\.name"),
    (("marginTables", 0, 1, "marginTiers", 1, "lowerBound"), "abc", "lowerBound"),
    (("marginTables", 0, 1, "marginTiers", 1, "maxLeverage"), 80, "must not rise"),
    (("marginTables", 0, 1, "marginTiers", 0, "lowerBound"), "-1", "lowerBound"),
])
def test_bad_meta_names_the_field(path: tuple[Any, ...], value: Any, field: str) -> None:
    meta = copy.deepcopy(HL_META)
    target: Any = meta
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(VenueTableError, match=field):
        hyperliquid_margin_tables(meta)


def test_bad_documents_are_rejected() -> None:
    with pytest.raises(VenueTableError, match="unknown venue"):
        apply_margin_tables(RiskParams(), {"binance": {}}, "x")
    with pytest.raises(VenueTableError, match=r"bybit.result.list\[0\].collateralRatioList"):
        bybit_collateral_tiers({"result": {"list": [{"currency": "BTC"}]}})
    with pytest.raises(VenueTableError, match="discountRate"):
        okx_discount_tiers({"data": [{"ccy": "BTC", "details": [{"minAmt": "0"}]}]})
    with pytest.raises(VenueTableError, match="rates must be within"):
        okx_discount_tiers({"data": [{"ccy": "BTC", "details": [
            {"minAmt": "0", "discountRate": "1.5"}]}]})


def test_ingest_passes_over_a_recorded_table_frame() -> None:
    """A large margin_tables frame is configuration: no dead letter, no events."""
    ingest = Ingest(EngineConfig())
    raw = {"okx": {"code": "0", "data": [{"ccy": f"C{i}", "details": []} for i in range(5000)]}}
    out = list(ingest.feed("liqmon", "margin_tables", raw, 1_760_000_000_000, b"x" * 200_000))
    assert out == []
    assert sum(ingest.stats.deadletters.values()) == 0
