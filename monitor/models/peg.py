"""Stablecoin peg monitor: per-venue band state machines and the venue-local depeg rule.

RISK_MODEL §5: per venue ``deviation_bps = (mid_usd − 1) × 10,000`` with time spent beyond
each band; the consolidated index (RISK_MODEL §1: depth-weighted median of the venues,
excluding stale ones) tracked the same way; a *venue-local depeg* is one venue beyond
the alert band while the other venues' index is within the normal band.

Escalation: a band is entered when |deviation| has stayed at or beyond its threshold for
the band's minimum duration (event time). De-escalation has hysteresis: the level drops
only after |deviation| has stayed below ``threshold × (1 − hysteresis_ratio)`` for
``clear_duration_ms``. Time arrives with the events; nothing here reads a clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any

import numpy as np
from numpy.typing import NDArray

from monitor.alerts import SEVERITIES, Alert, Severity, make_alert
from monitor.config import PegConfig, SignalsConfig

__all__ = [
    "INDEX_VENUE",
    "AssetPeg",
    "PegRules",
    "PegTracker",
    "PriceColumns",
    "deviation_bps",
    "weighted_median",
    "weighted_median_rows",
]

#: Venue label of the consolidated index.
INDEX_VENUE = "index"
_LEVEL_NAMES = ("normal", *SEVERITIES)


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


def _fmt_bps(bps: float) -> str:
    return f"{bps:+,.0f} bps"


@dataclass
class AssetPeg:
    """Peg state of one asset across venues (one partition owns it)."""

    asset: str
    rules: PegRules
    config_hash: str
    trackers: dict[str, PegTracker] = field(default_factory=dict)
    prices: dict[str, VenuePrice] = field(default_factory=dict)
    venue_local: dict[str, int] = field(default_factory=dict)
    #: Venues (not the index) currently at or above the venue-local alert level.
    elevated: set[str] = field(default_factory=set)
    #: Venue id → the venue part of its ``ASSET@VENUE`` price key (names the collateral at risk).
    venue_keys: dict[str, str] = field(default_factory=lambda: dict(SignalsConfig().venue_price_keys))
    #: Set when a discrete state changed since the last snapshot (table write needed).
    dirty: bool = False
    #: No source can go stale before this event time (a lower bound; derived, not saved).
    next_stale_check_ms: int = 0

    def tracker(self, venue: str) -> PegTracker:
        tracker = self.trackers.get(venue)
        if tracker is None:
            tracker = PegTracker(n_bands=len(self.rules.thresholds_bps))
            self.trackers[venue] = tracker
        return tracker

    def is_fresh(self, venue: str, vp: VenuePrice, ts_ms: int) -> bool:
        """A source's price is fresh while no older than its staleness window (event time)."""
        return vp.ts_ms >= ts_ms - self.rules.stale_window_ms(venue)

    def index_price(self, ts_ms: int, exclude: str | None = None) -> tuple[float, int] | None:
        """Depth-weighted median of fresh venues (optionally leaving one out); with count."""
        values: list[float] = []
        weights: list[float] = []
        windows = self.rules.stale_windows_ms
        default_window = self.rules.stale_after_ms
        for venue, vp in self.prices.items():
            if venue == exclude or vp.ts_ms < ts_ms - windows.get(venue, default_window):
                continue
            values.append(vp.price_usd)
            weights.append(vp.depth_usd)
        if not values:
            return None
        return weighted_median(values, weights), len(values)

    def witnesses(
        self, venue: str, ts_ms: int, band_bps: float, in_band_by_ms: int | None = None
    ) -> tuple[int, int]:
        """(fresh other sources, those with |deviation| < ``band_bps``) for ``venue``'s test.

        With ``in_band_by_ms``, a witness must also have stayed inside the normal band
        since that time or earlier (its "in band since" timer).
        """
        fresh = in_band = 0
        peg_usd = self.rules.peg_usd
        for other, vp in self.prices.items():
            if other == venue or not self.is_fresh(other, vp, ts_ms):
                continue
            fresh += 1
            if abs((vp.price_usd / peg_usd - 1.0) * 10_000.0) >= band_bps:
                continue
            if in_band_by_ms is not None:
                since = self.trackers[other].in_band_since_ms
                if since is None or since > in_band_by_ms:
                    continue
            in_band += 1
        return fresh, in_band

    def on_price(self, venue: str, ts_ms: int, price_usd: float, depth_usd: float, out: list[Alert]) -> None:
        """Feed one USD price of ``venue``; append any alerts to ``out``."""
        rules = self.rules
        if rules.min_depths_usd and 0.0 < depth_usd < rules.min_depths_usd.get(venue, 0.0):
            # A thin print never moves a level nor the index (issue 19 §5); its time still counts.
            if ts_ms > self.next_stale_check_ms:
                self._expire_stale(ts_ms, out)
            return
        weight = rules.weights.get(venue, 1.0)
        vp = self.prices.get(venue)
        if vp is None:
            self.prices[venue] = VenuePrice(price_usd, (depth_usd or rules.default_depth_usd) * weight, ts_ms)
        else:
            vp.price_usd = price_usd
            if depth_usd:
                vp.depth_usd = depth_usd * weight
            vp.ts_ms = ts_ms
        self.next_stale_check_ms = min(self.next_stale_check_ms, ts_ms + rules.stale_window_ms(venue))
        if ts_ms > self.next_stale_check_ms:
            self._expire_stale(ts_ms, out)
        tracker = self.tracker(venue)
        dev = (price_usd / rules.peg_usd - 1.0) * 10_000.0
        previous = tracker.update(ts_ms, dev, rules)
        if previous is not None:
            self.dirty = True
            if tracker.level >= rules.venue_local_level:
                self.elevated.add(venue)
            else:
                self.elevated.discard(venue)
            out.append(self._level_alert(venue, tracker, previous, ts_ms, price_usd))
        if len(self.prices) > 1:
            index = self.index_price(ts_ms)
            if index is not None:
                idx_tracker = self.tracker(INDEX_VENUE)
                idx_prev = idx_tracker.update(ts_ms, (index[0] / rules.peg_usd - 1.0) * 10_000.0, rules)
                if idx_prev is not None:
                    self.dirty = True
                    out.append(self._level_alert(INDEX_VENUE, idx_tracker, idx_prev, ts_ms, index[0]))
        if self.elevated or self.venue_local:
            self._check_venue_local(ts_ms, out)

    def on_time(self, ts_ms: int, out: list[Alert]) -> None:
        """Event time has reached ``ts_ms`` on the stream (a tick), with or without prices here.

        Issue 19 §2, no alert outlives its data: when every source of the asset stops, no
        price of it arrives to judge them by, so the stream's ticks expire them.
        """
        if ts_ms > self.next_stale_check_ms:
            self._expire_stale(ts_ms, out)

    def _expire_stale(self, ts_ms: int, out: list[Alert]) -> None:
        """Resolve the alerts of every source whose data went stale (reason ``stale``)."""
        next_check = ts_ms + self.rules.stale_after_ms
        for venue, vp in self.prices.items():
            limit_ms = vp.ts_ms + self.rules.stale_window_ms(venue)
            if ts_ms <= limit_ms:
                next_check = min(next_check, limit_ms)
                continue
            tracker = self.trackers.get(venue)
            if tracker is None or tracker.inert:
                continue
            previous = tracker.level
            active = self.venue_local.pop(venue, 0)
            tracker.reset()
            self.elevated.discard(venue)
            if active:
                out.append(self._venue_local_alert(venue, tracker, ts_ms, None, None, active, reason="stale"))
            if previous:
                self.dirty = True
                out.append(self._stale_alert(venue, vp, previous, ts_ms))
        self._expire_stale_index(ts_ms, out)
        self.next_stale_check_ms = next_check

    def _expire_stale_index(self, ts_ms: int, out: list[Alert]) -> None:
        """With no fresh source left the index has no price: its alert is resolved as stale."""
        tracker = self.trackers.get(INDEX_VENUE)
        if tracker is None or tracker.inert or not self.prices or self.index_price(ts_ms) is not None:
            return
        last_ts_ms = max(vp.ts_ms for vp in self.prices.values())
        last_usd = self.rules.peg_usd * (1.0 + tracker.last_dev_bps / 10_000.0)
        previous = tracker.level
        tracker.reset()
        if previous:
            self.dirty = True
            out.append(self._stale_alert(INDEX_VENUE, VenuePrice(last_usd, 0.0, last_ts_ms), previous, ts_ms))

    def _alert(
        self, kind: str, ts_ms: int, severity: Severity, venue: str, message: str,
        evidence: dict[str, Any], identity: str,
    ) -> Alert:
        return make_alert(
            kind=kind, ts_ms=ts_ms, severity=severity, venue=venue, asset=self.asset,
            message=message, evidence=evidence, config_hash=self.config_hash, identity=identity,
        )

    def _level_alert(
        self, venue: str, tracker: PegTracker, previous: int, ts_ms: int, price_usd: float
    ) -> Alert:
        level = tracker.level
        dev = tracker.last_dev_bps
        rising = level > previous
        if level == 0:
            severity: Severity = "info"
            message = (
                f"{self.asset} on {venue} back within the peg bands at {price_usd:.4f} USD "
                f"({_fmt_bps(dev)}); the episode peaked at {tracker.peak_abs_bps:,.0f} bps."
            )
        else:
            severity = SEVERITIES[level - 1]
            band = self.rules.thresholds_bps[level - 1]
            if rising:
                held_s = self.rules.min_durations_ms[level - 1] / 1000
                message = (
                    f"{self.asset} on {venue} at {price_usd:.4f} USD ({_fmt_bps(dev)}) has stayed "
                    f"beyond the {severity} band ({band:,.0f} bps) for at least {held_s:.0f} s."
                )
            else:
                message = (
                    f"{self.asset} on {venue} eased to {price_usd:.4f} USD ({_fmt_bps(dev)}): "
                    f"down from {_LEVEL_NAMES[previous]} to {severity} (band {band:,.0f} bps)."
                )
        evidence: dict[str, Any] = {
            "price_usd": round(price_usd, 6),
            "deviation_bps": round(dev, 2),
            "level": _LEVEL_NAMES[level],
            "previous_level": _LEVEL_NAMES[previous],
            "direction": "escalation" if rising else "de-escalation",
            "episode_start_ms": tracker.episode_start_ms,
            "peak_abs_bps": round(tracker.peak_abs_bps, 2),
            "resolved": level == 0,
        }
        return self._alert("peg_deviation", ts_ms, severity, venue, message, evidence, f"{previous}->{level}")

    def _check_venue_local(self, ts_ms: int, out: list[Alert]) -> None:
        """Raise, escalate or end each venue's venue-local depeg (RISK_MODEL §5, issue 19).

        Like with like: the venue's *current* deviation must have stayed beyond the
        venue-local band for ``venue_local_hold_ms`` (its held level alone is not enough),
        and the reference is the other sources' current prices: their depth-weighted
        median inside the normal band, with at least ``min_witnesses`` fresh sources
        inside it too. Staying needs the same with the band widened by the hysteresis ratio.
        """
        rules = self.rules
        for venue, tracker in self.trackers.items():
            if venue == INDEX_VENUE:
                continue
            active_level = self.venue_local.get(venue, 0)
            ref = None
            in_band = 0
            # Hysteresis on the reference too: entering needs it inside the normal band,
            # staying needs it inside the band widened by the hysteresis ratio.
            limit = rules.normal_band_bps * (rules.ref_exit_factor if active_level else 1.0)
            if tracker.level >= rules.venue_local_level:
                ref = self.index_price(ts_ms, exclude=venue)
                # Raising needs witnesses inside the band since before the venue left it.
                since = None if active_level else tracker.above_since_ms[rules.venue_local_level - 1]
                in_band = self.witnesses(venue, ts_ms, limit, since)[1]
            ref_dev = None if ref is None else (ref[0] / rules.peg_usd - 1.0) * 10_000.0
            is_local = ref_dev is not None and abs(ref_dev) < limit and in_band >= rules.min_witnesses
            if is_local and tracker.level > active_level and self._held_beyond(tracker, ts_ms):
                self.venue_local[venue] = tracker.level
                self.dirty = True
                out.append(self._venue_local_alert(venue, tracker, ts_ms, ref, ref_dev, active_level))
            elif active_level and not is_local:
                del self.venue_local[venue]
                self.dirty = True
                if tracker.level < rules.venue_local_level:
                    reason = "recovered"
                elif ref_dev is not None and abs(ref_dev) >= limit:
                    reason = "reference_left_band"
                else:
                    reason = "undetermined"
                out.append(self._venue_local_alert(venue, tracker, ts_ms, ref, ref_dev, active_level, reason))

    def _held_beyond(self, tracker: PegTracker, ts_ms: int) -> bool:
        """The venue's current |deviation| has stayed beyond the venue-local band long enough."""
        since = tracker.above_since_ms[self.rules.venue_local_level - 1]
        return since is not None and ts_ms - since >= self.rules.venue_local_hold_ms

    def undetermined(self) -> dict[str, str]:
        """Venues at the venue-local level that cannot be judged, with the reason why.

        ``too_few_sources``: fewer other sources than ``min_witnesses`` were ever seen;
        ``stale_witnesses``: enough were seen, but too few are fresh now. Judged at the
        newest event time of the asset (no clock read).
        """
        if not self.elevated or not self.prices:
            return {}
        ts_ms = max(vp.ts_ms for vp in self.prices.values())
        need = self.rules.min_witnesses
        reasons: dict[str, str] = {}
        for venue in sorted(self.elevated):
            fresh = self.witnesses(venue, ts_ms, 0.0)[0]
            if fresh >= need:
                continue
            reasons[venue] = "too_few_sources" if len(self.prices) - 1 < need else "stale_witnesses"
        return reasons

    def _venue_local_alert(
        self,
        venue: str,
        tracker: PegTracker,
        ts_ms: int,
        ref: tuple[float, int] | None,
        ref_dev: float | None,
        previous: int,
        reason: str | None = None,
    ) -> Alert:
        active = self.venue_local.get(venue, 0)
        vp = self.prices[venue]
        others = sorted(v for v in self.prices if v != venue)
        if active:
            severity: Severity = SEVERITIES[active - 1]
            assert ref is not None and ref_dev is not None
            message = (
                f"Venue-local depeg: {self.asset} on {venue} at {vp.price_usd:.4f} USD "
                f"({_fmt_bps(tracker.last_dev_bps)}) while the other venues' index is "
                f"{ref[0]:.4f} USD ({_fmt_bps(ref_dev)}); collateral priced on {venue} is at risk."
            )
        else:
            severity = "info"
            why = self._end_why(venue, tracker, ref_dev, reason)
            message = f"Venue-local depeg of {self.asset} on {venue} ended: {why}."
        evidence: dict[str, Any] = {
            "venue_price_usd": round(vp.price_usd, 6),
            "venue_deviation_bps": round(tracker.last_dev_bps, 2),
            "reference_price_usd": None if ref is None else round(ref[0], 6),
            "reference_deviation_bps": None if ref_dev is None else round(ref_dev, 2),
            "reference_venues": others,
            "venue_level": _LEVEL_NAMES[tracker.level],
            "price_key": f"{self.asset}@{self.venue_keys.get(venue, venue)}",
            "resolved": active == 0,
        }
        if reason is not None:
            evidence["reason"] = reason
        return self._alert("venue_local_depeg", ts_ms, severity, venue, message, evidence, f"{previous}->{active}")

    def _end_why(self, venue: str, tracker: PegTracker, ref_dev: float | None, reason: str | None) -> str:
        """Why a venue-local depeg ended, in words."""
        if reason == "stale":
            window_s = self.rules.stale_window_ms(venue) / 1000
            return f"no price from {venue} for more than {window_s:,.0f} s (stale)"
        if reason == "reference_left_band" and ref_dev is not None:
            return f"the other venues' index has left the normal band ({_fmt_bps(ref_dev)})"
        if reason == "undetermined":
            return (
                f"fewer than {self.rules.min_witnesses} other fresh sources are left inside "
                "the band to compare with (undetermined)"
            )
        return f"{venue} is back to {_LEVEL_NAMES[tracker.level]}"

    def _stale_alert(self, venue: str, vp: VenuePrice, previous: int, ts_ms: int) -> Alert:
        """The peg alert of a source whose data stopped, resolved with reason ``stale``."""
        age_s = (ts_ms - vp.ts_ms) / 1000
        if venue == INDEX_VENUE:
            message = (
                f"{self.asset} index: no fresh source for {age_s:,.0f} s (every source stale); "
                f"its {_LEVEL_NAMES[previous]} peg alert is resolved until a source prices again."
            )
        else:
            message = (
                f"{self.asset} on {venue}: no price for {age_s:,.0f} s (stale after "
                f"{self.rules.stale_window_ms(venue) / 1000:,.0f} s); its {_LEVEL_NAMES[previous]} "
                f"peg alert is resolved and {venue} leaves the index until it prices again."
            )
        evidence: dict[str, Any] = {
            "price_usd": round(vp.price_usd, 6),
            "last_price_ts_ms": vp.ts_ms,
            "level": "normal",
            "previous_level": _LEVEL_NAMES[previous],
            "direction": "de-escalation",
            "resolved": True,
            "reason": "stale",
        }
        return self._alert("peg_deviation", ts_ms, "info", venue, message, evidence, f"{previous}->stale")

    def to_state(self) -> dict[str, Any]:
        return {
            "trackers": {v: t.to_state() for v, t in self.trackers.items()},
            "prices": {v: [p.price_usd, p.depth_usd, p.ts_ms] for v, p in self.prices.items()},
            "venue_local": dict(self.venue_local),
        }

    @classmethod
    def from_state(
        cls, asset: str, rules: PegRules, config_hash: str, state: dict[str, Any]
    ) -> AssetPeg:
        n = len(rules.thresholds_bps)
        return cls(
            asset=asset,
            rules=rules,
            config_hash=config_hash,
            trackers={v: PegTracker.from_state(n, s) for v, s in state["trackers"].items()},
            prices={v: VenuePrice(float(p), float(d), int(t)) for v, (p, d, t) in state["prices"].items()},
            venue_local={v: int(x) for v, x in state["venue_local"].items()},
            elevated={
                v
                for v, s in state["trackers"].items()
                if v != INDEX_VENUE and int(s["level"]) >= rules.venue_local_level
            },
        )
