"""``liqmon bench --only e2e``: a local Binance feed through ``liqmon live``, Kafka and a worker.

Four processes share the machine: a websocket + REST server on 127.0.0.1 (spawned here)
speaking Binance spot and USDⓈ-M combined streams, the real ``liqmon live`` (subprocess, its
endpoints overridden with ``--ws-url``/``--rest-url``), the embedded broker and a real
worker. The server pushes ``<symbol>@bookTicker`` frames for four symbols at a sustained
target rate, USDe's quote leaving the peg (to 0.95) and returning four times a second each, plus ten
``usdeusdt@depth@100ms`` diffs a second whose book the live process starts from the REST
snapshot, and, on a second connection (USDⓈ-M ``/market``), ``!forceOrder@arr`` liquidation
prints (``_LIQUIDATIONS_PER_S``). The engine config has zero minimum durations (as the
``latency`` section), so every crossing raises or clears a peg alert.

The server writes whole websocket frames straight to its socket, a burst per loop turn, so
it can offer about twice what the live process reads; frames its socket buffer cannot take
(``_MAX_WRITE_BUFFER_BYTES``: the reader is that far behind) are the shortfall. With
``shed = False`` the live process never coalesces (``[live.overload] shed_backlog_frames = 0``),
the figure to compare with.

Figures, each measured where it happens:

- ``server``: frames pushed and frames/s over the push window; frames the target asked
  for but the server could not push (CPU or TCP back-pressure from a slow reader); the
  websocket ping round trip during the push (how long a frame waited in socket buffers
  before the live process read it — *not* part of the receive-to-alert latency).
- ``live``: frames the live process received (its exit summary) over the window from the
  first push to the pong of a ping sent after the last frame (the moment it had read
  everything), events normalised, dead letters.
- ``worker``: events processed (its acknowledgements), the rate over the time from its
  first record to the moment its event counter stopped rising (scraped from its metrics),
  and how long it needed after the last frame was received to catch up (backlog); the
  mean of its own record-timestamp → processed histogram shows how much of the latency
  is spent between the broker and the worker's agent.
- ``liquidations``: prints the server sent, and liquidation events the worker processed
  (its ``liqmon_events_total{source="binance-usdm"}``: the only events of that venue): a
  print lost anywhere on the way shows as ``lost``.
- ``receive_to_alert_*``: over the ``peg_deviation`` alerts read back from
  ``alerts.cascade`` (read time minus ``ts_ms``): an alert's ``ts_ms`` is its event time,
  which for spot bookTicker (no ``E`` field) is the frame's receive time at the live
  process (``monitor.ingest.wire.binance``). Other alert kinds are listed per kind. Every alert
  read is left in ``alerts-e2e.jsonl`` in the work directory.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import re
import signal
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from aiokafka import AIOKafkaConsumer
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.server import ServerConnection, serve

from benchmarks.cluster import LATENCY_CONFIG, PARTITIONS, send_end, start_worker, stop, wait_acks, worker_env
from monitor.protocol import Alert, MarketAck
from streams import topics
from streams.kafka.broker import embedded_broker, free_port
from streams.kafka.replay import collect_alerts, ensure_topics
from streams.kafka.security import kafka_client_options

__all__ = ["bench_e2e", "ws_frame"]

HOST = "127.0.0.1"
#: Symbols of the bookTicker load (USDe is the one that leaves its peg).
_TICKERS = (("USDEUSDT", 1.0), ("BTCUSDT", 116_800.0), ("ETHUSDT", 4_390.0), ("SOLUSDT", 224.5))
_DEPTH_STREAM = "usdeusdt@depth@100ms"
_STREAMS = (*(f"{s.lower()}@bookTicker" for s, _ in _TICKERS), _DEPTH_STREAM)
#: USDe alternates between the peg and 0.95 (500 bps, "high") every this many ms.
_HALF_PERIOD_MS = 125
_DEPTH_EVERY_S = 0.1
_TICK_S = 0.002
#: At most this many frames per send burst before yielding to the loop (pings, REST).
_BURST = 500
_PING_EVERY_S = 0.5
#: The headline latency is over these alerts: their ts_ms is exactly a bookTicker frame's
#: receive time. Other kinds (global-stage alerts, the live process's own feed alerts) are
#: listed per kind.
_PEG_KIND = "peg_deviation"
_LAT_SUM = ("liqmon_processing_latency_seconds_sum", {"agent": "market"})
_LAT_COUNT = ("liqmon_processing_latency_seconds_count", {"agent": "market"})
_LIVE_SUMMARY = re.compile(
    r"liqmon: ([\d,]+) frames, ([\d,]+) events, (\d+) dead letters, (\d+) feed alerts, (\d+) reconnects, "
    r"([\d,]+) frames shed")
_LIQ_STREAM = "!forceOrder@arr"
_LIQUIDATIONS_PER_S = 50
#: Bytes the server's socket may hold for a slow reader before it stops offering frames.
_MAX_WRITE_BUFFER_BYTES = 32 << 20
_USDM_EVENTS = ("liqmon_events_total", {"source": "binance-usdm"})


def _live_config_text(shed: bool = True) -> str:
    streams = ", ".join(f'"{s}"' for s in _STREAMS)
    text = (LATENCY_CONFIG + f'\n[live.venues."binance-spot"]\nstreams = [{streams}]\n'
            f'[live.venues."binance-usdm"]\nstreams = ["{_LIQ_STREAM}"]\n')
    return text if shed else text + "[live.overload]\nshed_backlog_frames = 0\n"


def _frame_header(n: int) -> bytes:
    """The header of an unmasked, final websocket text frame of ``n`` payload bytes (RFC 6455 §5.2)."""
    if n < 126:
        return bytes((0x81, n))
    if n < 1 << 16:
        return bytes((0x81, 126)) + n.to_bytes(2, "big")
    return bytes((0x81, 127)) + n.to_bytes(8, "big")


def ws_frame(text: str) -> bytes:
    """One unmasked websocket text frame, as a server sends it."""
    payload = text.encode()
    return _frame_header(len(payload)) + payload


# -- the venue: websocket + REST server (own process) -------------------------------------


class _Venue:
    """Binance spot combined-stream bookTicker and depth diffs, and the REST depth snapshot."""

    def __init__(self, rate_fps: float, seconds: float) -> None:
        self.rate_fps = rate_fps
        self.seconds = seconds
        self.bids = {round(1.0 - 0.0001 * k, 4): 50_000.0 + 1_000.0 * k for k in range(1, 21)}
        self.asks = {round(1.0 + 0.0001 * k, 4): 50_000.0 + 1_000.0 * k for k in range(1, 21)}
        self.last_update_id = 1_000
        self.depth_seq = 0
        self.snapshots = 0
        self.pushed = False
        #: (symbol index, off peg, jitter) → a bookTicker frame's text around its ``u``.
        self._parts: dict[tuple[int, bool, int], tuple[bytes, bytes]] = {}
        self.push_started = asyncio.Event()
        self.push_over = False
        loop = asyncio.get_running_loop()
        self.liquidations_read: asyncio.Future[int] = loop.create_future()
        self.done: asyncio.Future[dict[str, Any]] = loop.create_future()

    @staticmethod
    def _ticker_parts(symbol: str, mid: float, jitter: int) -> tuple[bytes, bytes]:
        """A bookTicker frame's text before and after its update id ``u``."""
        mid *= 1.0 + ((jitter * 7919) % 1000 - 500) * 1e-8
        return (f'{{"stream":"{symbol.lower()}@bookTicker","data":{{"u":'.encode(),
                f',"s":"{symbol}","b":"{mid * 0.99995:.8f}","B":"12.5","a":"{mid * 1.00005:.8f}",'
                f'"A":"9.75"}}}}'.encode())

    def _ticker(self, i: int, now_ms: int) -> bytes:
        """The ``i``-th bookTicker frame, whole (prices formatted once per symbol, state and jitter:
        the venue must offer twice what the reader takes on the same two cores)."""
        k = i % len(_TICKERS)
        off_peg = k == 0 and bool((now_ms // _HALF_PERIOD_MS) % 2)
        parts = self._parts.get((k, off_peg, i % 1000))
        if parts is None:
            symbol, mid = _TICKERS[k]
            parts = self._parts[(k, off_peg, i % 1000)] = self._ticker_parts(symbol, 0.95 if off_peg else mid, i)
        payload = parts[0] + str(i).encode() + parts[1]
        return _frame_header(len(payload)) + payload

    def _depth_diff(self, now_ms: int) -> str:
        self.depth_seq += 1
        k = self.depth_seq
        bid_px = round(1.0 - 0.0001 * (1 + k % 20), 4)
        ask_px = round(1.0 + 0.0001 * (1 + (k * 7) % 20), 4)
        self.bids[bid_px] = 40_000.0 + 997.0 * (k % 31)
        self.asks[ask_px] = 40_000.0 + 991.0 * (k % 29)
        first = self.last_update_id + 1
        self.last_update_id += 2
        data = {"e": "depthUpdate", "E": now_ms, "s": "USDEUSDT", "U": first, "u": self.last_update_id,
                "b": [[f"{bid_px:.4f}", f"{self.bids[bid_px]:.2f}"]],
                "a": [[f"{ask_px:.4f}", f"{self.asks[ask_px]:.2f}"]]}
        return orjson.dumps({"stream": _DEPTH_STREAM, "data": data}).decode()

    async def rest_depth(self, request: web.Request) -> web.Response:
        self.snapshots += 1
        body = {
            "lastUpdateId": self.last_update_id,
            "bids": [[f"{p:.4f}", f"{q:.2f}"] for p, q in sorted(self.bids.items(), reverse=True)],
            "asks": [[f"{p:.4f}", f"{q:.2f}"] for p, q in sorted(self.asks.items())],
        }
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    async def handler(self, ws: ServerConnection) -> None:
        path = ws.request.path if ws.request is not None else ""
        try:
            sub = orjson.loads(await ws.recv())
            await ws.send(orjson.dumps({"result": None, "id": sub.get("id")}).decode())
            if path.startswith("/market"):  # USDⓈ-M trades and liquidations
                await self._liquidations(ws)
                await ws.wait_closed()
                return
            if self.pushed:  # a reconnect after the push: keep it open, send nothing
                await ws.wait_closed()
                return
            self.pushed = True
            stats = await self._push(ws)
            stats["liquidations_sent"] = await self.liquidations_read
        except Exception as exc:  # the client left early: report it instead of hanging
            if not self.done.done():
                self.done.set_result({"error": f"{type(exc).__name__}: {exc}"})
            return
        self.done.set_result(stats)
        await ws.wait_closed()

    def _liquidation(self, i: int, now_ms: int) -> str:
        side, px = ("SELL", 116_000.0 - i % 50) if i % 2 else ("BUY", 116_100.0 + i % 50)
        order = {"s": "BTCUSDT", "S": side, "o": "LIMIT", "f": "IOC", "q": "0.250", "p": f"{px:.1f}",
                 "ap": f"{px:.1f}", "X": "FILLED", "l": "0.250", "z": "0.250", "T": now_ms}
        return orjson.dumps({"stream": _LIQ_STREAM, "data": {"e": "forceOrder", "E": now_ms, "o": order}}).decode()

    async def _liquidations(self, ws: ServerConnection) -> None:
        """``_LIQUIDATIONS_PER_S`` prints during the push; then a ping: its pong means all were read."""
        await self.push_started.wait()
        sent = 0
        started = time.perf_counter()
        while not self.push_over:
            due = int(_LIQUIDATIONS_PER_S * (time.perf_counter() - started)) - sent
            for _ in range(due):
                await ws.send(self._liquidation(sent, time.time_ns() // 1_000_000))
                sent += 1
            await asyncio.sleep(0.01)
        pong = await ws.ping()
        await asyncio.wait_for(pong, timeout=300)
        self.liquidations_read.set_result(sent)

    async def _push(self, ws: ServerConnection) -> dict[str, Any]:
        rtts_ms: list[float] = []
        pings: set[asyncio.Task[None]] = set()

        async def ping() -> None:
            sent = time.perf_counter()
            pong = await ws.ping()
            await pong
            rtts_ms.append((time.perf_counter() - sent) * 1000)

        transport = ws.transport
        sent = depth_frames = 0
        started = time.perf_counter()
        started_wall = time.time()
        next_depth = started
        next_ping = started + _PING_EVERY_S
        self.push_started.set()
        while (now := time.perf_counter()) - started < self.seconds:
            due = int(self.rate_fps * (now - started)) - sent
            now_ms = time.time_ns() // 1_000_000
            room = transport.get_write_buffer_size() < _MAX_WRITE_BUFFER_BYTES
            n = min(due, _BURST) if room else 0
            if n > 0:  # whole frames in one write: the server offers far more than the reader takes
                transport.write(b"".join(self._ticker(sent + k, now_ms) for k in range(n)))
                sent += n
            if now >= next_depth and room:
                transport.write(ws_frame(self._depth_diff(now_ms)))
                depth_frames += 1
                next_depth += _DEPTH_EVERY_S
            if now >= next_ping:
                task = asyncio.ensure_future(ping())
                pings.add(task)
                task.add_done_callback(pings.discard)
                next_ping += _PING_EVERY_S
            await asyncio.sleep(_TICK_S if due <= _BURST or not room else 0)
        push_s = time.perf_counter() - started
        self.push_over = True
        # A ping after the last frame: its pong means the reader has taken every frame.
        final = await ws.ping()
        await asyncio.wait_for(final, timeout=300)
        delivered_s = time.perf_counter() - started
        for task in list(pings):
            task.cancel()
        rtts_ms.sort()
        return {
            "push_started_wall_s": started_wall,
            "push_s": push_s,
            "delivered_s": delivered_s,
            "ticker_frames": sent,
            "depth_frames": depth_frames,
            "target_frames": int(self.rate_fps * self.seconds),
            "ping_rtt_ms": rtts_ms,
            "snapshots": self.snapshots,
        }


async def start_loopback_app(app: web.Application, **runner_options: Any) -> tuple[web.AppRunner, int]:
    """Serve ``app`` on 127.0.0.1 at a free port; the caller cleans the runner up."""
    runner = web.AppRunner(app, **runner_options)
    await runner.setup()
    await web.TCPSite(runner, HOST, 0).start()
    return runner, int(runner.addresses[0][1])


async def _serve(rate_fps: float, seconds: float, conn: Connection) -> None:
    venue = _Venue(rate_fps, seconds)
    app = web.Application()
    app.router.add_get("/api/v3/depth", venue.rest_depth)
    runner, rest_port = await start_loopback_app(app, access_log=None)
    loop = asyncio.get_running_loop()
    async with serve(venue.handler, HOST, 0, compression=None) as server:
        ws_port = next(iter(server.sockets)).getsockname()[1]
        conn.send((ws_port, rest_port))
        stats = await venue.done
        stats["snapshots"] = venue.snapshots
        conn.send(stats)
        await loop.run_in_executor(None, conn.recv)  # the bench says stop
    await runner.cleanup()


def _server_main(rate_fps: float, seconds: float, conn: Connection) -> None:
    asyncio.run(_serve(rate_fps, seconds, conn))


# -- the bench side ------------------------------------------------------------------------


def _pct(values: list[float], q: float) -> float:
    return round(values[min(int(q * len(values)), len(values) - 1)], 1)


async def _scrape_events(session: aiohttp.ClientSession, url: str, keep: Path) -> float | None:
    try:
        async with session.get(url) as resp:
            text = await resp.text()
    except (aiohttp.ClientError, TimeoutError):
        return None
    keep.write_text(text)
    return _metric_sum(text, ("liqmon_events_total", {}))


def _metric_sum(text: str, sample: tuple[str, dict[str, str]]) -> float:
    """Sum of the samples of that name whose labels include those given (prometheus_client's parser)."""
    name, labels = sample
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and all(s.labels.get(key) == value for key, value in labels.items())
    )


async def _poll_server(conn: Connection, live: asyncio.subprocess.Process, timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while not conn.poll():
        if live.returncode is not None:
            raise RuntimeError(f"liqmon live exited early with code {live.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the websocket server did not finish within {timeout_s:.0f} s")
        await asyncio.sleep(0.1)
    return conn.recv()


async def _drive(
    bootstrap: str, conn: Connection, ws_port: int, rest_port: int, metrics_port: int,
    live_config: Path, workdir: Path, seconds: float,
) -> dict[str, Any]:
    alerts: list[tuple[float, Alert]] = []
    samples: list[tuple[float, float]] = []
    stop = asyncio.Event()
    # A short fetch wait: the reader's own polling must not add to the measured latency.
    consumer = AIOKafkaConsumer(topics.ALERTS, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                **kafka_client_options(),
                                enable_auto_commit=False, fetch_max_wait_ms=10)
    await consumer.start()

    async def scrape() -> None:
        url = f"http://{HOST}:{metrics_port}/metrics"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            while not stop.is_set():
                value = await _scrape_events(session, url, workdir / "worker-metrics-e2e.txt")
                if value is not None:
                    samples.append((time.time(), value))
                await asyncio.sleep(0.25)

    tasks = [asyncio.ensure_future(collect_alerts(consumer, stop, lambda t, a: alerts.append((t, a)))),
             asyncio.ensure_future(scrape())]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIQMON_")}
    env.update({"LIQMON_KAFKA_BOOTSTRAP": bootstrap, "LIQMON_BROKER_KIND": "tansu",
                "LIQMON_PARTITIONS": str(PARTITIONS), "LIQMON_LIVE_METRICS_PORT": "0"})
    live_log = workdir / "live-e2e.log"
    cmd = [sys.executable, "-m", "streams.cli", "live", "--config", str(live_config),
           "--ws-url", f"binance-spot=ws://{HOST}:{ws_port}",
           "--rest-url", f"binance-spot=http://{HOST}:{rest_port}",
           "--ws-url", f"binance-usdm=ws://{HOST}:{ws_port}",
           "--rest-url", f"binance-usdm=http://{HOST}:{rest_port}",
           "--duration", str(seconds + 600)]
    try:
        with live_log.open("wb") as log:
            live = await asyncio.create_subprocess_exec(*cmd, env=env, stdout=log, stderr=log,
                                                        stdin=asyncio.subprocess.DEVNULL)
        try:
            server = await _poll_server(conn, live, timeout_s=seconds + 300)
            if "error" in server:
                raise RuntimeError(f"websocket server: {server['error']}")
            await asyncio.sleep(1.0)  # the live process closes its open batches every 0.25 s
        finally:
            if live.returncode is None:
                live.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(live.wait(), timeout=60)
            except TimeoutError:
                live.kill()
                await live.wait()
        summary = _LIVE_SUMMARY.search(live_log.read_text(errors="replace"))
        if summary is None:
            raise RuntimeError(f"liqmon live printed no summary (exit {live.returncode}); see {live_log}")
        await send_end(bootstrap, "bench-e2e")
        wait_s = max(300.0, 20 * seconds)
        acks = await wait_acks(bootstrap, "bench-e2e", PARTITIONS, timeout_s=wait_s, global_stage=True)
        await asyncio.sleep(1.0)  # alerts were flushed before the acks; let the reader catch them
    finally:
        stop.set()
        for task in tasks:
            await task
        await consumer.stop()
    with (workdir / "alerts-e2e.jsonl").open("wb") as out:  # for a closer look
        for read_ms, alert in alerts:
            out.write(orjson.dumps({"read_ms": read_ms, **alert.as_dict()}) + b"\n")
    page_path = workdir / "worker-metrics-e2e.txt"
    page = page_path.read_text() if page_path.exists() else ""
    return _figures(server, summary, acks, alerts, samples, page)


def _figures(
    server: dict[str, Any], summary: re.Match[str], acks: list[MarketAck],
    alerts: list[tuple[float, Alert]], samples: list[tuple[float, float]], page: str,
) -> dict[str, Any]:
    live_frames, live_events = int(summary[1].replace(",", "")), int(summary[2].replace(",", ""))
    worker_events = sum(a.events for a in acks)
    start_s = float(server["push_started_wall_s"])
    delivered_at_s = start_s + float(server["delivered_s"])
    pushed = int(server["ticker_frames"]) + int(server["depth_frames"])
    by_kind: dict[str, list[float]] = {}
    for read_ms, alert in alerts:
        by_kind.setdefault(alert.kind, []).append(read_ms - alert.ts_ms)
    for values in by_kind.values():
        values.sort()
    latencies = by_kind.get(_PEG_KIND, [])
    if not latencies:
        raise RuntimeError("no peg alerts came back from alerts.cascade")
    firsts = [a.first_wall_s for a in acks if a.first_wall_s]
    first_s = min(firsts) if firsts else start_s
    final = samples[-1][1] if samples else 0.0
    done_s = next((t for t, v in samples if v >= final), samples[-1][0] if samples else delivered_at_s)
    worker_span_s = max(done_s - first_s, 1e-3)
    rtts: list[float] = server["ping_rtt_ms"]
    return {
        "server": {
            "frames_pushed": pushed,
            "bookticker_frames": int(server["ticker_frames"]),
            "depth_diff_frames": int(server["depth_frames"]),
            "rest_snapshots": int(server["snapshots"]),
            "push_s": round(float(server["push_s"]), 2),
            "frames_per_s": round(pushed / float(server["push_s"])),
            "bookticker_shortfall_frames": max(int(server["target_frames"]) - int(server["ticker_frames"]), 0),
            "ping_rtt_p50_ms": _pct(rtts, 0.5) if rtts else None,
            "ping_rtt_max_ms": round(rtts[-1], 1) if rtts else None,
        },
        "live": {
            "frames": live_frames,
            "events": live_events,
            "deadletters": int(summary[3]),
            "feed_alerts": int(summary[4]),
            "reconnects": int(summary[5]),
            "frames_shed": int(summary[6].replace(",", "")),
            "read_all_after_s": round(float(server["delivered_s"]), 2),
            "frames_per_s": round(live_frames / float(server["delivered_s"])),
        },
        "worker": {
            "events": worker_events,
            "events_not_processed": live_events - worker_events,
            "span_s": round(worker_span_s, 2),
            "events_per_s": round(worker_events / worker_span_s),
            "caught_up_after_last_frame_read_s": round(max(done_s - delivered_at_s, 0.0), 2),
            "alerts_acked": sum(a.alerts for a in acks),
            # Its own histogram: Kafka record timestamp → processed, mean over the run.
            "record_to_processed_mean_ms": round(1000 * _metric_sum(page, _LAT_SUM) / n_records, 1)
            if (n_records := _metric_sum(page, _LAT_COUNT)) else None,
            "market_records": int(_metric_sum(page, _LAT_COUNT)),
        },
        "liquidations": {
            "sent": int(server["liquidations_sent"]),
            "processed_by_worker": int(_metric_sum(page, _USDM_EVENTS)),
            "lost": int(server["liquidations_sent"]) - int(_metric_sum(page, _USDM_EVENTS)),
        },
        "alerts_read": len(alerts),
        "peg_alerts": len(latencies),
        "receive_to_alert_p50_ms": _pct(latencies, 0.50),
        "receive_to_alert_p99_ms": _pct(latencies, 0.99),
        "receive_to_alert_max_ms": round(latencies[-1], 1),
        "alert_latency_by_kind_ms": {
            kind: {"alerts": len(v), "p50": _pct(v, 0.5), "max": round(v[-1], 1)}
            for kind, v in sorted(by_kind.items())
        },
    }


def bench_e2e(rate_fps: float = 20_000, seconds: float = 10.0, *, workdir: Path, shed: bool = True) -> dict[str, Any]:
    """Websocket server → ``liqmon live`` → broker → worker → ``alerts.cascade``, on this machine."""
    engine_path = workdir / "e2e-engine.toml"
    engine_path.write_text(LATENCY_CONFIG)
    live_path = workdir / "e2e-live.toml"
    live_path.write_text(_live_config_text(shed))
    metrics_port = free_port()
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    server = ctx.Process(target=_server_main, args=(rate_fps, seconds, child), daemon=True)
    load_before = os.getloadavg()
    with embedded_broker(log_path=workdir / "broker-e2e.log") as broker:
        asyncio.run(ensure_topics(broker.bootstrap, PARTITIONS))
        env = worker_env(broker, engine_path)
        env["LIQMON_METRICS_PORT"] = str(metrics_port)
        worker = start_worker(env, workdir / "worker-e2e.log")
        try:
            asyncio.run(send_end(broker.bootstrap, "warmup-e2e"))
            asyncio.run(wait_acks(broker.bootstrap, "warmup-e2e", PARTITIONS, timeout_s=120, global_stage=True))
            server.start()
            try:
                if not parent.poll(60):
                    raise RuntimeError("the websocket server did not start")
                ws_port, rest_port = parent.recv()
                figures = asyncio.run(_drive(broker.bootstrap, parent, ws_port, rest_port, metrics_port,
                                             live_path, workdir, seconds))
            finally:
                if server.is_alive():
                    parent.send("stop")
                    server.join(10)
                if server.is_alive():
                    server.terminate()
                    server.join()
        finally:
            stop(worker)
    return {
        "rate_target_frames_per_s": rate_fps,
        "shed": shed,
        "seconds": seconds,
        "loadavg_1m_before": round(load_before[0], 2),
        "loadavg_1m_after": round(os.getloadavg()[0], 2),
        **figures,
    }
