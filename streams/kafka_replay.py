"""Replay a capture through Kafka: publish routed batches, then collect the workers' alerts.

Bookkeeping without guesswork: after the last batch the replayer writes an ``end``
control record to every partition of the market topic; each worker acknowledges it on
``control.acks`` once everything before it is processed, with the number of alerts it
emitted. The replayer then reads ``alerts.cascade`` until it has at least that many
records and de-duplicates by ``alert_id`` (at-least-once delivery may repeat one).

The feed alerts ingest raises (``book_gap``, ``feed_stale``) are published to
``alerts.cascade`` by the replayer itself, as ``liqmon live`` publishes them; they are
not part of the workers' counts.
"""

from __future__ import annotations

import asyncio
import contextlib
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

from monitor.alerts import Alert
from monitor.batch import Batch, Control
from monitor.config import EngineConfig
from monitor.ingest import DeadLetter, Ingest
from monitor.snapshots import RiskSnapshot
from replay.replayer import Pacer, ProgressFn, ReplayStats, partition_for, route_capture
from streams import topics
from streams.broker import broker_reachable
from streams.errors import KafkaReplayError
from streams.kafka_security import kafka_client_options, start_admin

__all__ = ["KafkaReplayError", "KafkaReplayResult", "collect_alerts", "ensure_topics", "replay_kafka"]


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
    acks: list[dict[str, Any]] = field(default_factory=list)
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
        self.records += 1
        if value in self._seen:
            return
        self._seen.add(value)
        snap = RiskSnapshot.decode(value)
        self.snapshots.append(snap)
        if self.on_snapshot is not None:
            self.on_snapshot(snap)


async def collect_alerts(
    consumer: AIOKafkaConsumer, stop: asyncio.Event, on_alert: Callable[[float, dict[str, Any]], None]
) -> None:
    """Hand every alert record to ``on_alert`` with the wall time (ms) it was read, until ``stop``."""
    while not stop.is_set():
        batches = await consumer.getmany(timeout_ms=100)
        read_ms = time.time() * 1000
        for records in batches.values():
            for rec in records:
                on_alert(read_ms, orjson.loads(rec.value))


