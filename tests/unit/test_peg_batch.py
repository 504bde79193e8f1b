"""monitor.models.peg.batch.apply_batch: a whole batch at once gives exactly the per-event result.

Short band durations, a short clear duration and a short staleness window make levels,
venue-local episodes and stale venues change inside batches, so both the vectorised
paths and the fallback to the per-event path are exercised and compared after every batch.
"""

from __future__ import annotations

import random

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.config import PegBand, PegConfig, PegSource
from monitor.models.peg.asset_peg import AssetPeg
from monitor.models.peg.bands import PegRules, PriceColumns, weighted_median, weighted_median_rows
from monitor.models.peg.batch import apply_batch
from monitor.protocol import Alert

T0 = 1_760_130_000_000
VENUES = ["binance-spot", "bybit-spot", "curve", "okx"]

CFG = PegConfig(
    bands=(
        PegBand(severity="info", threshold_bps=50.0, min_duration_ms=3_000),
        PegBand(severity="warning", threshold_bps=100.0, min_duration_ms=2_000),
        PegBand(severity="high", threshold_bps=300.0, min_duration_ms=2_000),
        PegBand(severity="critical", threshold_bps=1_000.0, min_duration_ms=1_000),
    ),
    clear_duration_ms=4_000,
    stale_after_ms=6_000,
)

#: Declared sources (issue 19): their own staleness windows, a thin-print floor, an index
#: weight, and a single witness enough, so every new rule also changes states inside batches.
CFG_SOURCES = CFG.model_copy(update={
    "min_witnesses": 1,
    "sources": (
        PegSource(venue="binance-spot", kind="book", stale_after_ms=3_000, min_depth_usd=2e5),
        PegSource(venue="curve", kind="pool", stale_after_ms=9_000, weight=2.5),
        PegSource(venue="okx", kind="oracle", stale_after_ms=20_000),
    ),
})

Event = tuple[str, int, float, float]  # venue, ts_ms, price_usd, depth_usd


def new_peg(cfg: PegConfig = CFG) -> AssetPeg:
    return AssetPeg(asset="USDe", rules=PegRules.from_config(cfg), config_hash="test")


def run_both(events: list[Event], cuts: list[int], cfg: PegConfig = CFG) -> tuple[int, int]:
    """Per-event reference vs apply_batch over ``cuts``; returns (batches taken whole, fallbacks)."""
    ref, fast = new_peg(cfg), new_peg(cfg)
    ref_out: list[Alert] = []
    fast_out: list[Alert] = []
    whole = fallback = 0
    start = 0
    for end in [*cuts, len(events)]:
        chunk = events[start:end]
        start = end
        if not chunk:
            continue
        for venue, ts, px, depth in chunk:
            ref.on_price(venue, ts, px, depth, ref_out)
        venues = sorted({e[0] for e in chunk})  # the batch's own source table
        src = np.array([venues.index(e[0]) for e in chunk], dtype=np.int64)
        ts_arr = np.array([e[1] for e in chunk], dtype=np.int64)
        px_arr = np.array([e[2] for e in chunk], dtype=np.float64)
        depth_arr = np.array([e[3] for e in chunk], dtype=np.float64)
        before = orjson.dumps(fast.to_state())
        if apply_batch(fast, PriceColumns(venues, src, ts_arr, px_arr, depth_arr)):
            whole += 1
        else:
            assert orjson.dumps(fast.to_state()) == before, "a refused batch must change nothing"
            fallback += 1
            for venue, ts, px, depth in chunk:
                fast.on_price(venue, ts, px, depth, fast_out)
        assert [a.to_json() for a in fast_out] == [a.to_json() for a in ref_out]
        assert orjson.dumps(fast.to_state()) == orjson.dumps(ref.to_state())
        assert fast.elevated == ref.elevated
    return whole, fallback


def random_walk(rng: random.Random, n: int) -> list[Event]:
    """Venues drifting in and out of the bands, sometimes alone (venue-local), sometimes silent."""
    level = {v: 1.0 for v in VENUES}
    ts = T0
    out: list[Event] = []
    for _ in range(n):
        ts += rng.choice((0, 1, 5, 20, 100, 250, 500, 1_000))
        venue = rng.choice(VENUES[:3] if rng.random() < 0.9 else VENUES)
        r = rng.random()
        if r < 0.02:
            level[venue] = rng.choice((1.0, 0.997, 0.992, 0.985, 0.96, 0.88, 1.006))
        px = level[venue] * (1.0 + rng.uniform(-8e-4, 8e-4))
        depth = 0.0 if rng.random() < 0.2 else round(rng.uniform(1e5, 5e7), 2)
        out.append((venue, ts, px, depth))
    return out


