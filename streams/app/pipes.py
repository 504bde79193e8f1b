"""What the worker's agents share: the app, its topics and checkpoint tables, and sends."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import faust
from aiokafka.errors import IllegalStateError
from faust.types import TP

from monitor.config import EngineConfig
from monitor.metrics import Metrics
from monitor.protocol import DeadLetter, RiskSnapshot, SignalRecord, encode
from streams.app.checkpoint import CheckpointTable, InputCursor, Verdict
from streams.settings import Settings

__all__ = ["CheckpointedStage", "Pipes", "Rewinds", "attach_rewind_retry", "attach_stage_hooks", "checkpoint_table"]

log = logging.getLogger("liqmon.pipes")


class Rewinds:
    """The seeks back the stages asked for whose first record has not come yet, by
    partition, so that a timer can ask again for those overdue (:meth:`InputCursor.overdue`)
    when no record comes to ask: a seek issued while the consumer is still handing over a
    batch fetched before it can be undone (faust sets its read offset past the rest of that
    batch and drops the records read again below it), and if those were the partition's
    last records, nothing else would ever ask."""

    def __init__(self) -> None:
        self._asked: dict[TP, tuple[str, InputCursor]] = {}

    def __len__(self) -> int:
        return len(self._asked)

    def asked(self, stage: str, tp: TP, cursor: InputCursor) -> None:
        """``stage``'s cursor of ``tp`` asked for a seek back to its expected offset."""
        self._asked[tp] = (stage, cursor)

    def overdue(self, now_s: float) -> list[tuple[str, TP, int]]:
        """(stage, partition, expected offset) of each seek back overdue at ``now_s``, marked
        as asked again; those whose first record came are forgotten."""
        out: list[tuple[str, TP, int]] = []
        for tp, (stage, cursor) in list(self._asked.items()):
            if not cursor.rewinding() or cursor.expected is None:
                del self._asked[tp]
            elif cursor.overdue(now_s):
                cursor.rewound(now_s)
                out.append((stage, tp, cursor.expected))
        return out

    def forget(self, partitions: set[TP]) -> None:
        """Partitions this worker no longer owns (their next owner starts its own cursor)."""
        for tp in partitions:
            self._asked.pop(tp, None)


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
    #: Seeks back asked for and not yet seen through (:meth:`retry_rewinds`).
    rewinds: Rewinds = field(default_factory=Rewinds)

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
            tp = TP(message.topic, message.partition)
            self.rewinds.asked(stage, tp, cursor)
            await self._rewind(stage, tp, cast(int, cursor.expected))
        return False

    async def _rewind(self, stage: str, tp: TP, offset: int) -> None:
        self.metrics.rewinds_total.labels(stage).inc()
        await self.app.consumer.seek(tp, offset)

    async def retry_rewinds(self) -> None:
        """Ask again for the seeks back that are overdue (:class:`Rewinds`)."""
        for stage, tp, offset in self.rewinds.overdue(time.monotonic()):
            log.info("%s: seeking %s back to %d again (nothing at that offset came)", stage, tp, offset)
            try:
                await self._rewind(stage, tp, offset)
            except IllegalStateError:  # revoked meanwhile: its next owner starts over
                self.rewinds.forget({tp})

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


def attach_rewind_retry(pipes: Pipes) -> None:
    """A timer that asks again for overdue seeks back (:class:`Rewinds`), and the rebalance
    handler that forgets those of partitions revoked."""

    @pipes.app.timer(interval=_REWIND_TIMER_S)  # type: ignore[untyped-decorator]
    async def retry_overdue_rewinds() -> None:
        await pipes.retry_rewinds()

    @pipes.app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def forget_rewinds(sender: faust.App, revoked: set[Any], **_: Any) -> None:
        pipes.rewinds.forget(revoked)


#: How often overdue seeks back are looked for (a cursor's ``retry_s`` is 1 s).
_REWIND_TIMER_S = 0.5
