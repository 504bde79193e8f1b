"""Alert delivery from a worker to a webhook on 127.0.0.1, de-duplicable by alert id."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from replay.capture import write_capture
from replay.importers import iter_file, merge_captures
from streams.kafka.broker import embedded_broker, free_port

pytestmark = [pytest.mark.broker, pytest.mark.timeout(240)]


class Receiver:
    """A webhook receiver on 127.0.0.1 in its own thread and loop."""

    def __init__(self) -> None:
        self.port = free_port()
        self.received: list[tuple[str, dict[str, Any]]] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.received.append((request.headers.get("X-Liqmon-Alert-Id", ""), body))
        return web.Response(status=204)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        runner = web.AppRunner(app)
        self._loop.run_until_complete(runner.setup())
        self._loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self._ready.set()
        self._loop.run_forever()

    def __enter__(self) -> Receiver:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def test_worker_delivers_alerts_to_a_webhook(oct10_dir: Path, tmp_path: Path) -> None:
    capture = tmp_path / "usde.jsonl.gz"
    files = [oct10_dir / "usde_usdt_binance_1m.csv", oct10_dir / "usde_usdt_uniswap_v3_blocks.csv"]
    write_capture(capture, merge_captures([iter_file(f) for f in files]))
    with Receiver() as hook, embedded_broker() as broker:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LIQMON_")}
        env.update({
            "LIQMON_KAFKA_BOOTSTRAP": broker.bootstrap, "LIQMON_BROKER_KIND": "tansu",
            "LIQMON_METRICS_PORT": "0", "LIQMON_WEBHOOK_URL": f"http://127.0.0.1:{hook.port}/hook",
            "LIQMON_ALERT_STDOUT": "true",
            # One independent witness (the Uniswap pool) in this data: its config accepts one.
            "LIQMON_CONFIG": str(Path(__file__).resolve().parents[2] / "replay" / "configs" / "oct10-real.toml"),
        })
        log = (tmp_path / "worker.log").open("wb")
        worker = subprocess.Popen([sys.executable, "-m", "streams.cli", "worker"], env=env, stdout=log, stderr=log)
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "streams.cli", "replay", "--capture", str(capture), "--out",
                 str(tmp_path / "out"), "--no-worker", "--quiet"],
                env=env, capture_output=True, text=True, timeout=180, check=False,
            )
            assert proc.returncode == 0, proc.stderr
            alerts = [orjson.loads(x) for x in (tmp_path / "out" / "alerts.jsonl").read_bytes().splitlines()]


            end = time.monotonic() + 60
            while time.monotonic() < end and len(hook.received) < 2:
                time.sleep(0.5)
        finally:
            worker.terminate()
            worker.wait(timeout=20)
            log.close()
    assert hook.received, (tmp_path / "worker.log").read_text()[-2000:]
    ids = {a["alert_id"] for a in alerts}
    for header_id, body in hook.received:
        assert header_id == body["alert_id"] and header_id in ids
    # The cooldown lets the first alert of each subject and every escalation through.
    kinds = {(b["kind"], b["severity"]) for _, b in hook.received}
    assert ("venue_local_depeg", "critical") in kinds
    assert "venue_local_depeg" in (tmp_path / "worker.log").read_text()  # the stdout sink
