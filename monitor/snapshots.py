"""When the global stage takes its risk snapshot (the record: :class:`monitor.protocol.RiskSnapshot`).

The global risk stage (:class:`monitor.stages.global_risk.risk.GlobalRisk`) takes a snapshot
whenever event time crosses a multiple of the snapshot interval (and once when a run
ends), so a replay's report can draw loop health, the liquidation ladder, accounts by
status, forced sells and the spiral estimate over time. Snapshots are a function of the
ordered signals, like the alerts: inline and through Kafka they are the same, byte for
byte (``encode``), and a re-delivered one keeps its ``ts_ms``. Pure: no I/O, no clock.
"""

from __future__ import annotations

__all__ = ["DEFAULT_SNAPSHOT_INTERVAL_MS", "SnapshotClock"]

#: One snapshot per minute of event time: 360 over the six-hour synthetic day.
DEFAULT_SNAPSHOT_INTERVAL_MS = 60_000


class SnapshotClock:
    """When the next snapshot is due: the first evaluation at or past each interval boundary."""

    def __init__(self, interval_ms: int = DEFAULT_SNAPSHOT_INTERVAL_MS) -> None:
        if interval_ms <= 0:
            raise ValueError("interval_ms must be > 0")
        self.interval_ms = interval_ms
        self.next_ms: int | None = None

    def due(self, ts_ms: int) -> bool:
        """True for the first event time of each interval (and for the very first one)."""
        if self.next_ms is not None and ts_ms < self.next_ms:
            return False
        self.next_ms = (ts_ms // self.interval_ms + 1) * self.interval_ms
        return True
