"""The report of a real replay in Debian's headless chromium: loads from disk with no console
errors and no network requests, and its charts have data. A PNG screenshot is kept as a test
artefact (pytest tmp dir, copied to artifacts/report.png).

Chromium is driven over the DevTools protocol (``--remote-debugging-port``, websockets): the
console and network listeners are attached before the page is opened, so nothing is missed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import shutil
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

from monitor.config import EngineConfig
from replay.capture import write_capture
from replay.importers import iter_file, merge_captures
from replay.outputs import ordered_alerts, write_summary
from replay.replayer import replay_inline
from replay.report import ReportRecorder, write_report

pytestmark = pytest.mark.browser

REPO_ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium")
FILES = ("usde_usdt_binance_1m.csv", "usde_usdt_uniswap_v3_blocks.csv", "btcusdt_binance_bookdepth.csv")
#: Guard against a hung browser only; nothing here asserts on time.
GUARD_S = 120.0
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync")


@pytest.fixture(scope="module")
def report(oct10_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """report.html of an inline replay of the real USDe and BTC book-depth data, and its summary."""
    out = tmp_path_factory.mktemp("report")
    capture = out / "oct10.jsonl.gz"
    write_capture(capture, merge_captures([iter_file(oct10_dir / name) for name in FILES]))
    config = EngineConfig()
    rec = ReportRecorder(config)
    result = asyncio.run(replay_inline(capture, config, on_batch=rec.on_batch, on_alert=rec.on_alert))
    alerts = ordered_alerts(result.alerts)
    summary = write_summary(out / "summary.json", capture=capture, mode="inline", config_hash=config.config_hash,
                            stats=result.stats, alerts=alerts)
    path = out / "report.html"
    write_report(rec, path, title="10 Oct 2025: USDe and BTC book depth (real data)",
                 config_hash=config.config_hash, summary=summary)
    return path, summary


class Cdp:
    """A minimal DevTools-protocol client for one page target; events are kept in order."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        my_id = self.next_id
        self.ws.send(json.dumps({"id": my_id, "method": method, "params": params}))
        deadline = time.monotonic() + GUARD_S
        while time.monotonic() < deadline:
            msg = json.loads(self.ws.recv(timeout=GUARD_S))
            if msg.get("id") == my_id:
                if "error" in msg:
                    raise AssertionError(f"{method}: {msg['error']}")
                result: dict[str, Any] = msg.get("result", {})
                return result
            if "method" in msg:
                self.events.append(msg)
        raise AssertionError(f"no answer to {method}")

    def wait_event(self, method: str) -> dict[str, Any]:
        for msg in self.events:
            if msg["method"] == method:
                return msg
        deadline = time.monotonic() + GUARD_S
        while time.monotonic() < deadline:
            event: dict[str, Any] = json.loads(self.ws.recv(timeout=GUARD_S))
            if "method" in event:
                self.events.append(event)
                if event["method"] == method:
                    return event
        raise AssertionError(f"no {method} event")


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Cdp]:
    """A headless chromium on about:blank, its page target connected over the DevTools protocol."""
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (Debian package 'chromium'; scripts/system-deps.sh installs it)")
    proc = subprocess.Popen(
        [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--remote-debugging-port=0",
         "--remote-allow-origins=*", "--window-size=1400,3000", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    stderr_lines: list[str] = []
    found = threading.Event()

    def read_stderr() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            stderr_lines.append(line)
            if "DevTools listening on" in line:
                found.set()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    try:
        if not found.wait(GUARD_S):
            pytest.fail("chromium did not start its DevTools endpoint:\n" + "".join(stderr_lines[-20:]))
        match = next(m for line in stderr_lines if (m := re.search(r"ws://([\d.]+:\d+)/", line)))
        with urllib.request.urlopen(f"http://{match.group(1)}/json/list", timeout=GUARD_S) as resp:
            targets = json.load(resp)
        target = next(t for t in targets if t.get("type") == "page")
        with connect(target["webSocketDebuggerUrl"], max_size=None, open_timeout=GUARD_S) as ws:
            yield Cdp(ws)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        reader.join(timeout=5)


_STATE_JS = """
(() => {
  const charts = Array.from(document.querySelectorAll('div.chart')).map(div => ({
    id: div.id,
    plotted: !!div._fullLayout,
    traces: div.querySelectorAll('.trace').length,
    points: (div.calcdata || []).map(cd => cd.filter(p => p && p.y !== undefined && p.y === p.y).length),
    xrange: div._fullLayout ? div._fullLayout.xaxis.range : null,
  }));
  return JSON.stringify({
    traces: document.querySelectorAll('.plotly .trace').length,
    charts: charts,
    noData: Array.from(document.querySelectorAll('.no-data')).map(d => d.dataset.chart),
    height: document.documentElement.scrollHeight,
  });
})()
"""


def test_report_loads_offline_without_errors_and_charts_have_data(
    report: tuple[Path, dict[str, Any]], page: Cdp, tmp_path: Path
) -> None:
    path, summary = report
    assert summary["alerts"] > 0
    for domain in ("Runtime", "Log", "Network", "Page"):
        page.call(f"{domain}.enable")
    page.call("Page.navigate", url=path.as_uri())
    page.wait_event("Page.loadEventFired")
    state = json.loads(page.call("Runtime.evaluate", expression=_STATE_JS, returnByValue=True)["result"]["value"])

    errors = [e for e in page.events if (
        (e["method"] == "Runtime.consoleAPICalled" and e["params"]["type"] in ("error", "assert"))
        or e["method"] == "Runtime.exceptionThrown"
        or (e["method"] == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")
    )]
    assert errors == []
    requested = [e["params"]["request"]["url"] for e in page.events if e["method"] == "Network.requestWillBeSent"]
    assert requested and all(url.startswith(("file:", "data:", "about:")) for url in requested), requested

    charts = {c["id"]: c for c in state["charts"]}
    assert set(charts) == {"chart-peg-usde", "chart-macro", "chart-depth", "chart-cascade"}
    span = [summary["first_event_utc"].replace(" ", "T"), summary["last_event_utc"].replace(" ", "T")]
    for chart in charts.values():
        assert chart["plotted"] and chart["traces"] > 0 and sum(chart["points"]) > 0, chart
        assert chart["xrange"] == span, chart  # every time axis shows the whole replay
    assert min(charts["chart-peg-usde"]["points"]) > 100  # Binance and Uniswap both drawn
    assert charts["chart-cascade"]["points"][0] >= 2  # the stage line, then alert markers by severity
    assert sum(charts["chart-cascade"]["points"][1:]) > 0
    assert state["traces"] >= sum(c["traces"] for c in charts.values())
    assert sorted(state["noData"]) == ["accounts", "ladder", "liquidations", "loops"]

    shot = page.call("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                     clip={"x": 0, "y": 0, "width": 1400, "height": state["height"], "scale": 1})
    png = base64.b64decode(shot["data"])
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 50_000
    (tmp_path / "report.png").write_bytes(png)
    artifacts = REPO_ROOT / "artifacts"
    artifacts.mkdir(exist_ok=True)
    shutil.copyfile(tmp_path / "report.png", artifacts / "report.png")
