"""Stage 1 on a worker: one engine per owned market partition, checkpointed with its offset.

A market partition's state (its :class:`monitor.stages.engine.Engine`, the partition clock that
numbers its signals, the counts reported at a run's end) is checkpointed together with
the offset of the last record it reflects (:mod:`streams.app.checkpoint`). The records
behind a checkpoint are acknowledged, so committable, only once the checkpoint and every
output of those records (alerts, dead letters, signals) are durable. A worker given the
partition loads the checkpoint and goes on from the record after it; records read again
are skipped, and a consumer positioned past it is sought back. Signals sent again keep
their sequence numbers, so the global stage takes each once
(:class:`monitor.signals.ReorderBuffer`); alerts sent again keep their ids.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from monitor.config import EngineConfig
from monitor.metrics import Metrics
from monitor.stages.engine import Engine
from streams.app.checkpoint import CheckpointTable, InputCursor

__all__ = ["Cadence", "MarketPartition", "MarketPartitions", "checkpoint_name"]


def checkpoint_name(partition: int) -> str:
    return f"market:{partition}"


@dataclass
class MarketPartition:
    """What a market partition's checkpoint holds."""

    engine: Engine
    #: Last watermark forwarded to the global stage.
    sent_watermark_ms: int = -1
    #: Alerts, dead letters and events since the partition's last end-of-run ack.
    alerts_since_ack: int = 0
    deadletters_since_ack: int = 0
    events_since_ack: int = 0


class Cadence:
    """When the next checkpoint is due: every ``interval_s``, and never more often than
    ``cost_factor`` times the last checkpoint's own duration (its cost stays ≤ 1/factor)."""

    def __init__(self, interval_s: float, cost_factor: float = 20.0) -> None:
        self.interval_s = interval_s
        self.cost_factor = cost_factor
        self._last_s = time.monotonic()
        self._cost_s = 0.0

    def due(self, now_s: float) -> bool:
        return now_s - self._last_s >= max(self.interval_s, self.cost_factor * self._cost_s)

    def done(self, started_s: float, now_s: float) -> None:
        self._last_s = now_s
        self._cost_s = now_s - started_s


class MarketPartitions:
    """The market partitions this worker owns: state, input cursor, records awaiting a checkpoint."""

    def __init__(self, config: EngineConfig, checkpoints: CheckpointTable, metrics: Metrics) -> None:
        self._config = config
        self._checkpoints = checkpoints
        self._metrics = metrics
        self.parts: dict[int, MarketPartition] = {}
        self.cursors: dict[int, InputCursor] = {}
        #: Per partition: the (stream, event) pairs processed since its last checkpoint.
        self.held: dict[int, list[tuple[Any, Any]]] = {}

    def get(self, partition: int) -> tuple[MarketPartition, InputCursor]:
        """The partition's state, loaded from its checkpoint the first time it is asked for
        (refused when made with other thresholds or another version of the code)."""
        part = self.parts.get(partition)
        if part is None:
            fresh = MarketPartition(Engine(self._config))
            ckpt = self._checkpoints.load_usable(checkpoint_name(partition), fresh,
                                                 lambda s: s.engine.config_hash == self._config.config_hash)
            part = self.parts[partition] = ckpt.state if ckpt is not None else fresh
            self.cursors[partition] = InputCursor(ckpt.offset + 1 if ckpt is not None else None)
            self._metrics.recoveries_total.labels("market", "checkpoint" if ckpt else "empty").inc()
        return part, self.cursors[partition]

    def hold(self, partition: int, stream: Any, event: Any) -> None:
        self.held.setdefault(partition, []).append((stream, event))

    def drop(self, partition: int) -> None:
        """Forget a revoked partition: its next owner goes on from its checkpoint."""
        self.parts.pop(partition, None)
        self.cursors.pop(partition, None)
        self.held.pop(partition, None)

    async def checkpoint(self) -> list[tuple[Any, Any]]:
        """Checkpoint every partition that processed records since its last checkpoint.

        The caller has made the outputs of those records durable. Returns the records now
        safe to acknowledge (the caller acknowledges them once the checkpoints are durable).
        """
        done: list[tuple[Any, Any]] = []
        for partition in sorted(self.held):
            held = self.held.get(partition)  # a rebalance may drop it while we write
            cursor = self.cursors.get(partition)
            part = self.parts.get(partition)
            if not held or cursor is None or part is None or cursor.expected is None:
                continue
            size = await self._checkpoints.save(
                checkpoint_name(partition), partition, cursor.expected - 1, part
            )
            self._metrics.checkpoints_total.labels("market").inc()
            self._metrics.checkpoint_bytes.labels("market").set(size)
            done.extend(held)
            held.clear()
        return done
