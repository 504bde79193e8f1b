"""The faust application: ``create_app(settings, config)`` builds app, topics, tables, agents.

- the market agent (:mod:`streams.app.market_agent`): batch records → one engine per market
  partition → alerts, dead letters, stage-1 signals on ``risk.signals``;
- the global risk agent (:mod:`streams.app.global_agent`): ``risk.signals`` → cascade, loops,
  unified accounts, spiral → alerts;
- with ``LIQMON_ACCOUNT_SHARDS`` > 0, the account shards (:mod:`streams.app.shard_agent`):
  each reads ``risk.signals`` and holds its share of the unified accounts; the global agent
  then aggregates their steps (:mod:`streams.app.shard_join`);
- forwarders of positions and accounts into ``risk.signals``, the dead-letter counter and
  the consumer-lag timer (here).

Both stateful agents checkpoint their state with the input offset it reflects
(:mod:`streams.app.checkpoint`): a crashed worker costs re-reading, never an alert. A failure of
an agent itself (a Kafka send failing) crashes the worker with a non-zero exit instead of
leaving a silent, dead agent.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from pathlib import Path
from typing import Any, cast

import faust
import orjson
from mode import CrashingSupervisor

from monitor.config import EngineConfig
from monitor.metrics import Metrics
from monitor.protocol import DeadLetter, InputKind, InputRecord, bundle_inputs
from streams import topics
from streams.app.global_agent import attach_global_agent, set_risk_metrics
from streams.app.market_agent import PendingSignals, attach_market_agent
from streams.app.pipes import Pipes, attach_rewind_retry, checkpoint_table
from streams.app.shard_agent import attach_shard_agent
from streams.kafka.faust_kafka import FAUST_FETCH_MAX_WAIT_MS, LiqmonApp
from streams.kafka.security import faust_security
from streams.settings import Settings

__all__ = ["PendingSignals", "create_app", "data_dir", "set_risk_metrics"]

log = logging.getLogger("liqmon.worker")

#: The embedded broker holds a fetch for the whole wait while any partition is empty.
EMBEDDED_FETCH_MAX_WAIT_MS = 50


def data_dir(settings: Settings) -> Path:
    """The worker's faust data directory (``LIQMON_DATA_DIR``, else one under the temp dir)."""
    return settings.data_dir or Path(tempfile.gettempdir()) / "liqmon-faust"


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
        # A rebalance never waits for records in flight: their offsets are committed only
        # with a checkpoint, and a partition's next owner goes on from that (streams/app/checkpoint.py).
        "stream_wait_empty": False,
        "datadir": str(data_dir(settings)),
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
    conf.update(faust_security(settings))
    return conf


_RAW: dict[str, Any] = {"key_serializer": "raw", "value_serializer": "raw"}


def _checkpoint_store(app: faust.App, name: str, partitions: int) -> Any:
    """A table whose changelog takes keys and values raw (checkpoints are binary)."""
    changelog = app.topic(
        f"{app.conf.id}-{name}-changelog", partitions=partitions, compacting=True, deleting=False,
        acks=False, internal=True, **_RAW,
    )
    return app.Table(name, default=None, partitions=partitions, changelog_topic=changelog)


def create_app(settings: Settings, config: EngineConfig, bootstrap: str, metrics: Metrics) -> faust.App:
    """Build the faust app with its topics, checkpoint tables and agents."""
    fetch_wait_ms = settings.fetch_max_wait_ms
    if fetch_wait_ms is None:
        fetch_wait_ms = EMBEDDED_FETCH_MAX_WAIT_MS if settings.embedded else FAUST_FETCH_MAX_WAIT_MS
    app = LiqmonApp(settings.app_id, fetch_max_wait_ms=fetch_wait_ms,
                    **_faust_settings(settings, bootstrap))
    # Checkpoint tables: market partition p's checkpoint in changelog partition p, the
    # global stage's in partition 0 (co-partitioned with their inputs).
    market_table = _checkpoint_store(app, "checkpoints", settings.partitions)
    global_table = _checkpoint_store(app, "global-checkpoint", 1)
    pipes = Pipes(
        app=app, settings=settings, config=config, metrics=metrics,
        market=app.topic(topics.MARKET, partitions=settings.partitions, **_RAW),
        alerts=app.topic(topics.ALERTS, **_RAW),
        deadletter=app.topic(topics.DEADLETTER, **_RAW),
        acks=app.topic(topics.ACKS, **_RAW),
        signals=app.topic(topics.RISK_SIGNALS, partitions=1, **_RAW),
        snapshots=app.topic(topics.RISK_SNAPSHOTS, partitions=1, **_RAW),
        positions=app.topic(topics.POSITIONS, **_RAW),
        accounts=app.topic(topics.ACCOUNTS, **_RAW),
        market_checkpoints=checkpoint_table(market_table),
        global_checkpoints=checkpoint_table(global_table),
        bootstrap=bootstrap,
    )
    shards = settings.account_shards
    if shards:
        # Shard k's checkpoint in changelog partition k, co-partitioned with risk.shards.
        shard_table = _checkpoint_store(app, "shard-checkpoints", shards)
        pipes.shards = app.topic(topics.RISK_SHARDS, partitions=shards, **_RAW)
        pipes.shard_steps = app.topic(topics.SHARD_STEPS, partitions=1, **_RAW)
        app.liqmon_shards = attach_shard_agent(pipes, checkpoint_table(shard_table))  # type: ignore[attr-defined]
    app.liqmon_market = attach_market_agent(pipes)  # type: ignore[attr-defined]
    app.liqmon_global = attach_global_agent(pipes)  # type: ignore[attr-defined]
    _deadletter_agent(pipes)
    _forward_agents(pipes)
    _lag_timer(pipes)
    attach_rewind_retry(pipes)
    _assignment_gauge(pipes)
    return app