@pytest.mark.parametrize("cfg", [CFG, CFG_SOURCES], ids=["default", "declared-sources"])
@pytest.mark.parametrize("seed", range(6))
def test_batches_equal_event_by_event(seed: int, cfg: PegConfig) -> None:
    rng = random.Random(seed)
    events = random_walk(rng, 6_000)
    cuts = sorted(rng.sample(range(1, len(events)), 120))
    whole, fallback = run_both(events, cuts, cfg)
    # Both paths ran: most batches whole (calm or steady), some handed to the per-event path.
    assert whole >= 10 and fallback >= 10, (whole, fallback)


def test_steady_path_covers_an_out_of_band_venue() -> None:
    """One venue near −300 bps (straddling the high band) for a minute while the others
    hold: only the batches where a level or the venue-local episode flips go one by one."""
    rng = random.Random(7)
    events: list[Event] = []
    ts = T0
    for k in range(6_000):
        ts += 25
        venue = VENUES[k % 3]
        depeg = venue == "binance-spot" and 1_000 <= k < 4_000
        px = (0.97 if depeg else 1.0) + rng.uniform(-2e-4, 2e-4)
        events.append((venue, ts, px, 1e6))
    whole, fallback = run_both(events, list(range(100, 6_000, 100)))
    # First batch (new venues), the escalation, the de-escalation steps: a handful.
    assert whole >= 50 and 3 <= fallback <= 8, (whole, fallback)


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(VENUES),
            st.sampled_from((0, 1, 250, 500, 1_000, 2_000, 6_000, 7_000)),
            st.sampled_from((1.0, 0.9996, 0.994, 0.989, 0.97, 0.95, 0.85, 1.012)),
            st.sampled_from((0.0, 1e5, 1e6, 3e7)),
        ),
        min_size=1,
        max_size=200,
    ),
    st.lists(st.integers(1, 199), max_size=12),
    st.sampled_from([CFG, CFG_SOURCES]),
)
def test_any_batching_equals_event_by_event(
    steps: list[tuple[str, int, float, float]], cut_points: list[int], cfg: PegConfig
) -> None:
    ts = T0
    events: list[Event] = []
    for venue, gap, px, depth in steps:
        ts += gap
        events.append((venue, ts, px, depth))
    run_both(events, sorted({c for c in cut_points if c < len(events)}), cfg)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.lists(
            st.tuples(st.sampled_from((0.97, 0.99, 1.0, 1.01)), st.sampled_from((1.0, 2.0, 3.0, 0.5)), st.booleans()),
            min_size=4,
            max_size=4,
        ),
        min_size=1,
        max_size=20,
    )
)
def test_weighted_median_rows_equals_weighted_median(rows: list[list[tuple[float, float, bool]]]) -> None:
    values = np.array([[v for v, _, _ in r] for r in rows])
    weights = np.array([[w for _, w, _ in r] for r in rows])
    mask = np.array([[m for _, _, m in r] for r in rows])
    med, ok = weighted_median_rows(values, weights, mask)
    for k, r in enumerate(rows):
        kept = [(v, w) for v, w, m in r if m]
        assert bool(ok[k]) == bool(kept)
        if kept:
            assert float(med[k]) == weighted_median([v for v, _ in kept], [w for _, w in kept])


def test_venue_goes_stale_at_exactly_the_limit_inside_a_batch() -> None:
    """A price exactly ``stale_after_ms`` old is still in the index; one ms later it is out."""
    limit = CFG.stale_after_ms
    events: list[Event] = [
        ("binance-spot", T0, 1.0, 1e6),
        ("curve", T0, 0.994, 1e6),  # −60 bps: out of the first band, so the batch is not calm
        ("binance-spot", T0 + limit - 1, 1.0001, 1e6),
        ("binance-spot", T0 + limit, 1.0001, 1e6),
        ("binance-spot", T0 + limit + 1, 1.0001, 1e6),
    ]
    # At the limit curve is still fresh: the second batch is taken whole.
    assert run_both(events[:4], [2]) == (1, 1)
    # One ms later curve goes stale holding a pending timer, which stale resets (issue 19):
    # that batch goes event by event, with the same result.
    assert run_both(events, [2]) == (0, 2)


def test_thin_prints_only_batch_still_expires_a_stale_source() -> None:
    """A batch of thin prints moves no level, but its time makes curve (held at a level)
    stale: both paths resolve it at the same event."""
    events: list[Event] = []
    ts = T0
    for _ in range(40):  # curve and okx at −5%, binance-spot at par, every 250 ms
        ts += 250
        events += [("curve", ts, 0.95, 1e6), ("okx", ts, 0.95, 1e6), ("binance-spot", ts, 1.0, 1e6)]
    cut = len(events)
    for _ in range(60):  # then only thin binance-spot prints (below its 2e5 floor), 250 ms apart
        ts += 250
        events.append(("binance-spot", ts, 1.0, 1e5))
    # All three per event: new venues; then binance-spot's own last real price outlives its
    # 3 s window while it prints (conservative); then curve goes stale after its 9 s.
    assert run_both(events, [cut, cut + 30], CFG_SOURCES) == (0, 3)
