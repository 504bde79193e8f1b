"""Peg band state machine, index and venue-local rule (RISK_MODEL §5)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from monitor.config import PegBand, PegConfig
from monitor.models.peg.asset_peg import AssetPeg
from monitor.models.peg.bands import PegRules, PegTracker, deviation_bps, weighted_median
from monitor.protocol import Alert

MIN = 60_000


def rules(**over: object) -> PegRules:
    return PegRules.from_config(PegConfig(**over))  # type: ignore[arg-type]


def feed(tracker: PegTracker, r: PegRules, points: list[tuple[int, float]]) -> list[tuple[int, int, int]]:
    changes = []
    for ts, dev in points:
        prev = tracker.update(ts, dev, r)
        if prev is not None:
            changes.append((ts, prev, tracker.level))
    return changes


def test_deviation_bps_formula() -> None:
    assert deviation_bps(0.65, 1.0) == pytest.approx(-3500.0)
    assert deviation_bps(1.0002, 1.0) == pytest.approx(2.0)


def test_single_print_beyond_band_raises_nothing() -> None:
    r = rules()
    t = PegTracker(n_bands=4)
    changes = feed(t, r, [(0, -2.0), (1_000, -3000.0), (2_000, -1.0), (200_000, -1.0)])
    assert changes == []
    assert t.level == 0


def test_escalates_after_min_duration_and_to_highest_qualified_band() -> None:
    r = rules()
    t = PegTracker(n_bands=4)
    changes = feed(t, r, [(0, -150.0), (30_000, -150.0), (60_000, -150.0)])
    assert changes == [(60_000, 0, 2)]  # warning: 100 bps held 60 s
    changes = feed(t, r, [(70_000, -1500.0), (100_000, -1500.0), (130_000, -1500.0)])
    assert changes == [(130_000, 2, 4)]  # critical after its own 60 s


def test_deescalation_needs_hysteresis_and_clear_duration() -> None:
    r = rules(hysteresis_ratio=0.2, clear_duration_ms=120_000)
    t = PegTracker(n_bands=4)
    feed(t, r, [(0, -400.0), (60_000, -400.0)])
    assert t.level == 3
    # 290 bps: below the 300 threshold but above its exit (240): stays high.
    assert feed(t, r, [(70_000, -290.0), (300_000, -290.0)]) == []
    # 200 bps for less than the clear duration: still high.
    assert feed(t, r, [(310_000, -200.0), (400_000, -200.0)]) == []
    # ... and once held 120 s, steps down to warning (200 ≥ 100 × 0.8).
    assert feed(t, r, [(430_000, -200.0)]) == [(430_000, 3, 2)]
    assert feed(t, r, [(440_000, -5.0), (560_000, -5.0)]) == [(560_000, 2, 0)]


def test_state_round_trip() -> None:
    r = rules()
    t = PegTracker(n_bands=4)
    feed(t, r, [(0, -400.0), (60_000, -400.0), (61_000, -30.0)])
    clone = PegTracker.from_state(4, t.to_state())
    assert clone == t


def test_bands_must_be_ordered() -> None:
    with pytest.raises(ValueError, match="strictly increasing"):
        PegConfig(bands=(
            PegBand(severity="info", threshold_bps=50, min_duration_ms=0),
            PegBand(severity="warning", threshold_bps=40, min_duration_ms=0),
            PegBand(severity="high", threshold_bps=300, min_duration_ms=0),
            PegBand(severity="critical", threshold_bps=1000, min_duration_ms=0),
        ))


def test_weighted_median() -> None:
    assert weighted_median([0.65], [1.0]) == 0.65
    assert weighted_median([0.65, 1.0], [1.0, 10.0]) == 1.0
    assert weighted_median([0.6, 1.0], [1.0, 1.0]) == pytest.approx(0.8)
    assert weighted_median([0.9, 0.99, 1.0], [1.0, 1.0, 1.0]) == 0.99


@given(st.lists(st.tuples(st.floats(0.1, 2.0), st.floats(0.01, 1e9)), min_size=1, max_size=8))
def test_weighted_median_within_range(pairs: list[tuple[float, float]]) -> None:
    values = [p for p, _ in pairs]
    m = weighted_median(values, [w for _, w in pairs])
    assert min(values) <= m <= max(values)


def run_venues(points: list[tuple[int, str, float]], **over: object) -> list[Alert]:
    peg = AssetPeg(asset="USDe", rules=rules(**over), config_hash="test")
    out: list[Alert] = []
    for ts, venue, px in points:
        peg.on_price(venue, ts, px, 1e6, out)
    return out


def test_venue_local_depeg_when_other_venues_hold() -> None:
    pts = []
    for s in range(0, 181, 10):
        pts.append((s * 1000, "curve", 0.9995))
        pts.append((s * 1000, "uniswap-v3", 0.9998))
        pts.append((s * 1000 + 1, "binance-spot", 0.93))
    alerts = run_venues(pts)
    local = [a for a in alerts if a.kind == "venue_local_depeg"]
    assert local and local[0].venue == "binance-spot" and local[0].severity == "high"
    assert local[0].evidence["reference_venues"] == ["curve", "uniswap-v3"]
    assert local[0].evidence["price_key"] == "USDe@binance"
    assert not any(a.venue == "curve" for a in alerts)


def test_broad_depeg_is_not_venue_local() -> None:
    pts = []
    for s in range(0, 181, 10):
        pts.append((s * 1000, "curve", 0.95))
        pts.append((s * 1000 + 1, "binance-spot", 0.93))
    alerts = run_venues(pts)
    assert not [a for a in alerts if a.kind == "venue_local_depeg"]
    assert {a.venue for a in alerts if a.kind == "peg_deviation"} >= {"curve", "binance-spot", "index"}


def test_alert_ids_are_deterministic_and_distinct() -> None:
    pts = [(s * 1000, "binance-spot", 0.8) for s in range(0, 200, 5)]
    a1 = run_venues(pts)
    a2 = run_venues(pts)
    assert [a.to_json() for a in a1] == [a.to_json() for a in a2]
    assert len({a.alert_id for a in a1}) == len(a1)
