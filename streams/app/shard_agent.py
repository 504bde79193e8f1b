"""The account shards on the workers (``LIQMON_ACCOUNT_SHARDS`` > 0).

Shard k runs on the worker that owns partition k of ``risk.shards``. It reads the global
stage's ordered log (``risk.signals`` partition 0) with a consumer of its own, outside the
consumer group, from the record after its checkpoint, and keeps the unified accounts that
are its own (:class:`monitor.stages.global_risk.account_shard.AccountShard`). Per batch of
log records it sends its accounts' alerts, makes them durable, then sends its steps on
those records to ``risk.shard-steps`` (what the aggregation stage joins). It checkpoints
``(state, last log offset)`` in the shard-checkpoint table (changelog partition k) after
its steps are durable, so a crash costs re-reading, and what it sends again is the same.

The aggregation stage pokes a shard it waits for with a record on that shard's
``risk.shards`` partition. faust hands a partition's records over once its tables are
recovered, so the owner starts the shard when a poke arrives, and stops it when the
partition is revoked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from faust.types import TP
from mode import CrashingSupervisor

from monitor.protocol import (
    Alert,
    CommandRecord,
    DeadLetter,
    InputRecord,
    RecordError,
    SignalRecord,
    decode_account_head,
    decode_risk_record,
    split_input_bundle,
)
from monitor.stages.global_risk.account_shard import AccountShard
from monitor.stages.global_risk.shards import STEP_RECORD_BYTES, ShardStep, step_records
from streams import topics
from streams.app.checkpoint import CheckpointTable
from streams.app.global_stage import InputLedger
from streams.app.market_stage import Cadence
from streams.app.pipes import Pipes
from streams.kafka.offset_order import OffsetOrder
from streams.kafka.security import kafka_client_options

__all__ = ["SHARD_AGENT", "LogReader", "ShardRunners", "ShardState", "attach_shard_agent", "shard_step"]

log = logging.getLogger("liqmon.worker")

SHARD_AGENT = "shards"
#: Log records a shard takes per fetch (one steps record and one flush per fetch).
FETCH_RECORDS = 1_000


@dataclass
class ShardState:
    """What a shard's checkpoint holds: the shard and the inputs it took."""

    shard: AccountShard
    inputs: InputLedger = field(default_factory=InputLedger)


def checkpoint_name(shard: int) -> str:
    return f"shard-{shard}"


def shard_step(
    state: ShardState, offset: int, value: bytes
) -> tuple[list[Alert], ShardStep | None, list[DeadLetter]]:
    """One log record through a shard: its alerts, its step, and the dead letters of the
    accounts of this shard that do not check out (the aggregation stage dead-letters every
    other bad record, as the global stage does). A bundle of inputs is its records in order."""
    try:
        records = split_input_bundle(value)
    except RecordError:  # dead-lettered by the aggregation stage, ignored here
        records = []
    alerts: list[Alert] = []
    dead: list[DeadLetter] = []
    for record in records:
        record_alerts, record_dead = _shard_record(state, record)
        alerts.extend(record_alerts)
        if record_dead is not None:
            dead.append(record_dead)
    return alerts, state.shard.take_step(offset, len(alerts)), dead


def _shard_record(state: ShardState, value: bytes) -> tuple[list[Alert], DeadLetter | None]:
    shard = state.shard
    head = decode_account_head(value)
    if head is not None and not shard.owns(head.raw.account_id):  # another shard's: only its id
        if state.inputs.take(head):
            shard.heard_of_account(deleted=head.raw.delete)
        return [], None
    alerts: list[Alert] = []
    dead: DeadLetter | None = None
    rec: SignalRecord | InputRecord | CommandRecord | None
    try:
        rec = decode_risk_record(value)
        if isinstance(rec, InputRecord) and rec.sync is not None:
            rec = None  # a replay marker: the aggregation stage's
    except RecordError:  # a marker that does not check out too: dead-lettered there, ignored here
        rec = None
    if isinstance(rec, InputRecord) and state.inputs.take(rec):
        if rec.kind == "position":
            shard.upsert_position(rec.raw)
        else:
            dead = _take_account(shard, rec.raw, value)
    elif rec is not None and not isinstance(rec, (InputRecord, CommandRecord)):
        alerts = shard.push(rec)
    return alerts, dead


