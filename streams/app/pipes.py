"""What the worker's agents share: the app, its topics and checkpoint tables, and sends."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Protocol, cast

import faust
from faust.types import TP

from monitor.config import EngineConfig
from monitor.metrics import Metrics
from monitor.protocol import DeadLetter, RiskSnapshot, SignalRecord, encode
from streams.app.checkpoint import CheckpointTable, InputCursor, Verdict
from streams.settings import Settings

__all__ = ["CheckpointedStage", "Pipes", "attach_stage_hooks", "checkpoint_table"]


@dataclass
class Pipes:
    """The app's topics and checkpoint tables, and what every agent shares."""

    app: faust.App
    settings: Settings
    config: EngineConfig
    metrics: Metrics
    market: Any
    alerts: Any
    deadletter: Any
    acks: Any
    signals: Any
    snapshots: Any
    positions: Any
    accounts: Any
    market_checkpoints: CheckpointTable
    global_checkpoints: CheckpointTable
    #: Where the workers' own readers connect (the account shards').
    bootstrap: str = ""
    #: The account shards' topics (None: the accounts are not sharded).
    shards: Any = None
    shard_steps: Any = None

    async def dead_letter(self, dl: DeadLetter) -> None:
        # Counted by the dead-letter agent, like every other producer's dead letters.
        await self.deadletter.send(key=dl.reason.encode(), value=dl.encode())

    async def send_alerts(self, alerts: list[Any]) -> None:
        for alert in alerts:
            await self.alerts.send(key=alert.alert_id.encode(), value=alert.to_json())
            self.metrics.alerts_total.labels(alert.kind, alert.severity).inc()

    async def send_snapshots(self, snapshots: list[RiskSnapshot]) -> None:
        """The global stage's risk snapshots, forwarded as they are (key: event time)."""
        for snap in snapshots:
            await self.snapshots.send(key=str(snap.ts_ms).encode(), value=snap.encode())

    async def admit(self, stage: str, cursor: InputCursor, stream: Any, event: Any) -> bool:
        """Whether a record is the next one its stage's state expects (see :class:`InputCursor`).

        A record the state already reflects is acknowledged and skipped; one past the
        expected offset seeks the consumer back (or, while that seek is under way, is dropped
        unacknowledged).
        """
        message = event.message
        verdict = cursor.judge(message.offset, time.monotonic())
        if verdict is Verdict.PROCESS:
            return True
        if verdict is Verdict.SKIP:
            await stream.ack(event)
        elif verdict is Verdict.REWIND:
            self.metrics.rewinds_total.labels(stage).inc()
            await self.app.consumer.seek(TP(message.topic, message.partition), cast(int, cursor.expected))
        return False

    async def durable(self) -> None:
        """Wait until everything sent so far is acknowledged by the broker."""
        await self.app.producer.flush()

    async def send_signal_record(self, rec: SignalRecord) -> None:
        await self.signals.send(key=b"", partition=0, value=encode(rec))


def checkpoint_table(table: Any) -> CheckpointTable:
    """Checkpoints kept in ``table``: written to its changelog at an explicit partition.
    """

    async def send(key: bytes, value: bytes | None, partition: int) -> None:
        await table.changelog_topic.send(key=key, value=value, partition=partition)

    return CheckpointTable(table.data, send)


class CheckpointedStage(Protocol):
    """A stage whose records and checkpoints take turns under one lock."""

    lock: asyncio.Lock

    async def checkpoint(self, force: bool = False) -> None: ...

    def on_revoked(self, revoked: set[Any]) -> None: ...


def attach_stage_hooks(pipes: Pipes, stage: CheckpointedStage) -> None:
    """A timer that checkpoints a stage gone quiet (its records get committed too), and
    the rebalance handler that drops what the stage loses."""

    @pipes.app.timer(interval=pipes.settings.checkpoint_interval_s)  # type: ignore[untyped-decorator]
    async def checkpoint_quiet_stage() -> None:
        async with stage.lock:
            await stage.checkpoint()

    # faust calls receivers as (app, partitions, signal=..., ...); mode types them as *args
    @pipes.app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def on_revoked(sender: faust.App, revoked: set[Any], **_: Any) -> None:
        stage.on_revoked(revoked)
