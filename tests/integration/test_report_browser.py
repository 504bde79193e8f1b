"""The report of a real replay in Debian's headless chromium: loads from disk with no console
errors and no network requests, and its charts have data. Loop positions and unified accounts
valued on Binance's USDe book are loaded, so every panel of the global stage (loop health,
ladder, accounts, forced sells, spiral) must be drawn: the test fails if one is empty. A PNG
screenshot is kept as a test artefact (pytest tmp dir, copied to artifacts/report.png; the path
is printed), taken before the panels are checked so a failure keeps it too.

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
from replay.report.recorder import ReportRecorder, write_report

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
    result = asyncio.run(replay_inline(capture, config, on_batch=rec.on_batch, on_alert=rec.on_alert,
                                       on_snapshot=rec.on_risk_snapshot, positions=loops(), accounts=accounts()))
    alerts = ordered_alerts(result.alerts)
    summary = write_summary(out / "summary.json", capture=capture, mode="inline", config_hash=config.config_hash,
                            stats=result.stats, alerts=alerts)
    path = out / "report.html"
    write_report(rec, path, title="10 Oct 2025: USDe and BTC book depth (real data)",
                 config_hash=config.config_hash, summary=summary)
    return path, summary


def loops() -> list[dict[str, Any]]:
    """USDe loops marked to Binance's book (the counterfactual of OCT10_FACTS), leverage spread out."""
    return [{"position_id": f"loop-{i}", "protocol": "aave-v3",
             "collateral": [{"asset": "USDe", "amount": 1_000_000.0, "liquidation_threshold": 0.93,
                             "price_key": "USDe@binance"}],
             "debt": [{"asset": "USDT", "amount": debt, "price_key": "USDT"}]}
            for i, debt in enumerate((500_000.0, 700_000.0, 800_000.0, 850_000.0, 880_000.0, 900_000.0))]


def accounts() -> list[dict[str, Any]]:
    """Binance portfolio-margin accounts holding USDe against a USDT loan, from safe to thin."""
    return [{"account_id": f"pm-{i}", "venue": "binance", "model": "binance-pm",
             "balances": [{"asset": "USDe", "amount": 1_000_000.0, "price_key": "USDe@binance"},
                          {"asset": "USDT", "amount": -loan, "price_key": "USDT", "loan_mmr": 0.05}],
             "collateral_rates": {"USDe": [[0, 0.95]]}}
            for i, loan in enumerate((300_000.0, 500_000.0, 600_000.0, 700_000.0, 750_000.0, 800_000.0))]


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

    shot = page.call("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                     clip={"x": 0, "y": 0, "width": 1400, "height": state["height"], "scale": 1})
    png = base64.b64decode(shot["data"])
    (tmp_path / "report.png").write_bytes(png)
    artifacts = REPO_ROOT / "artifacts"
    artifacts.mkdir(exist_ok=True)
    shutil.copyfile(tmp_path / "report.png", artifacts / "report.png")
    print(f"report screenshot: {artifacts / 'report.png'}")
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 50_000

    # Positions and accounts were loaded: every panel has data but the liquidation prints,
    # which this capture does not contain.
    assert state["noData"] == ["liquidations"], state["noData"]
    charts = {c["id"]: c for c in state["charts"]}
    assert set(charts) == {"chart-peg-usde", "chart-macro", "chart-loops", "chart-ladder", "chart-accounts",
                           "chart-forced", "chart-spiral", "chart-depth", "chart-cascade"}
    span = [summary["first_event_utc"].replace(" ", "T"), summary["last_event_utc"].replace(" ", "T")]
    for chart in charts.values():
        assert chart["plotted"] and chart["traces"] > 0 and sum(chart["points"]) > 0, chart
        if chart["id"] != "chart-ladder":  # the ladder's axis is the price drop
            assert chart["xrange"] == span, chart  # every time axis shows the whole replay
    assert min(charts["chart-peg-usde"]["points"]) > 100  # Binance and Uniswap both drawn
    assert charts["chart-cascade"]["points"][0] >= 2  # the stage line, then alert markers by severity
    assert sum(charts["chart-cascade"]["points"][1:]) > 0
    assert state["traces"] >= sum(c["traces"] for c in charts.values())
    assert max(charts["chart-accounts"]["points"]) > 0 and max(charts["chart-forced"]["points"]) > 0
