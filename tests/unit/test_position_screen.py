"""PositionScreen: a position it rules out is one the exact check passes (debt at most dust,
or HF at least 1); it rules out the positions well clear of both; it defers to the exact
check (None) when it cannot judge."""

from __future__ import annotations

import math
import pickle

from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.models.loops.lending import CollateralEntry, DebtEntry, Position, debt_usd, health_factor
from monitor.models.loops.screen import PositionScreen
from monitor.risk_params import RiskParams
from monitor.stages.global_risk.spiral_clock import SpiralClock
from monitor.stages.spiral import PositionLayout

PARAMS = RiskParams()
KEYS = ("BTC", "ETH", "USDe@binance", "USDT", "sUSDe")
DUST_USD = 1e-6


def exact_passes(pos: Position, prices: dict[str, float]) -> bool:
    """The spiral's own check (stage 5): not liquidatable at ``prices``."""
    return debt_usd(pos, prices) <= DUST_USD or health_factor(pos, prices, PARAMS) >= 1.0


@st.composite
def positions(draw: st.DrawFn, prices: dict[str, float]) -> list[Position]:
    """1–8 positions of 1–3 collateral and 0–3 debt legs, some in an e-mode, with their HF
    drawn at, just around, or far from 1 (the debt scaled to the collateral's weighted value)."""
    out = []
    for n in range(draw(st.integers(1, 8))):
        e_mode = draw(st.sampled_from([None, None, "usde-stablecoin"]))
        protocol = "aave-v3" if e_mode else draw(st.sampled_from(["aave-v3", "generic"]))
        coll = tuple(
            CollateralEntry(asset=k, amount=draw(st.floats(1e-3, 1e4)), price_key=k,
                            liquidation_threshold=draw(st.floats(0.5, 0.97)))
            for k in draw(st.lists(st.sampled_from(KEYS), min_size=1, max_size=3, unique=True)))
        probe = Position(position_id=f"p{n}", protocol=protocol, collateral=coll, e_mode=e_mode)
        weighted = health_factor(probe.model_copy(update={"debt": (DebtEntry(asset="USDT", amount=1.0,
                                                                            price_key="USDT"),)}),
                                 prices, PARAMS) * prices["USDT"]
        hf = draw(st.sampled_from([1.0, 1.0 + 1e-12, 1.0 - 1e-12, 1.0 + 2e-9, 0.5, 3.0, math.inf]))
        debt_keys = draw(st.lists(st.sampled_from(KEYS), max_size=3, unique=True))
        debt = []
        for k in debt_keys:
            share = 1.0 / len(debt_keys)
            debt.append(DebtEntry(asset=k, amount=weighted / hf * share / prices[k], price_key=k))
        if draw(st.booleans()) and debt:  # dust-sized debt, just around the line
            debt = [DebtEntry(asset=debt[0].asset, price_key=debt[0].price_key,
                              amount=DUST_USD * draw(st.sampled_from([0.5, 1.0, 1.0 + 1e-12, 2.0]))
                              / prices[debt[0].price_key])]
        out.append(probe.model_copy(update={"debt": tuple(debt)}))
    return out


prices_st = st.fixed_dictionaries({k: st.floats(1e-3, 2e5) for k in KEYS})


@settings(max_examples=300, deadline=None)
@given(prices_st, st.data())
def test_a_position_ruled_out_passes_the_exact_check(prices: dict[str, float], data: st.DataObject) -> None:
    book = data.draw(positions(prices))
    screen = PositionScreen.of(book, PARAMS)
    assert screen is not None
    shock = data.draw(st.fixed_dictionaries({k: st.floats(0.3, 1.5) for k in KEYS}))
    moved = {k: p * shock[k] for k, p in prices.items()}
    for at in (prices, moved):
        left = screen.candidates(at, DUST_USD)
        assert left is not None and left == sorted(set(left))
        for i, pos in enumerate(book):
            if i not in left:
                assert exact_passes(pos, at), (pos, at)


def test_positions_well_clear_are_ruled_out_and_those_near_the_line_are_left() -> None:
    prices = {"ETH": 4_000.0, "USDT": 1.0}

    def loop(pid: str, debt_usd_: float) -> Position:
        return Position(position_id=pid, protocol="generic",
                        collateral=(CollateralEntry(asset="ETH", amount=1.0, liquidation_threshold=0.8,
                                                    price_key="ETH"),),
                        debt=(DebtEntry(asset="USDT", amount=debt_usd_, price_key="USDT"),))

    book = [loop("healthy", 1_000.0), loop("at-one", 3_200.0), loop("under", 3_500.0), loop("dust", 1e-7),
            Position(position_id="no-debt", protocol="generic", collateral=book_coll())]
    screen = PositionScreen.of(book, PARAMS)
    assert screen is not None
    assert screen.candidates(prices, DUST_USD) == [1, 2]
    # ETH down 25%: the healthy loop (HF 2.4 → 1.8) stays ruled out, "at-one" is under water
    assert screen.candidates({"ETH": 3_000.0, "USDT": 1.0}, DUST_USD) == [1, 2]
    assert screen.candidates({"ETH": 1_000.0, "USDT": 1.0}, DUST_USD) == [0, 1, 2]


def book_coll() -> tuple[CollateralEntry, ...]:
    return (CollateralEntry(asset="ETH", amount=1.0, liquidation_threshold=0.8, price_key="ETH"),)


def test_the_screen_defers_to_the_exact_check_when_it_cannot_judge() -> None:
    loop = Position(position_id="p", protocol="aave-v3", collateral=book_coll(),
                    debt=(DebtEntry(asset="USDT", amount=10.0, price_key="USDT"),))
    screen = PositionScreen.of([loop], PARAMS)
    assert screen is not None
    assert screen.candidates({"ETH": 4_000.0}, DUST_USD) is None  # no price for USDT
    assert screen.candidates({"ETH": math.nan, "USDT": 1.0}, DUST_USD) is None
    assert screen.candidates({"ETH": 0.0, "USDT": 1.0}, DUST_USD) is None
    unknown = loop.model_copy(update={"e_mode": "no-such-mode"})
    assert PositionScreen.of([loop, unknown], PARAMS) is None
    assert PositionScreen.of([], PARAMS) is not None and PositionScreen.of([], PARAMS).candidates({}, DUST_USD) == []


def test_a_layout_serves_the_same_positions_only() -> None:
    """``PositionLayout`` (the spirals' shared holders and screen) is reused only for the
    same position objects in the same order; the spiral clock's copy is not checkpointed."""
    debt = (DebtEntry(asset="USDT", amount=10.0, price_key="USDT"),)
    book = [Position(position_id=f"p{i}", protocol="generic", collateral=book_coll(), debt=debt) for i in range(3)]
    layout = PositionLayout.of(book, PARAMS)
    assert layout.holders == {"ETH": [0, 1, 2], "USDT": [0, 1, 2]} and layout.screen is not None
    assert layout.lays_out(list(book))
    assert not layout.lays_out(book[:2]) and not layout.lays_out(book[::-1])
    assert not layout.lays_out([book[0], book[1].model_copy(), book[2]])  # an equal model, a new object
    assert PositionLayout.of([], PARAMS).screen is None

    clock = SpiralClock(PARAMS, interval_ms=60_000, tolerance_ratio=0.001)
    clock.layout = layout
    restored = pickle.loads(pickle.dumps(clock))
    assert restored.layout is None and restored.params == clock.params
