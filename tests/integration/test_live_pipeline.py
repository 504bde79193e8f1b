"""``liqmon live`` on the embedded default runs the whole pipeline: against a local Binance spot
server whose USDe quote leaves the peg, the real command (no ``LIQMON_KAFKA_BOOTSTRAP``)
starts the broker and a worker and prints the worker's peg alert on stdout; ``--no-worker``
starts none and prints none; a worker that exits is reported once."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from benchmarks.cluster import LATENCY_CONFIG
from streams.cmd.live import watch_worker
from tests.integration.test_feeds_binance import ack
from tests.integration.test_feeds_harness import Conn, WsServer, ws_server

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.timeout(240)]

CONFIG = LATENCY_CONFIG + '\n[live.venues."binance-spot"]\nstreams = ["usdeusdt@bookTicker"]\n'


async def quotes(conn: Conn) -> None:
    """USDe at the peg, then 5 % below it, then back, over and over (10 quotes a second)."""
    await ack(conn)
    i = 0
    while True:
        mid = 0.95 if (i // 10) % 2 else 1.0
        await conn.send({"stream": "usdeusdt@bookTicker", "data": {
            "u": i, "s": "USDEUSDT", "b": f"{mid - 0.0001:.4f}", "B": "50000", "a": f"{mid + 0.0001:.4f}",
            "A": "50000"}})
        i += 1
        await asyncio.sleep(0.1)


@asynccontextmanager
async def live(tmp_path: Path, server: WsServer, *extra: str) -> AsyncIterator[asyncio.subprocess.Process]:
    config = tmp_path / "live.toml"
    config.write_text(CONFIG)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIQMON_")}
    # No LIQMON_KAFKA_BOOTSTRAP: the embedded default. No fixed ports (tests share the machine).
    env |= {"LIQMON_METRICS_PORT": "0", "LIQMON_LIVE_METRICS_PORT": "0", "LIQMON_DATA_DIR": str(tmp_path / "data")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "streams.cli", "live", "--config", str(config), "--ws-url",
        f"binance-spot={server.url}", "--out", str(tmp_path / "out"), *extra,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL)
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_live_on_the_embedded_broker_prints_the_workers_alerts(tmp_path: Path) -> None:
    async with ws_server([quotes]) as server, live(tmp_path, server, "--duration", "600") as proc:
        assert proc.stdout is not None and proc.stderr is not None
        lines: list[str] = []

        async def first_peg_alert() -> None:
            while True:
                line = (await proc.stdout.readline()).decode()  # type: ignore[union-attr]
                if not line:
                    raise AssertionError("liqmon live ended without printing an alert")
                lines.append(line)
                if "peg_deviation" in line:
                    return

        await asyncio.wait_for(first_peg_alert(), timeout=150)  # broker, worker start, first crossing
        proc.send_signal(signal.SIGINT)
        rest, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, err.decode()[-2000:]
    alert = next(line for line in lines if "peg_deviation" in line)
    assert " binance-spot/USDe" in alert and ("HIGH" in alert or "CRITICAL" in alert or "WARNING" in alert)
    stderr = err.decode()
    assert "liqmon: embedded broker on 127.0.0.1:" in stderr
    assert f"liqmon: worker started (log {tmp_path / 'out' / 'worker.log'})" in stderr
    assert "frames shed" in stderr and (tmp_path / "out" / "worker.log").exists()
    printed = [line for line in [*lines, *rest.decode().splitlines(keepends=True)] if line.strip()]
    assert len(printed) == len(set(printed))  # each alert once


async def test_no_worker_starts_none_and_prints_nothing(tmp_path: Path) -> None:
    async with ws_server([quotes]) as server, live(tmp_path, server, "--duration", "4", "--no-worker") as proc:
        out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert out == b""
    assert "worker started" not in err.decode() and not (tmp_path / "out").exists()
    assert "liqmon: live on 1 connections to binance-spot" in err.decode()


async def test_a_recording_onto_a_full_disk_stops_the_session_goes_on_and_exits_1(tmp_path: Path) -> None:
    """``--record`` onto a full disk: the session runs its course, the exit summary says where
    the recording stopped, and the exit code is 1 (before: every frame a handler error, then
    a traceback out of the last flush)."""
    record = tmp_path / "session.jsonl.gz"
    record.symlink_to("/dev/full")
    async with ws_server([quotes]) as server, \
            live(tmp_path, server, "--duration", "4", "--no-worker", "--record", str(record)) as proc:
        _out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    stderr = err.decode()
    assert proc.returncode == 1, stderr[-2000:]
    assert f"recording to {record} stopped after" in stderr and "No space left on device" in stderr
    assert f"; the recording {record} STOPPED after" in stderr and "Traceback" not in stderr
    assert "frame handler failed" not in stderr


async def test_the_terminal_closing_ends_the_session_with_its_recording_whole(tmp_path: Path) -> None:
    """SIGHUP (the terminal closed) ends a session as ``--duration`` does: published, its
    recording closed whole, the summary said, exit 0 (before: killed mid-write, the gzip
    recording without its end)."""
    record = tmp_path / "session.jsonl.gz"
    async with ws_server([quotes]) as server, \
            live(tmp_path, server, "--duration", "600", "--no-worker", "--record", str(record)) as proc:
        assert proc.stderr is not None

        async def started() -> None:
            while b"liqmon: live on " not in await proc.stderr.readline():  # type: ignore[union-attr]
                pass

        await asyncio.wait_for(started(), timeout=120)
        await asyncio.sleep(2.0)  # some quotes recorded
        proc.send_signal(signal.SIGHUP)
        _out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert f"; recorded {record}" in err.decode()
    with gzip.open(record, "rb") as fh:  # a gzip stream cut short raises EOFError here
        lines = fh.read().splitlines()
    assert sum(b"usdeusdt@bookTicker" in line for line in lines) >= 5


async def test_a_worker_that_exits_is_reported_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    worker = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    await asyncio.wait_for(watch_worker(worker, tmp_path / "worker.log"), timeout=30)
    err = capsys.readouterr().err
    assert err == f"liqmon: the worker exited with code 3: no more alerts; see {tmp_path / 'worker.log'}\n"


def _children(pid: int, name: str) -> list[int]:
    """Processes whose name starts with ``name`` and whose parent is ``pid`` (from /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)
            comm = fields[0].split("(", 1)[1]
            if comm.startswith(name) and int(fields[1].split()[1]) == pid:
                out.append(int(stat.parent.name))
    return out


