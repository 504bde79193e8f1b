"""The global stage over account shards, in one process: shards, then the aggregation.

Each input record (a stage-1 signal record, a position, an account) goes to every shard
(:class:`monitor.stages.global_risk.account_shard.AccountShard`) and then to the
aggregation stage (:class:`monitor.stages.global_risk.risk.GlobalRisk` with
``account_shards``), with the shards' reports of that record in between. The alerts are
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
from monitor.stages.global_risk.shards import ShardedAccounts, shard_of

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
        self.finished_run: str | None = None

    def upsert_position(self, raw: Mapping[str, Any]) -> None:
        """The aggregation stage holds the positions (it refuses a bad one first); the
        shards register their price keys."""
        self.risk.upsert_position(raw)
        for shard in self.shards:
            shard.upsert_position(raw)

    def upsert_account(self, raw: Mapping[str, Any]) -> None:
        """The account's shard takes it (and refuses a bad one first); every other reader
        only hears that an account was loaded."""
        owner = self.shards[shard_of(str(raw["account_id"]), len(self.shards))]
        try:
            owner.upsert_account(raw)
        finally:
            self.reports.set_figures(owner.shard, owner.figures())
        for shard in self.shards:
            if shard is not owner:
                shard.upsert_account(raw)
        self.risk.upsert_account(raw)

    def push(self, rec: SignalRecord) -> list[Alert]:
        """One stage-1 record through every shard, then the aggregation."""
        out = [alert for shard in self.shards for alert in shard.push(rec)]
        self._join()
        out += self.risk.push(rec)
        self.finished_run = self.risk.finished_run
        return out

    def flush(self) -> list[Alert]:
        """Every buffered signal (end of an inline run)."""
        out = [alert for shard in self.shards for alert in shard.flush()]
        self._join()
        return out + self.risk.flush()

    def _join(self) -> None:
        """The shards' reports, evaluation by evaluation (every shard evaluates at the same times)."""
        taken = [shard.take_reports() for shard in self.shards]
        for reports in zip(*taken, strict=True):
            self.reports.put(list(reports))

    def take_snapshots(self) -> list[RiskSnapshot]:
        return self.risk.take_snapshots()

    @property
    def accounts(self) -> int:
        """Accounts held over all shards."""
        return sum(len(shard.watch.accounts) for shard in self.shards)
