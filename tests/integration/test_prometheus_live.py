"""Every Grafana panel and the paging rules against a real Prometheus scraping a replay.

Everything runs on 127.0.0.1:

- the synthetic 10 October scenario (``replay.scenario``, preset ``oct10``, seed 1, 20:00 →
  21:30 UTC, fewer altcoins and perp positions than the full preset so it fits the time
  budget; the crash, the Binance-only USDe depeg and the cascade stages are all in it) is
  replayed with ``liqmon replay --no-worker --speed 100`` into an embedded broker, with its
  loop positions and unified accounts, consumed by a ``liqmon worker`` subprocess that
  serves ``/metrics``;
- a ``liqmon live`` subprocess connects to a scripted Binance spot websocket and REST depth
  endpoint served by this test (one garbage frame, one sequence gap, one dropped
  connection, then a steady stream), so the feed staleness, gap, resync, reconnect and
  dead-letter series exist (the scenario itself has no bad input). It publishes to
  its own embedded broker: wall-clock market data must not mix with the replay's event
  time in the worker;
- Debian's ``prometheus`` scrapes both every second with a copy of
  ``deploy/prometheus/rules.yml`` (see :func:`rules_for_test` for what the copy changes).

Then every target expression of every dashboard in ``deploy/grafana/dashboards/`` (Grafana
variables replaced by their defaults, see :func:`grafana_vars`) is evaluated with
``/api/v1/query``; the test fails listing each query that errors or returns nothing, and
fails unless the USDe depeg, venue-local depeg and cascade-stage alerts reached
``firing`` while the replay ran and every rule evaluates without error. Template
variables (``label_values``) must have values, including their defaults.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from aiohttp import web
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from benchmarks.e2e import start_loopback_app
from replay.scenario import ScenarioResult, generate
from replay.scenario.config import hhmm
from streams.kafka.broker import embedded_broker, free_port
from streams.kafka.replay import ensure_topics

ROOT = Path(__file__).resolve().parents[2]
RULES_FILE = ROOT / "deploy" / "prometheus" / "rules.yml"
DASHBOARDS = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))
PROMETHEUS = shutil.which("prometheus")
HOST = "127.0.0.1"

pytestmark = [
    pytest.mark.prometheus,
    pytest.mark.broker,
    pytest.mark.slow,
    pytest.mark.timeout(360),
    pytest.mark.skipif(
        PROMETHEUS is None,
        reason="prometheus not installed (Debian package `prometheus`; .ci installs it)",
    ),
]

#: Scenario knobs: the oct10 preset up to 21:30 UTC (the cascade reaches stage 5 at about
#: 21:14:40, USDe on binance-spot is at high from about 21:17 and critical from about 21:19;
#: the ten minutes after that leave the alerts time to fire while the replay still runs),
#: 4 altcoins instead of 32 and 100 perp positions per book instead of 400 (frame count).
KNOBS: dict[str, Any] = {"duration_s": hhmm("21:30"), "n_alts": 4, "n_perp_positions_per_book": 100}
#: Replay pace: 100x event time (the 90 minutes take 54 s unless the worker is slower).
SPEED = "100"
#: Partitions of market.batches (the production default).
PARTITIONS = 8
#: Rules copied for the test get this `for:` (see rules_for_test).
TEST_FOR = "2s"
#: Rules that must have fired during the replay, with labels they must carry.
MUST_FIRE: dict[str, dict[str, str]] = {
    "LiqmonPegDepeg": {"asset": "USDe", "venue": "binance-spot", "kind": "peg_deviation"},
    "LiqmonPegDepegCritical": {"asset": "USDe", "venue": "binance-spot", "kind": "peg_deviation"},
    "LiqmonVenueLocalDepeg": {"asset": "USDe", "venue": "binance-spot", "kind": "venue_local_depeg"},
    "LiqmonCascadeStage": {"kind": "cascade_stage"},
}
#: Catalogue metrics (monitor/metrics.py) that no process sets, with the module that owns
#: the gap. A panel that reads one of these cannot have data, so it is expected empty — and the
#: test fails as soon as it has data, so this list cannot hide a regression or go stale.
NOT_EXPORTED: dict[str, str] = {
    "liqmon_shard_behind_records": "exported only by a global stage waiting for account shards "
    "(LIQMON_ACCOUNT_SHARDS > 0); test_faults.py's sharded runs check it",
}
#: Grafana's built-in interval variables, as Grafana would resolve them at a 1 s scrape.
BUILTIN_VARS = {"__rate_interval": "1m", "__interval": "15s", "__range": "1h"}
METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


# --- a scripted Binance spot endpoint for `liqmon live` ---------------------------------


@dataclass
class FakeBinance:
    """Binance spot combined stream + REST depth on 127.0.0.1, on its own thread and loop.

    The first connection streams depth diffs and book tickers, sends one frame that is not
    JSON (a dead letter), skips one range of update ids (a gap: the client resyncs from
    REST) and is then cut (a reconnect); later
    connections stream steadily until the client leaves. The REST snapshot is always the
    last update id sent, so every resync bridges.
    """

    last_u: int = 100
    connections: int = 0
    ws_port: int = 0
    rest_port: int = 0
    snapshots: int = 0
    ready: threading.Event = field(default_factory=threading.Event)
    _stop: asyncio.Event | None = None
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None

    def diff(self, i: int) -> dict[str, Any]:
        first, self.last_u = self.last_u + 1, self.last_u + 3
        bid = f"{115_990 - 10 * (i % 5)}.0"
        ask = f"{116_010 + 10 * (i % 5)}.0"
        data = {"e": "depthUpdate", "E": time.time_ns() // 1_000_000, "s": "BTCUSDT",
                "U": first, "u": self.last_u, "b": [[bid, str(1 + i % 3)]], "a": [[ask, str(1 + i % 2)]]}
        return {"stream": "btcusdt@depth@100ms", "data": data}

    def ticker(self, i: int) -> dict[str, Any]:
        data = {"u": self.last_u, "s": "BTCUSDT", "b": f"{115_995 - i % 3}.0", "B": "1",
                "a": f"{116_005 + i % 3}.0", "A": "1"}
        return {"stream": "btcusdt@bookTicker", "data": data}

    async def _ws(self, ws: ServerConnection) -> None:
        index = self.connections
        self.connections += 1
        try:
            sub = orjson.loads(await ws.recv())
            await ws.send(orjson.dumps({"result": None, "id": sub.get("id")}).decode())
            i = 0
            while True:
                if index == 0 and i == 10:
                    await ws.send("{not json")  # garbage: dead-lettered, no reconnect
                if index == 0 and i == 20:
                    self.last_u += 9  # three updates never sent: a sequence gap
                if index == 0 and i == 45:
                    ws.transport.abort()  # the venue drops the connection
                    return
                await ws.send(orjson.dumps(self.diff(i)).decode())
                await ws.send(orjson.dumps(self.ticker(i)).decode())
                i += 1
                await asyncio.sleep(0.1)
        except ConnectionClosed:
            return

    async def _depth(self, request: web.Request) -> web.Response:
        self.snapshots += 1
        body = {"lastUpdateId": self.last_u,
                "bids": [[f"{115_990 - 10 * k}.0", "2"] for k in range(5)],
                "asks": [[f"{116_010 + 10 * k}.0", "2"] for k in range(5)]}
        return web.json_response(body)

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        app = web.Application()
        app.router.add_get("/api/v3/depth", self._depth)
        runner, self.rest_port = await start_loopback_app(app)
        async with serve(self._ws, HOST, 0, compression=None) as server:
            self.ws_port = next(iter(server.sockets)).getsockname()[1]
            self.ready.set()
            await self._stop.wait()
        await runner.cleanup()

    def start(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._main(),),
                                        daemon=True)
        self._thread.start()
        assert self.ready.wait(10), "fake Binance endpoint did not start"

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)


def live_config(path: Path, binance: FakeBinance) -> Path:
    """`liqmon live` config: only binance-spot (BTCUSDT), pointed at the fake endpoint."""
    path.write_text(
        "[live]\nflush_interval_s = 0.25\nwatchdog_tick_s = 0.5\n"
        "[live.backoff]\ninitial_s = 0.2\nmax_s = 1.0\n"
        '[live.venues."binance-spot"]\n'
        'streams = ["btcusdt@depth@100ms", "btcusdt@bookTicker"]\n'
        f'ws_url = "ws://{HOST}:{binance.ws_port}"\nrest_url = "http://{HOST}:{binance.rest_port}"\n',
        encoding="utf-8",
    )
    return path


# --- processes ------------------------------------------------------------------------


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIQMON_")}
    env.update(extra)
    return env


@contextmanager
def process(args: list[str], log_path: Path, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """A subprocess logging to log_path, terminated (then killed) when the block ends."""
    with log_path.open("wb") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)


def liqmon_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "streams.cli", *args]


def tail(path: Path, n: int = 3000) -> str:
    return path.read_text(encoding="utf-8", errors="replace")[-n:] if path.exists() else ""


# --- Prometheus -----------------------------------------------------------------------


def rules_for_test(dst: Path) -> Path:
    """Copy of deploy/prometheus/rules.yml for a 1 s scrape of a compressed replay.

    Two changes, nothing else: every group evaluates every second (the recording group's
    15 s would only delay the recorded series), and every `for:` becomes TEST_FOR. The
    `for:` durations of the committed rules (30 s to 5 min) are wall time in production;
    here 100x event time makes a minute of depeg last under a second of wall time, so the
    committed durations would test the pace of the replay, not the rules. Expressions and
    labels are the committed ones.
    """
    doc = yaml.safe_load(RULES_FILE.read_text(encoding="utf-8"))
    for group in doc["groups"]:
        group["interval"] = "1s"
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = TEST_FOR
    dst.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return dst


def prometheus_config(dst: Path, rules: Path, worker_port: int, live_port: int) -> Path:
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
        "scrape_configs": [
            {"job_name": "liqmon-worker", "static_configs": [{"targets": [f"{HOST}:{worker_port}"]}]},
            {"job_name": "liqmon-live", "static_configs": [{"targets": [f"{HOST}:{live_port}"]}]},
        ],
    }
    dst.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return dst


@dataclass
class Prom:
    port: int

    def get(self, path: str, **params: str) -> Any:
        url = f"http://{HOST}:{self.port}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:  # 400/422: PromQL errors come back as JSON
            return json.loads(exc.read())

    def query(self, expr: str) -> tuple[str | None, list[dict[str, Any]]]:
        """(error or None, result vector/matrix) of an instant query at now."""
        body = self.get("/api/v1/query", query=expr)
        if body.get("status") != "success":
            return f"{body.get('errorType')}: {body.get('error')}", []
        result = body["data"]["result"]
        return None, result if isinstance(result, list) else [result]

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{HOST}:{self.port}/-/ready", timeout=2) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def targets_up(self) -> dict[str, str]:
        body = self.get("/api/v1/targets")
        return {t["labels"]["job"]: t["health"] for t in body["data"]["activeTargets"]}

    def alerts(self) -> list[dict[str, Any]]:
        alerts: list[dict[str, Any]] = self.get("/api/v1/alerts")["data"]["alerts"]
        return alerts


# --- dashboards -----------------------------------------------------------------------


def grafana_vars(dashboard: dict[str, Any]) -> dict[str, str]:
    """Values of a dashboard's template variables: its default, else All (its allValue)."""
    values = dict(BUILTIN_VARS)
    for var in dashboard.get("templating", {}).get("list", []):
        current = (var.get("current") or {}).get("value")
        if current:
            values[var["name"]] = current
        elif var.get("includeAll") and var.get("allValue"):
            values[var["name"]] = var["allValue"]
        else:
            raise AssertionError(f"{dashboard['uid']}: variable ${var['name']} has no default")
    return values


