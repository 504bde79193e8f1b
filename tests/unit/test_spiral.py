"""Spiral estimate (RISK_MODEL §7): cascades, routing, conservation properties."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.models.loops.lending import CollateralEntry, DebtEntry, Position
from monitor.models.margin import Account, Balance, Perp
from monitor.risk_params import RiskParams
from monitor.stages.spiral import apply_shocks, route_book_key, run_spiral, walk_bids

PARAMS = RiskParams()


def _loop(pid: str, eth: float, usdc: float, lt: float = 0.83) -> Position:
    return Position(
        position_id=pid,
        protocol="aave-v3",
        collateral=(
            CollateralEntry(asset="ETH", amount=eth, liquidation_threshold=lt, price_key="ETH"),
        ),
        debt=(DebtEntry(asset="USDC", amount=usdc, price_key="USDC"),),
    )


def test_walk_bids_consumes_in_place() -> None:
    levels = [[100.0, 1.0], [99.0, 2.0], [98.0, 1.0]]
    filled, rest, last = walk_bids(levels, 2.5)
    assert (filled, rest, last) == (2.5, 0.0, 99.0)
    assert levels[1][1] == pytest.approx(0.5)
    filled, rest, last = walk_bids(levels, 10.0)
    assert filled == pytest.approx(1.5)
    assert rest == pytest.approx(8.5)
    assert last == 98.0


def test_route_book_key_prefers_price_key_then_index_then_venue() -> None:
    books: dict[str, list[list[float]]] = {"USDe@binance": [], "ETH": []}
    assert route_book_key("USDe", "USDT", books) == "USDe@binance"
    assert route_book_key("ETH", "ETH", books) == "ETH"
    assert route_book_key("WBTC", "BTC", books) is None


def test_apply_shocks() -> None:
    assert apply_shocks({"A": 2.0, "B": 1.0}, {"A": -0.25}) == {"A": 1.5, "B": 1.0}
    with pytest.raises(KeyError):
        apply_shocks({"A": 1.0}, {"C": -0.1})
    with pytest.raises(ValueError):
        apply_shocks({"A": 1.0}, {"A": -1.0})


def test_nothing_liquidatable_converges_in_zero_rounds() -> None:
    res = run_spiral([_loop("p", 10, 1_000)], [], {"ETH": 4_000.0, "USDC": 1.0},
                     {"ETH": [[3_990.0, 100.0]]}, shocks={"ETH": -0.05}, params=PARAMS)
    assert res.rounds == 0
    assert res.converged
    assert res.final_prices["ETH"] == pytest.approx(3_800.0)
    assert res.liquidated_usd_by_stage == {"5": 0.0, "7": 0.0}


def test_eth_loop_cascade_walks_the_book() -> None:
    # liquidation price of p_i = debt / (10 × 0.83): 3,410, 3,229, 3,048, ... Only p0 is
    # under water at 3,400; the sale of its seized ETH pushes the book under the next one.
    positions = [_loop(f"p{i}", 10, 28_300 - 1_500 * i) for i in range(8)]
    book = [[3_400.0 - 40 * j, 0.5] for j in range(60)]
    res = run_spiral(positions, [], {"ETH": 4_000.0, "USDC": 1.0}, {"ETH": book},
                     shocks={"ETH": -0.15}, params=PARAMS)
    assert res.rounds >= 2
    assert res.converged
    assert res.liquidated_usd_by_stage["5"] > 0
    assert res.liquidated_usd_by_venue["aave-v3"] == pytest.approx(res.liquidated_usd_by_stage["5"])
    assert res.final_prices["ETH"] < 3_400.0
    assert res.price_change_pct["ETH"] < -15.0
    assert res.positions_liquidated[:2] == ["p0", "p1"]


def test_unified_account_cascade_on_venue_local_depeg() -> None:
    """Binance values USDe at its own book; Aave values it with USDT: only Binance moves."""
    acct = Account(
        account_id="pm1",
        venue="binance",
        model="binance-pm",
        balances=(
            Balance(asset="USDe", amount=1_000_000, price_key="USDe@binance"),
            Balance(asset="USDT", amount=-600_000, price_key="USDT"),
        ),
    )
    aave = Position(
        position_id="aave-usde",
        protocol="aave-v3",
        collateral=(
            CollateralEntry(asset="USDe", amount=1_000_000, liquidation_threshold=0.93,
                            price_key="USDT"),
        ),
        debt=(DebtEntry(asset="USDT", amount=900_000, price_key="USDT"),),
        e_mode="usde-stablecoin",
    )
    book = [[0.90 - 0.01 * j, 50_000.0] for j in range(10)]
    res = run_spiral([aave], [acct], {"USDe@binance": 1.0, "USDT": 1.0},
                     {"USDe@binance": book}, shocks={"USDe@binance": -0.30}, params=PARAMS)
    assert res.accounts_liquidated == ["pm1"]
    assert res.positions_liquidated == []
    assert res.liquidated_usd_by_stage["7"] > 0
    stage7 = res.liquidated_usd_by_stage["7"]
    assert res.liquidated_usd_by_venue == {"binance": pytest.approx(stage7)}
    assert res.final_prices["USDT"] == 1.0
    assert res.final_prices["USDe@binance"] <= 0.70


def test_perp_close_without_book_is_unrouted() -> None:
    acct = Account(
        account_id="hl",
        venue="hyperliquid",
        model="hyperliquid",
        balances=(Balance(asset="USDC", amount=10_000, price_key="USDC"),),
        perps=(Perp(symbol="BTC", qty=4, entry_price=100_000, price_key="BTC"),),
    )
    res = run_spiral([], [acct], {"BTC": 100_000.0, "USDC": 1.0}, {},
                     shocks={"BTC": -0.02}, params=PARAMS)
    assert res.accounts_liquidated == ["hl"]
    assert res.unrouted_sells_usd["BTC"] > 0


@settings(max_examples=40, deadline=None)
@given(
    loans=st.lists(st.tuples(st.floats(0.1, 50), st.floats(0.0, 0.99)), min_size=1,
                   max_size=12),
    levels=st.lists(st.tuples(st.floats(100, 4_000), st.floats(0.0, 20)), min_size=0,
                    max_size=15),
    shock=st.floats(-0.9, 0.0),
)
def test_spiral_never_liquidates_more_than_exists(
    loans: list[tuple[float, float]], levels: list[tuple[float, float]], shock: float
) -> None:
    prices = {"ETH": 4_000.0, "USDC": 1.0}
    positions = [
        _loop(f"p{i}", eth, eth * 4_000 * 0.83 * ratio) for i, (eth, ratio) in enumerate(loans)
    ]
    book = [[p, q] for p, q in levels]
    res = run_spiral(positions, [], prices, {"ETH": book}, shocks={"ETH": shock}, params=PARAMS)
    total_eth = sum(eth for eth, _ in loans)
    total_debt = sum(p.debt[0].amount for p in positions)
    depth = sum(q for _, q in levels)
    sold = res.sold_qty_by_book.get("ETH", 0.0)
    assert sold <= depth * (1 + 1e-9) + 1e-9
    assert sold + res.unfilled_qty_by_book.get("ETH", 0.0) <= total_eth * (1 + 1e-9)
    assert res.debt_repaid_usd <= total_debt * (1 + 1e-9)
    assert res.liquidated_usd_by_stage["5"] <= total_eth * 4_000 * (1 + shock) * (1 + 1e-9)
    assert res.final_prices["ETH"] <= 4_000 * (1 + shock) * (1 + 1e-12)
    assert res.rounds <= PARAMS.spiral.max_rounds
