"""The wording of the peg monitor's alerts: band changes, venue-local depegs, stale sources.

What :class:`monitor.models.peg.asset_peg.AssetPeg` decided, put into the alert contract
(:func:`monitor.alerts.make_alert`): message, evidence and identity of ``peg_deviation``
and ``venue_local_depeg`` alerts (RISK_MODEL §5). Pure: no state of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from monitor.alerts import SEVERITIES, make_alert
from monitor.models.peg.bands import INDEX_VENUE, PegRules, PegTracker, VenuePrice
from monitor.protocol import Alert, Severity

__all__ = ["PegAlertWriter"]

_LEVEL_NAMES = ("normal", *SEVERITIES)


def _fmt_bps(bps: float) -> str:
    return f"{bps:+,.0f} bps"


@dataclass(frozen=True, slots=True)
class PegAlertWriter:
    """Writes the peg alerts of one asset."""

    asset: str
    rules: PegRules
    config_hash: str

    def _alert(
        self, kind: str, ts_ms: int, severity: Severity, venue: str, message: str,
        evidence: dict[str, Any], identity: str,
    ) -> Alert:
        return make_alert(
            kind=kind, ts_ms=ts_ms, severity=severity, venue=venue, asset=self.asset,
            message=message, evidence=evidence, config_hash=self.config_hash, identity=identity,
        )

    def level_alert(
        self, venue: str, tracker: PegTracker, previous: int, ts_ms: int, price_usd: float
    ) -> Alert:
        """``peg_deviation``: ``venue`` (or the index) moved from band ``previous`` to its level."""
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

    def venue_local_alert(
        self,
        venue: str,
        vp: VenuePrice,
        tracker: PegTracker,
        ts_ms: int,
        ref: tuple[float, int] | None,
        ref_dev: float | None,
        previous: int,
        *,
        active: int,
        others: list[str],
        price_key: str,
        reason: str | None = None,
    ) -> Alert:
        """``venue_local_depeg``: raised or escalated to ``active``, or ended (``active`` 0)."""
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
            "price_key": price_key,
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

    def stale_alert(self, venue: str, vp: VenuePrice, previous: int, ts_ms: int) -> Alert:
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
