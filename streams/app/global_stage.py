"""Stage 2 on the worker that owns ``risk.signals`` partition 0: its checkpointed state.

Everything the global stage's outputs depend on is in one object, :class:`GlobalState`,
checkpointed with the offset of the last ``risk.signals`` record it reflects: the risk
engine (prices, reorder buffer and the signal numbers already taken, positions, accounts,
alert latches, cascade), the alert count of the run in progress, the replay sync markers
seen, and the highest source offset taken per input partition (positions and accounts are
forwarded with their source partition and offset, so a forwarder that sends them again
after a restart changes nothing) and, when the accounts are sharded, the shards' steps not
yet taken with the reports-topic offset to read on from.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from monitor.config import EngineConfig
from monitor.protocol import AccountHead, InputRecord, SyncMarker
from monitor.stages.global_risk.risk import GlobalRisk
from monitor.stages.global_risk.shards import ShardJoin

__all__ = ["CHECKPOINT_NAME", "GlobalState", "InputLedger"]

CHECKPOINT_NAME = "global"


@dataclass
class InputLedger:
    """Highest source offset taken per (input kind, source partition): a forwarded
    position or account is applied once, however often a restarted forwarder sends it."""

    taken: dict[tuple[str, int], int] = field(default_factory=dict)

    def take(self, record: InputRecord | AccountHead) -> bool:
        """False for a forwarded input already taken (sent again after a restart)."""
        if record.src is None:
            return True  # unnumbered (written by hand): always applied
        partition, offset = record.src
        key = (record.kind, partition)
        if offset <= self.taken.get(key, -1):
            return False
        self.taken[key] = offset
        return True


@dataclass
class GlobalState:
    """What the global stage's checkpoint holds."""

    risk: GlobalRisk
    #: Alerts and risk snapshots emitted since the last run's global ack (with the account
    #: shards' alerts, when the accounts are sharded).
    alerts_in_run: int = 0
    snapshots_in_run: int = 0
    #: Replay sync markers seen per run id: (input kind, partition).
    syncs: dict[str, set[tuple[str, int]]] = field(default_factory=dict)
    inputs: InputLedger = field(default_factory=InputLedger)
    #: The account shards' steps not yet taken (None: the accounts are not sharded).
    join: ShardJoin | None = None

    @classmethod
    def fresh(cls, config: EngineConfig, partitions: int, account_shards: int = 0) -> GlobalState:
        join = ShardJoin(account_shards) if account_shards else None
        return cls(GlobalRisk(config, partitions, account_shards=account_shards), join=join)

    def take_input(self, record: InputRecord) -> bool:
        """False for a forwarded input already taken (sent again after a restart)."""
        return self.inputs.take(record)

    def sync(self, kind: str, marker: SyncMarker) -> str | None:
        """Note a sync marker; the run id once every partition's marker is in."""
        seen = self.syncs.setdefault(marker.run, set())
        seen.add((kind, marker.partition))
        return marker.run if len(seen) >= marker.of else None
