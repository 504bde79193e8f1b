"""The market agent: batch records → per-partition engine → alerts, signals, checkpoints.

Each record is judged against its partition's input cursor (:mod:`streams.app.checkpoint`):
processed when it is the next one the state expects, skipped when the state already
reflects it, and the consumer is sought back when it is past it. A record that fails
validation (or makes the engine raise) is dead-lettered with the reason; a failure of the
agent itself (a Kafka send failing) crashes the worker with a non-zero exit instead of
leaving a silent, dead agent. A Kafka record may be a pack of market records (a replay
sends them so, :mod:`monitor.ingest.pack`): its records are processed one after the other,
and the pack is judged, checkpointed and acknowledged as one record.

Order of durability, per checkpoint: the pending signals are sent, every output so far is
flushed to the broker, the partitions' checkpoints are written and flushed, and only then
are the records behind them acknowledged (committable).
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from typing import Any, cast

import faust
from faust.types import TP
from mode import CrashingSupervisor

from monitor.events import BOOK_BANDS_BPS
from monitor.ingest.batch import Batch, Control, decode_record
from monitor.ingest.pack import unpack
from monitor.metrics import Metrics
from monitor.protocol import DeadLetter, MarketAck, RecordError, Signal, SignalRecord, encode
from monitor.stages.engine import BatchResult
from monitor.stages.pipeline import market_step
from streams import topics
from streams.app.market_stage import Cadence, MarketPartition, MarketPartitions
from streams.app.pipes import Pipes, attach_stage_hooks

__all__ = ["MARKET_AGENT", "MarketCounters", "MarketRuntime", "PendingSignals", "attach_market_agent"]

log = logging.getLogger("liqmon.worker")

MARKET_AGENT = "market"


class MarketCounters:
    """The market agent's metric children, resolved once."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self.latency = metrics.processing_latency_seconds.labels(MARKET_AGENT)
        self.last_event = metrics.agent_last_event_timestamp_seconds.labels(MARKET_AGENT)
        self.records_in = metrics.topic_records_total.labels(topics.MARKET, "in")
        self.records_out = metrics.topic_records_total.labels(topics.ALERTS, "out")
        self._events: dict[str, Any] = {}
        self._peg: dict[tuple[str, str], tuple[Any, Any]] = {}

    def events(self, source: str) -> Any:
        counter = self._events.get(source)
        if counter is None:
            counter = self._events[source] = self._metrics.events_total.labels(source)
        return counter

    def peg(self, asset: str, venue: str) -> tuple[Any, Any]:
        """(deviation, level) gauges of one (asset, venue); these series are never removed."""
        key = (asset, venue)
        gauges = self._peg.get(key)
        if gauges is None:
            m = self._metrics
            gauges = self._peg[key] = (m.peg_deviation_bps.labels(asset, venue), m.peg_level.labels(asset, venue))
        return gauges


class PendingSignals:
    """Stage-1 signals not yet sent, merged per market partition.

    Merging consecutive records of one partition changes nothing downstream: stage 2
    orders signals by ``(ts_ms, asset, seq)`` below the minimum watermark, whatever
    records they arrived in. Pending signals are sent when the agent's queue runs empty,
    or after ``max_age_s`` / ``max_signals`` / ``max_records`` under a steady backlog.
    """

    def __init__(self, max_age_s: float = 0.05, max_signals: int = 2048, max_records: int = 512) -> None:
        self.max_age_s = max_age_s
        self.max_signals = max_signals
        self.max_records = max_records
        self._watermark_ms: dict[int, int] = {}
        self._signals: dict[int, list[Signal]] = {}
        self._n_signals = 0
        self._records = 0
        self._since_s: float | None = None

    def count_record(self) -> None:
        """One more market record processed since the last send."""
        self._records += 1

    def add(self, partition: int, watermark_ms: int, signals: list[Signal], now_s: float) -> None:
        if self._since_s is None:
            self._since_s = now_s
        if watermark_ms > self._watermark_ms.get(partition, -1):
            self._watermark_ms[partition] = watermark_ms
        self._signals.setdefault(partition, []).extend(signals)
        self._n_signals += len(signals)

    @property
    def full(self) -> bool:
        """Whether ``max_signals`` are held (sent before another record adds to them)."""
        return self._n_signals >= self.max_signals

    def due(self, now_s: float) -> bool:
        return (
            self.full
            or self._records >= self.max_records
            or (self._since_s is not None and now_s - self._since_s >= self.max_age_s)
        )

    def discard(self, partition: int) -> None:
        """Forget a revoked partition's signals (its next owner sends them again)."""
        self._watermark_ms.pop(partition, None)
        self._n_signals -= len(self._signals.pop(partition, []))

    def drain(self) -> list[SignalRecord]:
        out = [SignalRecord(p, wm, self._signals.get(p, [])) for p, wm in self._watermark_ms.items()]
        self._watermark_ms.clear()
        self._signals.clear()
        self._n_signals = 0
        self._records = 0
        self._since_s = None
        return out


