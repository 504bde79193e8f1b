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
from typing import Any

import numpy as np
from numpy.typing import NDArray

from monitor.alerts import Alert, make_alert
from monitor.config import SEVERITIES, PegConfig, Severity, SignalsConfig

__all__ = ["INDEX_VENUE", "AssetPeg", "PegRules", "PegTracker", "deviation_bps", "weighted_median"]

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
    total = sum(w for _, w in pairs)
    half = total / 2.0
    acc = 0.0
    for i, (v, w) in enumerate(pairs):
        acc += w
        if acc > half:
            return v
        if acc == half:
            return (v + pairs[i + 1][0]) / 2.0
    return pairs[-1][0]


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

    @classmethod
    def from_config(cls, cfg: PegConfig) -> PegRules:
        return cls(
            thresholds_bps=tuple(b.threshold_bps for b in cfg.bands),
            exit_bps=tuple(b.threshold_bps * (1.0 - cfg.hysteresis_ratio) for b in cfg.bands),
            min_durations_ms=tuple(b.min_duration_ms for b in cfg.bands),
            clear_duration_ms=cfg.clear_duration_ms,
            venue_local_level=SEVERITIES.index(cfg.venue_local_min_severity) + 1,
            normal_band_bps=cfg.normal_band_bps,
            stale_after_ms=cfg.stale_after_ms,
            peg_usd=cfg.peg_usd,
            default_depth_usd=cfg.default_depth_usd,
            ref_exit_factor=1.0 + cfg.hysteresis_ratio,
        )


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

    def __post_init__(self) -> None:
        if not self.above_since_ms:
            self.above_since_ms = [None] * self.n_bands

    def update(self, ts_ms: int, dev_bps: float, rules: PegRules) -> int | None:
        """Feed one deviation; return the previous level when the level changed."""
        self.last_dev_bps = dev_bps
        self.last_ts_ms = ts_ms
        mag = -dev_bps if dev_bps < 0.0 else dev_bps
        thresholds = rules.thresholds_bps
        above = self.above_since_ms
        if self.level == 0 and mag < thresholds[0]:
            # Calm fast path: nothing pending, nothing to do.
            if above[0] is not None:
                for i in range(self.n_bands):
                    above[i] = None
            return None
        for i in range(self.n_bands):
            if mag >= thresholds[i]:
                if above[i] is None:
                    above[i] = ts_ms
            else:
                for j in range(i, self.n_bands):
                    above[j] = None
                break
        if self.level and mag > self.peak_abs_bps:
            self.peak_abs_bps = mag
        target = 0
        durations = rules.min_durations_ms
        for i in range(self.n_bands - 1, -1, -1):
            since = above[i]
            if since is not None and ts_ms - since >= durations[i]:
                target = i + 1
                break
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
        if mag < rules.exit_bps[previous - 1]:
            if self.below_since_ms is None:
                self.below_since_ms = ts_ms
            if ts_ms - self.below_since_ms >= rules.clear_duration_ms:
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
        else:
            self.below_since_ms = None
        return None

    def to_state(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "above": self.above_since_ms,
            "below": self.below_since_ms,
            "episode": self.episode_start_ms,
            "peak": self.peak_abs_bps,
            "dev": self.last_dev_bps,
            "ts": self.last_ts_ms,
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

    def _tracker(self, venue: str) -> PegTracker:
        tracker = self.trackers.get(venue)
        if tracker is None:
            tracker = PegTracker(n_bands=len(self.rules.thresholds_bps))
            self.trackers[venue] = tracker
        return tracker

    def index_price(self, ts_ms: int, exclude: str | None = None) -> tuple[float, int] | None:
        """Depth-weighted median of fresh venues (optionally leaving one out); with count."""
        values: list[float] = []
        weights: list[float] = []
        stale_before = ts_ms - self.rules.stale_after_ms
        for venue, vp in self.prices.items():
            if venue == exclude or vp.ts_ms < stale_before:
                continue
            values.append(vp.price_usd)
            weights.append(vp.depth_usd)
        if not values:
            return None
        return weighted_median(values, weights), len(values)

    def on_price(self, venue: str, ts_ms: int, price_usd: float, depth_usd: float, out: list[Alert]) -> None:
        """Feed one USD price of ``venue``; append any alerts to ``out``."""
        rules = self.rules
        vp = self.prices.get(venue)
        if vp is None:
            self.prices[venue] = VenuePrice(price_usd, depth_usd or rules.default_depth_usd, ts_ms)
        else:
            vp.price_usd = price_usd
            if depth_usd:
                vp.depth_usd = depth_usd
            vp.ts_ms = ts_ms
        tracker = self._tracker(venue)
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
                idx_tracker = self._tracker(INDEX_VENUE)
                idx_prev = idx_tracker.update(ts_ms, (index[0] / rules.peg_usd - 1.0) * 10_000.0, rules)
                if idx_prev is not None:
                    self.dirty = True
                    out.append(self._level_alert(INDEX_VENUE, idx_tracker, idx_prev, ts_ms, index[0]))
        if self.elevated or self.venue_local:
            self._check_venue_local(ts_ms, out)

    def try_calm_batch(
        self,
        venues: list[str],
        src: NDArray[np.int64],
        ts_ms: NDArray[np.int64],
        price_usd: NDArray[np.float64],
        depth_usd: NDArray[np.float64],
    ) -> bool:
        """Apply a whole batch at once when every price is inside the first band.

        Exactly equivalent to feeding the events one by one through :meth:`on_price`
        when no tracker has anything pending: then no event can change a level, and only
        the last price, depth and deviation of each venue (and of the index) survive.
        Returns False, changing nothing, when the batch needs the per-event path.
        """
        rules = self.rules
        if not len(src):
            return True
        dev = (price_usd / rules.peg_usd - 1.0) * 10_000.0
        if float(np.abs(dev).max()) >= rules.thresholds_bps[0]:
            return False
        for tracker in self.trackers.values():
            if tracker.level or tracker.above_since_ms[0] is not None:
                return False
        # Last event of each venue (several symbols may quote one venue).
        last_row: dict[str, int] = {}
        last_depth_row: dict[str, int] = {}
        nonzero_depth = depth_usd != 0.0
        for i in np.unique(src).tolist():
            rows = np.flatnonzero(src == i)
            venue = venues[i]
            last = int(rows[-1])
            if last > last_row.get(venue, -1):
                last_row[venue] = last
            with_depth = rows[nonzero_depth[rows]]
            if len(with_depth) and int(with_depth[-1]) > last_depth_row.get(venue, -1):
                last_depth_row[venue] = int(with_depth[-1])
        for venue in sorted(last_row, key=last_row.__getitem__):
            row = last_row[venue]
            ts = int(ts_ms[row])
            vp = self.prices.get(venue)
            depth_row = last_depth_row.get(venue)
            if vp is None:
                depth = float(depth_usd[depth_row]) if depth_row is not None else rules.default_depth_usd
                self.prices[venue] = VenuePrice(float(price_usd[row]), depth, ts)
            else:
                vp.price_usd = float(price_usd[row])
                if depth_row is not None:
                    vp.depth_usd = float(depth_usd[depth_row])
                vp.ts_ms = ts
            tracker = self._tracker(venue)
            tracker.last_dev_bps = float(dev[row])
            tracker.last_ts_ms = ts
        if len(self.prices) > 1:
            ts_last = int(ts_ms[-1])
            index = self.index_price(ts_last)
            if index is not None:
                idx_tracker = self._tracker(INDEX_VENUE)
                idx_tracker.last_dev_bps = (index[0] / rules.peg_usd - 1.0) * 10_000.0
                idx_tracker.last_ts_ms = ts_last
        return True

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
        return make_alert(
            kind="peg_deviation",
            ts_ms=ts_ms,
            severity=severity,
            venue=venue,
            asset=self.asset,
            message=message,
            evidence=evidence,
            config_hash=self.config_hash,
            identity=f"{previous}->{level}",
        )

    def _check_venue_local(self, ts_ms: int, out: list[Alert]) -> None:
        rules = self.rules
        for venue, tracker in self.trackers.items():
            if venue == INDEX_VENUE:
                continue
            active_level = self.venue_local.get(venue, 0)
            ref = None
            if tracker.level >= rules.venue_local_level:
                ref = self.index_price(ts_ms, exclude=venue)
            ref_dev = None if ref is None else (ref[0] / rules.peg_usd - 1.0) * 10_000.0
            # Hysteresis on the reference too: entering needs it inside the normal band,
            # staying needs it inside the band widened by the hysteresis ratio.
            limit = rules.normal_band_bps * (rules.ref_exit_factor if active_level else 1.0)
            is_local = ref_dev is not None and abs(ref_dev) < limit
            if is_local and tracker.level > active_level:
                self.venue_local[venue] = tracker.level
                self.dirty = True
                out.append(self._venue_local_alert(venue, tracker, ts_ms, ref, ref_dev, active_level))
            elif active_level and not is_local:
                del self.venue_local[venue]
                self.dirty = True
                out.append(self._venue_local_alert(venue, tracker, ts_ms, ref, ref_dev, active_level))

    def _venue_local_alert(
        self,
        venue: str,
        tracker: PegTracker,
        ts_ms: int,
        ref: tuple[float, int] | None,
        ref_dev: float | None,
        previous: int,
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
            if tracker.level >= self.rules.venue_local_level and ref_dev is not None:
                why = f"the other venues' index has left the normal band ({_fmt_bps(ref_dev)})"
            elif tracker.level >= self.rules.venue_local_level:
                why = "no fresh price from another venue is left to compare with"
            else:
                why = f"{venue} is back to {_LEVEL_NAMES[tracker.level]}"
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
        return make_alert(
            kind="venue_local_depeg",
            ts_ms=ts_ms,
            severity=severity,
            venue=venue,
            asset=self.asset,
            message=message,
            evidence=evidence,
            config_hash=self.config_hash,
            identity=f"{previous}->{active}",
        )

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
