"""A recorded live session replays to identical feed alerts, events and dead letters: an OKX
session against a local websocket server with a sequence gap (``book_gap``), a silent
channel (``feed_stale``) and garbage frames (text and binary), recorded with the
contract-value table and the non-default book throttle of its config, replayed inline and
through Kafka."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from monitor.events import KIND_BOOK, KIND_LIQUIDATION, MarketEvent
from monitor.ingest.frames import (
    CONTRACT_VALUES_CHANNEL,
    DEFAULT_BOOK_THROTTLE_MS,
    FEED_STATUS_CHANNEL,
    GARBAGE_CHANNEL,
    SESSION_CHANNEL,
    SESSION_VENUE,
    Ingest,
)
from monitor.protocol import Alert, DeadLetter
from replay.capture import CaptureLine, iter_capture, write_capture
from replay.replayer import replay_inline, route_capture
from streams.feeds.config import LiveConfig
from streams.feeds.runner import Recorder
from tests.integration.test_feeds_harness import Conn, Run, live_config, make_runner, now_ms, run_until, ws_server
from tests.integration.test_feeds_okx import INST, books, subscribed

pytestmark = pytest.mark.timeout(60)

FEED_KINDS = ("book_gap", "feed_stale")
#: Not the default: a replay that ignored the session's throttle would emit other book events.
THROTTLE_MS = 250
BINARY = b"\xff\xfe\x00 not text \x80"


def liquidations(*items: tuple[str, str, str]) -> dict[str, Any]:
    """(instId, bkPx, sz in contracts) per item; every one a long liquidated."""
    return {"arg": {"channel": "liquidation-orders", "instType": "SWAP"}, "data": [
        {"instId": inst, "instType": "SWAP", "details": [
            {"side": "sell", "posSide": "long", "bkPx": px, "sz": sz, "bkLoss": "0", "ccy": "",
             "ts": str(now_ms())}]}
        for inst, px, sz in items]}


async def gap_then_heartbeats(conn: Conn) -> None:
    """A book with a break in prevSeqId; then book heartbeats while the trades channel stays silent."""
    await subscribed(conn)
    await conn.send(books("snapshot", 100, -1, [["100000", "100"]], [["100010", "200"]]))
    await conn.send(books("update", 105, 100, [["100000", "150"]], []))
    await conn.send(books("update", 130, 120, [], []))  # prevSeqId 120 != 105: a gap
    assert (await conn.recv_json())["op"] == "unsubscribe"
    assert (await conn.recv_json())["op"] == "subscribe"
    await conn.send(books("snapshot", 200, -1, [["99000", "300"]], [["99010", "100"]]))
    while True:  # until the client drops the connection for the silent channel
        await conn.send(books("update", 200, 200, [], []))
        await asyncio.sleep(0.05)


def at(frame: dict[str, Any], ts_ms: int) -> dict[str, Any]:
    frame["data"][0]["ts"] = str(ts_ms)
    return frame


async def fresh_with_liquidations(conn: Conn) -> None:
    await subscribed(conn)
    # Book updates 60 ms of event time apart (in the recent past): the session's throttle
    # (250 ms) summarises fewer of them than the default would.
    start = now_ms() - 1_000
    await conn.send(at(books("snapshot", 300, -1, [["98000", "10"]], [["98010", "10"]]), start))
    for i in range(1, 9):
        await conn.send(at(books("update", 300 + i, 299 + i, [["98000", str(10 + i)]], []), start + 60 * i))
    await conn.send("this is not json {")  # invalid_json, text
    await conn.send([1, 2])  # JSON, but not an OKX push frame: unroutable
    await conn.ws.send(BINARY)  # invalid_json, bytes that are not UTF-8
    await conn.send(liquidations((INST, "98000", "20"), ("DOGE-USDT-SWAP", "0.2", "3"),
                                 ("PEPE-USDT-SWAP", "0.00001", "7")))
    await conn.idle()


def okx_config(url: str) -> LiveConfig:
    cfg = live_config("okx", url, (f"books:{INST}", "trades:ETH-USDT-SWAP", "liquidation-orders:SWAP"),
                      stale_after_s=0.4)
    return LiveConfig.model_validate(
        cfg.model_dump() | {"okx_contract_values": {"DOGE-USDT": {"ct_val": 1000.0, "ct_val_ccy": "DOGE"}},
                            "book_throttle_ms": THROTTLE_MS})


def letters(items: list[DeadLetter]) -> list[tuple[object, ...]]:
    """What a dead letter says, without the capture line a replay adds (the bytes of garbage only:
    a valid frame is recorded as parsed JSON, its dead letter carries the capture line)."""
    return [(d.reason, d.detail, d.venue, d.ts_ms, d.raw if d.channel is None else None) for d in items]


def replayed_letters(path: Path, ingest: Ingest) -> list[DeadLetter]:
    return [x for _ts, x in route_capture(path, ingest) if isinstance(x, DeadLetter)]


def replayed_events(batches: list[Any]) -> list[MarketEvent]:
    return [ev for b in batches for ev in b.events()]


def by_asset(events: list[MarketEvent]) -> list[MarketEvent]:
    """Events in order per asset (batches of different assets may interleave differently)."""
    return [e for _b, _i, e in sorted((e.base, i, e) for i, e in enumerate(events))]


def feed_alerts(alerts: list[Alert]) -> list[bytes]:
    return [a.to_json() for a in alerts if a.kind in FEED_KINDS]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Run, Path]:
    path = tmp_path_factory.mktemp("live") / "okx.jsonl.gz"

    async def session() -> Run:
        recorder = Recorder(path)
        async with ws_server([gap_then_heartbeats, fresh_with_liquidations]) as ws:
            run = make_runner(okx_config(ws.url), recorder=recorder)
            await run_until(run, lambda: len(ws.connections) >= 2
                            and any(e.kind == KIND_LIQUIDATION for e in run.sink.events()), timeout_s=20)
        recorder.close()
        return run

    return asyncio.run(session()), path


def test_live_session_raised_gap_and_stale_and_recorded_its_status(recorded: tuple[Run, Path]) -> None:
    run, path = recorded
    kinds = [a.kind for a in run.sink.feed_alerts]
    assert kinds[:2] == ["book_gap", "feed_stale"] and set(kinds) <= set(FEED_KINDS)
    gap = run.sink.feed_alerts[0]
    assert gap.evidence == {"symbol": INST, "expected": 105, "received": 120}
    stale = run.sink.feed_alerts[1]
    assert stale.evidence["channel"] == "trades:ETH-USDT-SWAP" and stale.evidence["age_s"] > 0.4
    assert run.runner.connections[0].endings[0] == "stale"
    lines = [x for x in iter_capture(path) if isinstance(x, CaptureLine)]
    channels = [x.channel for x in lines]
    assert channels[:2] == [SESSION_CHANNEL, CONTRACT_VALUES_CHANNEL]
    assert (lines[0].venue, lines[0].raw) == (
        SESSION_VENUE, {"book_throttle_ms": THROTTLE_MS, "tick_lag_ms": LiveConfig().tick_lag_ms})
    assert channels.count(FEED_STATUS_CHANNEL) == kinds.count("feed_stale")
    garbage = [x.raw for x in lines if x.channel == GARBAGE_CHANNEL]
    assert [(g["reason"], g.get("text")) for g in garbage] == [
        ("invalid_json", "this is not json {"), ("unroutable", "[1,2]"), ("invalid_json", None)]
    assert base64.b64decode(garbage[2]["b64"]) == BINARY
    # Configured DOGE contracts are sized; PEPE has no contract value: dead-lettered, not guessed.
    liqs = {e.base: e for e in run.sink.events() if e.kind == KIND_LIQUIDATION}
    assert set(liqs) == {"BTC", "DOGE"}
    assert liqs["DOGE"].f2 == pytest.approx(3000.0) and liqs["DOGE"].f4 == pytest.approx(600.0)
    assert liqs["BTC"].f2 == pytest.approx(0.2)
    assert [d.reason for d in run.sink.deadletters] == [
        "invalid_json", "unroutable", "invalid_json", "unknown_contract_value"]
    assert [d.raw for d in run.sink.deadletters[:3]] == [b"this is not json {", b"[1,2]", BINARY]
    assert "not an OKX push frame" in run.sink.deadletters[1].detail
    assert "PEPE-USDT-SWAP" in run.sink.deadletters[3].detail
    assert run.runner.ingest.stats.deadletters == {"invalid_json": 2, "unroutable": 1, "unknown_contract_value": 1}
    assert run.runner.stats.garbage == 3
    assert run.metric("liqmon_deadletter_total", reason="invalid_json") == 2


async def test_inline_replay_gives_the_same_feed_alerts_and_events(recorded: tuple[Run, Path]) -> None:
    run, path = recorded
    replayed_batches: list[Any] = []
    replayed = await replay_inline(path, run.runner.engine_config, on_batch=replayed_batches.append)
    assert feed_alerts(replayed.alerts) == feed_alerts(run.sink.feed_alerts)
    assert [a.alert_id for a in replayed.alerts if a.kind in FEED_KINDS] == [
        a.alert_id for a in run.sink.feed_alerts]
    assert by_asset(replayed_events(replayed_batches)) == by_asset(run.sink.events())
    assert replayed.stats.deadletters == run.runner.ingest.stats.deadletters
    assert replayed.stats.frames == run.runner.ingest.stats.frames
    assert letters(replayed_letters(path, Ingest(run.runner.engine_config))) == letters(run.sink.deadletters)


async def test_replay_without_the_session_frame_would_differ(recorded: tuple[Run, Path], tmp_path: Path) -> None:
    """The throttle matters to this session: dropping its session frame changes the book events."""
    run, path = recorded
    assert THROTTLE_MS != DEFAULT_BOOK_THROTTLE_MS
    lines = [x for x in iter_capture(path) if isinstance(x, CaptureLine)]
    stripped = tmp_path / "no_session.jsonl"
    write_capture(stripped, [(x.ts_ms, x.venue, x.channel, x.raw) for x in lines if x.channel != SESSION_CHANNEL])
    batches: list[Any] = []
    await replay_inline(stripped, run.runner.engine_config, on_batch=batches.append)
    books = [e for e in replayed_events(batches) if e.kind == KIND_BOOK]
    assert len(books) > len([e for e in run.sink.events() if e.kind == KIND_BOOK])


@pytest.mark.broker
@pytest.mark.slow
def test_kafka_replay_gives_the_same_feed_alerts(recorded: tuple[Run, Path], tmp_path: Path) -> None:
    run, path = recorded
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIQMON_")}
    out = tmp_path / "kafka"
    proc = subprocess.run(
        [sys.executable, "-m", "streams.cli", "replay", "--capture", str(path), "--out", str(out),
         "--metrics-port", "0"],
        capture_output=True, text=True, timeout=240, env=env, check=False,
    )
    worker_log = out / "worker.log"
    assert proc.returncode == 0, proc.stderr[-3000:] + (worker_log.read_text()[-3000:] if worker_log.exists() else "")
    replayed = [Alert.from_obj(orjson.loads(line)) for line in (out / "alerts.jsonl").read_bytes().splitlines()]
    live = sorted(run.sink.feed_alerts, key=lambda a: (a.ts_ms, a.alert_id))
    assert feed_alerts(replayed) == feed_alerts(live)
    summary = orjson.loads((out / "summary.json").read_bytes())
    assert summary["deadletters_by_reason"] == dict(run.runner.ingest.stats.deadletters)
