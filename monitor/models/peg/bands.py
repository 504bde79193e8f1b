"""Peg bands: the per-venue band state machine, its rules and the depth-weighted median.

RISK_MODEL §5: per venue ``deviation_bps = (mid_usd − 1) × 10,000`` with time spent beyond
each band; a band is entered when |deviation| has stayed at or beyond its threshold for the
band's minimum duration (event time) and left, with hysteresis, after |deviation| has stayed
below ``threshold × (1 − hysteresis_ratio)`` for ``clear_duration_ms``. The index price is
the depth-weighted median of the fresh venues (RISK_MODEL §1). Used by
:class:`monitor.models.peg.asset_peg.AssetPeg` event by event and by :mod:`monitor.models.peg.batch` a batch at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any

import numpy as np
from numpy.typing import NDArray

from monitor.alerts import SEVERITIES
from monitor.config import PegConfig

__all__ = [
    "INDEX_VENUE",
    "PegRules",
    "PegTracker",
    "PriceColumns",
    "SteadyPlan",
    "VenuePrice",
    "deviation_bps",
    "weighted_median",
    "weighted_median_rows",
]

#: Venue label of the consolidated index.
INDEX_VENUE = "index"


def deviation_bps(price_usd: float, peg_usd: float) -> float:
    """Peg deviation in basis points: (price / peg − 1) × 10,000 (RISK_MODEL §5)."""
    return (price_usd / peg_usd - 1.0) * 10_000.0


def weighted_median(values: list[float], weights: list[float]) -> float:
    """Depth-weighted median (RISK_MODEL §1): smallest value whose cumulative weight ≥ half.

    Ties at exactly half average the two neighbours, so two equal-weight venues give
    their midpoint.
    """
    if len(values) == 1:
        return values[0]
    pairs = sorted(zip(values, weights, strict=True))
    # Left-to-right running sums (the total is the last one): the vectorised path
    # (:func:`weighted_median_rows`) adds in the same order and gets the same floats.
    running = list(accumulate(w for _, w in pairs))
    half = running[-1] / 2.0
    for i, acc in enumerate(running):
        if acc > half:
            return pairs[i][0]
        if acc == half:
            return (pairs[i][0] + pairs[i + 1][0]) / 2.0
    return pairs[-1][0]


def weighted_median_rows(
    values: NDArray[np.float64], weights: NDArray[np.float64], mask: NDArray[np.bool_]
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """:func:`weighted_median` of each row's masked entries (RISK_MODEL §1), vectorised.

    Same order (value, then weight), same left-to-right sums, same tie rule, so each row
    gives exactly the float :func:`weighted_median` gives. Weights must be positive.
    Returns (medians, ok); ``ok`` is False for a row with no masked entry.
    """
    n, width = values.shape
    v = np.where(mask, values, np.inf)  # unmasked entries sort last and weigh nothing
    w = np.where(mask, weights, 0.0)
    base = np.arange(n) * width
    flat = np.lexsort((w, v), axis=1) + base[:, None]
    sv = v.ravel()[flat]  # each row sorted by (value, weight)
    sw = w.ravel()[flat].T.copy()  # one contiguous column per rank (a handful of venues)
    running = sw[0]
    runs = [running]
    for c in range(1, width):
        running = running + sw[c]  # left to right, as accumulate() adds
        runs.append(running)
    half = running / 2.0
    # First rank whose running weight reaches half (running sums never decrease).
    j = np.zeros(n, dtype=np.intp)
    for run in runs[:-1]:
        j += run < half
    sv_flat = sv.ravel()
    at_j = sv_flat[base + j]
    after_j = sv_flat[base + np.minimum(j + 1, width - 1)]
    tie = np.zeros(n, dtype=np.bool_)
    for c, run in enumerate(runs):
        tie |= (j == c) & (run == half)
    with np.errstate(invalid="ignore"):
        med = np.where(tie, (at_j + after_j) / 2.0, at_j)
    ok = mask[:, 0].copy()
    for c in range(1, width):
        ok |= mask[:, c]
    return med, ok


def _held(cond: NDArray[np.bool_], ts_ms: NDArray[np.int64], since_ms: int | None) -> tuple[int | None, int | None]:
    """A "held since" timer of :class:`PegTracker` run over a batch of events.

    The timer starts at the first event of a run where ``cond`` holds (a run open at the
    batch's start carries ``since_ms``) and resets where it fails. Returns (longest, since
    after the last event): ``longest`` is the largest ``ts − since`` at an event where
    ``cond`` holds (None if it never does) — what update() compares with a duration.
    """
    if cond.all():  # one run over the whole batch (the usual case inside a band)
        since0 = since_ms if since_ms is not None else int(ts_ms[0])
        return int(ts_ms.max()) - since0, since0
    hits = np.flatnonzero(cond)
    if not len(hits):
        return None, None
    n = len(cond)
    opens = cond.copy()
    opens[1:] &= ~cond[:-1]
    run_start = np.maximum.accumulate(np.where(opens, np.arange(n), 0))
    since = ts_ms[run_start]
    if since_ms is not None and bool(cond[0]):
        since = np.where(run_start == 0, since_ms, since)
    longest = int((ts_ms[hits] - since[hits]).max())
    return longest, int(since[-1]) if bool(cond[-1]) else None


@dataclass(frozen=True, slots=True)
class PegRules:
    """PegConfig flattened into tuples for the per-event path."""

    thresholds_bps: tuple[float, ...]
    exit_bps: tuple[float, ...]
    min_durations_ms: tuple[int, ...]
    clear_duration_ms: int
    venue_local_level: int
    normal_band_bps: float
    stale_after_ms: int
    peg_usd: float
    default_depth_usd: float
    ref_exit_factor: float
    #: Other sources fresh and inside the band needed for a venue-local depeg.
    min_witnesses: int = 1
    #: A venue must have stayed beyond the venue-local band this long, on its *current*
    #: deviation, before a venue-local depeg is raised: the shortest duration of the bands
    #: at or above that band, which its level needed anyway.
    venue_local_hold_ms: int = 0
    #: Declared sources (``[[peg.sources]]``): staleness window, index weight, minimum depth.
    stale_windows_ms: dict[str, int] = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=dict)
    min_depths_usd: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_config(cls, cfg: PegConfig) -> PegRules:
        vl_level = SEVERITIES.index(cfg.venue_local_min_severity) + 1
        return cls(
            thresholds_bps=tuple(b.threshold_bps for b in cfg.bands),
            exit_bps=tuple(b.threshold_bps * (1.0 - cfg.hysteresis_ratio) for b in cfg.bands),
            min_durations_ms=tuple(b.min_duration_ms for b in cfg.bands),
            clear_duration_ms=cfg.clear_duration_ms,
            venue_local_level=vl_level,
            normal_band_bps=cfg.normal_band_bps,
            stale_after_ms=cfg.stale_after_ms,
            peg_usd=cfg.peg_usd,
            default_depth_usd=cfg.default_depth_usd,
            ref_exit_factor=1.0 + cfg.hysteresis_ratio,
            min_witnesses=cfg.min_witnesses,
            venue_local_hold_ms=min(b.min_duration_ms for b in cfg.bands[vl_level - 1 :]),
            stale_windows_ms={src.venue: src.stale_window_ms for src in cfg.sources},
            weights={src.venue: src.weight for src in cfg.sources if src.weight != 1.0},
            min_depths_usd={src.venue: src.min_depth_usd for src in cfg.sources if src.min_depth_usd > 0},
        )

    def stale_window_ms(self, venue: str) -> int:
        """Staleness window of ``venue``: its declared source's, else ``stale_after_ms``."""
        return self.stale_windows_ms.get(venue, self.stale_after_ms)


