"""Risk snapshots: the global stage's figures at an event-time interval, as one typed record.

The global risk stage (:class:`monitor.stages.global_risk.risk.GlobalRisk`) takes a :class:`RiskSnapshot`
whenever event time crosses a multiple of the snapshot interval (and once when a run
ends), so a replay's report can draw loop health, the liquidation ladder, accounts by
status, forced sells and the spiral estimate over time. Snapshots are a function of the
ordered signals, like the alerts: inline and through Kafka they are the same, byte for
byte (``encode``), and a re-delivered one keeps its ``ts_ms``. Pure: no I/O, no clock.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["DEFAULT_SNAPSHOT_INTERVAL_MS", "RiskSnapshot", "SnapshotClock"]

#: One snapshot per minute of event time: 360 over the six-hour synthetic day.
DEFAULT_SNAPSHOT_INTERVAL_MS = 60_000


class RiskSnapshot(BaseModel):
    """The global stage's figures at ``ts_ms`` (the event time that was just evaluated)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ts_ms: int
    #: Loop positions per health-factor band (``monitor.stages.global_risk.loop_watch.HF_BANDS``), all protocols.
    hf_bands: dict[str, int] = {}
    #: Loop collateral (USD) that becomes liquidatable after a further drop of N % of its
    #: driving price (key: N as text, e.g. "5"), summed over assets and protocols.
    ladder_usd: dict[str, float] = {}
    #: Loop positions with HF < 1 and their collateral, USD.
    loops_liquidatable: int = 0
    loops_liquidatable_usd: float = 0.0
    #: Unified accounts per status (normal, margin_call, reduce_only, liquidation).
    accounts_by_status: dict[str, int] = {}
    #: USD the liquidation engines were estimated to sell per asset since the run began
    #: (the forced-sell lists of the accounts that reached liquidation).
    forced_sell_usd_by_asset: dict[str, float] = {}
    #: Latest spiral estimate per standard shock: notional liquidated, USD.
    spiral_usd_by_shock: dict[str, float] = {}
    #: Highest active cascade stage (0 = none) and the active stages.
    stage: int = 0
    active_stages: tuple[int, ...] = ()
    #: Share of monitored books with their bids withdrawn.
    withdrawn_ratio: float = 0.0

    def encode(self) -> bytes:
        """The record's bytes (the ``risk.snapshots`` topic value)."""
        return self.model_dump_json().encode()

    @classmethod
    def decode(cls, value: bytes) -> RiskSnapshot:
        """A record from its bytes (raises pydantic's ValidationError on a bad one)."""
        return cls.model_validate_json(value)


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
