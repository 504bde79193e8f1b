"""A live run keeps the global stage alerting while market partitions get no data at all.

Everything runs on 127.0.0.1: an embedded broker, a real ``liqmon worker`` (4 partitions
of ``market.batches``), a real ``liqmon live`` subprocess connected to a Binance spot
combined-stream server served by this test, which streams ``usdeusdt@bookTicker`` only.
USDe's batches all land on one partition; the other three partitions never receive a
single event, only the idle-partition ticks ``monitor.ingest.frames.Ingest`` broadcasts. The
global stage (``monitor.signals.ReorderBuffer``) releases a signal only once every
partition's watermark is past it, so without those ticks it would hold everything back.

One Binance portfolio-margin account (1M USDe valued on Binance's own book, 700k USDT
borrowed) is loaded through ``accounts.unified`` once the calm quote has streamed for
``LOAD_AFTER_S``: the market's first (and, while calm, only) price signals are long
released, so only the account's own wake-up (``OrderedStage.wake``) can have it evaluated.
After at least ``SILENCE_BEFORE_MOVE_S`` of streaming, during which the global stage must
have evaluated the account as normal (its ``liqmon_unified_accounts`` gauge), USDe's quote
moves from 1.00 to 0.65 and the account must come back as a ``unified_liquidation`` alert
on ``alerts.cascade`` within ``alert_deadline_s()`` of the move.

``ingest.tick_interval_ms`` cannot be switched off, so the contrapositive is shown on the
logs instead: the silent partitions' only records on ``market.batches`` are ticks, their
watermarks on ``risk.signals`` pass the alert's event time only through ticks sent after
the move, and the alert was written no earlier than the ``risk.signals`` record that
lifted the minimum watermark over all partitions past its event time.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from monitor.config import EngineConfig
from monitor.ingest.batch import Batch, Control, decode_record
from monitor.protocol import decode_risk_record
from replay.replayer import partition_for
from streams import topics
from streams.cmd.worker import worker_process
from streams.feeds.config import LiveConfig
from streams.kafka.broker import embedded_broker, free_port
from streams.kafka.replay import ensure_topics
from tests.integration.test_feeds_harness import HOST, Conn, WsServer, ws_server

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.timeout(240)]

PARTITIONS = 4
DATA_PARTITION = partition_for("USDe", PARTITIONS)
SILENT_PARTITIONS = [p for p in range(PARTITIONS) if p != DATA_PARTITION]
#: Wall time the live feed streams the calm quote before the move (the silent partitions
#: have received nothing for at least this long when USDe moves).
SILENCE_BEFORE_MOVE_S = 20.0
#: Wall time the calm quote streams before the account is loaded (its price released long
#: before: a calm quote signals only its first price).
LOAD_AFTER_S = 4.0
#: Frames per second of the USDe book ticker.
FRAMES_PER_S = 10
CALM_QUOTE = ("0.9999", "1.0001")
MOVED_QUOTE = ("0.6499", "0.6501")
ACCOUNT_ID = "mm-usde-binance"
ACCOUNT: dict[str, Any] = {
    "account_id": ACCOUNT_ID, "venue": "binance", "model": "binance-pm",
    "balances": [{"asset": "USDe", "amount": 1_000_000.0, "price_key": "USDe@binance"},
                 {"asset": "USDT", "amount": -700_000.0, "price_key": "USDT"}],
}
#: Pipeline time allowed on top of the ticks' own delay (fetch waits, signal merging, the
#: account evaluation interval, a shared two-core machine).
PIPELINE_SLACK_S = 8.0


def alert_deadline_s(config: EngineConfig) -> float:
    """Move → alert liveness bound, generous on purpose (the tick lag itself is checked on
    the ticks' own timestamps, not by this clock): the replay batch span a tick could trail
    by, a tick interval, plus the pipeline slack."""
    ingest = config.ingest
    return (ingest.batch_max_span_ms + ingest.tick_interval_ms) / 1000.0 + PIPELINE_SLACK_S


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class UsdeTicker:
    """A Binance spot combined stream (served by ``ws_server``) that only ever sends ``usdeusdt@bookTicker``."""

    quote: tuple[str, str] = CALM_QUOTE
    frames: int = 0
    first_frame_ms: int | None = None
    #: Wall time of the first frame sent with MOVED_QUOTE.
    moved_ms: int | None = None
    subscriptions: list[Any] = field(default_factory=list)

    async def script(self, conn: Conn) -> None:
        sub = await conn.recv_json()
        self.subscriptions.append(sub)
        await conn.send({"result": None, "id": sub.get("id")})
        while True:
            bid, ask = self.quote
            data = {"u": 1_000 + self.frames, "s": "USDEUSDT", "b": bid, "B": "250000", "a": ask, "A": "250000"}
            sent_ms = now_ms()  # before the send: the receiver stamps it no earlier
            if self.first_frame_ms is None:
                self.first_frame_ms = sent_ms
            if self.quote == MOVED_QUOTE and self.moved_ms is None:
                self.moved_ms = sent_ms
            await conn.send({"stream": "usdeusdt@bookTicker", "data": data})
            self.frames += 1
            await asyncio.sleep(1.0 / FRAMES_PER_S)

    def move(self) -> None:
        self.quote = MOVED_QUOTE


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIQMON_")}
    env.update(extra)
    return env


def live_config(path: Path, server: WsServer) -> Path:
    """Only binance-spot, only the USDe book ticker, both endpoints on the local server."""
    path.write_text(
        "[live]\nflush_interval_s = 0.25\nwatchdog_tick_s = 0.5\n"
        "[live.backoff]\ninitial_s = 0.2\nmax_s = 1.0\n"
        '[live.venues."binance-spot"]\nstreams = ["usdeusdt@bookTicker"]\n'
        f'ws_url = "{server.url}"\nrest_url = "http://{HOST}:{server.port}"\n',
        encoding="utf-8",
    )
    return path


def tail(path: Path, n: int = 3000) -> str:
    return path.read_text(encoding="utf-8", errors="replace")[-n:] if path.exists() else ""


def unified_accounts(port: int) -> dict[str, float]:
    """``liqmon_unified_accounts`` of venue binance by status (empty until exported)."""
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return {}
    return {
        s.labels["status"]: s.value
        for family in text_string_to_metric_families(text) if family.name == "liqmon_unified_accounts"
        for s in family.samples if s.labels.get("venue") == "binance"
    }


async def load_account(bootstrap: str) -> None:
    """Send the account, then a sync marker on every accounts partition (as the replayer does)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topics.ACCOUNTS, orjson.dumps(ACCOUNT), key=ACCOUNT_ID.encode())
        parts = sorted(await producer.partitions_for(topics.ACCOUNTS))
        for p in parts:
            marker = {"ctl": "sync", "run": "silent-partition", "partition": p, "of": len(parts)}
            await producer.send_and_wait(topics.ACCOUNTS, orjson.dumps(marker), key=b"", partition=p)
    finally:
        await producer.stop()


