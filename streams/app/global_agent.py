"""The global risk agent (``risk.signals`` partition 0) and the export of its figures.

Its input is one ordered log: stage-1 signal records, forwarded positions and accounts,
commands. Its whole state (:class:`streams.app.global_stage.GlobalState`) is checkpointed with
the offset of the last record it reflects, after the alerts and acks of those records are
durable; the records are acknowledged only then. The worker given the partition loads the
checkpoint and re-reads the log from the record after it, so the alerts are those of an
uninterrupted run, whatever crashed when.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import traceback
import weakref
from typing import Any, cast

import faust
from faust.types import TP
from mode import CrashingSupervisor

from monitor.metrics import Metrics
from monitor.protocol import (
    CommandError,
    CommandRecord,
    DeadLetter,
    GlobalAck,
    InputRecord,
    LoadedAck,
    RecordError,
    decode_command,
    decode_risk_record,
    encode,
    split_input_bundle,
)
from monitor.stages.global_risk.risk import GlobalRisk
from monitor.stages.pipeline import global_step
from streams import topics
from streams.app.checkpoint import InputCursor
from streams.app.commands import INVALID_COMMAND, encode_reply, error_reply, run_spiral_command
from streams.app.global_stage import CHECKPOINT_NAME, GlobalState
from streams.app.market_stage import Cadence
from streams.app.pipes import Pipes, attach_stage_hooks
from streams.app.shard_join import StepsInbox, await_shards, take_joined

__all__ = ["GLOBAL_AGENT", "GlobalRuntime", "attach_global_agent", "set_risk_metrics"]

log = logging.getLogger("liqmon.worker")

GLOBAL_AGENT = "risk"
GLOBAL_TP = TP(topics.RISK_SIGNALS, 0)


#: Label sets each metrics catalogue's global-stage gauges were given on the last export.
_EXPORTED: weakref.WeakKeyDictionary[Metrics, dict[str, set[tuple[str, ...]]]] = (
    weakref.WeakKeyDictionary()
)


def set_risk_metrics(metrics: Metrics, risk: GlobalRisk) -> None:
    """Export the global stage's aggregates (closed label sets only).

    A series whose key no longer appears (an account status nobody is in any more, a loop
    book that emptied) is removed, not left at its last value.
    """
    fig = risk.figures()
    written: dict[str, set[tuple[str, ...]]] = {}
    gauges: dict[str, Any] = {}

    def put(name: str, labels: tuple[str, ...], value: float) -> None:
        gauge = gauges.setdefault(name, getattr(metrics, name))
        gauge.labels(*labels).set(value)
        written.setdefault(name, set()).add(labels)

    for row in fig.loops:
        proto, asset = row["protocol"], row["asset"]
        put("loops_liquidatable_usd", (proto, asset), row["liquidatable_collateral_usd"])
        ratio = row["collateral_illusion_ratio"]
        put("loops_collateral_illusion_ratio", (proto, asset), ratio if ratio is not None else float("nan"))
        for step in row["ladder"]:
            put("loops_ladder_usd", (proto, asset, f"{step['move_pct']:g}"), step["additional_collateral_usd"])
    for (proto, band), n in fig.hf_bands.items():
        put("loops_positions", (proto, band), n)
    for (venue, status), n in fig.accounts_by_status.items():
        put("unified_accounts", (venue, status), n)
    for (venue, q), v in fig.leverage_quantiles.items():
        put("unified_effective_leverage", (venue, q), v)
    for (venue, rank), v in fig.shortfalls.items():
        put("unified_shortfall_usd", (venue, rank), v)
    metrics.books_withdrawn_ratio.set(fig.withdrawn_ratio)
    metrics.cascade_stage.set(fig.stage)
    for stage in range(1, 10):
        put("cascade_stage_active", (str(stage),), 1 if stage in fig.active_stages else 0)
    for name, usd in fig.spiral_liquidated_usd.items():
        put("spiral_liquidated_usd", (name,), usd)
    previous = _EXPORTED.get(metrics, {})
    for name, labels_before in previous.items():
        stale = labels_before - written.get(name, set())
        gauge = getattr(metrics, name)
        for labels in stale:
            with contextlib.suppress(KeyError):  # already cleared (partition revoked)
                gauge.remove(*labels)
    _EXPORTED[metrics] = written


def clear_risk_metrics(metrics: Metrics) -> None:
    """Stop exporting the global stage's figures (the next owner exports them)."""
    metrics.clear_global_stage()
    _EXPORTED.pop(metrics, None)


