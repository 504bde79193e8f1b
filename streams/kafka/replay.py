"""Replay a capture through Kafka: publish routed batches, then collect the workers' alerts.

Bookkeeping without guesswork: after the last batch the replayer writes an ``end``
control record to every partition of the market topic; each worker acknowledges it on
``control.acks`` once everything before it is processed, with the number of alerts it
emitted. The replayer then reads ``alerts.cascade`` until it has at least that many
records and de-duplicates by ``alert_id`` (at-least-once delivery may repeat one).

Each partition's batches go out in packs (:mod:`monitor.ingest.pack`): up to 256 records
in one Kafka record, sent when full, when the pace would make the replayer wait, and
before the end markers; a worker takes a pack's records one by one, as if they had come
so.

The feed alerts ingest raises (``book_gap``, ``feed_stale``) are published to
``alerts.cascade`` by the replayer itself, as ``liqmon live`` publishes them; they are
not part of the workers' counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from monitor.config import EngineConfig
from monitor.ingest.batch import Batch, Control
from monitor.ingest.frames import Ingest
from monitor.ingest.pack import Packer
from monitor.protocol import AckCollector, Alert, DeadLetter, MarketAck, RecordError, RiskSnapshot, SyncMarker, encode
from replay.replayer import Pacer, ProgressFn, ReplayStats, partition_for, route_capture
from replay.routing import RouteAhead
from streams import topics
from streams.errors import KafkaReplayError
from streams.kafka.broker import broker_reachable
from streams.kafka.offset_order import OffsetOrder
from streams.kafka.security import kafka_client_options, start_admin

__all__ = [
    "KafkaReplayError",
    "KafkaReplayResult",
    "ReadBack",
    "ReplayHooks",
    "collect_alerts",
    "ensure_topics",
    "replay_kafka",
]

log = logging.getLogger("liqmon.replay")


#: Seconds without reaching the broker after which a replay gives up.
BROKER_LOST_S = 15.0


async def watch_broker(bootstrap: str, lost_after_s: float = BROKER_LOST_S) -> str:
    """Return (with a one-line reason) once the broker has been unreachable for ``lost_after_s``."""
    lost_since: float | None = None
    while True:
        if await broker_reachable(bootstrap):
            lost_since = None
        else:
            now = time.monotonic()
            lost_since = lost_since if lost_since is not None else now
            if now - lost_since >= lost_after_s:
                return f"lost the broker at {bootstrap}: unreachable for {now - lost_since:.0f} s"
        await asyncio.sleep(1.0)


async def group_members(bootstrap: str, group: str) -> int | None:
    """Members of the workers' consumer group right now (None: the broker did not say)."""
    try:
        admin = await asyncio.wait_for(start_admin(bootstrap, request_timeout_ms=3000), 5)
    except Exception:  # a diagnosis only: never the reason a replay fails
        return None
    try:
        [response] = await asyncio.wait_for(admin.describe_consumer_groups([group]), 5)
        return sum(len(g[5]) for g in response.groups if g[1] == group)
    except Exception:
        return None
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(admin.close(), 5)


def missing_text(n_parts: int, acked: set[int], global_acked: bool, workers: int | None, idle_s: float) -> str:
    """One line: which partitions and stages never acknowledged the end, and who is there."""
    missing = [p for p in range(n_parts) if p not in acked]
    parts = []
    if missing:
        parts.append(f"market partitions {missing} did not acknowledge the end marker")
    if not global_acked:
        parts.append("the global stage did not acknowledge the run")
    if not parts:
        parts.append("alerts announced by the acknowledgements did not arrive")
    who = "unknown" if workers is None else str(workers)
    return f"{'; '.join(parts)}; live workers in the group: {who}; nothing new for {idle_s:.0f} s"


@dataclass
class KafkaReplayResult:
    alerts: list[Alert]
    stats: ReplayStats
    acks: list[MarketAck] = field(default_factory=list)
    worker_deadletters: int = 0
    snapshots: list[RiskSnapshot] = field(default_factory=list)