class MarketRuntime:
    """The market partitions of this worker and the agent's steps over them."""

    def __init__(self, pipes: Pipes) -> None:
        self.pipes = pipes
        self.parts = MarketPartitions(pipes.config, pipes.market_checkpoints, pipes.metrics)
        self.pending = PendingSignals()
        #: Records and checkpoints never interleave (the checkpoint timer takes it too).
        self.lock = asyncio.Lock()
        self.cadence = Cadence(pipes.settings.checkpoint_interval_s)
        #: Wall time of the first record each partition processed since its last ack (bench).
        self.first_wall_s: dict[int, float] = {}
        self._book_symbols = frozenset(pipes.config.liquidity.metric_symbols)
        self._bands = [str(b) for b in BOOK_BANDS_BPS]
        self._end_seen = False

    # -- records ------------------------------------------------------------------------
    async def handle(self, stream: Any, event: Any, counters: MarketCounters) -> None:
        """Judge one record against its partition's cursor and process it if it is next."""
        message = event.message
        partition, offset = message.partition, message.offset
        part, cursor = self.parts.get(partition)
        if not await self.pipes.admit("market", cursor, stream, event):
            return
        self.parts.hold(partition, stream, event)
        self.pending.count_record()
        value = event.value if isinstance(event.value, bytes) else bytes(event.value or b"")
        self.first_wall_s.setdefault(partition, time.time())
        for one in await self._records(part, value):
            counters.records_in.inc()
            await self._process(part, partition, one, counters)
            if self.pending.full:  # inside a pack too: a signal record stays well under 1 MB
                await self.send_signals()
        cursor.advance(offset)
        if message.timestamp:
            counters.latency.observe(max(time.time() - float(message.timestamp), 0.0))

    async def _records(self, part: MarketPartition, value: bytes) -> list[bytes]:
        """The market records of one Kafka record: a pack's, in order, or the record itself;
        none when a pack does not frame out (then dead-lettered whole)."""
        try:
            records = unpack(value)
        except RecordError as exc:
            part.deadletters_since_ack += 1
            await self.pipes.dead_letter(DeadLetter(exc.reason, exc.detail, value[:65536]))
            return []
        return [value] if records is None else records

    async def _process(self, part: MarketPartition, partition: int, value: bytes, counters: MarketCounters) -> None:
        try:
            record = decode_record(value)
        except RecordError as exc:
            part.deadletters_since_ack += 1
            await self.pipes.dead_letter(DeadLetter(exc.reason, exc.detail, value[:65536]))
            return
        if isinstance(record, Control):
            await self._on_control(record, partition, part)
            return
        try:
            step = market_step(part.engine, record, partition, part.sent_watermark_ms)
        except Exception as exc:  # a bug on one record must not kill the agent
            log.error("engine failed on a %s batch: %s", record.asset, exc)
            detail = "".join(traceback.format_exception_only(exc)).strip()
            part.deadletters_since_ack += 1
            await self.pipes.dead_letter(DeadLetter("processing_error", detail, value[:65536]))
            return
        result = step.result
        if step.forward is not None:
            part.sent_watermark_ms = step.forward.watermark_ms
            self.pending.add(partition, step.forward.watermark_ms, step.forward.signals, time.monotonic())
        await self.pipes.send_alerts(result.alerts)
        counters.records_out.inc(len(result.alerts))
        part.alerts_since_ack += len(result.alerts)
        part.events_since_ack += len(record)
        self._export(part, record, result, counters)

    def _export(self, part: MarketPartition, record: Batch, result: BatchResult, counters: MarketCounters) -> None:
        if result.books_touched:
            self._book_metrics(part, result.books_touched)
        for source, n in result.events_by_source.items():
            counters.events(source).inc(n)
        if result.unpriced:
            self.pipes.metrics.unpriced_total.labels(record.asset).inc(result.unpriced)
        peg = part.engine.pegs.get(record.asset)
        if peg is not None:
            for venue, tracker in peg.trackers.items():
                dev_gauge, level_gauge = counters.peg(record.asset, venue)
                dev_gauge.set(tracker.last_dev_bps)
                level_gauge.set(tracker.level)
            self.pipes.metrics.set_peg_undetermined(record.asset, peg.undetermined())
        counters.last_event.set(time.time())

    def _book_metrics(self, part: MarketPartition, touched: set[tuple[str, str]]) -> None:
        books = part.engine.liquidity.books
        metrics = self.pipes.metrics
        for key in touched:
            st = books.get(key)
            if st is None or not st.valid or key[1] not in self._book_symbols or not st.bid_usd:
                continue
            venue, symbol = key
            for side, values in (("bid", st.bid_usd), ("ask", st.ask_usd)):
                for band, v in zip(self._bands, values, strict=True):
                    metrics.book_depth_usd.labels(venue, symbol, side, band).set(v)
            metrics.book_spread_bps.labels(venue, symbol).set(st.spread_bps)

    async def _on_control(self, ctl: Control, partition: int, part: MarketPartition) -> None:
        """End of a run on this partition: its end signal to the global stage, then the ack."""
        await self.send_signals()
        wm = part.engine.clock(partition).watermark_ms
        await self.pipes.send_signal_record(SignalRecord(partition, wm, [], end=ctl.run))
        await self.pipes.durable()
        ack = MarketAck(
            run=ctl.run, partition=partition, alerts=part.alerts_since_ack,
            deadletters=part.deadletters_since_ack, events=part.events_since_ack,
            config_hash=self.pipes.config.config_hash,
            first_wall_s=self.first_wall_s.pop(partition, None), ack_wall_s=time.time(),
        )
        part.alerts_since_ack = part.deadletters_since_ack = part.events_since_ack = 0
        self._end_seen = True
        await self.pipes.acks.send(key=ctl.run.encode(), value=encode(ack))
        await self.pipes.durable()

    # -- signals and checkpoints -------------------------------------------------------
    async def send_signals(self) -> None:
        for rec in self.pending.drain():
            await self.pipes.send_signal_record(rec)

    async def after_record(self, queue_empty: bool) -> None:
        """Send merged signals when the queue ran dry or they are due; checkpoint when due."""
        if queue_empty or self.pending.due(time.monotonic()):
            await self.send_signals()
            await self.checkpoint(force=self._end_seen)

    async def checkpoint(self, force: bool = False) -> None:
        """Make outputs durable, checkpoint the partitions that moved, then ack their records.

        Runs when the cadence says so, or ``force`` (after a run's end marker, so a finished
        replay is committed whole).
        """
        if not any(self.parts.held.values()):
            return
        if not (force or self.cadence.due(time.monotonic())):
            return
        self._end_seen = False
        await self.send_signals()
        started = time.monotonic()
        await self.pipes.durable()
        done = await self.parts.checkpoint()
        await self.pipes.durable()
        for stream, event in done:
            if event.message.partition in self.parts.parts:  # not revoked meanwhile
                await stream.ack(event)
        self.cadence.done(started, time.monotonic())

    def on_revoked(self, revoked: set[TP]) -> None:
        for tp in revoked:
            if tp.topic == topics.MARKET:
                self.parts.drop(tp.partition)
                self.pending.discard(tp.partition)
                self.first_wall_s.pop(tp.partition, None)


def attach_market_agent(pipes: Pipes) -> MarketRuntime:
    """Register the market agent, its checkpoint timer and its rebalance handler."""
    app = pipes.app
    runtime = MarketRuntime(pipes)

    @app.agent(pipes.market, name=MARKET_AGENT, supervisor_strategy=CrashingSupervisor)
    async def process_market(stream: faust.StreamT[bytes]) -> None:
        counters = MarketCounters(pipes.metrics)
        manual = cast(faust.Stream[bytes], stream).noack()
        queue = cast(faust.ChannelT[bytes], manual.channel).queue
        async for event in manual.events():
            async with runtime.lock:
                await runtime.handle(manual, event, counters)
                await runtime.after_record(queue.empty())

    attach_stage_hooks(pipes, runtime)
    return runtime