def substitute(expr: str, values: dict[str, str]) -> str:
    def repl(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in values:
            raise AssertionError(f"unknown Grafana variable ${name} in {expr!r}")
        return values[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", repl, expr)


@dataclass(frozen=True)
class PanelQuery:
    where: str  # "dashboard uid / panel title / refId"
    expr: str


def panel_queries() -> list[PanelQuery]:
    out: list[PanelQuery] = []
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text(encoding="utf-8"))
        values = grafana_vars(dashboard)
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                where = f"{dashboard['uid']} / {panel['title']} / {target['refId']}"
                out.append(PanelQuery(where, substitute(target["expr"], values)))
    return out


def variable_queries() -> list[tuple[str, str, str, str]]:
    """(dashboard uid, metric, label, default or "") of every label_values variable."""
    out: list[tuple[str, str, str, str]] = []
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text(encoding="utf-8"))
        for var in dashboard.get("templating", {}).get("list", []):
            match = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", var["definition"])
            assert match, f"{dashboard['uid']}: unsupported variable query {var['definition']!r}"
            default = (var.get("current") or {}).get("value") or ""
            out.append((dashboard["uid"], match.group(1), match.group(2), default))
    return out


def source_metrics(expr: str, recorded: dict[str, set[str]]) -> set[str]:
    """Exported metric names an expression reads, recording rules expanded to their sources."""
    names: set[str] = set()
    for token in METRIC_NAME.findall(expr):
        if token in recorded:
            names |= recorded[token]
        elif token.startswith("liqmon_"):
            names.add(re.sub(r"_(bucket|sum|count)$", "", token))
    return names