class SnapshotCollector:
    """Risk snapshots read back from ``risk.snapshots``, in log order, each record once."""

    def __init__(self, on_snapshot: Callable[[RiskSnapshot], None] | None) -> None:
        self.on_snapshot = on_snapshot
        self.records = 0
        self.snapshots: list[RiskSnapshot] = []
        self._seen: set[bytes] = set()

    def add(self, value: bytes) -> None:
        """Count a record and keep its snapshot the first time; a record that is not a
        snapshot raises :class:`RecordError` and is not counted."""
        if value not in self._seen:
            snap = RiskSnapshot.decode(value)
            self._seen.add(value)
            self.snapshots.append(snap)
            if self.on_snapshot is not None:
                self.on_snapshot(snap)
        self.records += 1


async def collect_alerts(
    consumer: AIOKafkaConsumer, stop: asyncio.Event, on_alert: Callable[[float, Alert], None]
) -> None:
    """Hand every alert record to ``on_alert`` with the wall time (ms) it was read, until ``stop``."""
    while not stop.is_set():
        batches = await consumer.getmany(timeout_ms=100)
        read_ms = time.time() * 1000
        for records in batches.values():
            for rec in records:
                try:
                    alert = Alert.from_json(rec.value)
                except RecordError as exc:
                    log.warning("skipped a record on %s that is not an alert: %s", topics.ALERTS, exc)
                    continue
                on_alert(read_ms, alert)


