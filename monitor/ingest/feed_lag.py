"""How far a live feed reader is behind its venue: levels and their transitions (pure).

A live connection measures its lag once per watchdog tick (``streams/feeds/lag.py``): the
larger of the event-time lag (receive time minus the venue's own timestamp, the smallest
over the tick, so a venue's own batching does not count) and the socket backlog (bytes
waiting in the kernel and in the websocket client, over the rate the reader drains them).
:class:`LagLevel` turns those samples into a level per venue, with hysteresis: it rises as
soon as the lag reaches a threshold and falls only once the lag is below
``clear_ratio`` × that threshold. Each change becomes a ``feed_status`` frame
(:func:`lag_status_raw`) that ingest turns into a ``feed_lag`` alert, so a recorded
session replays to the same alerts.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["FEED_STATUS_LAG", "LAG_LEVELS", "FeedLagThresholds", "LagLevel", "lag_status_raw"]

#: ``feed_status`` event of a lag level change (→ ``feed_lag``).
FEED_STATUS_LAG = "lag"
#: Lag levels in order; ``normal`` ends the episode (a resolved alert).
LAG_LEVELS = ("normal", "warning", "high", "critical")


class FeedLagThresholds(BaseModel):
    """Lag thresholds, seconds (assumed values: a reader seconds behind misses cascades' fast moves)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    warning_s: float = Field(default=2.0, gt=0, allow_inf_nan=False)
    high_s: float = Field(default=10.0, gt=0, allow_inf_nan=False)
    critical_s: float = Field(default=30.0, gt=0, allow_inf_nan=False)
    #: A level ends once the lag is below this share of its threshold.
    clear_ratio: float = Field(default=0.5, gt=0, le=1.0)

    @model_validator(mode="after")
    def _ordered(self) -> FeedLagThresholds:
        if not self.warning_s <= self.high_s <= self.critical_s:
            raise ValueError("lag thresholds must satisfy warning_s <= high_s <= critical_s")
        return self

    def level_at(self, lag_s: float, ratio: float = 1.0) -> int:
        """The highest level whose threshold × ``ratio`` the lag reaches (0 = normal)."""
        level = 0
        for i, threshold_s in enumerate((self.warning_s, self.high_s, self.critical_s), start=1):
            if lag_s >= threshold_s * ratio:
                level = i
        return level


class LagLevel:
    """One venue's lag level: rises at a threshold, falls below clear_ratio × threshold."""

    def __init__(self, thresholds: FeedLagThresholds) -> None:
        self.thresholds = thresholds
        self.level = 0

    def observe(self, lag_s: float) -> tuple[int, int] | None:
        """Take one lag sample; (previous, new) when the level changes, else None."""
        previous = self.level
        up = self.thresholds.level_at(lag_s)
        if up > previous:
            self.level = up
        else:
            down = self.thresholds.level_at(lag_s, self.thresholds.clear_ratio)
            if down < previous:
                self.level = down
        return (previous, self.level) if self.level != previous else None


def lag_status_raw(previous: int, level: int, lag_s: float, evidence: dict[str, Any]) -> dict[str, Any]:
    """The ``feed_status`` frame of a lag level change, with the sample's figures."""
    return {"event": FEED_STATUS_LAG, "level": LAG_LEVELS[level], "previous_level": LAG_LEVELS[previous],
            "lag_s": round(lag_s, 3), **evidence}
