"""A recorded live session replays to identical feed alerts: an OKX session against a local
websocket server with a sequence gap (``book_gap``) and a silent channel (``feed_stale``),
recorded with the contract-value table of its config, replayed inline and through Kafka."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from monitor.alerts import Alert
from monitor.events import KIND_LIQUIDATION
from monitor.ingest import CONTRACT_VALUES_CHANNEL, FEED_STATUS_CHANNEL
from replay.capture import CaptureLine, iter_capture
from replay.replayer import replay_inline
from streams.feeds.config import LiveConfig
from streams.feeds.runner import Recorder
from tests.integration.test_feeds_harness import Conn, Run, live_config, make_runner, now_ms, run_until, ws_server
from tests.integration.test_feeds_okx import INST, books, subscribed

pytestmark = pytest.mark.timeout(60)

FEED_KINDS = ("book_gap", "feed_stale")


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


async def fresh_with_liquidations(conn: Conn) -> None:
    await subscribed(conn)
    await conn.send(books("snapshot", 300, -1, [["98000", "10"]], [["98010", "10"]]))
    await conn.send(liquidations((INST, "98000", "20"), ("DOGE-USDT-SWAP", "0.2", "3"),
                                 ("PEPE-USDT-SWAP", "0.00001", "7")))
    await conn.idle()


def okx_config(url: str) -> LiveConfig:
    cfg = live_config("okx", url, (f"books:{INST}", "trades:ETH-USDT-SWAP", "liquidation-orders:SWAP"),
                      stale_after_s=0.4)
    return LiveConfig.model_validate(
        cfg.model_dump() | {"okx_contract_values": {"DOGE-USDT": {"ct_val": 1000.0, "ct_val_ccy": "DOGE"}}})


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
    channels = [x.channel for x in iter_capture(path) if isinstance(x, CaptureLine)]
    assert channels[0] == CONTRACT_VALUES_CHANNEL
    assert channels.count(FEED_STATUS_CHANNEL) == kinds.count("feed_stale")
    # Configured DOGE contracts are sized; PEPE has no contract value: dead-lettered, not guessed.
    liqs = {e.base: e for e in run.sink.events() if e.kind == KIND_LIQUIDATION}
    assert set(liqs) == {"BTC", "DOGE"}
    assert liqs["DOGE"].f2 == pytest.approx(3000.0) and liqs["DOGE"].f4 == pytest.approx(600.0)
    assert liqs["BTC"].f2 == pytest.approx(0.2)
    assert [d.reason for d in run.sink.deadletters] == ["unknown_contract_value"]
    assert "PEPE-USDT-SWAP" in run.sink.deadletters[0].detail
    assert run.runner.ingest.stats.deadletters == {"unknown_contract_value": 1}


async def test_inline_replay_gives_the_same_feed_alerts_and_events(recorded: tuple[Run, Path]) -> None:
    run, path = recorded
    replayed_batches: list[Any] = []
    replayed = await replay_inline(path, run.runner.engine_config, on_batch=replayed_batches.append)
    assert feed_alerts(replayed.alerts) == feed_alerts(run.sink.feed_alerts)
    assert [a.alert_id for a in replayed.alerts if a.kind in FEED_KINDS] == [
        a.alert_id for a in run.sink.feed_alerts]
    live_events = sorted((e.base, i, e) for i, e in enumerate(run.sink.events()))
    replay_events = sorted((e.base, i, e) for i, e in enumerate(ev for b in replayed_batches for ev in b.events()))
    assert [e for _b, _i, e in live_events] == [e for _b, _i, e in replay_events]
    assert replayed.stats.deadletters == {"unknown_contract_value": 1}


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
    replayed = [Alert.model_validate(orjson.loads(line)) for line in (out / "alerts.jsonl").read_bytes().splitlines()]
    live = sorted(run.sink.feed_alerts, key=lambda a: (a.ts_ms, a.alert_id))
    assert feed_alerts(replayed) == feed_alerts(live)
