"""Stage 2 on the worker that owns ``risk.signals`` partition 0: its checkpointed state.

Everything the global stage's outputs depend on is in one object, :class:`GlobalState`,
checkpointed with the offset of the last ``risk.signals`` record it reflects: the risk
engine (prices, reorder buffer and the signal numbers already taken, positions, accounts,
alert latches, cascade), the alert count of the run in progress, the replay sync markers
seen, and the highest source offset taken per input partition (positions and accounts are
forwarded with their source partition and offset, so a forwarder that sends them again
after a restart changes nothing).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from monitor.config import EngineConfig
from monitor.stages.risk import GlobalRisk

__all__ = ["CHECKPOINT_NAME", "GlobalState", "input_record"]

CHECKPOINT_NAME = "global"


def input_record(kind: str, raw: Any, partition: int, offset: int) -> dict[str, Any]:
    """A position or account forwarded to ``risk.signals``, with where it came from."""
    return {"v": 1, "input": kind, "raw": raw, "src": [partition, offset]}


@dataclass
class GlobalState:
    """What the global stage's checkpoint holds."""

    risk: GlobalRisk
    #: Alerts and risk snapshots emitted since the last run's global ack.
    alerts_in_run: int = 0
    snapshots_in_run: int = 0
    #: Replay sync markers seen per run id: (input kind, partition).
    syncs: dict[str, set[tuple[str, int]]] = field(default_factory=dict)
    #: Highest source offset taken per (input kind, source partition).
    inputs_taken: dict[tuple[str, int], int] = field(default_factory=dict)

    @classmethod
    def fresh(cls, config: EngineConfig, partitions: int) -> GlobalState:
        return cls(GlobalRisk(config, partitions))

    def take_input(self, obj: dict[str, Any]) -> bool:
        """False for a forwarded input already taken (sent again after a restart)."""
        src = obj.get("src")
        if not (isinstance(src, list) and len(src) == 2 and all(isinstance(v, int) for v in src)):
            return True  # unnumbered (written by hand): always applied
        key = (str(obj.get("input")), int(src[0]))
        if src[1] <= self.inputs_taken.get(key, -1):
            return False
        self.inputs_taken[key] = int(src[1])
        return True

    def sync(self, kind: str, raw: dict[str, Any]) -> str | None:
        """Note a sync marker; the run id once every partition's marker is in."""
        run = str(raw.get("run"))
        seen = self.syncs.setdefault(run, set())
        seen.add((kind, int(raw.get("partition", 0))))
        return run if len(seen) >= int(raw.get("of", 1)) else None