async def ensure_topics(bootstrap: str, partitions: int, replication: int = 1, account_shards: int = 0) -> None:
    """Create the pipeline's topics if they do not exist yet (the account shards' with
    ``account_shards`` > 0: ``risk.shards`` has one partition per shard)."""
    admin = await start_admin(bootstrap)  # one line naming the settings when it cannot connect
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(topics.MARKET, partitions, replication),
            NewTopic(topics.ALERTS, 1, replication),
            NewTopic(topics.DEADLETTER, 1, replication),
            NewTopic(topics.ACKS, 1, replication),
            NewTopic(topics.RISK_SIGNALS, 1, replication),
            NewTopic(topics.RISK_SNAPSHOTS, 1, replication),
            NewTopic(topics.POSITIONS, partitions, replication),
            NewTopic(topics.ACCOUNTS, partitions, replication),
        ]
        if account_shards:
            wanted += [NewTopic(topics.RISK_SHARDS, account_shards, replication),
                       NewTopic(topics.SHARD_STEPS, 1, replication)]
        missing = [t for t in wanted if t.name not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(missing)
        if account_shards:
            await _check_shard_topic(admin, account_shards)
    finally:
        await admin.close()


async def _check_shard_topic(admin: Any, account_shards: int) -> None:
    """``risk.shards`` must have one partition per shard (an account's shard is fixed by the
    shard count, and shard k runs where partition k is owned)."""
    found = 0
    for _ in range(20):  # a topic just created may take a moment to be described
        described = await admin.describe_topics([topics.RISK_SHARDS])
        found = len(described[0].get("partitions", ())) if described else 0
        if found:
            break
        await asyncio.sleep(0.25)
    if found != account_shards:
        raise KafkaReplayError(
            f"{topics.RISK_SHARDS} has {found} partitions but LIQMON_ACCOUNT_SHARDS is {account_shards}: "
            "create the topic with one partition per shard (deploy/kafka/topics.conf)")


async def _topic_partitions(producer: AIOKafkaProducer, topic: str) -> list[int]:
    for _ in range(100):
        parts = await producer.partitions_for(topic)
        if parts:
            return sorted(parts)
        await asyncio.sleep(0.1)
    raise KafkaReplayError(f"topic {topic} has no partitions")


@dataclass
class ReplayHooks:
    """Callbacks of a replay: progress, each alert, batch and snapshot, and the worker's life."""

    progress: ProgressFn | None = None
    on_alert: Callable[[Alert], None] | None = None
    on_batch: Callable[[Batch], None] | None = None
    on_snapshot: Callable[[RiskSnapshot], None] | None = None
    #: False once the worker this replay started has exited (None: workers run elsewhere).
    alive: Callable[[], bool] | None = None


class ReadBack:
    """What the workers send back: alerts, acks and risk snapshots of this run."""

    def __init__(self, consumer: AIOKafkaConsumer, run_id: str, hooks: ReplayHooks) -> None:
        self.consumer = consumer
        self.run_id = run_id
        self.hooks = hooks
        self.alerts: dict[str, Alert] = {}
        #: Ids of the feed alerts this replay published (not counted in the workers' acks).
        self.feed_alert_ids: set[str] = set()
        self.raw_alert_records = 0
        #: Records read back that are not liqmon's (skipped, logged; the summary's foreign_records).
        self.foreign_records = 0
        #: The global stage's risk snapshots (a re-delivered record is dropped by its bytes).
        self.snapshots = SnapshotCollector(hooks.on_snapshot)
        self.acks = AckCollector(run_id)
        #: Each partition taken in offset order from where reading starts (``order.expected``).
        self.order = OffsetOrder(self._seek)

    def _seek(self, tp: TopicPartition, offset: int) -> None:
        self.consumer.seek(tp, offset)

    def take_alert(self, alert: Alert) -> None:
        if alert.alert_id not in self.alerts:
            self.alerts[alert.alert_id] = alert
            if self.hooks.on_alert is not None:
                self.hooks.on_alert(alert)

    async def drain(self, timeout_ms: int) -> None:
        batches = await self.consumer.getmany(timeout_ms=timeout_ms, max_records=10_000)
        for tp, records in batches.items():
            for rec in self.order.take(tp, records):
                try:
                    self._take(tp.topic, rec.value)
                except RecordError as exc:
                    # Not a record of liqmon's (another producer on the topic): it counts
                    # toward nothing, so a run missing a real one still fails on its own.
                    self.foreign_records += 1
                    log.warning("skipped a malformed record on %s at offset %d: %s", tp.topic, rec.offset, exc)

    def _take(self, topic: str, value: bytes) -> None:
        if topic == topics.RISK_SNAPSHOTS:
            self.snapshots.add(value)
        elif topic == topics.ALERTS:
            alert = Alert.from_json(value)
            if alert.alert_id not in self.feed_alert_ids:
                self.raw_alert_records += 1
                self.take_alert(alert)
        else:
            self.acks.take(value)

    def complete(self, n_parts: int) -> bool:
        """Every stage acknowledged the end, and every alert and snapshot they announce is read."""
        return (
            self.acks.ended(n_parts)
            and self.raw_alert_records >= self.acks.announced_alerts()
            and self.snapshots.records >= self.acks.announced_snapshots()
        )

    def mark(self) -> tuple[int, int]:
        """Progress so far: acks and records read (a change resets the idle clock)."""
        return self.acks.count(), self.raw_alert_records + self.snapshots.records


class _Publisher:
    """Writes the population, the routed capture and the end markers to the workers' topics."""

    def __init__(self, producer: AIOKafkaProducer, run_id: str, partitions: list[int]) -> None:
        self.producer = producer
        self.run_id = run_id
        self.partitions = partitions
        #: Each partition's market records go out in packs (monitor/ingest/pack.py).
        self.packer = Packer()

    async def population(self, positions: list[dict[str, Any]], accounts: list[dict[str, Any]]) -> None:
        """Positions and accounts, then a sync marker on every partition of both topics."""
        for topic, records, id_field in (
            (topics.POSITIONS, positions, "position_id"),
            (topics.ACCOUNTS, accounts, "account_id"),
        ):
            for raw in records:
                await self.producer.send(topic, orjson.dumps(raw), key=str(raw.get(id_field, "")).encode())
        sync_parts = {t: await _topic_partitions(self.producer, t) for t in (topics.POSITIONS, topics.ACCOUNTS)}
        n_sync = sum(len(v) for v in sync_parts.values())
        for topic, parts in sync_parts.items():
            for p in parts:
                marker = SyncMarker(self.run_id, p, n_sync)
                await self.producer.send(topic, encode(marker), key=b"", partition=p)
        await self.producer.flush()

    async def item(self, item: Any, read_back: ReadBack, stats: ReplayStats) -> list[asyncio.Future[Any]]:
        """One routed capture item: a dead letter, a feed alert or a batch (to its partitions)."""
        send = self.producer.send
        if isinstance(item, DeadLetter):
            return [await send(topics.DEADLETTER, item.encode(), key=item.reason.encode())]
        if isinstance(item, Alert):
            read_back.feed_alert_ids.add(item.alert_id)
            read_back.take_alert(item)
            return [await send(topics.ALERTS, item.to_json(), key=item.alert_id.encode())]
        if read_back.hooks.on_batch is not None:
            read_back.hooks.on_batch(item.batch)
        value = item.batch.encode()
        stats.batches += 1
        parts = self.partitions if item.broadcast else [
            self.partitions[partition_for(item.batch.asset, len(self.partitions))]]
        return [await send(topics.MARKET, out, key=b"", partition=p)
                for p in parts for out in self.packer.add(p, value)]

    async def flush_packs(self) -> list[asyncio.Future[Any]]:
        """Every partition's waiting market records, sent (before a pause, and at the end)."""
        return [await self.producer.send(topics.MARKET, value, key=b"", partition=p)
                for p, value in self.packer.drain()]

    async def end_markers(self) -> None:
        for p in self.partitions:
            await self.producer.send_and_wait(
                topics.MARKET, Control("end", self.run_id, p).encode(), key=b"", partition=p
            )


@dataclass(frozen=True)
class _Run:
    path: Path
    config: EngineConfig
    bootstrap: str
    speed: float | None
    from_ms: int | None
    to_ms: int | None
    idle_timeout_s: float
    group: str


async def _await_loaded(read_back: ReadBack, run: _Run) -> None:
    waited = time.monotonic()
    while read_back.acks.loaded is None:
        await read_back.drain(200)
        alive = read_back.hooks.alive
        if alive is not None and not alive():
            raise KafkaReplayError("the worker exited before loading positions (see worker.log)")
        if time.monotonic() - waited > run.idle_timeout_s:
            raise KafkaReplayError("the global stage did not acknowledge positions/accounts")


async def _await_loaded_routing(read_back: ReadBack, run: _Run, routed: RouteAhead) -> None:
    """Wait for the global stage's ack of the population, routing the capture meanwhile on a
    thread: the worker's group join and loading take seconds the routing would otherwise add."""
    stop = threading.Event()
    reading = asyncio.ensure_future(asyncio.to_thread(routed.fill_until, stop))
    try:
        await _await_loaded(read_back, run)
    finally:
        stop.set()
        await reading


async def _publish_capture(
    run: _Run, publisher: _Publisher, read_back: ReadBack, routed: RouteAhead, ingest: Ingest, stats: ReplayStats
) -> None:
    pacer = Pacer(run.speed)
    next_check = time.monotonic()
    pending: list[asyncio.Future[Any]] = []
    progress = read_back.hooks.progress
    try:
        for ts, item in routed:
            if pacer.delay_s(ts) > 0.0:  # caught up with the pace: what waits goes now
                pending.extend(await publisher.flush_packs())
            await pacer.wait(ts)
            pending.extend(await publisher.item(item, read_back, stats))
            if len(pending) > 5_000:
                await asyncio.gather(*pending)
                pending.clear()
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + 0.25
                await read_back.drain(0)
                if progress is not None:
                    progress(ts, ingest.stats.frames, len(read_back.alerts))
    except (KeyboardInterrupt, asyncio.CancelledError):
        stats.interrupted = True
    pending.extend(await publisher.flush_packs())
    await asyncio.gather(*pending)


async def _await_acks(run: _Run, read_back: ReadBack, n_parts: int, stats: ReplayStats) -> None:
    """Wait for every partition's ack, then for every alert the acks announce."""
    last_progress = time.monotonic()
    seen = read_back.mark()
    hooks = read_back.hooks
    while not read_back.complete(n_parts):
        await read_back.drain(200)
        if hooks.progress is not None:
            hooks.progress(stats.last_ts_ms or 0, stats.frames, len(read_back.alerts))
        if hooks.alive is not None and not hooks.alive():
            raise KafkaReplayError("the worker exited before the replay finished (see worker.log)")
        now_seen = read_back.mark()
        if now_seen != seen:
            seen, last_progress = now_seen, time.monotonic()
        elif time.monotonic() - last_progress > run.idle_timeout_s:
            workers = await group_members(run.bootstrap, run.group)
            acks = read_back.acks
            raise KafkaReplayError(missing_text(
                n_parts, set(acks.market), bool(acks.global_acks), workers, time.monotonic() - last_progress))


async def _replay_kafka(
    run: _Run, hooks: ReplayHooks, positions: list[dict[str, Any]] | None, accounts: list[dict[str, Any]] | None
) -> KafkaReplayResult:
    """Publish a capture to the market topic and gather the alerts the workers raise.

    Positions and accounts go first to their topics, followed by a sync marker on every
    partition; market data starts once the global stage acknowledged them all, so it
    evaluates the same population as the inline path from the first signal on.
    """
    run_id = uuid.uuid4().hex
    producer = AIOKafkaProducer(
        bootstrap_servers=run.bootstrap, linger_ms=5, max_batch_size=1 << 20, max_request_size=8 << 20,
        **kafka_client_options(),
    )
    collector = AIOKafkaConsumer(bootstrap_servers=run.bootstrap, **kafka_client_options(), enable_auto_commit=False)
    await producer.start()
    await collector.start()
    ingest = Ingest(run.config)
    stats = ReplayStats()
    read_back = ReadBack(collector, run_id, hooks)
    started = time.monotonic()
    try:
        publisher = _Publisher(producer, run_id, await _topic_partitions(producer, topics.MARKET))
        watch = [
            TopicPartition(topic, p)
            for topic in (topics.ALERTS, topics.ACKS, topics.RISK_SNAPSHOTS)
            for p in await _topic_partitions(producer, topic)
        ]
        collector.assign(watch)
        await collector.seek_to_end(*watch)
        for tp in watch:
            read_back.order.expected[tp] = await collector.position(tp)
        routed = RouteAhead(route_capture(run.path, ingest, run.from_ms, run.to_ms, stats))
        if positions or accounts:
            await publisher.population(positions or [], accounts or [])
            await _await_loaded_routing(read_back, run, routed)
        await _publish_capture(run, publisher, read_back, routed, ingest, stats)
        await publisher.end_markers()
        stats.absorb(ingest.stats)
        await _await_acks(run, read_back, len(publisher.partitions), stats)
    finally:
        # A lost broker must not hold the exit: bounded waits for the clients to close.
        for client in (collector, producer):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.stop(), 5)
    stats.wall_s = time.monotonic() - started
    stats.foreign_records = read_back.foreign_records
    acks = read_back.acks.in_order()
    return KafkaReplayResult(
        alerts=list(read_back.alerts.values()),
        stats=stats,
        acks=acks,
        worker_deadletters=sum(a.deadletters for a in acks),
        snapshots=read_back.snapshots.snapshots,
    )