class GlobalRuntime:
    """The global stage on this worker: its state while the partition is ours, and its steps."""

    def __init__(self, pipes: Pipes) -> None:
        self.pipes = pipes
        self.state: GlobalState | None = None
        self.cursor: InputCursor | None = None
        self.held: list[tuple[Any, Any]] = []
        self.lock = asyncio.Lock()
        self.cadence = Cadence(pipes.settings.checkpoint_interval_s)
        self._metrics_at_s = 0.0
        self._force = False
        #: The account shards' steps as read (sharded accounts only), and the event that
        #: tells a wait for them that the partition was revoked.
        self.inbox: StepsInbox | None = None
        self.revoked = asyncio.Event()

    def get(self) -> tuple[GlobalState, InputCursor]:
        """The stage's state, loaded from its checkpoint the first time it is asked for."""
        if self.state is None or self.cursor is None:
            settings = self.pipes.settings
            fresh = GlobalState.fresh(self.pipes.config, settings.partitions, settings.account_shards)
            ckpt = self.pipes.global_checkpoints.load_usable(
                CHECKPOINT_NAME, fresh,
                lambda s: s.risk.config_hash == fresh.risk.config_hash and _shards(s) == _shards(fresh))
            self.state = ckpt.state if ckpt is not None else fresh
            self.cursor = InputCursor(ckpt.offset + 1 if ckpt is not None else None)
            self._metrics_at_s = 0.0
            self.pipes.metrics.recoveries_total.labels("global", "checkpoint" if ckpt else "empty").inc()
            if self.state.join is not None:
                self.revoked = asyncio.Event()
                self.inbox = StepsInbox(self.pipes, self.state.join.reports_next)
                self.inbox.start()
        return self.state, self.cursor

    @property
    def risk(self) -> GlobalRisk:
        return self.get()[0].risk

    async def handle(self, stream: Any, event: Any) -> None:
        message = event.message
        state, cursor = self.get()
        if not await self.pipes.admit("global", cursor, stream, event):
            return
        if state.join is not None and not await self._join_shards(state, message.offset):
            return  # revoked while waiting: the next owner goes on from the checkpoint
        self.held.append((stream, event))
        value = event.value if isinstance(event.value, bytes) else bytes(event.value or b"")
        try:
            records = split_input_bundle(value)
        except RecordError as exc:  # a bundle that does not check out: dead-lettered whole
            await self.pipes.dead_letter(DeadLetter(exc.reason, exc.detail, value[:65536]))
            records = []
        for record in records:
            await self._process_guarded(state, record)
        cursor.advance(message.offset)

    async def _process_guarded(self, state: GlobalState, value: bytes) -> None:
        """One record through the stage; a bad one dead-lettered with its reason, never raised."""
        try:
            await self._process(state, value)
        except RecordError as exc:  # not a risk.signals record: dead-lettered with its reason
            await self.pipes.dead_letter(DeadLetter(exc.reason, exc.detail, value[:65536]))
        except Exception as exc:  # a bad record must not kill the global stage
            detail = "".join(traceback.format_exception_only(exc)).strip()
            await self.pipes.dead_letter(DeadLetter("processing_error", detail, value[:65536]))

    async def _join_shards(self, state: GlobalState, offset: int) -> bool:
        """Every shard's step on log record ``offset`` into the stage (after waiting for them)."""
        join, inbox, reports = state.join, self.inbox, state.risk.shard_reports
        assert join is not None and inbox is not None and reports is not None
        if not await await_shards(self.pipes, join, inbox, offset, self.revoked):
            return False
        state.alerts_in_run += reports.apply(await take_joined(self.pipes, join, offset))
        return True

    async def _process(self, state: GlobalState, value: bytes) -> None:
        rec = decode_risk_record(value)
        if isinstance(rec, InputRecord):
            await self._on_input(state, rec)
            return
        if isinstance(rec, CommandRecord):
            await self._on_command(state.risk, rec.obj, value)
            return
        step = global_step(state.risk, rec)
        await self.pipes.send_alerts(step.alerts)
        state.alerts_in_run += len(step.alerts)
        snapshots = state.risk.take_snapshots()  # the report's figures
        await self.pipes.send_snapshots(snapshots)
        state.snapshots_in_run += len(snapshots)
        if step.finished_run is not None:
            await self._ack_run(state, step.finished_run)
        else:
            self._export_metrics(state.risk)

    async def _ack_run(self, state: GlobalState, run: str) -> None:
        """Every partition ended ``run``: acknowledge it once its alerts are durable."""
        await self.pipes.durable()
        ack = GlobalAck(run=run, alerts=state.alerts_in_run, snapshots=state.snapshots_in_run,
                        config_hash=self.pipes.config.config_hash, ack_wall_s=time.time())
        state.alerts_in_run = state.snapshots_in_run = 0
        await self.pipes.acks.send(key=run.encode(), value=encode(ack))
        await self.pipes.durable()
        set_risk_metrics(self.pipes.metrics, state.risk)
        self._force = True

    async def _on_input(self, state: GlobalState, record: InputRecord) -> None:
        marker = record.sync
        if marker is not None:  # a sync marker from the replayer: ack once every partition is in
            run = state.sync(record.kind, marker)
            if run is not None:
                loaded = LoadedAck(run=run, positions=len(state.risk.positions), accounts=state.risk.account_count,
                                   alerts=0, config_hash=self.pipes.config.config_hash)
                await self.pipes.acks.send(key=run.encode(), value=encode(loaded))
            return
        if not state.take_input(record):
            return  # forwarded again after a restart: already applied
        if record.kind == "position":
            state.risk.upsert_position(record.raw)
        else:
            state.risk.upsert_account(record.raw)

    async def _on_command(self, risk: GlobalRisk, obj: dict[str, Any], value: bytes) -> None:
        """Answer a command on control.acks; one that cannot be run is dead-lettered and refused."""
        pipes = self.pipes
        try:
            request = decode_command(obj)
            reply = run_spiral_command(risk, request)
        except CommandError as exc:
            await pipes.dead_letter(DeadLetter(INVALID_COMMAND, exc.detail, value[:65536]))
            if exc.request_id is not None:
                await pipes.acks.send(key=exc.request_id.encode(),
                                      value=encode_reply(error_reply(exc.request_id, exc.detail)))
            return
        if request.shocks is None:
            for name, usd in risk.spiral_liquidated_usd().items():
                pipes.metrics.spiral_liquidated_usd.labels(name).set(usd)
        await pipes.acks.send(key=request.request_id.encode(), value=encode_reply(reply))

    def _export_metrics(self, risk: GlobalRisk) -> None:
        now = time.time()
        if now - self._metrics_at_s >= 2.0:
            self._metrics_at_s = now
            set_risk_metrics(self.pipes.metrics, risk)

    async def checkpoint(self, force: bool = False) -> None:
        """Make outputs durable, checkpoint the state, then ack the records behind it."""
        state, cursor = self.state, self.cursor
        if not self.held or state is None or cursor is None or cursor.expected is None:
            return
        force = force or self._force
        if not (force or self.cadence.due(time.monotonic())):
            return
        self._force = False
        started = time.monotonic()
        offset = cursor.expected - 1
        held, self.held = self.held, []
        await self.pipes.durable()
        if self.state is not state:
            return  # revoked meanwhile: the next owner goes on from the previous checkpoint
        size = await self.pipes.global_checkpoints.save(CHECKPOINT_NAME, 0, offset, state)
        await self.pipes.durable()
        if self.state is not state:
            return
        for stream, event in held:
            await stream.ack(event)
        self.pipes.metrics.checkpoints_total.labels("global").inc()
        self.pipes.metrics.checkpoint_bytes.labels("global").set(size)
        self.cadence.done(started, time.monotonic())

    def on_revoked(self, revoked: set[TP]) -> None:
        """Losing the partition: stop exporting its figures and drop the state."""
        if GLOBAL_TP not in revoked:
            return
        clear_risk_metrics(self.pipes.metrics)
        self.state = self.cursor = None
        self.held = []
        self.revoked.set()
        inbox, self.inbox = self.inbox, None
        if inbox is not None:
            inbox.cancel()


def _shards(state: GlobalState) -> int:
    """The account shards a state was made for (0: not sharded)."""
    return state.join.shards if state.join is not None else 0


def attach_global_agent(pipes: Pipes) -> GlobalRuntime:
    """Register the global risk agent, its checkpoint timer and its rebalance handler."""
    app = pipes.app
    runtime = GlobalRuntime(pipes)

    @app.agent(pipes.signals, name=GLOBAL_AGENT, supervisor_strategy=CrashingSupervisor)
    async def process_global(stream: faust.StreamT[bytes]) -> None:
        last_event = pipes.metrics.agent_last_event_timestamp_seconds.labels(GLOBAL_AGENT)
        manual = cast(faust.Stream[bytes], stream).noack()
        queue = cast(faust.ChannelT[bytes], manual.channel).queue
        async for event in manual.events():
            async with runtime.lock:
                await runtime.handle(manual, event)
                if queue.empty():
                    await runtime.checkpoint()
            last_event.set(time.time())

    attach_stage_hooks(pipes, runtime)
    return runtime
