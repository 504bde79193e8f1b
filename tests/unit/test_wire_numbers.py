"""finite_float: the number a venue's field holds, or the error that names what is wrong."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from monitor.ingest.wire._common import MAX_WIRE_NUMBER, WireError, finite_float


class Text(str):
    """A str subclass (no JSON parser gives one; accepted all the same)."""


@pytest.mark.parametrize(("value", "want"), [("1.5", 1.5), (2, 2.0), (-3.25, -3.25), ("1e18", 1e18),
                                             (Text("0.5"), 0.5), (" 7 ", 7.0)])
def test_numbers_and_numeric_strings_are_read(value: object, want: float) -> None:
    assert finite_float(value, "p") == want


@pytest.mark.parametrize(("value", "reason"), [
    (True, "wrong_type"), (None, "wrong_type"), ([1], "wrong_type"), ("abc", "wrong_type"), ("", "wrong_type"),
    ("nan", "non_finite"), ("-inf", "non_finite"), (float("inf"), "non_finite"), (float("nan"), "non_finite"),
    ("1e19", "out_of_range"), (-2e18, "out_of_range"), (10**400, "out_of_range"), (Text("1e300"), "out_of_range"),
])
def test_what_is_not_a_finite_number_in_range_is_refused_by_name(value: object, reason: str) -> None:
    with pytest.raises(WireError) as err:
        finite_float(value, "p")
    assert err.value.reason == reason and "'p'" in err.value.detail


@given(st.floats(-MAX_WIRE_NUMBER, MAX_WIRE_NUMBER))
def test_a_float_and_its_repr_read_the_same(x: float) -> None:
    assert finite_float(x, "p") == finite_float(repr(x), "p") == x