def recording_sources() -> dict[str, set[str]]:
    doc = yaml.safe_load(RULES_FILE.read_text(encoding="utf-8"))
    recorded: dict[str, set[str]] = {}
    for group in doc["groups"]:
        for rule in group["rules"]:
            if "record" in rule:
                recorded[rule["record"]] = source_metrics(rule["expr"], recorded)
    return recorded


def has_data(result: list[dict[str, Any]]) -> bool:
    """At least one series with a finite value (NaN everywhere is a panel without data)."""
    for series in result:
        samples = series.get("values") or ([series["value"]] if "value" in series else [])
        if any(float(v) == float(v) and abs(float(v)) != float("inf") for _t, v in samples):
            return True
    return False


def evaluate_panels(prom: Prom, queries: list[PanelQuery], recorded: dict[str, set[str]]) -> list[str]:
    """Problems: queries that error, are empty, or (NOT_EXPORTED only) unexpectedly have data."""
    problems: list[str] = []
    for q in queries:
        error, result = prom.query(q.expr)
        unexported = source_metrics(q.expr, recorded) & set(NOT_EXPORTED)
        if error is not None:
            problems.append(f"{q.where}: error {error}\n    {q.expr}")
        elif unexported:
            if has_data(result):
                problems.append(f"{q.where}: has data now; remove {sorted(unexported)} from NOT_EXPORTED")
        elif not has_data(result):
            problems.append(f"{q.where}: no data\n    {q.expr}")
    return problems


