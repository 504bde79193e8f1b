"""The effective-leverage sketch: quantiles within a relative α of the exact lower sample,
and counts that merge over any split (so sharded and unsharded stages export the same)."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.accounts.watch import ResultColumns
from monitor.models.margin import STATUSES
from monitor.stages.global_risk.leverage_sketch import (
    LEVERAGE_RELATIVE_ACCURACY,
    LeverageSketch,
    leverage_sketch,
    merge_sketches,
)
from monitor.stages.global_risk.shards import SHORTFALLS_SHOWN, VenueFigures, venue_figures

leverages = st.lists(
    st.one_of(st.just(0.0), st.just(float("nan")), st.floats(min_value=1e-3, max_value=1e6)), max_size=300
)


def _exact(levs: np.ndarray, q: float) -> float | None:
    """The lower sample at rank ⌊q·(n − 1)⌋, as the stage reported it before the sketch."""
    kept = np.sort(levs[~np.isnan(levs)])
    return float(kept[int(q * (kept.size - 1))]) if kept.size else None


@settings(max_examples=300, deadline=None)
@given(leverages, st.sampled_from([0.0, 0.1, 0.5, 0.9, 0.99, 1.0]))
def test_a_quantile_is_within_alpha_of_the_sample(values: list[float], q: float) -> None:
    levs = np.array(values, dtype=np.float64)
    want, got = _exact(levs, q), leverage_sketch(levs).quantile(q)
    if want is None:
        assert got is None
    else:
        assert got is not None
        assert abs(got - want) <= LEVERAGE_RELATIVE_ACCURACY * want * (1 + 1e-12)


@settings(max_examples=200, deadline=None)
@given(leverages, st.lists(st.integers(min_value=0, max_value=300), max_size=4))
def test_sketches_merge_to_the_sketch_of_the_union(values: list[float], cuts: list[int]) -> None:
    levs = np.array(values, dtype=np.float64)
    parts = np.split(levs, sorted(min(c, levs.size) for c in cuts))
    assert merge_sketches(leverage_sketch(p) for p in parts) == leverage_sketch(levs)


def test_edges() -> None:
    assert leverage_sketch(np.array([np.nan])).quantile(0.5) is None
    assert LeverageSketch().quantile(0.9) is None
    assert leverage_sketch(np.array([0.0, 0.0, 3.0])).quantile(0.5) == 0.0
    huge = leverage_sketch(np.array([1e300, np.inf]))  # a vanishing equity: a finite bucket
    assert huge.count == 2 and huge.quantile(1.0) == pytest.approx(1e15, rel=LEVERAGE_RELATIVE_ACCURACY)
    assert leverage_sketch(np.array([10.0])).quantile(0.5) == pytest.approx(10.0, rel=LEVERAGE_RELATIVE_ACCURACY)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3), st.floats(0, 1e6),
                          st.one_of(st.floats(0, 1e6), st.just(float("nan"))),
                          st.one_of(st.just(float("nan")), st.floats(0, 1e3))), max_size=60))
def test_venue_figures_are_each_venues_multiset(rows: list[tuple[int, int, float, float, float]]) -> None:
    """Grouped by one sort, the figures equal those of each venue's accounts taken apart."""
    names = ["binance", "bybit", "okx", "hyperliquid"]
    code = np.array([r[0] for r in rows], dtype=np.int64)
    status = np.array([r[1] for r in rows], dtype=np.int8)
    equity, mm, lev = (np.array([r[i] for r in rows], dtype=np.float64) for i in (2, 3, 4))
    got = venue_figures(ResultColumns(names, code, status, equity, mm, lev))
    want = []
    for v, venue in enumerate(names):
        mine = code == v
        if not mine.any():
            continue
        levs = lev[mine][~np.isnan(lev[mine])]
        short = np.sort(np.maximum(mm[mine] - equity[mine], 0.0))[::-1][:SHORTFALLS_SHOWN]
        want.append(VenueFigures(venue, tuple(np.bincount(status[mine], minlength=len(STATUSES)).tolist()),
                                 float(levs.max()) if levs.size else None, tuple(short.tolist()),
                                 leverage_sketch(lev[mine])))
    same = lambda a, b: msgspec.json.encode(a) == msgspec.json.encode(b)  # noqa: E731 - NaN == NaN here
    assert same(got, tuple(sorted(want, key=lambda f: f.venue)))
