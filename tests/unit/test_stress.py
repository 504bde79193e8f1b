"""Pure core of ``liqmon stress``: parsing, validation and the report."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from monitor.config import load_config_text
from monitor.limits import MAX_SHOCK_MOVE, MIN_INPUT_PRICE, MIN_SHOCK_MOVE
from monitor.models.loops.lending import Position
from monitor.models.margin import Account
from monitor.risk_params import RiskParams
from monitor.stages.stress import (
    StressInputError,
    check_price_keys,
    parse_account,
    parse_books,
    parse_position,
    parse_prices,
    parse_shock,
    stress_report,
)

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "stress"
PARAMS = RiskParams()


def _lines(name: str) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (FIX / name).read_text().splitlines() if x.strip()]


def _inputs() -> tuple[list[Position], list[Account], dict[str, float]]:
    positions = [parse_position(o, "p", i, PARAMS) for i, o in enumerate(_lines("positions.jsonl"))]
    accounts = [parse_account(o, "a", i) for i, o in enumerate(_lines("accounts.jsonl"))]
    prices = parse_prices(json.loads((FIX / "prices.json").read_text()), "prices.json")
    return positions, accounts, prices


def test_parse_shock() -> None:
    key, move = parse_shock("USDe@binance=-35%")
    assert key == "USDe@binance"
    assert move == pytest.approx(-0.35)
    key, move = parse_shock("ETH=-0.1")
    assert key == "ETH"
    assert move == pytest.approx(-0.1)
    for bad in ("ETH", "=-1%", "ETH=abc", "ETH=-100%", "ETH=nan"):
        with pytest.raises(StressInputError):
            parse_shock(bad)


def test_parse_errors_name_file_line_and_field() -> None:
    obj = _lines("positions.jsonl")[1]
    obj["collateral"][0]["amount"] = -1
    with pytest.raises(StressInputError) as ei:
        parse_position(obj, "P.jsonl", 7, PARAMS)
    assert str(ei.value).startswith("P.jsonl:7: collateral[0].amount:")
    obj = {**_lines("positions.jsonl")[0], "colour": "red"}
    with pytest.raises(StressInputError, match=r"P.jsonl:3: colour: unknown key"):
        parse_position(obj, "P.jsonl", 3, PARAMS)
    obj = {**_lines("positions.jsonl")[0], "e_mode": "nope"}
    with pytest.raises(StressInputError, match="e_mode: unknown e-mode"):
        parse_position(obj, "P.jsonl", 1, PARAMS)
    acct = _lines("accounts.jsonl")[0]
    acct["perps"][0]["entry_price"] = math.inf
    with pytest.raises(StressInputError, match=r"A.jsonl:2: perps\[0\].entry_price"):
        parse_account(acct, "A.jsonl", 2)
    with pytest.raises(StressInputError, match=r"prices\.json: ETH: price must be"):
        parse_prices({"ETH": float("nan")}, "prices.json")
    with pytest.raises(StressInputError, match=r"B.json: ETH\[1\]"):
        parse_books({"ETH": [[1.0, 1.0], [1.0, -2.0]]}, "B.json")


def test_missing_price_is_reported_with_field() -> None:
    positions, _accounts, prices = _inputs()
    del prices[positions[0].debt[0].price_key]
    with pytest.raises(StressInputError, match=r"P.jsonl:1: collateral\[0\].price_key: no price for 'USDT'"):
        check_price_keys(list(enumerate(positions, 1)), prices, positions_source="P.jsonl",
                         prices_source="prices.json")


def test_report_shape_and_values() -> None:
    positions, accounts, prices = _inputs()
    shocks = {"USDe@binance": -0.35, "ETH": -0.10}
    report = stress_report(positions, accounts, prices, shocks=shocks, books=None, params=PARAMS).document()
    assert "spiral" not in report
    rows = {r["position_id"]: r for r in report["positions"]}
    assert rows["supply-only"]["health_factor"] is None
    assert rows["aave-usde-loop"]["liquidatable"] is False  # priced with USDT: untouched
    assert rows["aave-usde-loop"]["health_factor"] == pytest.approx(368_928 * 0.93 / 268_928)
    eth = rows["aave-eth-loop"]
    assert eth["health_factor"] == pytest.approx(92.232 * 3_600 * 0.83 / 268_928)
    accts = {a["account_id"]: a for a in report["accounts"]}
    borrower = accts["pm-borrower"]
    assert borrower["status"] == "liquidation"
    assert borrower["adjusted_equity_usd"] == pytest.approx(500_000 * 0.65 * 0.9 - 300_000)
    assert borrower["uni_mmr"] == pytest.approx(borrower["adjusted_equity_usd"] / 15_000)
    assert borrower["forced_sells"][0]["asset"] == "USDe"
    assert report["aggregates"]["accounts_by_status"]["liquidation"] == 1
    assert report["config_id"] == PARAMS.config_id()
    json.dumps(report, allow_nan=False)


def test_report_with_books_has_spiral() -> None:
    positions, accounts, prices = _inputs()
    books = parse_books(json.loads((FIX / "books.json").read_text()), "books.json")
    report = stress_report(positions, accounts, prices, shocks={"USDe@binance": -0.35},
                           books=books, params=PARAMS).document()
    spiral = report["spiral"]
    assert spiral["converged"]
    assert spiral["liquidated_usd_by_stage"]["7"] > 0
    assert spiral["final_prices"]["USDe@binance"] < 0.65


#: Figures the report leaves null where they are undefined (a ratio over equity ≤ 0, no
#: maintenance margin, no debt, no close factor; no driving asset where no asset dropped
#: or carries a haircut): every other is a number.
_UNDEFINED_AT_TIMES = {"effective_leverage", "effective_leverage_change", "venue_ratio", "uni_mmr",
                       "close_factor_ratio", "collateral_illusion_ratio", "health_factor"}


def _bound_inputs() -> tuple[list[Position], list[Account], dict[str, float], dict[str, Any]]:
    """Every number at the input bound (1e18): long and short perps, a loan, each model, a
    loop, books."""
    size = 1e18
    accounts = [parse_account(o, "a", i) for i, o in enumerate([
        {"account_id": "long", "venue": "binance", "model": "binance-pm",
         "balances": [{"asset": "USDe", "amount": size, "price_key": "USDe@binance"},
                      {"asset": "USDT", "amount": -size, "price_key": "USDT"}],
         "perps": [{"symbol": "ETHUSDT", "qty": size, "entry_price": size, "price_key": "ETH", "cum": size}]},
        {"account_id": "short", "venue": "bybit", "model": "bybit-uta",
         "balances": [{"asset": "USDC", "amount": size, "price_key": "USDC"}],
         "perps": [{"symbol": "BTCUSDT", "qty": -size, "entry_price": 1e-9, "price_key": "BTC"}]},
        {"account_id": "hl", "venue": "hyperliquid", "model": "hyperliquid",
         "balances": [{"asset": "USDC", "amount": size, "price_key": "USDC"}],
         "perps": [{"symbol": "BTC", "qty": size, "entry_price": size, "price_key": "BTC"}]},
        {"account_id": "okx", "venue": "okx", "model": "okx-mc",
         "balances": [{"asset": "ETH", "amount": size, "price_key": "ETH"},
                      {"asset": "USDT", "amount": -size, "price_key": "USDT"}]},
    ])]
    positions = [parse_position({"position_id": "loop", "protocol": "aave-v3", "collateral": [
        {"asset": "ETH", "amount": size, "liquidation_threshold": 0.83, "price_key": "ETH"}],
        "debt": [{"asset": "USDT", "amount": size, "price_key": "USDT"}]}, "p", 1, PARAMS)]
    prices = parse_prices({"USDe@binance": size, "USDT": 1.0, "USDC": 1.0, "ETH": size, "BTC": size}, "prices")
    books = parse_books({k: [[size, size]] * 3 for k in ("USDe@binance", "ETH", "BTC")}, "books")
    return positions, accounts, prices, books


def _null_places(doc: Any, place: str = "") -> set[str]:
    """The names of the report's null figures."""
    if isinstance(doc, dict):
        return set().union(*(({k} if v is None else _null_places(v, k)) for k, v in doc.items()))
    if isinstance(doc, list):
        return set().union(*(_null_places(v, place) for v in doc))
    return set()


