"""The faust application: ``create_app(settings, config)`` builds app, topics, tables, agents.

The market agent loads per-asset state from a changelog-backed table, calls the pure
engine (:class:`monitor.engine.Engine`) on each batch record, stores state back when a
discrete state changed, and forwards alerts and dead letters. A record that fails
validation (or makes the engine raise) is dead-lettered with the reason; a failure of
the agent itself (Kafka send failing) crashes the worker with a non-zero exit instead of
leaving a silent, dead agent.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
import traceback
import weakref
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import faust
import orjson
from mode import CrashingSupervisor

from monitor.batch import Batch, BatchError, Control, decode_record
from monitor.config import EngineConfig
from monitor.engine import BatchResult, Engine
from monitor.events import BOOK_BANDS_BPS
from monitor.ingest import DeadLetter
from monitor.metrics import Metrics
from monitor.risk import GlobalRisk
from monitor.signals import Signal, SignalRecord, decode_signal_record, encode_signal_record
from streams import topics
from streams.faust_kafka import FAUST_FETCH_MAX_WAIT_MS, LiqmonApp
from streams.settings import Settings

__all__ = ["WorkerState", "create_app"]

log = logging.getLogger("liqmon.worker")

MARKET_AGENT = "market"
GLOBAL_AGENT = "risk"
#: The embedded broker holds a fetch for the whole wait while any partition is empty.
EMBEDDED_FETCH_MAX_WAIT_MS = 50


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


@dataclass
class WorkerState:
    """Process-local state of one worker (the engine and its counters)."""

    engine: Engine
    metrics: Metrics
    restored_assets: set[str] = field(default_factory=set)
    restored_quotes: set[int] = field(default_factory=set)
    #: Alerts and dead letters emitted per partition since that partition's last ack.
    alerts_since_ack: Counter[int] = field(default_factory=Counter)
    deadletters_since_ack: Counter[int] = field(default_factory=Counter)
    events_since_ack: Counter[int] = field(default_factory=Counter)
    #: Last watermark forwarded to the global stage, per market partition.
    sent_watermark: dict[int, int] = field(default_factory=dict)
    #: Wall time of the first record each partition processed since its last ack (bench).
    first_wall_s: dict[int, float] = field(default_factory=dict)


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
    """Stage-1 signals not yet sent, merged per market partition, and the market events
    behind them, which are acknowledged only after the signals are sent.

    Merging consecutive records of one partition changes nothing downstream: stage 2
    orders signals by ``(ts_ms, asset, seq)`` below the minimum watermark, whatever
    records they arrived in. Pending signals are sent when the agent's queue runs empty,
    or after ``max_age_s`` / ``max_signals`` / ``max_events`` under a steady backlog.
    """

    def __init__(self, max_age_s: float = 0.05, max_signals: int = 2048, max_events: int = 512) -> None:
        self.max_age_s = max_age_s
        self.max_signals = max_signals
        self.max_events = max_events
        self._watermark_ms: dict[int, int] = {}
        self._signals: dict[int, list[Signal]] = {}
        self._n_signals = 0
        self._since_s: float | None = None
        self._unacked: list[tuple[Any, Any]] = []

    def hold(self, stream: Any, event: Any) -> None:
        self._unacked.append((stream, event))

    def add(self, partition: int, watermark_ms: int, signals: list[Signal], now_s: float) -> None:
        if self._since_s is None:
            self._since_s = now_s
        if watermark_ms > self._watermark_ms.get(partition, -1):
            self._watermark_ms[partition] = watermark_ms
        self._signals.setdefault(partition, []).extend(signals)
        self._n_signals += len(signals)

    def due(self, now_s: float) -> bool:
        return (
            self._n_signals >= self.max_signals
            or len(self._unacked) >= self.max_events
            or (self._since_s is not None and now_s - self._since_s >= self.max_age_s)
        )

    def drain(self) -> list[SignalRecord]:
        out = [SignalRecord(p, wm, self._signals.get(p, [])) for p, wm in self._watermark_ms.items()]
        self._watermark_ms.clear()
        self._signals.clear()
        self._n_signals = 0
        self._since_s = None
        return out

    def take_unacked(self) -> list[tuple[Any, Any]]:
        out, self._unacked = self._unacked, []
        return out


def _faust_settings(settings: Settings, bootstrap: str) -> dict[str, Any]:
    rebalance_s = settings.rebalance_timeout_s
    if rebalance_s is None:
        # DESIGN "embedded broker quirks": its first group join waits ~half this timeout.
        rebalance_s = 6.0 if settings.embedded else 60.0
    conf: dict[str, Any] = {
        "broker": f"kafka://{bootstrap}",
        "store": "memory://",
        "web_enabled": False,
        "topic_partitions": settings.partitions,
        "topic_replication_factor": settings.replication_factor,
        "broker_rebalance_timeout": rebalance_s,
        "broker_session_timeout": min(rebalance_s, 60.0),
        "broker_heartbeat_interval": max(min(rebalance_s / 6.0, 3.0), 0.5),
        "processing_guarantee": "at_least_once",
        "datadir": str(settings.data_dir or Path(tempfile.gettempdir()) / "liqmon-faust"),
        "consumer_auto_offset_reset": "earliest",
        # Batch records are ~10 KB: fetch in large chunks (measured by `liqmon bench`).
        "stream_buffer_maxsize": 4096,
        "consumer_max_fetch_size": 8 * 1024 * 1024,
        "broker_max_poll_records": 2000,
    }
    if settings.embedded:
        # The embedded broker reports end offsets per record *batch*: one record per
        # produce batch keeps changelog recovery exact (DESIGN, second quirk).
        conf["producer_max_batch_size"] = 1
    return conf


_RAW: dict[str, Any] = {"key_serializer": "raw", "value_serializer": "raw"}


def create_app(settings: Settings, config: EngineConfig, bootstrap: str, metrics: Metrics) -> faust.App:
    """Build the faust app with its topics, table and agent."""
    fetch_wait_ms = settings.fetch_max_wait_ms
    if fetch_wait_ms is None:
        fetch_wait_ms = EMBEDDED_FETCH_MAX_WAIT_MS if settings.embedded else FAUST_FETCH_MAX_WAIT_MS
    app = LiqmonApp(settings.app_id, fetch_max_wait_ms=fetch_wait_ms,
                    **_faust_settings(settings, bootstrap))
    market = app.topic(
        topics.MARKET, partitions=settings.partitions, key_serializer="raw", value_serializer="raw"
    )
    alerts_topic = app.topic(topics.ALERTS, key_serializer="raw", value_serializer="raw")
    deadletter_topic = app.topic(topics.DEADLETTER, key_serializer="raw", value_serializer="raw")
    acks_topic = app.topic(topics.ACKS, key_serializer="raw", value_serializer="raw")
    state_table = app.Table("engine-state", default=None, partitions=settings.partitions)
    signals_topic = app.topic(topics.RISK_SIGNALS, partitions=1, **_RAW)
    snapshots_topic = app.topic(topics.RISK_SNAPSHOTS, partitions=1, **_RAW)
    positions_topic = app.topic(topics.POSITIONS, **_RAW)
    accounts_topic = app.topic(topics.ACCOUNTS, **_RAW)
    # Stage-2 inputs as plain JSON, recovered from the changelog on restart.
    risk_table = app.Table("risk-inputs", default=None, partitions=1)
    state = WorkerState(engine=Engine(config), metrics=metrics)
    app.liqmon_state = state  # type: ignore[attr-defined]
    config_hash = config.config_hash

    async def dead_letter(partition: int, dl: DeadLetter) -> None:
        # Counted by the dead-letter agent below, like every other producer's dead letters.
        state.deadletters_since_ack[partition] += 1
        await deadletter_topic.send(key=dl.reason.encode(), value=dl.encode())

    def restore(batch: Batch, partition: int) -> None:
        engine = state.engine
        if partition not in state.restored_quotes:
            state.restored_quotes.add(partition)
            for quote in config.ingest.quote_prices_usd:
                stored = state_table.get(f"quote:{quote}:{partition}")
                if stored is not None:
                    engine.quote_usd[quote] = float(stored)
        asset = batch.asset
        if asset not in state.restored_assets and not engine.is_quote_asset(asset):
            state.restored_assets.add(asset)
            stored = state_table.get(f"asset:{asset}")
            if stored is not None and not engine.has_asset(asset):
                engine.restore(asset, stored)

    def persist(batch: Batch, partition: int, result: BatchResult) -> None:
        engine = state.engine
        asset = batch.asset
        if engine.is_quote_asset(asset):
            price = engine.quote_usd.get(asset)
            if price is not None:
                state_table[f"quote:{asset}:{partition}"] = price
            return
        snap = engine.snapshot(asset)
        if snap is not None:
            state_table[f"asset:{asset}"] = snap

    book_symbols = frozenset(config.liquidity.metric_symbols)
    bands = [str(b) for b in BOOK_BANDS_BPS]

    def update_book_metrics(touched: set[tuple[str, str]]) -> None:
        books = state.engine.liquidity.books
        for key in touched:
            st = books.get(key)
            if st is None or not st.valid or key[1] not in book_symbols or not st.bid_usd:
                continue
            venue, symbol = key
            for side, values in (("bid", st.bid_usd), ("ask", st.ask_usd)):
                for band, v in zip(bands, values, strict=True):
                    metrics.book_depth_usd.labels(venue, symbol, side, band).set(v)
            metrics.book_spread_bps.labels(venue, symbol).set(st.spread_bps)

    async def on_control(ctl: Control, partition: int) -> None:
        await send_pending_signals()
        wm = state.engine.clock(partition).watermark_ms
        await signals_topic.send(
            key=b"", partition=0,
            value=encode_signal_record(SignalRecord(partition, wm, [], end=ctl.run)),
        )
        await app.producer.flush()
        ack = {
            "run": ctl.run,
            "partition": partition,
            "alerts": state.alerts_since_ack.pop(partition, 0),
            "deadletters": state.deadletters_since_ack.pop(partition, 0),
            "events": state.events_since_ack.pop(partition, 0),
            "config_hash": config_hash,
            "first_wall_s": state.first_wall_s.pop(partition, None),
            "ack_wall_s": time.time(),
        }
        await acks_topic.send(key=ctl.run.encode(), value=orjson.dumps(ack))
        await app.producer.flush()

    # Stage-1 signals wait here while more market records are queued, so a backlog costs
    # one risk.signals record per partition instead of one per market record. The market
    # records behind them are acknowledged (committable) only once their signals are
    # handed to the producer: at-least-once holds.
    pending = PendingSignals()

    async def send_pending_signals() -> None:
        for rec in pending.drain():
            await signals_topic.send(key=b"", partition=0, value=encode_signal_record(rec))

    async def flush_signals() -> None:
        await send_pending_signals()
        for ev_stream, ev in pending.take_unacked():
            await ev_stream.ack(ev)

    @app.agent(market, name=MARKET_AGENT, supervisor_strategy=CrashingSupervisor)
    async def process_market(stream: faust.StreamT[bytes]) -> None:
        counters = MarketCounters(metrics)
        manual = cast(faust.Stream[bytes], stream).noack()
        queue = cast(faust.ChannelT[bytes], manual.channel).queue
        async for event in manual.events():
            pending.hold(manual, event)
            await process_market_event(event, counters)
            if queue.empty() or pending.due(time.monotonic()):
                await flush_signals()

    async def process_market_event(event: faust.EventT[bytes], counters: MarketCounters) -> None:
        message = event.message
        partition = message.partition
        value = event.value if isinstance(event.value, bytes) else bytes(event.value or b"")
        counters.records_in.inc()
        if partition not in state.first_wall_s:
            state.first_wall_s[partition] = time.time()
        try:
            record = decode_record(value)
        except BatchError as exc:
            await dead_letter(partition, DeadLetter(exc.reason, exc.detail, value[:65536]))
            return
        if isinstance(record, Control):
            await on_control(record, partition)
            return
        try:
            restore(record, partition)
            result = state.engine.process(record, partition)
        except Exception as exc:  # a bug on one record must not kill the agent
            log.error("engine failed on a %s batch: %s", record.asset, exc)
            detail = "".join(traceback.format_exception_only(exc)).strip()
            await dead_letter(partition, DeadLetter("processing_error", detail, value[:65536]))
            return
        if result.state_changed:
            persist(record, partition, result)
        if result.signals or result.watermark_ms > state.sent_watermark.get(partition, -1):
            state.sent_watermark[partition] = result.watermark_ms
            pending.add(partition, result.watermark_ms, result.signals, time.monotonic())
        if result.books_touched:
            update_book_metrics(result.books_touched)
        for alert in result.alerts:
            await alerts_topic.send(key=alert.alert_id.encode(), value=alert.to_json())
            metrics.alerts_total.labels(alert.kind, alert.severity).inc()
            counters.records_out.inc()
        state.alerts_since_ack[partition] += len(result.alerts)
        n_events = len(record)
        state.events_since_ack[partition] += n_events
        for source, n in result.events_by_source.items():
            counters.events(source).inc(n)
        if result.unpriced:
            metrics.unpriced_total.labels(record.asset).inc(result.unpriced)
        peg = state.engine.pegs.get(record.asset)
        if peg is not None:
            for venue, tracker in peg.trackers.items():
                dev_gauge, level_gauge = counters.peg(record.asset, venue)
                dev_gauge.set(tracker.last_dev_bps)
                level_gauge.set(tracker.level)
        now = time.time()
        counters.last_event.set(now)
        if message.timestamp:
            counters.latency.observe(max(now - float(message.timestamp), 0.0))

    @app.agent(deadletter_topic, name="deadletter", supervisor_strategy=CrashingSupervisor)
    async def count_dead_letters(stream: faust.StreamT[bytes]) -> None:
        """One place counts dead letters from every producer (ingest, feeds, workers)."""
        async for event in stream.events():
            key = event.key
            reason = key.decode("utf-8", "replace") if isinstance(key, bytes) else "unknown"
            metrics.deadletter_total.labels(reason or "unknown").inc()
            metrics.topic_records_total.labels(topics.DEADLETTER, "in").inc()

    # -- stage 2: the global risk agent (one partition) --------------------------------
    from faust.types import TP

    from streams.commands import (
        INVALID_COMMAND,
        CommandError,
        decode_command,
        encode_reply,
        error_reply,
        is_command,
        run_spiral_command,
    )
    from streams.ownership import PartitionContinuity

    risk = GlobalRisk(config, settings.partitions)
    app.liqmon_risk = risk  # type: ignore[attr-defined]
    risk_state: dict[str, Any] = {"restored": False, "alerts": 0, "snapshots": 0, "metrics_at": 0.0,
                                  "syncs": {}}
    # risk_table keys: position:<id>, account:<id> (inputs), latch:<account id> (the status
    # rank already alerted, so a restarted worker does not alert the same status again)
    latch_prefix = "latch:"
    continuity = PartitionContinuity(TP(topics.RISK_SIGNALS, 0))

    def restore_risk() -> None:
        if risk_state["restored"]:
            return
        risk_state["restored"] = True
        latches: dict[str, int] = {}
        for key, raw in sorted(risk_table.items()):
            if raw is None:
                continue
            if str(key).startswith("position:"):
                risk.upsert_position(raw)
            elif str(key).startswith("account:"):
                risk.upsert_account(raw)
            elif str(key).startswith(latch_prefix):
                latches[str(key)[len(latch_prefix):]] = int(raw)
        risk.restore_alert_latches(latches)  # after the accounts: an upsert re-arms a latch

    def persist_latches() -> None:
        for account_id, rank in risk.take_latch_changes().items():
            risk_table[latch_prefix + account_id] = rank  # None deletes the key

    def reset_risk() -> None:
        """A fresh global stage, rebuilt from risk_table at its next record."""
        nonlocal risk
        risk = GlobalRisk(config, settings.partitions)
        app.liqmon_risk = risk  # type: ignore[attr-defined]
        risk_state.update(restored=False, alerts=0, snapshots=0, metrics_at=0.0, syncs={})

    # faust calls receivers as (app, partitions, signal=..., ...); mode types them as *args
    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def on_global_revoked(sender: faust.App, revoked: set[TP], **_: Any) -> None:
        if continuity.on_revoked(revoked):
            metrics.clear_global_stage()  # the next owner exports them
            _EXPORTED.pop(metrics, None)
            risk_state["metrics_at"] = 0.0  # export again at the next record if still ours

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def on_global_assigned(sender: faust.App, assigned: set[TP], **_: Any) -> None:
        if continuity.on_assigned(assigned):
            reset_risk()  # owned elsewhere now: free the memory

    async def on_command(obj: dict[str, Any], value: bytes) -> None:
        """Answer a command on control.acks; one that cannot be run is dead-lettered and refused."""
        try:
            request = decode_command(obj)
            reply = run_spiral_command(risk, request)
        except CommandError as exc:
            dl = DeadLetter(INVALID_COMMAND, exc.detail, value[:65536])
            await deadletter_topic.send(key=dl.reason.encode(), value=dl.encode())
            if exc.request_id is not None:
                await acks_topic.send(key=exc.request_id.encode(),
                                      value=encode_reply(error_reply(exc.request_id, exc.detail)))
            return
        if request.shocks is None:
            for name, usd in risk.spiral_liquidated_usd().items():
                metrics.spiral_liquidated_usd.labels(name).set(usd)
        await acks_topic.send(key=request.request_id.encode(), value=encode_reply(reply))

    def export_risk_metrics() -> None:
        now = time.time()
        if now - float(risk_state["metrics_at"]) < 2.0:
            return
        risk_state["metrics_at"] = now
        set_risk_metrics(metrics, risk)

    async def emit(alerts: list[Any]) -> None:
        for alert in alerts:
            await alerts_topic.send(key=alert.alert_id.encode(), value=alert.to_json())
            metrics.alerts_total.labels(alert.kind, alert.severity).inc()
        risk_state["alerts"] += len(alerts)
        for snap in risk.take_snapshots():  # the report's figures, forwarded as they are
            await snapshots_topic.send(key=str(snap.ts_ms).encode(), value=snap.encode())
            risk_state["snapshots"] += 1

    async def forward(kind: str, value: bytes) -> None:
        await signals_topic.send(
            key=b"", partition=0, value=orjson.dumps({"v": 1, "input": kind, "raw": orjson.loads(value)}),
        )

    @app.agent(positions_topic, name="positions", supervisor_strategy=CrashingSupervisor)
    async def forward_positions(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            try:
                await forward("position", bytes(event.value or b""))
            except orjson.JSONDecodeError as exc:
                await dead_letter(0, DeadLetter("invalid_json", str(exc), bytes(event.value or b"")))

    @app.agent(accounts_topic, name="accounts", supervisor_strategy=CrashingSupervisor)
    async def forward_accounts(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            try:
                await forward("account", bytes(event.value or b""))
            except orjson.JSONDecodeError as exc:
                await dead_letter(0, DeadLetter("invalid_json", str(exc), bytes(event.value or b"")))

    async def on_input(obj: dict[str, Any]) -> None:
        kind, raw = obj.get("input"), obj.get("raw")
        if not isinstance(raw, dict):
            raise ValueError("input record needs a JSON object")
        if "ctl" in raw:  # a sync marker from the replayer: ack once every partition is in
            run = str(raw.get("run"))
            seen = risk_state["syncs"].setdefault(run, set())
            seen.add((kind, int(raw.get("partition", 0))))
            if len(seen) >= int(raw.get("of", 1)):
                ack = {"run": run, "stage": "loaded", "positions": len(risk.positions),
                       "accounts": len(risk.accounts), "alerts": 0, "config_hash": config_hash}
                await acks_topic.send(key=run.encode(), value=orjson.dumps(ack))
            return
        if kind == "position":
            risk.upsert_position(raw)
            risk_table[f"position:{raw['position_id']}"] = None if raw.get("delete") else raw
        elif kind == "account":
            risk.upsert_account(raw)
            risk_table[f"account:{raw['account_id']}"] = None if raw.get("delete") else raw

    @app.agent(signals_topic, name=GLOBAL_AGENT, supervisor_strategy=CrashingSupervisor)
    async def process_global(stream: faust.StreamT[bytes]) -> None:
        last_event = metrics.agent_last_event_timestamp_seconds.labels(GLOBAL_AGENT)
        async for event in stream.events():
            value = event.value if isinstance(event.value, bytes) else bytes(event.value or b"")
            if continuity.on_record(event.message.offset):
                reset_risk()  # another owner went on in between, or records came again
            restore_risk()
            try:
                obj = orjson.loads(value)
                if isinstance(obj, dict) and "input" in obj:
                    await on_input(obj)
                    persist_latches()
                    continue
                if is_command(obj):
                    await on_command(obj, value)
                    continue
                rec = decode_signal_record(value)
                alerts = risk.push(rec)
            except Exception as exc:  # a bad record must not kill the global stage
                detail = "".join(traceback.format_exception_only(exc)).strip()
                await dead_letter(0, DeadLetter("processing_error", detail, value[:65536]))
                continue
            persist_latches()
            await emit(alerts)
            if rec.end is not None and risk.finished_run == rec.end:
                # every partition ended this run: acknowledge it
                await app.producer.flush()
                ack = {"run": rec.end, "stage": "global", "alerts": risk_state["alerts"],
                       "snapshots": risk_state["snapshots"], "config_hash": config_hash, "ack_wall_s": time.time()}
                risk_state["alerts"] = risk_state["snapshots"] = 0
                await acks_topic.send(key=rec.end.encode(), value=orjson.dumps(ack))
                await app.producer.flush()
                set_risk_metrics(metrics, risk)
            else:
                export_risk_metrics()
            last_event.set(time.time())

    lag_topics = (topics.MARKET, topics.RISK_SIGNALS)

    @app.timer(interval=5.0)  # type: ignore[untyped-decorator]
    async def export_consumer_lag() -> None:
        """Records behind the log end per topic, over the partitions this worker owns."""
        consumer = app.consumer
        lag: dict[str, int] = dict.fromkeys(lag_topics, 0)
        for tp in consumer.assignment():
            if tp.topic not in lag:
                continue
            try:
                end = int(consumer.highwater(tp) or 0)
            except Exception:  # not fetched yet: no figure rather than a wrong one
                continue
            read = consumer._read_offset.get(tp)  # type: ignore[attr-defined]
            lag[tp.topic] += max(end - (read + 1 if read is not None else 0), 0)
        for topic, n in lag.items():
            metrics.consumer_lag.labels(topic).set(n)

    return app