async def replay_kafka(
    path: Path,
    config: EngineConfig,
    bootstrap: str,
    *,
    speed: float | None = None,
    from_ms: int | None = None,
    to_ms: int | None = None,
    idle_timeout_s: float = 180.0,
    positions: list[dict[str, Any]] | None = None,
    accounts: list[dict[str, Any]] | None = None,
    group: str = "liqmon",
    hooks: ReplayHooks | None = None,
) -> KafkaReplayResult:
    """:func:`_replay_kafka` under a broker watch: a lost broker ends it with one line.

    Raises :class:`KafkaReplayError` (one line, never a traceback for the user) when the
    broker stays unreachable for :data:`BROKER_LOST_S`, when the workers stop making
    progress, or when a Kafka client gives up.
    """
    run = _Run(path, config, bootstrap, speed, from_ms, to_ms, idle_timeout_s, group)
    main = asyncio.ensure_future(_replay_kafka(run, hooks or ReplayHooks(), positions, accounts))
    watch = asyncio.ensure_future(watch_broker(bootstrap))
    try:
        try:
            done, _ = await asyncio.wait({main, watch}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # Ctrl-C: the replay stops publishing and finishes what it sent
            main.cancel()
            return await main
        if main in done:
            try:
                return main.result()
            except KafkaError as exc:
                raise KafkaReplayError(f"Kafka at {bootstrap}: {type(exc).__name__}: {exc}") from None
        main.cancel()
        with contextlib.suppress(BaseException):
            await main
        raise KafkaReplayError(watch.result())
    finally:
        watch.cancel()
        with contextlib.suppress(BaseException):
            await watch
