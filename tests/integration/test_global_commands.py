"""The global stage of a running worker through Kafka: the spiral on demand, bad commands,
and alert latches that survive a worker restart (embedded broker, real ``liqmon worker``)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from replay.capture import write_capture
from streams import topics
from streams.cmd.worker import worker_process
from streams.kafka.broker import embedded_broker, free_port
from streams.kafka.replay import ensure_topics

pytestmark = [pytest.mark.broker, pytest.mark.timeout(300)]

T0 = 1_760_130_000_000  # 10 Oct 2025 21:00 UTC
PARTITIONS = 2
#: accounts priced on Binance's own USDe book, and on the USDe index
VENUE_PRICED = ["acct-0", "acct-2"]
INDEX_PRICED = ["acct-1", "acct-3"]


def liqmon(*args: str, env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("LIQMON_")}
    full_env.update(env)
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args],
        capture_output=True, text=True, timeout=timeout, env=full_env, check=False,
    )


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return path


def accounts() -> list[dict[str, Any]]:
    return [{
        "account_id": f"acct-{i}", "venue": "binance", "model": "binance-pm",
        "balances": [{"asset": "USDe", "amount": 1_000_000.0,
                      "price_key": "USDe@binance" if i % 2 == 0 else "USDe"},
                     {"asset": "USDT", "amount": -700_000.0, "price_key": "USDT"}],
    } for i in range(4)]


def capture(path: Path, minutes: range, binance_usde: float) -> Path:
    """USDe on binance-spot at ``binance_usde`` (the pool holds 0.999), BTC, one print a minute."""
    frames: list[tuple[int, str, str, dict[str, Any]]] = []
    for minute in minutes:
        ts = T0 + minute * 60_000
        frames.append((ts, "binance-spot", "price", {"base": "USDe", "quote": "USDT", "price": binance_usde}))
        frames.append((ts + 1, "uniswap-v3", "price",
                       {"base": "USDe", "quote": "USDT", "price": 0.999, "depth_usd": 50_000_000}))
        frames.append((ts + 2, "binance-spot", "price",
                       {"base": "BTC", "quote": "USDT", "price": 116_000.0 - 50 * minute}))
    write_capture(path, frames)
    return path


def worker_env(bootstrap: str, metrics_port: int, config: Path | None = None) -> dict[str, str]:
    env = {"LIQMON_KAFKA_BOOTSTRAP": bootstrap, "LIQMON_BROKER_KIND": "tansu",
           "LIQMON_PARTITIONS": str(PARTITIONS), "LIQMON_METRICS_PORT": str(metrics_port)}
    if config is not None:
        env["LIQMON_CONFIG"] = str(config)
    return env


def replay(path: Path, out: Path, env: dict[str, str], *extra: str) -> list[dict[str, Any]]:
    proc = liqmon("replay", "--capture", str(path), "--out", str(out), "--no-worker", "--quiet", *extra, env=env)
    assert proc.returncode == 0, proc.stderr
    return [orjson.loads(line) for line in (out / "alerts.jsonl").read_bytes().splitlines()]


def gauge(port: int, name: str, labels: str) -> float | None:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    prefix = f"{name}{{{labels}}} "
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix):])
    return None


async def send_raw(bootstrap: str, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topics.RISK_SIGNALS, value, key=b"", partition=0)
    finally:
        await producer.stop()


async def dead_letters(bootstrap: str, reason: str, n: int, timeout_s: float = 30) -> list[dict[str, Any]]:
    consumer = AIOKafkaConsumer(topics.DEADLETTER, bootstrap_servers=bootstrap,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    out: list[dict[str, Any]] = []
    try:
        deadline = time.monotonic() + timeout_s
        while len(out) < n and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                out += [orjson.loads(r.value) for r in records if r.key == reason.encode()]
    finally:
        await consumer.stop()
    return out


def account_alerts(alerts: list[dict[str, Any]]) -> list[str]:
    return sorted(a["evidence"]["account_id"] for a in alerts
                  if a["kind"] in {"margin_call", "unified_liquidation"})


def test_spiral_on_demand_from_a_running_worker(tmp_path: Path) -> None:
    config = tmp_path / "engine.toml"
    config.write_text("[spiral_run]\ninterval_ms = 0\n")  # no timer: only requests run it
    port = free_port()
    with embedded_broker(log_path=tmp_path / "broker.log") as broker:
        asyncio.run(ensure_topics(broker.bootstrap, PARTITIONS))
        env = worker_env(broker.bootstrap, port, config)
        with worker_process(env, tmp_path / "worker.log") as worker:
            calm = capture(tmp_path / "calm.jsonl", range(10), 1.0)
            alerts = replay(calm, tmp_path / "run", env,
                            "--accounts", str(write_jsonl(tmp_path / "accounts.jsonl", accounts())))
            assert account_alerts(alerts) == [], "nobody is in trouble before the shock"
            shock = "usde-binance-local-depeg"
            assert gauge(port, "liqmon_spiral_liquidated_usd", f'shock="{shock}"') is None

            proc = liqmon("spiral", env=env)
            assert proc.returncode == 0, proc.stderr + (tmp_path / "worker.log").read_text()[-3000:]
            reply = orjson.loads(proc.stdout)
            assert reply["ok"] and reply["accounts"] == 4
            assert reply["skipped"] == {"eth-minus-10pct": ["ETH"], "macro-minus-20pct": ["ETH", "SOL"]}
            local = reply["results"][shock]
            assert local["accounts_liquidated"] == VENUE_PRICED
            assert local["liquidated_usd"] > 0
            assert reply["results"]["usde-depeg-5pct"]["accounts_liquidated"] == []
            # the gauges follow the requested run
            assert gauge(port, "liqmon_spiral_liquidated_usd", f'shock="{shock}"') == pytest.approx(
                local["liquidated_usd"])

            proc = liqmon("spiral", "--shock", "USDe=-50%", env=env)
            assert proc.returncode == 0, proc.stderr
            custom = orjson.loads(proc.stdout)["results"]
            assert list(custom) == ["custom"] and custom["custom"]["accounts_liquidated"] == INDEX_PRICED
            assert gauge(port, "liqmon_spiral_liquidated_usd", 'shock="custom"') is None

            # bad requests: one line and exit 2 from the CLI; dead letters from the worker
            proc = liqmon("spiral", "--shock", "NOPE=-10%", env=env)
            assert proc.returncode == 2
            assert proc.stderr.strip().splitlines() == [
                "liqmon spiral: error: the worker refused the request: "
                "shocks: no live price for NOPE on the worker"]
            asyncio.run(send_raw(broker.bootstrap, [
                b'{"v": 1, "command": "liquidate-everything", "request_id": "bad-1"}',
                b'{"v": 1, "command": "spiral"}',
                b'{"v": 1, "command": "spiral", "request_id": "bad-2", "shocks": {"BTC": -2}}',
            ]))
            letters = asyncio.run(dead_letters(broker.bootstrap, "invalid_command", 4))
            details = sorted(d["detail"].split(":")[0] for d in letters)
            assert details == ["command", "request_id", "shocks", "shocks.BTC"], letters
            # the global stage is still there and answers
            proc = liqmon("spiral", "--shock", "BTC=-10%", env=env)
            assert proc.returncode == 0, proc.stderr
            assert worker.poll() is None


def test_spiral_without_a_worker_is_one_line_and_exit_2(tmp_path: Path) -> None:
    with embedded_broker(log_path=tmp_path / "broker.log") as broker:
        env = worker_env(broker.bootstrap, 0)
        proc = liqmon("spiral", "--timeout", "5", env=env, timeout=60)
        assert proc.returncode == 2
        assert proc.stderr.splitlines() == [
            f"liqmon spiral: error: no liqmon worker has run against {broker.bootstrap} "
            "(topic risk.signals missing)"]
        asyncio.run(ensure_topics(broker.bootstrap, PARTITIONS))
        proc = liqmon("spiral", "--timeout", "3", env=env, timeout=60)
        assert proc.returncode == 2
        assert proc.stderr.splitlines() == [
            f"liqmon spiral: error: no reply within 3 s: is a liqmon worker running against {broker.bootstrap}?"]
        assert proc.stdout == ""


def test_a_restarted_worker_does_not_alert_an_account_again(tmp_path: Path) -> None:
    with embedded_broker(log_path=tmp_path / "broker.log") as broker:
        asyncio.run(ensure_topics(broker.bootstrap, PARTITIONS))
        env = worker_env(broker.bootstrap, free_port())
        with worker_process(env, tmp_path / "worker1.log"):
            depeg = capture(tmp_path / "depeg.jsonl", range(10), 0.65)
            first = replay(depeg, tmp_path / "run1", env,
                           "--accounts", str(write_jsonl(tmp_path / "accounts.jsonl", accounts())))
        assert account_alerts(first) == VENUE_PRICED

        port = free_port()
        env = worker_env(broker.bootstrap, port)
        with worker_process(env, tmp_path / "worker2.log"):
            # the same accounts, still under water, seen by a worker that recovered from the changelog
            later = capture(tmp_path / "later.jsonl", range(10, 20), 0.64)
            second = replay(later, tmp_path / "run2", env)
            assert gauge(port, "liqmon_unified_accounts", 'status="liquidation",venue="binance"') == 2
        assert account_alerts(second) == []
