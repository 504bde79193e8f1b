"""Test fixtures on 127.0.0.1: Debian's Alertmanager with the committed config, a webhook receiver.

- :class:`HookReceiver` takes POSTs on any path in its own thread and loop, and can be
  stopped and started again on the same port (a receiver outage).
- :class:`AlertmanagerProcess` runs ``prometheus-alertmanager`` with a copy of
  ``deploy/alertmanager/alertmanager.yml`` in which only the receiver URL (the committed
  placeholder) is rewritten to the test's receiver; clustering is off, so nothing listens
  beyond loopback. It can be stopped and started again on the same port.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from streams.kafka.broker import free_port
from tests.integration.test_prometheus_live import wait_until

ROOT = Path(__file__).resolve().parents[2]
AM_CONFIG = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
PLACEHOLDER_URL = "http://webhook.invalid/liqmon"
ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
HOST = "127.0.0.1"


@dataclass
class Post:
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class HookReceiver:
    """Records every POST; ``stop()`` then ``start()`` again is an outage on the same port."""

    port: int = field(default_factory=free_port)
    posts: list[Post] = field(default_factory=list)
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _stop: asyncio.Event | None = None

    def url(self, path: str) -> str:
        return f"http://{HOST}:{self.port}{path}"

    def on(self, path: str) -> list[Post]:
        return [p for p in list(self.posts) if p.path == path]

    async def _handle(self, request: web.Request) -> web.Response:
        self.posts.append(Post(request.path, dict(request.headers), await request.json()))
        return web.Response(status=200)

    async def _main(self, ready: threading.Event) -> None:
        self._stop = asyncio.Event()
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        runner = web.AppRunner(app, shutdown_timeout=1.0)
        await runner.setup()
        await web.TCPSite(runner, HOST, self.port).start()
        ready.set()
        await self._stop.wait()
        await runner.cleanup()

    def start(self) -> HookReceiver:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._main(ready),),
                                        daemon=True)
        self._thread.start()
        assert ready.wait(10), "webhook receiver did not start"
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)
        self._thread = None


def alertmanager_config(dst: Path, receiver_url: str) -> Path:
    """The committed config with only its receiver URL (the placeholder) rewritten."""
    text = AM_CONFIG.read_text(encoding="utf-8")
    assert PLACEHOLDER_URL in text, "the committed alertmanager.yml lost its placeholder URL"
    dst.write_text(text.replace(PLACEHOLDER_URL, receiver_url), encoding="utf-8")
    return dst


@dataclass
class AlertmanagerProcess:
    """Debian's Alertmanager on 127.0.0.1, restartable on the same port and storage."""

    config: Path
    workdir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> AlertmanagerProcess:
        assert ALERTMANAGER is not None, "prometheus-alertmanager is not installed"
        log = (self.workdir / "alertmanager.log").open("ab")
        self.proc = subprocess.Popen(
            [ALERTMANAGER, f"--config.file={self.config}", f"--storage.path={self.workdir / 'am-data'}",
             f"--web.listen-address={HOST}:{self.port}", "--cluster.listen-address="],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        wait_until(self.ready, 30, lambda: "alertmanager /-/ready\n" + self.log_tail())
        return self

    def ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError("alertmanager exited\n" + self.log_tail())
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None

    def log_tail(self, n: int = 3000) -> str:
        path = self.workdir / "alertmanager.log"
        return path.read_text(encoding="utf-8", errors="replace")[-n:] if path.exists() else ""

    def alerts(self, **filters: str) -> list[dict[str, Any]]:
        """``GET /api/v2/alerts`` (active, silenced, inhibited and unprocessed by default)."""
        query = "&".join(f"{k}={v}" for k, v in filters.items())
        with urllib.request.urlopen(f"{self.url}/api/v2/alerts?{query}", timeout=10) as resp:
            alerts: list[dict[str, Any]] = json.loads(resp.read())
        return alerts


def metric_value(port: int, name: str, labels: dict[str, str]) -> float | None:
    """One sample from a process's ``/metrics`` (None when the series does not exist)."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except (OSError, urllib.error.URLError):
        return None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None