def firing(alerts: list[dict[str, Any]]) -> dict[str, list[dict[str, str]]]:
    out: dict[str, list[dict[str, str]]] = {}
    for alert in alerts:
        if alert["state"] == "firing":
            out.setdefault(alert["labels"]["alertname"], []).append(alert["labels"])
    return out


@dataclass
class FiringLog:
    """The alerts seen firing, and when each first fired (seconds since ``started``)."""

    started: float
    seen: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    first_s: dict[str, float] = field(default_factory=dict)

    def note(self, prom: Prom) -> None:
        for name, labels in firing(prom.alerts()).items():
            self.seen.setdefault(name, []).extend(labels)
            self.first_s.setdefault(name, time.monotonic() - self.started)


def missing_alerts(seen: dict[str, list[dict[str, str]]]) -> list[str]:
    missing = []
    for name, labels in MUST_FIRE.items():
        if not any(labels.items() <= got.items() for got in seen.get(name, [])):
            missing.append(f"{name}{labels}")
    return missing


def wait_until(check: Callable[[], bool], timeout_s: float, what: Callable[[], str],
               interval_s: float = 0.25) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what()}")
        time.sleep(interval_s)


def start_live_and_prometheus(stack: ExitStack, tmp_path: Path, binance: FakeBinance,
                              ports: tuple[int, int, int]) -> subprocess.Popen[bytes]:
    """`liqmon live` on ``binance`` and Prometheus scraping it and the worker; the live process.

    `liqmon live` runs as its module (the sub-command is not registered in streams/cli.py),
    on a broker of its own (its embedded-broker fallback cannot start inside its event
    loop): wall-clock live data must not reach the replay's worker."""
    worker_port, live_port, prom_port = ports
    live_broker = stack.enter_context(embedded_broker(log_path=tmp_path / "live-broker.log"))
    live_env = clean_env(LIQMON_KAFKA_BOOTSTRAP=live_broker.bootstrap, LIQMON_BROKER_KIND="tansu",
                         LIQMON_LIVE_METRICS_PORT=str(live_port))
    live = stack.enter_context(process(
        [sys.executable, "-m", "streams.cmd.live", "--config", str(live_config(tmp_path / "live.toml", binance))],
        tmp_path / "live.log", live_env))
    rules = rules_for_test(tmp_path / "rules.yml")
    config = prometheus_config(tmp_path / "prometheus.yml", rules, worker_port, live_port)
    stack.enter_context(process(
        [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address={HOST}:{prom_port}"],
        tmp_path / "prometheus.log"))
    return live


def replay_watched(stack: ExitStack, tmp_path: Path, run: tuple[ScenarioResult, dict[str, str]],
                   worker: subprocess.Popen[bytes], prom: Prom, alerts: FiringLog) -> None:
    """The scenario replayed through the worker at ``SPEED`` while the firing alerts are
    noted; it must end in time with the depeg, cascade and liquidation alerts."""
    scenario, worker_env = run
    replay_log = tmp_path / "replay.log"
    replay = stack.enter_context(process(
        liqmon_cmd("replay", "--capture", str(scenario.capture_path),
                   "--positions", str(scenario.positions_path),
                   "--accounts", str(scenario.accounts_path),
                   "--speed", SPEED, "--no-worker", "--quiet", "--out", str(tmp_path / "out")),
        replay_log, worker_env))
    while replay.poll() is None:
        alerts.note(prom)
        assert worker.poll() is None, "worker died\n" + tail(tmp_path / "worker.log")
        assert time.monotonic() - alerts.started < 270, "replay too slow\n" + tail(replay_log)
        time.sleep(0.5)
    assert replay.returncode == 0, tail(replay_log) + tail(tmp_path / "worker.log")
    summary = orjson.loads((tmp_path / "out" / "summary.json").read_bytes())
    kinds = {k.split(":")[0] for k in summary["alerts_by_kind_severity"]}
    assert {"venue_local_depeg", "cascade_stage", "unified_liquidation"} <= kinds, summary


def failing_rules(prom: Prom) -> list[str]:
    """Rules Prometheus could not evaluate, with their errors."""
    return [
        f"{rule['name']}: {rule.get('lastError')}"
        for group in prom.get("/api/v1/rules")["data"]["groups"]
        for rule in group["rules"]
        if rule.get("health") != "ok"
    ]


def empty_variables(prom: Prom) -> list[str]:
    """Dashboard template variables without values (or without their default)."""
    problems = []
    for uid, metric, label, default in variable_queries():
        values = prom.get(f"/api/v1/label/{label}/values", **{"match[]": metric})["data"]
        if not values or (default and default not in values):
            problems.append(f"{uid}: label_values({metric}, {label}) = {values}, default {default!r}")
    return problems


# --- the test -------------------------------------------------------------------------


def test_every_panel_has_data_and_depeg_and_cascade_alerts_fire(tmp_path: Path) -> None:
    assert PROMETHEUS is not None
    queries = panel_queries()
    recorded = recording_sources()
    assert len(DASHBOARDS) == 6 and len(queries) >= 30, "dashboards not found"
    for metric in NOT_EXPORTED:  # an entry must still name a panel, or it is stale
        assert any(metric in source_metrics(q.expr, recorded) for q in queries), metric

    worker_port, live_port, prom_port = free_port(), free_port(), free_port()
    prom = Prom(prom_port)
    binance = FakeBinance()
    timeline: dict[str, float] = {}
    started = time.monotonic()
    with ExitStack() as stack:
        binance.start()
        stack.callback(binance.stop)
        broker = stack.enter_context(embedded_broker(log_path=tmp_path / "broker.log"))
        # Topics first, as `liqmon replay` does before it starts a worker (a worker subscribing
        # to a missing topic gets it auto-created with the broker's partition count).
        asyncio.run(ensure_topics(broker.bootstrap, PARTITIONS))
        worker_env = clean_env(LIQMON_KAFKA_BOOTSTRAP=broker.bootstrap, LIQMON_BROKER_KIND="tansu",
                               LIQMON_PARTITIONS=str(PARTITIONS), LIQMON_METRICS_PORT=str(worker_port))
        worker = stack.enter_context(process(liqmon_cmd("worker"), tmp_path / "worker.log", worker_env))
        live = start_live_and_prometheus(stack, tmp_path, binance, (worker_port, live_port, prom_port))

        scenario = generate("oct10", 1, tmp_path / "scenario", knobs=KNOBS)
        timeline["scenario generated"] = time.monotonic() - started
        wait_until(prom.ready, 30, lambda: "prometheus /-/ready\n" + tail(tmp_path / "prometheus.log"))

        def logs() -> str:
            return "\n".join(f"--- {name}\n{tail(tmp_path / name)}"
                             for name in ("worker.log", "live.log", "prometheus.log"))

        wait_until(lambda: worker.poll() is None and live.poll() is None
                   and set(prom.targets_up().values()) == {"up"}, 60, lambda: "worker and live targets up\n" + logs())
        wait_until(lambda: binance.connections >= 2, 30, lambda: "the live feed to reconnect\n" + logs())
        timeline["targets up"] = time.monotonic() - started

        early = firing(prom.alerts())
        assert not set(early) & set(MUST_FIRE), f"paging before the replay: {early}"
        alerts = FiringLog(started)
        replay_watched(stack, tmp_path, (scenario, worker_env), worker, prom, alerts)
        timeline["replay done"] = time.monotonic() - started

        # Wait until the last values are scraped and recorded, then judge once.
        problems: list[str] = []

        def settled() -> bool:
            nonlocal problems
            alerts.note(prom)
            problems = evaluate_panels(prom, queries, recorded)
            return not problems and not missing_alerts(alerts.seen)

        deadline = time.monotonic() + 45
        while not settled() and time.monotonic() < deadline:
            time.sleep(1)
        timeline["checked"] = time.monotonic() - started

        rule_errors, variable_problems = failing_rules(prom), empty_variables(prom)
        assert live.poll() is None, "live feed died\n" + tail(tmp_path / "live.log")
        print(f"\ntimeline (s): { {k: round(v, 1) for k, v in timeline.items()} }")
        print(f"first firing (s): { {k: round(v, 1) for k, v in sorted(alerts.first_s.items())} }")
        print(f"{len(queries)} panel queries; expected empty (not exported): {NOT_EXPORTED}")

    assert not problems, "dashboard queries without data:\n" + "\n".join(problems)
    missing = missing_alerts(alerts.seen)
    assert not missing, f"alerts never fired: {missing}; fired: {sorted(alerts.seen)}"
    late = {name: round(alerts.first_s[name], 1) for name in MUST_FIRE
            if alerts.first_s[name] > timeline["replay done"]}
    assert not late, f"fired only after the replay ended at {timeline['replay done']:.1f} s: {late}"
    assert not rule_errors, "rules failing to evaluate:\n" + "\n".join(rule_errors)
    assert not variable_problems, "template variables without values:\n" + "\n".join(variable_problems)
