"""Harness for the feed tests: scripted websocket and REST servers on 127.0.0.1, a virtual
clock, a collecting sink with an inline engine, and the socket-loop tests every venue shares
(backoff spacing, handler errors, garbage, silence)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry
from websockets.asyncio.server import ServerConnection, serve

from benchmarks.e2e import start_loopback_app
from monitor.config import EngineConfig
from monitor.events import MarketEvent
from monitor.ingest.frames import Routed
from monitor.metrics import Metrics
from monitor.protocol import Alert, DeadLetter
from monitor.stages.engine import Engine
from streams.backoff import BackoffPolicy
from streams.feeds.config import LiveConfig, VenueFeed
from streams.feeds.runner import LiveRunner, Recorder

pytestmark = pytest.mark.timeout(30)

HOST = "127.0.0.1"

Script = Callable[["Conn"], Awaitable[None]]


class VirtualClock:
    """Real monotonic time plus the sum of requested sleeps, which return at once.

    Backoff and rate-limit sleeps are recorded and skipped; watchdog timeouts still run on
    real time (they are short in these tests).
    """

    def __init__(self) -> None:
        self.offset_s = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return time.monotonic() + self.offset_s

    def wall_ms(self) -> int:
        return time.time_ns() // 1_000_000 + int(self.offset_s * 1000)

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.offset_s += max(seconds, 0.0)
        await asyncio.sleep(0)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class Conn:
    """One accepted websocket connection handed to a script."""

    ws: ServerConnection
    index: int
    received: list[Any] = field(default_factory=list)

    async def recv_json(self, timeout: float = 5.0) -> Any:
        while True:
            text = await asyncio.wait_for(self.ws.recv(), timeout)
            if text in ("ping",):
                await self.ws.send("pong")
                continue
            msg = orjson.loads(text)
            self.received.append(msg)
            if isinstance(msg, dict) and (msg.get("op") == "ping" or msg.get("method") == "ping"):
                continue
            return msg

    async def send(self, obj: Any) -> None:
        await self.ws.send(obj if isinstance(obj, str) else orjson.dumps(obj).decode())

    async def idle(self) -> None:
        """Keep the connection open, answering pings, until the client leaves."""
        try:
            while True:
                await self.recv_json(timeout=3600)
        except Exception:
            return

    def drop_mid_frame(self) -> None:
        """Write the head of a text frame and a partial payload, then cut the TCP connection."""
        transport = self.ws.transport
        transport.write(b"\x81\x7e\x01\x00" + b'{"stream": "btcusdt@depth@100ms", "da')
        transport.abort()


@dataclass
class WsServer:
    scripts: list[Script]
    connections: list[Conn] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"ws://{HOST}:{self.port}"

    async def handler(self, ws: ServerConnection) -> None:
        conn = Conn(ws, len(self.connections))
        self.connections.append(conn)
        script = self.scripts[min(conn.index, len(self.scripts) - 1)]
        try:
            await script(conn)
        except Exception:
            return


@asynccontextmanager
async def ws_server(scripts: list[Script]) -> AsyncIterator[WsServer]:
    server = WsServer(scripts)
    async with serve(server.handler, HOST, 0, compression=None) as running:
        server.port = next(iter(running.sockets)).getsockname()[1]
        yield server


@dataclass
class RestServer:
    """Serves depth snapshots from a queue per symbol (the last one repeats); an entry
    ``{"status": S, "headers": {...}}`` is answered with that status and headers instead."""

    snapshots: dict[str, list[dict[str, Any]]]
    requests: list[dict[str, str]] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    async def depth(self, request: web.Request) -> web.Response:
        params = dict(request.query)
        self.requests.append(params)
        queue = self.snapshots.get(params.get("symbol", ""), [])
        if not queue:
            return web.Response(status=404, text="unknown symbol")
        body = queue.pop(0) if len(queue) > 1 else queue[0]
        if "status" in body:
            return web.json_response({"code": -1003, "msg": "Too many requests."}, status=body["status"],
                                     headers=body.get("headers", {}))
        return web.json_response(body)


@asynccontextmanager
async def rest_server(snapshots: dict[str, list[dict[str, Any]]]) -> AsyncIterator[RestServer]:
    server = RestServer(snapshots)
    app = web.Application()
    app.router.add_get("/api/v3/depth", server.depth)
    app.router.add_get("/fapi/v1/depth", server.depth)
    runner, server.port = await start_loopback_app(app)
    try:
        yield server
    finally:
        await runner.cleanup()


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def loopback_routes(routes: list[tuple[str, str, Handler]]) -> AsyncIterator[int]:
    """Serve (method, path, handler) routes on 127.0.0.1; yields the port."""
    app = web.Application()
    for method, path, handler in routes:
        app.router.add_route(method, path, handler)
    runner, port = await start_loopback_app(app, access_log=None)
    try:
        yield port
    finally:
        await runner.cleanup()


class EngineSink:
    """Collects what the runner publishes and runs batches through an inline engine."""

    def __init__(self, config: EngineConfig) -> None:
        self.engine = Engine(config)
        self.failed: Counter[str] = Counter()  # nothing fails: the items are kept in lists
        self.batches: list[Routed] = []
        self.deadletters: list[DeadLetter] = []
        self.feed_alerts: list[Alert] = []
        self.engine_alerts: list[Alert] = []
        self.fail_next = 0

    async def send(self, item: Routed | DeadLetter) -> None:
        if isinstance(item, DeadLetter):
            self.deadletters.append(item)
            return
        self.batches.append(item)
        self.engine_alerts.extend(self.engine.process(item.batch).alerts)

    async def send_alert(self, alert: Alert) -> None:
        self.feed_alerts.append(alert)

    async def flush(self) -> None:
        return None

    def unconfirmed(self) -> Counter[str]:
        return Counter()  # every item is taken as it is sent

    def events(self) -> list[MarketEvent]:
        return [ev for r in self.batches for ev in r.batch.events()]


def live_config(venue: str, ws_url: str, streams: tuple[str, ...], rest_url: str | None = None,
                stale_after_s: float = 30.0, **backoff: Any) -> LiveConfig:
    feed = VenueFeed(streams=streams, ws_url=ws_url, rest_url=rest_url, stale_after_s=stale_after_s)
    policy = BackoffPolicy(**({"initial_s": 0.05, "max_s": 1.0, "jitter_ratio": 0.25} | backoff))
    return LiveConfig(venues={venue: feed}, backoff=policy, flush_interval_s=0.05, watchdog_tick_s=0.05, seed=3)


@dataclass
class Run:
    runner: LiveRunner
    sink: EngineSink
    metrics: Metrics
    clock: VirtualClock

    def metric(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


def make_runner(cfg: LiveConfig, engine_cfg: EngineConfig | None = None, recorder: Recorder | None = None) -> Run:
    engine_cfg = engine_cfg or EngineConfig()
    sink = EngineSink(engine_cfg)
    metrics = Metrics(CollectorRegistry())
    clock = VirtualClock()
    runner = LiveRunner(engine_cfg, cfg, sink, recorder=recorder, metrics=metrics, clock=clock)
    return Run(runner, sink, metrics, clock)


async def run_until(run: Run, done: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Run the live runner until ``done()`` holds (polled), then stop it."""
    stop = asyncio.Event()

    async def watch() -> None:
        deadline = time.monotonic() + timeout_s
        while not done():
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.02)
        stop.set()

    watcher = asyncio.ensure_future(watch())
    await run.runner.run(timeout_s + 1.0, stop)
    await watcher


def reference_book(snapshot: tuple[list[list[str]], list[list[str]]],
                   diffs: list[tuple[list[list[str]], list[list[str]]]]) -> tuple[list[tuple[float, float]], ...]:
    """Book rebuilt from frames with plain dicts: snapshot, then diffs, qty 0 deletes."""
    sides: list[dict[float, float]] = [{}, {}]
    for levels_pair in (snapshot, *diffs):
        for side, levels in zip(sides, levels_pair, strict=True):
            for px, qty, *_ in levels:
                if float(qty) == 0.0:
                    side.pop(float(px), None)
                else:
                    side[float(px)] = float(qty)
    bids = sorted(sides[0].items(), reverse=True)
    asks = sorted(sides[1].items())
    return bids, asks
