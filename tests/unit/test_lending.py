"""Lending maths (RISK_MODEL §2) and the LoopBook index, checked against golden figures and
brute-force re-evaluation."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from benchmarks.loop_synthetic import synthetic_loop_book
from monitor.models.loops.lending import (
    CollateralEntry,
    DebtEntry,
    LoopBook,
    Position,
    close_factor_ratio,
    collateral_seized,
    driving_price_key,
    health_factor,
    is_liquidatable,
    liquidation_bonus_ratio,
    liquidation_drop_pct,
    liquidation_price,
    loop_collateral,
    loop_debt,
    loop_equity_after_drop,
    loop_leverage,
    loop_liquidation_drop,
    loop_wipe_drop,
    morpho_lif,
    protocol_fee_collateral,
    remap_price_keys,
)
from monitor.risk_params import RiskParams


def _pos(
    pid: str,
    coll: list[tuple[str, float, float, str]],
    debt: list[tuple[str, float, str]],
    protocol: str = "aave-v3",
    **kw: object,
) -> Position:
    return Position.model_validate(
        {
            "position_id": pid,
            "protocol": protocol,
            "collateral": [
                {"asset": a, "amount": x, "liquidation_threshold": lt, "price_key": k}
                for a, x, lt, k in coll
            ],
            "debt": [{"asset": a, "amount": x, "price_key": k} for a, x, k in debt],
            **kw,
        }
    )


# ----------------------------------------------------------------- golden loop figures


def test_loop_golden_figures() -> None:
    c = loop_collateral(100_000, 0.8, 5)
    d = loop_debt(100_000, 0.8, 5)
    lev = loop_leverage(0.8, 5)
    assert round(c) == 368_928
    assert round(d) == 268_928
    assert round(lev, 3) == 3.689
    assert round(loop_equity_after_drop(100_000, lev, 0.25)) == 7_768
    assert round(loop_liquidation_drop(c, d, 0.93) * 100, 1) == 21.6
    assert round(loop_liquidation_drop(c, d, 0.80) * 100, 1) == 8.9
    assert loop_wipe_drop(lev) == pytest.approx(1 / 3.68928)


def test_loop_leverage_converges_to_infinite_rounds() -> None:
    assert loop_leverage(0.8, 200) == pytest.approx(1 / (1 - 0.8))


def test_position_liquidation_drop_matches_loop_formula() -> None:
    c = loop_collateral(100_000, 0.8, 5)
    d = loop_debt(100_000, 0.8, 5)
    p = _pos("p", [("ETH", c / 4000, 0.93, "ETH")], [("USDC", d, "USDC")])
    prices = {"ETH": 4000.0, "USDC": 1.0}
    assert liquidation_drop_pct(p, prices) == pytest.approx(21.6188816, abs=1e-5)
    p_star = liquidation_price(p, prices)
    assert p_star is not None
    assert health_factor(p, {"ETH": p_star, "USDC": 1.0}) == pytest.approx(1.0)


# ----------------------------------------------------------------- health factor


def test_health_factor_aave_multi_asset() -> None:
    p = _pos(
        "a",
        [("ETH", 10, 0.83, "ETH"), ("WBTC", 1, 0.78, "BTC")],
        [("USDC", 50_000, "USDC"), ("USDT", 10_000, "USDT")],
    )
    prices = {"ETH": 4000.0, "BTC": 100_000.0, "USDC": 1.0, "USDT": 1.0}
    expected = (10 * 4000 * 0.83 + 100_000 * 0.78) / 60_000
    assert health_factor(p, prices) == pytest.approx(expected)
    assert not is_liquidatable(p, prices)
    assert driving_price_key(p, prices) == "BTC"


def test_no_debt_is_infinite_and_never_liquidatable() -> None:
    p = _pos("a", [("ETH", 1, 0.8, "ETH")], [])
    assert health_factor(p, {"ETH": 1.0}) == math.inf
    assert liquidation_drop_pct(p, {"ETH": 1.0}) is None


def test_emode_threshold_overrides_entry_threshold() -> None:
    p = _pos(
        "e",
        [("USDe", 100, 0.75, "USDT")],
        [("USDT", 92, "USDT")],
        e_mode="usde-stablecoin",
    )
    prices = {"USDT": 1.0}
    assert health_factor(p, prices) == pytest.approx(93 / 92)
    assert liquidation_bonus_ratio(p) == pytest.approx(0.02)
    with pytest.raises(ValueError, match="e-mode"):
        health_factor(p.model_copy(update={"e_mode": "nope"}), prices)


def test_usde_priced_by_usdt_does_not_move_and_counterfactual_does() -> None:
    """October 2025: Aave valued USDe with the USDT feed; the Binance book did not matter."""
    p = _pos("u", [("USDe", 100, 0.93, "USDT")], [("USDT", 85, "USDT")])
    prices = {"USDT": 1.0, "USDe@binance": 0.65}
    assert not is_liquidatable(p, prices)
    assert liquidation_drop_pct(p, prices) is None
    cf = remap_price_keys(p, {"USDT": "USDe@binance"}, collateral_assets={"USDe"})
    assert cf.debt[0].price_key == "USDT"
    assert is_liquidatable(cf, prices)
    assert liquidation_drop_pct(cf, {"USDT": 1.0, "USDe@binance": 1.0}) == pytest.approx(
        (1 - 85 / 93) * 100
    )


@settings(max_examples=60, deadline=None)
@given(
    amount=st.floats(0.01, 1e6),
    lt=st.floats(0.1, 0.97),
    debt=st.floats(0.01, 1e6),
    p1=st.floats(1e-3, 1e5),
    p2=st.floats(1e-3, 1e5),
)
def test_hf_monotone_in_collateral_price(
    amount: float, lt: float, debt: float, p1: float, p2: float
) -> None:
    p = _pos("m", [("X", amount, lt, "X"), ("Y", 1.0, 0.5, "Y")], [("USDC", debt, "USDC")])
    lo, hi = sorted((p1, p2))
    hf_lo = health_factor(p, {"X": lo, "Y": 3.0, "USDC": 1.0})
    hf_hi = health_factor(p, {"X": hi, "Y": 3.0, "USDC": 1.0})
    assert hf_hi >= hf_lo


# ----------------------------------------------------------------- liquidation terms


def test_close_factor_rules() -> None:
    prices = {"ETH": 4000.0, "USDC": 1.0}
    big = _pos("b", [("ETH", 100, 0.83, "ETH")], [("USDC", 340_000, "USDC")])  # HF 0.976
    assert close_factor_ratio(big, prices) == 0.5
    deep = _pos("d", [("ETH", 100, 0.83, "ETH")], [("USDC", 360_000, "USDC")])  # HF 0.922
    assert close_factor_ratio(deep, prices) == 1.0
    small = _pos("s", [("ETH", 0.4, 0.83, "ETH")], [("USDC", 1_350, "USDC")])
    assert close_factor_ratio(small, prices) == 1.0
    morpho = _pos("m", [("ETH", 100, 0.86, "ETH")], [("USDC", 350_000, "USDC")], "morpho-blue")
    assert close_factor_ratio(morpho, prices) == 1.0


def test_collateral_seized_and_fee() -> None:
    seized = collateral_seized(1_000, 1.0, 4_000.0, 0.05)
    assert seized == pytest.approx(0.2625)
    fee = protocol_fee_collateral(seized, 0.05, 0.10)
    assert fee == pytest.approx(0.2625 * 0.05 / 1.05 * 0.1)


def test_morpho_lif() -> None:
    assert morpho_lif(0.86) == pytest.approx(1 / (0.3 * 0.86 + 0.7))
    assert morpho_lif(0.0) == pytest.approx(1.15)
    assert morpho_lif(0.945) == pytest.approx(1.0168, abs=1e-4)
    m = _pos("m", [("wstETH", 1, 0.945, "ETH")], [("WETH", 0.5, "ETH")], "morpho-blue")
    assert liquidation_bonus_ratio(m) == pytest.approx(morpho_lif(0.945) - 1)


def test_position_rejects_bad_input() -> None:
    with pytest.raises(ValidationError):
        _pos("x", [("ETH", -1, 0.8, "ETH")], [])
    with pytest.raises(ValidationError):
        _pos("x", [("ETH", float("nan"), 0.8, "ETH")], [])
    with pytest.raises(ValidationError):
        Position.model_validate({"position_id": "x", "protocol": "aave-v3", "collateral": [],
                                 "oops": 1})
    with pytest.raises(ValidationError):
        _pos("x", [("A", 1, 0.8, "A"), ("B", 1, 0.8, "B")], [], "morpho-blue")


# ----------------------------------------------------------------- LoopBook


def _random_positions(rng: random.Random, n: int) -> list[Position]:
    keys = ["ETH", "BTC", "USDe@binance", "USDT", "USDC"]
    out = []
    for i in range(n):
        ck = rng.choice(keys[:3])
        coll = [("C" + ck, rng.uniform(0.5, 50), rng.uniform(0.6, 0.93), ck)]
        if rng.random() < 0.3:
            k2 = rng.choice(keys)
            coll.append(("D" + k2, rng.uniform(0.1, 10), rng.uniform(0.5, 0.9), k2))
        debt = [("USDC", rng.uniform(0, 60) * (1 if ck != "BTC" else 25), rng.choice(keys[3:]))]
        if rng.random() < 0.2:
            debt.append(("ETHd", rng.uniform(0, 2), "ETH"))
        out.append(
            Position(
                position_id=f"p{i}",
                protocol=rng.choice(["aave-v3", "generic"]),
                collateral=tuple(
                    CollateralEntry(asset=a, amount=x, liquidation_threshold=lt, price_key=k)
                    for a, x, lt, k in coll
                ),
                debt=tuple(DebtEntry(asset=a, amount=x, price_key=k) for a, x, k in debt),
            )
        )
    return out


_PRICES = {"ETH": 4.0, "BTC": 4.0, "USDe@binance": 1.0, "USDT": 1.0, "USDC": 1.0}


def _brute(positions: list[Position], prices: dict[str, float]) -> set[str]:
    return {p.position_id for p in positions if is_liquidatable(p, prices)}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_loopbook_ticks_match_brute_force(seed: int) -> None:
    rng = random.Random(seed)
    positions = _random_positions(rng, 300)
    prices = dict(_PRICES)
    book = LoopBook.from_positions(positions, prices)
    state = _brute(positions, prices)
    assert set(book.liquidatable_ids()) == state
    for _ in range(60):
        key = rng.choice(list(prices))
        prices[key] = prices[key] * rng.uniform(0.85, 1.15)
        tick = book.update_price(key, prices[key])
        new_state = _brute(positions, prices)
        assert set(tick.newly_liquidatable) == new_state - state
        assert set(tick.recovered) == state - new_state
        assert set(book.liquidatable_ids()) == new_state
        state = new_state


@pytest.mark.parametrize("seed", [4, 5])
def test_ladder_matches_brute_force(seed: int) -> None:
    rng = random.Random(seed)
    positions = _random_positions(rng, 250)
    params = RiskParams()
    book = LoopBook.from_positions(positions, _PRICES, params)
    aggs = {(a["asset"], a["protocol"]): a for a in book.aggregates()}
    now = _brute(positions, _PRICES)
    for step in params.ladder.steps_pct:
        expected: dict[tuple[str, str], int] = {}
        for p in positions:
            if p.position_id in now:
                continue
            key = driving_price_key(p, _PRICES)
            assert key is not None
            shocked = dict(_PRICES)
            shocked[key] = _PRICES[key] * (1 - step / 100)
            if is_liquidatable(p, shocked):
                primary = max(p.collateral, key=lambda c: c.amount * _PRICES[c.price_key])
                g = (primary.asset, p.protocol)
                expected[g] = expected.get(g, 0) + 1
        got = {
            g: next(r["additional_count"] for r in a["ladder"] if r["move_pct"] == step)
            for g, a in aggs.items()
        }
        assert {g: v for g, v in got.items() if v} == expected


def test_aggregates_illusion_ratio() -> None:
    c = loop_collateral(100_000, 0.8, 5)
    d = loop_debt(100_000, 0.8, 5)
    positions = [
        _pos(f"l{i}", [("USDe", c, 0.93, "USDT")], [("USDT", d, "USDT")], e_mode=None)
        for i in range(3)
    ]
    book = LoopBook.from_positions(positions, {"USDT": 1.0})
    (agg,) = book.aggregates()
    assert agg["asset"] == "USDe"
    assert agg["protocol"] == "aave-v3"
    assert agg["gross_collateral_usd"] == pytest.approx(3 * c)
    assert agg["real_equity_usd"] == pytest.approx(300_000)
    assert agg["collateral_illusion_ratio"] == pytest.approx(3.68928)
    assert agg["liquidatable_count"] == 0


def test_counterfactual_price_key_mapping() -> None:
    positions = [
        _pos("u1", [("USDe", 100, 0.93, "USDT")], [("USDT", 80, "USDT")]),
        _pos("u2", [("USDe", 100, 0.93, "USDT")], [("USDT", 90, "USDT")]),
        _pos("e", [("ETH", 1, 0.8, "ETH")], [("USDT", 1000, "USDT")]),
    ]
    prices = {"USDT": 1.0, "ETH": 4000.0}
    book = LoopBook.from_positions(positions, prices)
    cf = book.counterfactual(
        {"USDT": "USDe@binance"}, prices={"USDe@binance": 1.0}, collateral_assets={"USDe"}
    )
    assert book.update_price("USDT", 0.99) == ([], [])
    tick = cf.update_price("USDe@binance", 0.95)
    assert tick.newly_liquidatable == ["u2"]
    tick = cf.update_price("USDe@binance", 0.65)
    assert tick.newly_liquidatable == ["u1"]
    assert sorted(cf.update_price("USDe@binance", 1.0).recovered) == ["u1", "u2"]


def test_ladder_for_key_counts() -> None:
    positions = [
        _pos(f"e{i}", [("ETH", 1, 0.8, "ETH")], [("USDC", 100.0 * i, "USDC")])
        for i in range(1, 31)
    ]
    book = LoopBook.from_positions(positions, {"ETH": 4000.0, "USDC": 1.0})
    ladder = book.ladder_for_key("ETH", [10, 50])
    # liquidatable when 3200 × (1 − s) < 100 i  ⇔  i > 32 (1 − s)
    assert ladder[0]["count"] == sum(1 for i in range(1, 31) if i > 32 * 0.9)
    assert ladder[1]["count"] == sum(1 for i in range(1, 31) if i > 16)


def test_synthetic_book_is_deterministic_and_ticks() -> None:
    a = synthetic_loop_book(5_000, seed=7)
    b = synthetic_loop_book(5_000, seed=7)
    ta = a.update_price("ETH", 3_600.0)
    tb = b.update_price("ETH", 3_600.0)
    assert ta == tb
    assert len(ta.newly_liquidatable) > 0
    coll, debt = a.position_values()
    assert np.all(coll >= debt)


def test_bulk_load_validates_shapes() -> None:
    with pytest.raises(ValueError, match="equal length"):
        LoopBook.bulk_load(
            keys=["A"], prices=[1.0], entry_position=[0, 0], entry_key=[0],
            entry_is_collateral=[True, False], entry_amount=[1.0, 0.5], entry_lt=[0.8, 0.0],
            entry_asset=[0, 0], assets=["A"], position_protocol=[0],
        )