@pytest.mark.parametrize("shocks", [{}, {"ETH": 1e6}, {"ETH": -0.999999}, {"USDT": 1e6}, {"USDT": -0.9999999}])
def test_at_the_input_bounds_every_figure_stays_a_number(shocks: dict[str, float]) -> None:
    """Accounts, positions, prices and books at 1e18 with the largest shocks: every money
    figure is a number (a null only for a ratio undefined there). A perp of 1e308 before
    the bound crashed the liquidation (a forced sell of inf USD); a settled PnL past the
    input bound must not."""
    positions, accounts, prices, books = _bound_inputs()
    doc = stress_report(positions, accounts, prices, shocks=shocks, books=books, params=PARAMS).document()
    assert _null_places(doc) <= _UNDEFINED_AT_TIMES
    assert any(a["forced_sells"] for a in doc["accounts"])
    assert all(math.isfinite(s["usd"]) for a in doc["accounts"] for s in a["forced_sells"])
    assert all(math.isfinite(a["adjusted_equity_usd"]) for a in doc["accounts"])


_MAGNITUDES = st.sampled_from([1e-300, 1e-18, 1e-9, 1e-3, 1.0, 1e3, 1e9, 1e15, 1e18])
_KEYS = ("USDT", "USDC", "ETH", "BTC", "USDe@binance")