@dataclass
class Read:
    """A record read back: its partition, offset, value and broker timestamp."""

    partition: int
    offset: int
    value: bytes
    timestamp_ms: int


async def read_topic(bootstrap: str, topic: str, quiet_s: float = 1.5) -> list[Read]:
    """Every record of ``topic`` from the beginning, until nothing new comes for ``quiet_s``."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    out: list[Read] = []
    try:
        parts = sorted(consumer.partitions_for_topic(topic) or set())
        if not parts:
            await consumer.topics()
            parts = sorted(consumer.partitions_for_topic(topic) or set())
        tps = [TopicPartition(topic, p) for p in parts]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < quiet_s:
            got = await consumer.getmany(timeout_ms=300, max_records=10_000)
            for tp, records in got.items():
                out += [Read(tp.partition, r.offset, bytes(r.value or b""), r.timestamp) for r in records]
                if records:
                    quiet_since = time.monotonic()
    finally:
        await consumer.stop()
    return out


class AlertReader:
    """Reads ``alerts.cascade`` (and the ``loaded`` ack) while the run goes on."""

    def __init__(self, bootstrap: str) -> None:
        self.consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        #: (wall ms when read, alert)
        self.alerts: list[tuple[int, dict[str, Any]]] = []
        #: alert id → broker timestamp of its first record
        self.written_ms: dict[str, int] = {}
        self.loaded: dict[str, Any] | None = None

    async def start(self) -> None:
        await self.consumer.start()
        tps = [TopicPartition(t, 0) for t in (topics.ALERTS, topics.ACKS)]
        self.consumer.assign(tps)
        await self.consumer.seek_to_beginning(*tps)

    async def poll(self) -> None:
        got = await self.consumer.getmany(timeout_ms=100, max_records=10_000)
        read_ms = now_ms()
        for tp, records in got.items():
            for r in records:
                obj = orjson.loads(r.value)
                if tp.topic == topics.ALERTS:
                    self.alerts.append((read_ms, obj))
                    self.written_ms.setdefault(obj["alert_id"], r.timestamp)
                elif obj.get("run") == "silent-partition" and obj.get("stage") == "loaded":
                    self.loaded = obj

    def liquidation(self) -> tuple[int, dict[str, Any]] | None:
        for read_ms, alert in self.alerts:
            if alert["kind"] == "unified_liquidation" and alert["evidence"].get("account_id") == ACCOUNT_ID:
                return read_ms, alert
        return None

    async def stop(self) -> None:
        await self.consumer.stop()


def test_global_stage_alerts_while_partitions_stay_silent(tmp_path: Path) -> None:
    with embedded_broker(log_path=tmp_path / "broker.log") as broker:
        asyncio.run(silent_partition_run(broker.bootstrap, tmp_path))


async def wait_for_loaded(reader: AlertReader, running: Callable[[], bool], context: Callable[[], str]) -> None:
    """The global stage has applied the account (its ``loaded`` ack)."""
    deadline = time.monotonic() + 120
    while reader.loaded is None:
        assert time.monotonic() < deadline, "the account was never acknowledged as loaded" + context()
        assert running(), "the worker exited" + context()
        await reader.poll()


async def load_into_the_calm(ticker: UsdeTicker, bootstrap: str, reader: AlertReader,
                             running: Callable[[], bool], context: Callable[[], str]) -> None:
    """The account, once the calm quote has streamed for :data:`LOAD_AFTER_S`."""
    deadline = time.monotonic() + 60
    while ticker.first_frame_ms is None or now_ms() - ticker.first_frame_ms < LOAD_AFTER_S * 1000:
        assert time.monotonic() < deadline, f"the feed did not stream: frames {ticker.frames}" + context()
        assert running(), "the worker or liqmon live exited" + context()
        await asyncio.sleep(0.1)
    await load_account(bootstrap)
    await wait_for_loaded(reader, running, context)


async def wait_for_calm(ticker: UsdeTicker, reader: AlertReader, metrics_port: int,
                        running: Callable[[], bool], context: Callable[[], str]) -> None:
    """Calm: the global stage loads the account and evaluates it at the calm price while
    three partitions get nothing but ticks (``running``: the worker and liqmon live are)."""
    setup_deadline = time.monotonic() + 60 + SILENCE_BEFORE_MOVE_S
    accounts: dict[str, float] = {}
    next_scrape = 0.0
    while not (
        ticker.first_frame_ms is not None
        and now_ms() - ticker.first_frame_ms >= SILENCE_BEFORE_MOVE_S * 1000
        and reader.loaded is not None
        and accounts.get("normal") == 1.0
    ):
        assert time.monotonic() < setup_deadline, (
            f"calm phase not reached: frames {ticker.frames}, loaded {reader.loaded}, "
            f"accounts {accounts}" + context())
        assert running(), "the worker or liqmon live exited" + context()
        await reader.poll()
        if time.monotonic() >= next_scrape:
            next_scrape = time.monotonic() + 0.5
            accounts = await asyncio.to_thread(unified_accounts, metrics_port)


async def silent_partition_run(bootstrap: str, tmp_path: Path) -> None:
    config = EngineConfig()
    deadline_s = alert_deadline_s(config)
    metrics_port = free_port()
    logs = tmp_path / "worker.log", tmp_path / "live.log"

    def context() -> str:
        return "".join(f"\n--- {p.name} ---\n{tail(p)}" for p in logs)

    await ensure_topics(bootstrap, PARTITIONS)
    common = {"LIQMON_KAFKA_BOOTSTRAP": bootstrap, "LIQMON_BROKER_KIND": "tansu",
              "LIQMON_PARTITIONS": str(PARTITIONS)}
    worker_env = clean_env(**common, LIQMON_METRICS_PORT=str(metrics_port),
                           LIQMON_DATA_DIR=str(tmp_path / "faust"))
    reader = AlertReader(bootstrap)
    await reader.start()
    ticker = UsdeTicker()
    try:
        async with ws_server([ticker.script]) as server:
            with worker_process(worker_env, logs[0]) as worker:
                with logs[1].open("wb") as live_log:
                    live = await asyncio.create_subprocess_exec(
                        sys.executable, "-m", "streams.cli", "live",
                        "--config", str(live_config(tmp_path / "live.toml", server)),
                        env=clean_env(**common, LIQMON_LIVE_METRICS_PORT="0"),
                        stdout=live_log, stderr=live_log, stdin=asyncio.subprocess.DEVNULL,
                    )
                try:
                    running = lambda: worker.poll() is None and live.returncode is None  # noqa: E731
                    await load_into_the_calm(ticker, bootstrap, reader, running, context)
                    await wait_for_calm(ticker, reader, metrics_port, running, context)
                    assert reader.loaded is not None and reader.loaded["accounts"] == 1
                    assert reader.liquidation() is None, "liquidated before the move"

                    ticker.move()
                    move_deadline = time.monotonic() + deadline_s
                    while (found := reader.liquidation()) is None and time.monotonic() < move_deadline:
                        await reader.poll()
                    assert ticker.moved_ms is not None
                    assert found is not None, (
                        f"no unified_liquidation within {deadline_s:.0f} s of the move while partitions "
                        f"{SILENT_PARTITIONS} stayed silent; alerts: {[a['kind'] for _, a in reader.alerts]}"
                        + context())
                finally:
                    if live.returncode is None:
                        live.terminate()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(live.wait(), 20)
                    if live.returncode is None:
                        live.kill()
                        await live.wait()
                assert live.returncode == 0, context()
                assert worker.poll() is None, "worker exited" + context()
                assert ticker.subscriptions and all(
                    sub["params"] == ["usdeusdt@bookTicker"] for sub in ticker.subscriptions)
    finally:
        await reader.stop()

    read_ms, alert = found
    move_ms = ticker.moved_ms
    first_frame_ms = ticker.first_frame_ms
    assert first_frame_ms is not None
    latency_s = (read_ms - move_ms) / 1000.0
    print(f"\nunified_liquidation read {latency_s:.1f} s after the move, "
          f"{(read_ms - first_frame_ms) / 1000.0:.1f} s after the first frame")
    assert alert["severity"] == "critical" and alert["venue"] == "binance"
    assert alert["evidence"]["forced_sells"], "the forced-sell list is the evidence"
    # Event time of the alert: the receive time of the first moved quote at liqmon live.
    assert move_ms <= alert["ts_ms"] <= move_ms + 2_000

    check_silent_partitions(await read_topic(bootstrap, topics.MARKET), config, alert)
    check_watermarks(await read_topic(bootstrap, topics.RISK_SIGNALS), alert, move_ms,
                     reader.written_ms[alert["alert_id"]])


def check_silent_partitions(market: list[Read], config: EngineConfig, alert: dict[str, Any]) -> None:
    """The silent partitions got ticks and nothing else, for the whole run, each trailing
    its receive time by the live tick lag."""
    decoded: dict[int, list[Batch]] = {p: [] for p in range(PARTITIONS)}
    for rec in market:
        batch = decode_record(rec.value)
        assert not isinstance(batch, Control)
        decoded[rec.partition].append(batch)
    data = decoded[DATA_PARTITION]
    assert {b.asset for b in data if b.tick_ms is None} == {"USDe"}
    for p in SILENT_PARTITIONS:
        ticks = decoded[p]
        assert ticks and all(b.tick_ms is not None and len(b) == 0 for b in ticks), (
            f"partition {p} received data: {[b.asset for b in ticks if b.tick_ms is None]}")
        # one tick per tick interval of receive time, through the silence and past the alert
        assert len(ticks) >= SILENCE_BEFORE_MOVE_S * 1000 // config.ingest.tick_interval_ms - 1
        assert max(b.tick_ms or 0 for b in ticks) > alert["ts_ms"]
    # A live tick trails the receive time it was sent at by the live tick lag, not by the
    # replay batch span: that lag is what a silent partition costs the global stage.
    lag_ms = LiveConfig().tick_lag_ms
    for rec in market:
        tick = decode_record(rec.value)
        if isinstance(tick, Batch) and tick.tick_ms is not None and rec.partition in SILENT_PARTITIONS:
            trail_ms = rec.timestamp_ms - tick.tick_ms
            assert lag_ms <= trail_ms < config.ingest.batch_max_span_ms, trail_ms


def check_watermarks(signals: list[Read], alert: dict[str, Any], move_ms: int, written_ms: int) -> None:
    """Contrapositive, on the global stage's input: every silent partition's watermark passed
    the alert's event time, through ticks sent after the move, and the alert was written
    (at ``written_ms``) no earlier than the record that lifted the minimum watermark past it."""
    watermarks: dict[int, int] = {}
    released: Read | None = None
    passed_at: dict[int, Read] = {}
    for rec in signals:
        obj = orjson.loads(rec.value)
        if "input" in obj or "inputs" in obj:  # forwarded inputs, alone or many to a record
            continue
        sr = decode_risk_record(rec.value)
        if sr.partition in SILENT_PARTITIONS:
            assert sr.signals == [], "a silent partition sent signals"
        watermarks[sr.partition] = max(watermarks.get(sr.partition, -1), sr.watermark_ms)
        if sr.watermark_ms > alert["ts_ms"]:
            passed_at.setdefault(sr.partition, rec)
        if released is None and len(watermarks) == PARTITIONS and min(watermarks.values()) > alert["ts_ms"]:
            released = rec
    assert set(passed_at) >= set(SILENT_PARTITIONS), f"silent partitions' watermarks: {watermarks}"
    for p in SILENT_PARTITIONS:
        assert passed_at[p].timestamp_ms > move_ms, "a watermark past the move can only come from a later tick"
    assert released is not None
    assert written_ms >= released.timestamp_ms