@dataclass(frozen=True, slots=True)
class PriceColumns:
    """A batch of one asset's USD prices as columns: ``venues[src[k]]`` priced event k."""

    venues: list[str]
    src: NDArray[np.int64]
    ts_ms: NDArray[np.int64]
    price_usd: NDArray[np.float64]
    depth_usd: NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class SteadyPlan:
    """A tracker's timers and last values after a batch that changed no level."""

    above_since_ms: list[int | None]
    below_since_ms: int | None
    peak_abs_bps: float
    last_dev_bps: float
    last_ts_ms: int
    in_band_since_ms: int | None


@dataclass(slots=True)
class PegTracker:
    """Band state of one (asset, venue). ``level``: 0 normal, 1..4 = info..critical."""

    n_bands: int
    level: int = 0
    above_since_ms: list[int | None] = field(default_factory=list)
    below_since_ms: int | None = None
    episode_start_ms: int | None = None
    peak_abs_bps: float = 0.0
    last_dev_bps: float = 0.0
    last_ts_ms: int = 0
    #: Since when |deviation| has stayed inside the normal band (None: outside now).
    in_band_since_ms: int | None = None

    def __post_init__(self) -> None:
        if not self.above_since_ms:
            self.above_since_ms = [None] * self.n_bands

    @property
    def inert(self) -> bool:
        """Normal and nothing pending: going stale changes nothing."""
        return self.level == 0 and self.above_since_ms[0] is None and self.below_since_ms is None

    def reset(self) -> None:
        """Back to normal with no timer running (the source's data went stale)."""
        self.level = 0
        self.above_since_ms = [None] * self.n_bands
        self.below_since_ms = None
        self.episode_start_ms = None
        self.peak_abs_bps = 0.0

    def update(self, ts_ms: int, dev_bps: float, rules: PegRules) -> int | None:
        """Feed one deviation; return the previous level when the level changed."""
        self.last_dev_bps = dev_bps
        self.last_ts_ms = ts_ms
        mag = -dev_bps if dev_bps < 0.0 else dev_bps
        if mag < rules.normal_band_bps:
            if self.in_band_since_ms is None:
                self.in_band_since_ms = ts_ms
        else:
            self.in_band_since_ms = None
        above = self.above_since_ms
        if self.level == 0 and mag < rules.thresholds_bps[0]:
            # Calm fast path: nothing pending, nothing to do.
            if above[0] is not None:
                for i in range(self.n_bands):
                    above[i] = None
            return None
        self._mark_above(ts_ms, mag, rules.thresholds_bps)
        if self.level and mag > self.peak_abs_bps:
            self.peak_abs_bps = mag
        target = self._held_level(ts_ms, rules.min_durations_ms)
        previous = self.level
        if target > previous:
            if previous == 0:
                self.episode_start_ms = above[0] if above[0] is not None else ts_ms
                self.peak_abs_bps = mag
            self.level = target
            self.below_since_ms = None
            return previous
        if previous == 0:
            return None
        return self._clear(ts_ms, mag, rules, previous)

    def _mark_above(self, ts_ms: int, mag: float, thresholds: tuple[float, ...]) -> None:
        """Start the timer of each band the deviation is beyond; stop those it fell back from."""
        above = self.above_since_ms
        for i in range(self.n_bands):
            if mag >= thresholds[i]:
                if above[i] is None:
                    above[i] = ts_ms
            else:
                for j in range(i, self.n_bands):
                    above[j] = None
                break

    def _held_level(self, ts_ms: int, durations: tuple[int, ...]) -> int:
        """The highest band held beyond for its minimum duration (0: none)."""
        above = self.above_since_ms
        for i in range(self.n_bands - 1, -1, -1):
            since = above[i]
            if since is not None and ts_ms - since >= durations[i]:
                return i + 1
        return 0

    def _clear(self, ts_ms: int, mag: float, rules: PegRules, previous: int) -> int | None:
        """De-escalation: below the level's exit threshold for ``clear_duration_ms`` (hysteresis)."""
        if mag >= rules.exit_bps[previous - 1]:
            self.below_since_ms = None
            return None
        if self.below_since_ms is None:
            self.below_since_ms = ts_ms
        if ts_ms - self.below_since_ms < rules.clear_duration_ms:
            return None
        new_level = 0
        for i in range(previous - 2, -1, -1):
            if mag >= rules.exit_bps[i]:
                new_level = i + 1
                break
        self.level = new_level
        self.below_since_ms = None
        if new_level == 0:
            self.episode_start_ms = None
        return previous

    def plan_steady(
        self, ts_ms: NDArray[np.int64], dev_bps: NDArray[np.float64], rules: PegRules
    ) -> SteadyPlan | None:
        """The state after :meth:`update` on each (ts, deviation) in turn, if no level changes.

        None when some event might change the level (an escalation or de-escalation
        timer could reach its duration): then the events must go one by one. Changes
        nothing; :meth:`apply` installs the plan.
        """
        mag = np.abs(dev_bps)
        level = self.level
        above: list[int | None] = []
        # Thresholds strictly increase (PegConfig), so band i's timer is held exactly
        # while |deviation| ≥ threshold i, as in update().
        for i, threshold in enumerate(rules.thresholds_bps):
            longest, since = _held(mag >= threshold, ts_ms, self.above_since_ms[i])
            if i >= level and longest is not None and longest >= rules.min_durations_ms[i]:
                return None
            above.append(since)
        in_band_since = _held(mag < rules.normal_band_bps, ts_ms, self.in_band_since_ms)[1]
        below = self.below_since_ms
        peak = self.peak_abs_bps
        if level:
            longest, below = _held(mag < rules.exit_bps[level - 1], ts_ms, self.below_since_ms)
            if longest is not None and longest >= rules.clear_duration_ms:
                return None
            peak = max(peak, float(mag.max()))
        return SteadyPlan(above, below, peak, float(dev_bps[-1]), int(ts_ms[-1]), in_band_since)

    def apply(self, plan: SteadyPlan) -> None:
        self.above_since_ms = plan.above_since_ms
        self.below_since_ms = plan.below_since_ms
        self.peak_abs_bps = plan.peak_abs_bps
        self.last_dev_bps = plan.last_dev_bps
        self.last_ts_ms = plan.last_ts_ms
        self.in_band_since_ms = plan.in_band_since_ms

    def to_state(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "above": self.above_since_ms,
            "below": self.below_since_ms,
            "episode": self.episode_start_ms,
            "peak": self.peak_abs_bps,
            "dev": self.last_dev_bps,
            "ts": self.last_ts_ms,
            "in_band": self.in_band_since_ms,
        }

    @classmethod
    def from_state(cls, n_bands: int, state: dict[str, Any]) -> PegTracker:
        return cls(
            n_bands=n_bands,
            level=int(state["level"]),
            above_since_ms=list(state["above"]),
            below_since_ms=state["below"],
            episode_start_ms=state["episode"],
            peak_abs_bps=float(state["peak"]),
            last_dev_bps=float(state["dev"]),
            last_ts_ms=int(state["ts"]),
            in_band_since_ms=state.get("in_band"),
        )


@dataclass(slots=True)
class VenuePrice:
    """Latest USD mid of one venue for the asset, and its index weight."""

    price_usd: float
    depth_usd: float
    ts_ms: int