@st.composite
def _any_inputs(draw: st.DrawFn) -> tuple[list[Account], dict[str, float], dict[str, Any], dict[str, float]]:
    """Accounts of every model with amounts, quantities and entry prices anywhere within the
    input bounds (tiny to 1e18, either sign), prices and books from 1e-18 to 1e18, one shock
    anywhere within its bounds."""
    def number(low: float = 0.0) -> float:
        return max(low, min(1e18, draw(_MAGNITUDES) * draw(st.floats(0.1, 1.0))))

    accounts = []
    for i in range(draw(st.integers(1, 4))):
        model = draw(st.sampled_from(["binance-pm", "bybit-uta", "okx-mc", "hyperliquid"]))
        keys = draw(st.lists(st.sampled_from(_KEYS), min_size=1, max_size=3, unique=True))
        balances = [{"asset": k.split("@")[0], "amount": draw(st.sampled_from([1, -1])) * number(), "price_key": k}
                    for k in keys]
        perps = [{"symbol": "BTC" if model == "hyperliquid" else "BTCUSDT", "price_key": "BTC",
                  "qty": draw(st.sampled_from([1, -1])) * number(), "entry_price": number(1e-300)}
                 ] if draw(st.booleans()) else []
        accounts.append(parse_account({"account_id": f"a{i}", "venue": "v", "model": model, "balances": balances,
                                       "perps": perps}, "a", i))
    prices = parse_prices({k: number(MIN_INPUT_PRICE) for k in _KEYS}, "prices")
    books = parse_books({k: [[number(MIN_INPUT_PRICE), number(1e-300)]] * 2 for k in _KEYS}, "books")
    move = draw(st.sampled_from([MIN_SHOCK_MOVE, -0.5, 0.5, MAX_SHOCK_MOVE])
                | st.floats(MIN_SHOCK_MOVE, MAX_SHOCK_MOVE))
    return accounts, prices, books, {draw(st.sampled_from(_KEYS)): move}


@settings(max_examples=400, deadline=None)
@given(_any_inputs())
def test_any_input_within_the_bounds_gives_a_number_for_every_money_figure(
    inputs: tuple[list[Account], dict[str, float], dict[str, Any], dict[str, float]],
) -> None:
    """Within the input bounds (amounts ±1e18, prices 1e-18 to 1e18, moves −99.9999 % to
    +1e8 %) every figure of the report that is defined is a number: no overflow anywhere.
    Found without the price floor: a settlement asset at 1e-301 overflowed a settled PnL to
    a null shortfall."""
    accounts, prices, books, shocks = inputs
    doc = stress_report([], accounts, prices, shocks=shocks, books=books, params=PARAMS).document()
    assert _null_places(doc) <= _UNDEFINED_AT_TIMES | {"driving_asset"}


@pytest.mark.parametrize("move", ["-1.0", "-0.9999999", "2e6"])
def test_a_configured_standard_shock_has_the_same_bounds(move: str) -> None:
    """``[[risk.spiral.standard_shocks]]`` moves are bounded as ``--shock`` and the spiral
    command's are (before: anything above −100 %, 2e6 included)."""
    text = f'[[risk.spiral.standard_shocks]]\nname = "x"\nmoves = {{ ETH = {move} }}\n'
    with pytest.raises(ValidationError, match=r"a move must be from -99\.9999% to"):
        load_config_text(text)
    load_config_text(text.replace(move, "1e6"))