def _take_account(shard: AccountShard, raw: dict[str, Any], value: bytes) -> DeadLetter | None:
    try:
        shard.upsert_account(raw)
    except RecordError as exc:
        return DeadLetter(exc.reason, exc.detail, value[:65536]) if _owned(shard, raw) else None
    except Exception as exc:  # what the global stage calls a processing error
        if not _owned(shard, raw):
            return None
        detail = "".join(traceback.format_exception_only(exc)).strip()
        return DeadLetter("processing_error", detail, value[:65536])
    return None


def _owned(shard: AccountShard, raw: dict[str, Any]) -> bool:
    return "account_id" in raw and shard.owns(str(raw["account_id"]))


class LogReader:
    """One partition read in order from an offset by a consumer outside the group (the
    partition's owner in the group is not this reader's business). A fetch that skips a
    record (seen on the embedded broker, as the stages' input cursors see it) is read again
    from the missing record."""

    def __init__(self, pipes: Pipes, tp: TopicPartition, offset: int | None) -> None:
        self.pipes = pipes
        self.tp = tp
        self._start = offset
        self._consumer: AIOKafkaConsumer | None = None
        self._order: OffsetOrder | None = None

    @property
    def expected(self) -> int | None:
        """The offset of the next record to hand out (None: the first the log still holds)."""
        return self._order.expected.get(self.tp, self._start) if self._order is not None else self._start

    async def start(self) -> None:
        consumer = self._consumer = await log_reader(self.pipes, self.tp, self._start)
        rewinds = self.pipes.metrics.rewinds_total.labels("shard-reader")
        self._order = OffsetOrder(consumer.seek, rewinds.inc)
        if self._start is not None:
            self._order.expected[self.tp] = self._start

    async def stop(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()

    async def next(self, timeout_ms: int, max_records: int) -> list[ConsumerRecord[Any, Any]]:
        """The next records in offset order (none: nothing new within ``timeout_ms``)."""
        consumer, order = self._consumer, self._order
        assert consumer is not None and order is not None, "start() first"
        got = (await consumer.getmany(self.tp, timeout_ms=timeout_ms, max_records=max_records)).get(self.tp, [])
        return order.take(self.tp, got)


async def log_reader(pipes: Pipes, tp: TopicPartition, offset: int | None) -> AIOKafkaConsumer:
    """A consumer of one partition from ``offset`` (None: from the first record the log
    still holds), outside the group."""
    settings = pipes.settings
    wait_ms = settings.fetch_max_wait_ms if settings.fetch_max_wait_ms is not None else (
        50 if settings.embedded else 500)
    consumer = AIOKafkaConsumer(bootstrap_servers=pipes.bootstrap, enable_auto_commit=False, group_id=None,
                                auto_offset_reset="earliest", fetch_max_wait_ms=wait_ms,
                                max_partition_fetch_bytes=8 * 1024 * 1024, **kafka_client_options(settings))
    await consumer.start()
    consumer.assign([tp])
    if offset is None:
        await consumer.seek_to_beginning(tp)
    else:
        consumer.seek(tp, offset)
    return consumer


class ShardRunner:
    """One shard on this worker: its state, its log reader, its checkpoints."""

    def __init__(self, pipes: Pipes, checkpoints: CheckpointTable, shard: int) -> None:
        self.pipes = pipes
        self.checkpoints = checkpoints
        self.shard = shard
        self.cadence = Cadence(pipes.settings.checkpoint_interval_s)

    def _load(self) -> tuple[ShardState, int | None]:
        """The shard's state and the log offset to read from (None: the log's first record)."""
        pipes, k = self.pipes, self.shard
        shards = pipes.settings.account_shards
        fresh = ShardState(AccountShard(pipes.config, pipes.settings.partitions, k, shards))
        ckpt = self.checkpoints.load_usable(
            checkpoint_name(k), fresh,
            lambda s: s.shard.shards == shards and s.shard.config_hash == pipes.config.config_hash)
        pipes.metrics.recoveries_total.labels("shard", "checkpoint" if ckpt else "empty").inc()
        if ckpt is None:
            log.info("shard %d of %d starts from the beginning of the log", k, shards)
            return fresh, None
        log.info("shard %d of %d starts from its checkpoint at log offset %d", k, shards, ckpt.offset)
        return ckpt.state, ckpt.offset + 1

    async def run(self) -> None:
        state, offset = self._load()
        reader = LogReader(self.pipes, TopicPartition(topics.RISK_SIGNALS, 0), offset)
        await reader.start()
        saved = offset - 1 if offset is not None else None
        try:
            while True:
                records = await reader.next(timeout_ms=500, max_records=FETCH_RECORDS)
                if records:
                    last = await self._take(state, records)
                    due = self.cadence.due(time.monotonic())
                elif reader.expected is not None:
                    last, due = reader.expected - 1, True
                else:
                    continue
                if due and (saved is None or last > saved):
                    await self._checkpoint(state, last)
                    saved = last
        finally:
            await reader.stop()

    async def _take(self, state: ShardState, records: list[ConsumerRecord[Any, Any]]) -> int:
        """Log records through the shard; their alerts durable, then the steps sent. The
        offset of the last one."""
        pipes = self.pipes
        steps: list[ShardStep] = []
        for rec in records:
            alerts, step, dead = shard_step(state, rec.offset, bytes(rec.value or b""))
            await pipes.send_alerts(alerts)
            for letter in dead:
                await pipes.dead_letter(letter)
            if step is not None:
                steps.append(step)
        last = int(records[-1].offset)
        await pipes.durable()
        for record in step_records(self.shard, last, steps, STEP_RECORD_BYTES):
            await pipes.shard_steps.send(key=str(self.shard).encode(), value=record, partition=0)
        return last

    async def _checkpoint(self, state: ShardState, offset: int) -> None:
        started = time.monotonic()
        await self.pipes.durable()
        size = await self.checkpoints.save(checkpoint_name(self.shard), self.shard, offset, state)
        await self.pipes.durable()
        self.pipes.metrics.checkpoints_total.labels("shard").inc()
        self.pipes.metrics.checkpoint_bytes.labels("shard").set(size)
        self.cadence.done(started, time.monotonic())


class ShardRunners:
    """The shards this worker runs, by shard number."""

    def __init__(self, pipes: Pipes, checkpoints: CheckpointTable) -> None:
        self.pipes = pipes
        self.checkpoints = checkpoints
        self.tasks: dict[int, asyncio.Task[None]] = {}

    def ensure(self, shard: int) -> None:
        """Run ``shard`` here (poked: its partition is ours and its table recovered)."""
        task = self.tasks.get(shard)
        if task is None or task.done():
            runner = ShardRunner(self.pipes, self.checkpoints, shard)
            self.tasks[shard] = asyncio.ensure_future(self._supervised(runner))

    async def _supervised(self, runner: ShardRunner) -> None:
        try:
            await runner.run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a shard that cannot go on must not leave a silent worker
            log.exception("shard %d failed", runner.shard)
            await self.pipes.app.crash(exc)

    async def stop(self, shards: set[int]) -> None:
        """Stop the given shards (their partitions were revoked) and wait for them."""
        tasks = [self.tasks.pop(k) for k in shards if k in self.tasks]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


def attach_shard_agent(pipes: Pipes, checkpoints: CheckpointTable) -> ShardRunners:
    """The poke agent on ``risk.shards`` and the handlers that stop revoked shards."""
    app = pipes.app
    runners = ShardRunners(pipes, checkpoints)

    @app.agent(pipes.shards, name=SHARD_AGENT, supervisor_strategy=CrashingSupervisor)
    async def shard_pokes(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            runners.ensure(event.message.partition)

    # faust calls receivers as (app, partitions, signal=..., ...); mode types them as *args
    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def stop_revoked(sender: faust.App, revoked: set[TP], **_: Any) -> None:
        await runners.stop({tp.partition for tp in revoked if tp.topic == topics.RISK_SHARDS})

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def stop_all(sender: faust.App, **_: Any) -> None:
        await runners.stop(set(runners.tasks))

    return runners
