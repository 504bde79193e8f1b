"""Book levels: the plain fast path (lists, and Hyperliquid's dicts) accepts exactly what the
checked path accepts."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.ingest.wire._common import WireError
from monitor.ingest.wire.binance import checked_levels, levels

NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.sampled_from([0.0, -0.0, 1e18, 1.0000001e18, 5e-324]),
)
VALUES = st.one_of(
    NUMBERS,
    NUMBERS.map(repr),
    st.sampled_from(["", " 1.5", "1_000", "nan", "-inf", "0x10", "1e400", "abc", "01.50"]),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=2),
)
LEVEL = st.one_of(
    st.lists(VALUES, min_size=0, max_size=4),
    st.fixed_dictionaries({"px": VALUES, "sz": VALUES, "n": st.integers(0, 5)}),
    st.dictionaries(st.sampled_from(["px", "sz", "n"]), VALUES),  # keys missing
    VALUES,
)


def outcome(fn: Any, value: list[Any]) -> tuple[str, Any]:
    try:
        return "ok", fn(value, "b")
    except WireError as err:
        return "error", (err.reason, str(err))


@settings(max_examples=600, deadline=None)
@given(st.lists(LEVEL, max_size=6))
def test_levels_equal_the_checked_path(value: list[Any]) -> None:
    got = outcome(levels, value)
    assert got == outcome(checked_levels, value)
    if got[0] == "ok":
        for price, qty in got[1]:
            assert price > 0.0 and qty >= 0.0 and price <= 1e18 and qty <= 1e18


def test_the_venues_plain_levels_and_each_rejection_reason() -> None:
    assert levels([["100.5", "2"], ["100.4", "0"]], "b") == ((100.5, 2.0), (100.4, 0.0))
    assert levels([{"px": "1.0", "sz": "3", "n": 1}], "levels[0]") == ((1.0, 3.0),)
    for bad, reason in (([["0", "1"]], "non_positive_price"), ([["1", "-1"]], "negative_quantity"),
                        ([["nan", "1"]], "non_finite"), ([["1e19", "1"]], "out_of_range"),
                        ([[True, "1"]], "wrong_type"), ([["1"]], "wrong_type")):
        assert outcome(levels, bad)[1][0] == reason, bad


#: Numeric strings as venues write them, and as they might: long mantissas, exponents,
#: signs, leading zeros, halfway cases of float rounding.
DECIMALS = st.one_of(
    st.from_regex(r"\A[+-]?[0-9]{1,25}(\.[0-9]{0,25})?([eE][+-]?[0-9]{1,3})?\Z"),
    st.floats(min_value=0.0, max_value=1e18).map(repr),
    st.floats(min_value=0.0, max_value=1e18).map(lambda x: f"{x:.17g}"),
    st.sampled_from(["9007199254740993", "0.1", "1e-400", "2.2250738585072011e-308", "4.9e-324",
                     "1e18", "1.0000000000000001e18", "00012.50", "-0.0", "+1"]),
)
NUMBER = st.one_of(DECIMALS, st.floats(0.0, 1e18), st.integers(0, 10**18))
PAIR = st.lists(NUMBER, min_size=2, max_size=2)
QUAD = st.tuples(NUMBER, NUMBER, VALUES, VALUES).map(list)  # OKX: [price, qty, "0", orders]


@settings(max_examples=800, deadline=None)
@given(st.one_of(st.lists(PAIR, min_size=1, max_size=30), st.lists(QUAD, min_size=1, max_size=30),
                 st.lists(st.one_of(PAIR, QUAD), min_size=1, max_size=6)))
def test_price_quantity_pairs_read_as_float_reads_them(value: list[Any]) -> None:
    """``[[price, qty], ...]`` (Binance, Bybit) and ``[[price, qty, _, _], ...]`` (OKX) go
    through msgspec's conversion: the same
    levels, to the bit, and the same errors as the checked path that reads each with float().
    The one difference is the sign of a zero quantity ("-0" is 0.0 there, -0.0 here): a
    quantity that is not above 0 removes its level either way (``BookSide.apply``)."""
    got, want = outcome(levels, value), outcome(checked_levels, value)
    if got[0] == want[0] == "ok":
        got = "ok", tuple((p, q + 0.0) for p, q in got[1])  # x + 0.0: -0.0 becomes 0.0, all else stays
        want = "ok", tuple((p, q + 0.0) for p, q in want[1])
    assert repr(got) == repr(want)  # repr tells every float by its bits
