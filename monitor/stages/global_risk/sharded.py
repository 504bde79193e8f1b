"""The global stage over account shards, in one process: shards, then the aggregation.

Each input record (a stage-1 signal record, a position, an account) is numbered as in the
log and goes to every shard
(:class:`monitor.stages.global_risk.account_shard.AccountShard`) and then to the
aggregation stage (:class:`monitor.stages.global_risk.risk.GlobalRisk` with
``account_shards``), with the shards' steps on that record in between, through their wire
records and the join the workers use (:class:`monitor.stages.global_risk.shards.ShardJoin`). The alerts are
those of one global stage, with the same ids (the account alerts come from the shards,
the cascade from the aggregation), whatever the shard count: what the Kafka deployment
splits over workers, run here one after the other.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from monitor.config import EngineConfig
from monitor.protocol import Alert, RiskSnapshot, SignalRecord
from monitor.snapshots import DEFAULT_SNAPSHOT_INTERVAL_MS
from monitor.stages.global_risk.account_shard import AccountShard
from monitor.stages.global_risk.risk import GlobalRisk
from monitor.stages.global_risk.shards import (
    STEP_RECORD_BYTES,
    ShardedAccounts,
    ShardJoin,
    decode_steps,
    step_records,
)

__all__ = ["ShardedRisk"]


class ShardedRisk:
    """``shards`` account shards and the aggregation stage behind them."""

    def __init__(self, config: EngineConfig, partitions: int, shards: int,
                 snapshot_interval_ms: int = DEFAULT_SNAPSHOT_INTERVAL_MS) -> None:
        if shards < 1:
            raise ValueError(f"a sharded stage needs at least one shard, got {shards}")
        self.shards = [AccountShard(config, partitions, k, shards) for k in range(shards)]
        self.risk = GlobalRisk(config, partitions, snapshot_interval_ms, account_shards=shards)
        reports = self.risk.shard_reports
        assert reports is not None
        self.reports: ShardedAccounts = reports
        self.join = ShardJoin(shards)
        self.finished_run: str | None = None
        #: The log offset of the next input record.
        self.offset = 0
        #: Records written to the reports topic (as the workers number them).
        self._reports_written = 0

    def upsert_position(self, raw: Mapping[str, Any]) -> None:
        """The aggregation stage holds the positions (it refuses a bad one first); the
        shards register their price keys."""
        self.risk.upsert_position(raw)
        for shard in self.shards:
            shard.upsert_position(raw)
        self._steps([[] for _ in self.shards])

    def upsert_account(self, raw: Mapping[str, Any]) -> None:
        """The account's shard takes it (and raises for a bad one, after every reader has
        heard of it, as the workers go on past it); every other reader only hears that an
        account was loaded."""
        refused: Exception | None = None
        for shard in self.shards:
            try:
                shard.upsert_account(raw)
            except (KeyError, TypeError, ValueError) as exc:
                refused = exc
        self._steps([[] for _ in self.shards])
        self.risk.upsert_account(raw)
        if refused is not None:
            raise refused

    def push(self, rec: SignalRecord) -> list[Alert]:
        """One stage-1 record through every shard, then the aggregation."""
        alerts = [shard.push(rec) for shard in self.shards]
        self._steps(alerts)
        out = [alert for mine in alerts for alert in mine] + self.risk.push(rec)
        self.finished_run = self.risk.finished_run
        return out

    def flush(self) -> list[Alert]:
        """Every buffered signal (end of an inline run)."""
        alerts = [shard.flush() for shard in self.shards]
        self._steps(alerts)
        return [alert for mine in alerts for alert in mine] + self.risk.flush()

    def _steps(self, alerts: list[list[Alert]]) -> None:
        """The shards' steps on the current record, over the wire and through the join."""
        offset = self.offset
        self.offset += 1
        for shard, mine in zip(self.shards, alerts, strict=True):
            step = shard.take_step(offset, len(mine))
            for record in step_records(shard.shard, offset, [step] if step else [], STEP_RECORD_BYTES):
                self.join.add(decode_steps(record), self._reports_written)
                self._reports_written += 1
        assert self.join.ready(offset)
        self.reports.apply(self.join.take(offset))

    def take_snapshots(self) -> list[RiskSnapshot]:
        return self.risk.take_snapshots()

    @property
    def accounts(self) -> int:
        """Accounts held over all shards."""
        return sum(len(shard.watch.accounts) for shard in self.shards)
