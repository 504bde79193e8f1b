"""Stablecoin peg monitor: per-venue band state machines and the venue-local depeg rule.

RISK_MODEL §5: per venue ``deviation_bps = (mid_usd − 1) × 10,000`` with time spent beyond
each band; the consolidated index (RISK_MODEL §1: depth-weighted median of the venues,
excluding stale ones) tracked the same way; a *venue-local depeg* is one venue beyond
the alert band while the other venues' index is within the normal band.

Escalation: a band is entered when |deviation| has stayed at or beyond its threshold for
the band's minimum duration (event time). De-escalation has hysteresis: the level drops
only after |deviation| has stayed below ``threshold × (1 − hysteresis_ratio)`` for
``clear_duration_ms``. Time arrives with the events; nothing here reads a clock.

The band state machine and the index median are in :mod:`monitor.models.peg.bands`, the alerts'
wording in :mod:`monitor.models.peg.alerts`, the vectorised batch path in :mod:`monitor.models.peg.batch`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from monitor.config import SignalsConfig
from monitor.models.peg.alerts import PegAlertWriter
from monitor.models.peg.bands import INDEX_VENUE, PegRules, PegTracker, VenuePrice, weighted_median
from monitor.protocol import Alert

__all__ = ["AssetPeg"]


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
    #: The wording of this asset's alerts (derived from asset, rules and config hash).
    writer: PegAlertWriter = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.writer = PegAlertWriter(self.asset, self.rules, self.config_hash)

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
            out.append(self.writer.level_alert(venue, tracker, previous, ts_ms, price_usd))
        if len(self.prices) > 1:
            index = self.index_price(ts_ms)
            if index is not None:
                idx_tracker = self.tracker(INDEX_VENUE)
                idx_prev = idx_tracker.update(ts_ms, (index[0] / rules.peg_usd - 1.0) * 10_000.0, rules)
                if idx_prev is not None:
                    self.dirty = True
                    out.append(self.writer.level_alert(INDEX_VENUE, idx_tracker, idx_prev, ts_ms, index[0]))
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
                out.append(self.writer.stale_alert(venue, vp, previous, ts_ms))
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
            out.append(self.writer.stale_alert(INDEX_VENUE, VenuePrice(last_usd, 0.0, last_ts_ms), previous, ts_ms))

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
        """The ``venue_local_depeg`` alert of ``venue`` at its current venue-local level."""
        return self.writer.venue_local_alert(
            venue, self.prices[venue], tracker, ts_ms, ref, ref_dev, previous,
            active=self.venue_local.get(venue, 0),
            others=sorted(v for v in self.prices if v != venue),
            price_key=f"{self.asset}@{self.venue_keys.get(venue, venue)}",
            reason=reason,
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