def _deadletter_agent(pipes: Pipes) -> None:
    metrics = pipes.metrics

    @pipes.app.agent(pipes.deadletter, name="deadletter", supervisor_strategy=CrashingSupervisor)
    async def count_dead_letters(stream: faust.StreamT[bytes]) -> None:
        """One place counts dead letters from every producer (ingest, feeds, workers)."""
        async for event in stream.events():
            key = event.key
            reason = key.decode("utf-8", "replace") if isinstance(key, bytes) else "unknown"
            metrics.deadletter_total.labels(reason or "unknown").inc()
            metrics.topic_records_total.labels(topics.DEADLETTER, "in").inc()


#: Forwarded inputs are sent together: those that reach the forwarder with no pause of
#: more than ``FORWARD_WAIT_S`` between them, up to ``FORWARD_BATCH``.
FORWARD_BATCH = 1000
FORWARD_WAIT_S = 0.005


def _forward_agents(pipes: Pipes) -> None:
    """Positions and accounts reach the global stage through its own ordered log.

    Each carries its source partition and offset: the global stage applies it once, even
    when a restarted forwarder sends it again. They go many to a record
    (:func:`monitor.protocol.bundle_inputs`): one record each, on a broker whose producer
    writes one record per request, would cost a round trip each (2,300 inputs took 2 s).
    A forwarder sends what it holds when its queue of fetched records stays empty for
    :data:`FORWARD_WAIT_S` (faust hands over a fetch a few records at a time), or at
    :data:`FORWARD_BATCH` records, so a lone record waits 5 ms. It acknowledges the records
    only then: their source offsets are committed only once their inputs are sent.
    (faust's ``take_events`` batches too, but with it a forwarder held up the global
    stage's evaluations: ``test_global_stage_alerts_while_partitions_stay_silent``.)
    """

    async def input_record(kind: InputKind, event: Any) -> bytes | None:
        value = bytes(event.value or b"")
        message = event.message
        try:
            raw = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            await pipes.dead_letter(DeadLetter("invalid_json", str(exc), value))
            return None
        if not isinstance(raw, dict):
            await pipes.dead_letter(DeadLetter("wrong_type", f"a {kind} must be a JSON object", value))
            return None
        return InputRecord(kind, raw, (message.partition, message.offset)).encode()

    async def forward(kind: InputKind, stream: faust.StreamT[bytes]) -> None:
        manual = cast(faust.Stream[bytes], stream).noack()
        queue = cast(faust.ChannelT[bytes], manual.channel).queue
        held: list[Any] = []
        records: list[bytes] = []
        async for event in manual.events():
            held.append(event)
            record = await input_record(kind, event)
            if record is not None:
                records.append(record)
            full = len(held) >= FORWARD_BATCH
            if not full and queue.empty():  # the consumer's turn: a fetch comes a few records at a time
                await asyncio.sleep(FORWARD_WAIT_S)
            if full or queue.empty():
                for value in bundle_inputs(records):
                    await pipes.signals.send(key=b"", partition=0, value=value)
                for taken in held:  # their offsets may be committed now: their inputs are sent
                    await manual.ack(taken)
                held, records = [], []

    @pipes.app.agent(pipes.positions, name="positions", supervisor_strategy=CrashingSupervisor)
    async def forward_positions(stream: faust.StreamT[bytes]) -> None:
        await forward("position", stream)

    @pipes.app.agent(pipes.accounts, name="accounts", supervisor_strategy=CrashingSupervisor)
    async def forward_accounts(stream: faust.StreamT[bytes]) -> None:
        await forward("account", stream)


def _lag_timer(pipes: Pipes) -> None:
    app, metrics = pipes.app, pipes.metrics
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


def _assignment_gauge(pipes: Pipes) -> None:
    metrics = pipes.metrics
    watched = (topics.MARKET, topics.RISK_SIGNALS, topics.POSITIONS, topics.ACCOUNTS, topics.RISK_SHARDS)

    # faust calls receivers as (app, partitions, signal=..., ...); mode types them as *args
    @pipes.app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def count_assigned(sender: faust.App, assigned: set[Any], **_: Any) -> None:
        for topic in watched:
            metrics.assigned_partitions.labels(topic).set(sum(1 for tp in assigned if tp.topic == topic))