async def test_the_embedded_broker_exiting_is_said_once_and_the_session_goes_on(tmp_path: Path) -> None:
    """The embedded broker killed mid-session (out of memory, say): said once on stderr;
    the session goes on reading and recording, and its end says what the broker never got,
    exit 1 (before: nothing said, and the client's errors at ≈ 100 lines a second)."""
    record = tmp_path / "session.jsonl.gz"
    async with ws_server([quotes]) as server, \
            live(tmp_path, server, "--duration", "12", "--no-worker", "--record", str(record)) as proc:
        assert proc.stderr is not None
        while b"liqmon: live on " not in await asyncio.wait_for(proc.stderr.readline(), 120):
            pass
        await asyncio.sleep(1.0)
        (broker,) = _children(proc.pid, "tansu")
        os.kill(broker, signal.SIGKILL)
        _out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    stderr = err.decode()
    assert proc.returncode == 1, stderr[-2000:]
    assert stderr.count("liqmon: the embedded broker exited with code -9: nothing is published") == 1
    assert ("items NOT published" in stderr or "the broker did not confirm the last records" in stderr)
    assert "Traceback" not in stderr
    # the client's per-attempt errors once per 30 s each (before: ≈ 100 lines a second)
    assert len(stderr.splitlines()) < 40, stderr[-3000:]
    with gzip.open(record, "rb") as fh:  # recorded to the end, closed whole
        assert sum(b"usdeusdt@bookTicker" in line for line in fh.read().splitlines()) >= 50