async def ensure_topics(bootstrap: str, partitions: int, replication: int = 1) -> None:
    """Create the pipeline's topics if they do not exist yet."""
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
        missing = [t for t in wanted if t.name not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(missing)
    finally:
        await admin.close()


async def _topic_partitions(producer: AIOKafkaProducer, topic: str) -> list[int]:
    for _ in range(100):
        parts = await producer.partitions_for(topic)
        if parts:
            return sorted(parts)
        await asyncio.sleep(0.1)
    raise KafkaReplayError(f"topic {topic} has no partitions")


async def _replay_kafka(
    path: Path,
    config: EngineConfig,
    bootstrap: str,
    speed: float | None = None,
    from_ms: int | None = None,
    to_ms: int | None = None,
    progress: ProgressFn | None = None,
    on_alert: Callable[[Alert], None] | None = None,
    on_batch: Callable[[Batch], None] | None = None,
    idle_timeout_s: float = 180.0,
    alive: Callable[[], bool] | None = None,
    positions: list[dict[str, Any]] | None = None,
    accounts: list[dict[str, Any]] | None = None,
    group: str = "liqmon",
    on_snapshot: Callable[[RiskSnapshot], None] | None = None,
) -> KafkaReplayResult:
    """Publish a capture to the market topic and gather the alerts the workers raise.

    Positions and accounts go first to their topics, followed by a sync marker on every
    partition; market data starts once the global stage acknowledged them all, so it
    evaluates the same population as the inline path from the first signal on.
    """
    run_id = uuid.uuid4().hex
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=1 << 20, max_request_size=8 << 20,
        **kafka_client_options(),
    )
    collector = AIOKafkaConsumer(bootstrap_servers=bootstrap, **kafka_client_options(), enable_auto_commit=False)
    await producer.start()
    await collector.start()
    ingest = Ingest(config)
    stats = ReplayStats()
    alerts: dict[str, Alert] = {}
    #: Ids of the feed alerts this replay published (not counted in the workers' acks).
    feed_alert_ids: set[str] = set()
    raw_alert_records = 0
    #: The global stage's risk snapshots (a re-delivered record is dropped by its bytes).
    snapshots = SnapshotCollector(on_snapshot)
    acks: dict[int, dict[str, Any]] = {}
    global_ack: list[dict[str, Any]] = []
    loaded = asyncio.Event()
    started = time.monotonic()
    try:
        partitions = await _topic_partitions(producer, topics.MARKET)
        n_parts = len(partitions)
        watch = [
            TopicPartition(topic, p)
            for topic in (topics.ALERTS, topics.ACKS, topics.RISK_SNAPSHOTS)
            for p in await _topic_partitions(producer, topic)
        ]
        collector.assign(watch)
        await collector.seek_to_end(*watch)
        for tp in watch:
            await collector.position(tp)

        async def drain(timeout_ms: int) -> None:
            nonlocal raw_alert_records
            batches = await collector.getmany(timeout_ms=timeout_ms, max_records=10_000)
            for tp, records in batches.items():
                for rec in records:
                    if tp.topic == topics.RISK_SNAPSHOTS:
                        snapshots.add(rec.value)
                    elif tp.topic == topics.ALERTS:
                        alert = Alert.model_validate_json(rec.value)
                        if alert.alert_id in feed_alert_ids:
                            continue
                        raw_alert_records += 1
                        if alert.alert_id not in alerts:
                            alerts[alert.alert_id] = alert
                            if on_alert is not None:
                                on_alert(alert)
                    else:
                        ack = orjson.loads(rec.value)
                        if ack.get("run") != run_id:
                            continue
                        stage = ack.get("stage")
                        if stage == "loaded":
                            loaded.set()
                        elif stage == "global":
                            global_ack.append(ack)
                        else:
                            acks[int(ack["partition"])] = ack

        if positions or accounts:
            for topic, records, id_field in (
                (topics.POSITIONS, positions or [], "position_id"),
                (topics.ACCOUNTS, accounts or [], "account_id"),
            ):
                for raw in records:
                    await producer.send(
                        topic, orjson.dumps(raw), key=str(raw.get(id_field, "")).encode()
                    )
            sync_parts = {
                t: await _topic_partitions(producer, t) for t in (topics.POSITIONS, topics.ACCOUNTS)
            }
            n_sync = sum(len(v) for v in sync_parts.values())
            for topic, parts in sync_parts.items():
                for p in parts:
                    marker = {"ctl": "sync", "run": run_id, "partition": p, "of": n_sync}
                    await producer.send(topic, orjson.dumps(marker), key=b"", partition=p)
            await producer.flush()
            waited = time.monotonic()
            while not loaded.is_set():
                await drain(200)
                if alive is not None and not alive():
                    raise KafkaReplayError("the worker exited before loading positions (see worker.log)")
                if time.monotonic() - waited > idle_timeout_s:
                    raise KafkaReplayError("the global stage did not acknowledge positions/accounts")
        pacer = Pacer(speed)
        next_check = time.monotonic()
        pending: list[asyncio.Future[Any]] = []
        try:
            for ts, item in route_capture(path, ingest, from_ms, to_ms, stats):
                await pacer.wait(ts)
                if isinstance(item, DeadLetter):
                    pending.append(await producer.send(topics.DEADLETTER, item.encode(), key=item.reason.encode()))
                    continue
                if isinstance(item, Alert):
                    feed_alert_ids.add(item.alert_id)
                    pending.append(await producer.send(topics.ALERTS, item.to_json(), key=item.alert_id.encode()))
                    if item.alert_id not in alerts:
                        alerts[item.alert_id] = item
                        if on_alert is not None:
                            on_alert(item)
                    continue
                if on_batch is not None:
                    on_batch(item.batch)
                value = item.batch.encode()
                key = item.batch.asset.encode()
                stats.batches += 1
                if item.broadcast:
                    for p in partitions:
                        pending.append(await producer.send(topics.MARKET, value, key=key, partition=p))
                else:
                    part = partitions[partition_for(item.batch.asset, n_parts)]
                    pending.append(await producer.send(topics.MARKET, value, key=key, partition=part))
                if len(pending) > 5_000:
                    await asyncio.gather(*pending)
                    pending.clear()
                if time.monotonic() >= next_check:
                    next_check = time.monotonic() + 0.25
                    await drain(0)
                    if progress is not None:
                        progress(ts, ingest.stats.frames, len(alerts))
        except (KeyboardInterrupt, asyncio.CancelledError):
            stats.interrupted = True
        await asyncio.gather(*pending)
        for p in partitions:
            await producer.send_and_wait(topics.MARKET, Control("end", run_id, p).encode(), key=b"", partition=p)
        stats.absorb(ingest)
        # Wait for every partition's ack, then for every alert the acks announce.
        last_progress = time.monotonic()
        seen = (len(acks) + len(global_ack), raw_alert_records + snapshots.records)
        def expected_alerts() -> int:
            return sum(int(a["alerts"]) for a in [*acks.values(), *global_ack])

        def expected_snapshots() -> int:
            return sum(int(a.get("snapshots", 0)) for a in global_ack)

        while (len(acks) < n_parts or not global_ack or raw_alert_records < expected_alerts()
               or snapshots.records < expected_snapshots()):
            await drain(200)
            if progress is not None:
                progress(stats.last_ts_ms or 0, stats.frames, len(alerts))
            if alive is not None and not alive():
                raise KafkaReplayError("the worker exited before the replay finished (see worker.log)")
            now_seen = (len(acks) + len(global_ack), raw_alert_records + snapshots.records)
            if now_seen != seen:
                seen, last_progress = now_seen, time.monotonic()
            elif time.monotonic() - last_progress > idle_timeout_s:
                workers = await group_members(bootstrap, group)
                raise KafkaReplayError(missing_text(
                    n_parts, set(acks), bool(global_ack), workers, time.monotonic() - last_progress))
    finally:
        # A lost broker must not hold the exit: bounded waits for the clients to close.
        for client in (collector, producer):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.stop(), 5)
    stats.wall_s = time.monotonic() - started
    return KafkaReplayResult(
        alerts=list(alerts.values()),
        stats=stats,
        acks=[acks[p] for p in sorted(acks)],
        worker_deadletters=sum(int(a.get("deadletters", 0)) for a in acks.values()),
        snapshots=snapshots.snapshots,
    )


async def replay_kafka(
    path: Path, config: EngineConfig, bootstrap: str, *args: Any, **kwargs: Any
) -> KafkaReplayResult:
    """:func:`_replay_kafka` under a broker watch: a lost broker ends it with one line.

    Raises :class:`KafkaReplayError` (one line, never a traceback for the user) when the
    broker stays unreachable for :data:`BROKER_LOST_S`, when the workers stop making
    progress, or when a Kafka client gives up.
    """
    main = asyncio.ensure_future(_replay_kafka(path, config, bootstrap, *args, **kwargs))
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
