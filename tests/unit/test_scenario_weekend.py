"""``stablecoin-weekend``: a market-wide depeg every source follows is never venue-local (issue 19).

Seeded synthetic weekend calibrated to the March 2023 USDC depeg: a USD book, a
USDT-quoted book converted with USDT/USD, an oracle with a heartbeat and a deviation
threshold, an hourly pool. Expected: ``peg_deviation`` on every source, no
``venue_local_depeg``, every calibration row within tolerance.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import orjson
import pytest

from monitor.config import load_config_text
from monitor.protocol import Alert
from replay.replayer import replay_inline
from replay.scenario import ScenarioResult, calibrate_scenario, generate

SOURCES = {"kraken", "binance-spot", "chainlink", "curve"}


@pytest.fixture(scope="module")
def weekend(tmp_path_factory: pytest.TempPathFactory) -> ScenarioResult:
    return generate("stablecoin-weekend", 1, tmp_path_factory.mktemp("weekend"))


def replay(result: ScenarioResult) -> list[Alert]:
    assert result.config_path is not None
    config = load_config_text(result.config_path.read_text())
    return asyncio.run(replay_inline(result.capture_path, config)).alerts


def test_every_calibration_row_passes(weekend: ScenarioResult) -> None:
    figures_of, rows = calibrate_scenario(weekend)
    assert figures_of == "the March 2023 USDC depeg"
    assert len(rows) == 10
    assert [r.figure for r in rows if not r.passed] == []


def test_peg_deviation_on_every_source_and_no_venue_local_depeg(weekend: ScenarioResult) -> None:
    alerts = replay(weekend)
    peg = [a for a in alerts if a.kind == "peg_deviation"]
    assert {a.venue for a in peg if a.severity == "critical"} >= SOURCES
    assert {a.venue for a in peg} == SOURCES | {"index"}
    assert all(a.asset == "USDC" for a in peg)
    assert [a for a in alerts if a.kind == "venue_local_depeg"] == []
    stage4 = [a for a in alerts if a.kind == "cascade_stage" and a.stage == 4]
    assert stage4 and "USDC depeg" in stage4[0].message


def test_same_seed_same_bytes_and_another_asset(tmp_path: Path, weekend: ScenarioResult) -> None:
    again = generate("stablecoin-weekend", 1, tmp_path / "again")
    assert again.capture_path.read_bytes() == weekend.capture_path.read_bytes()
    other = generate("stablecoin-weekend", 2, tmp_path / "other", {"asset": "PYUSD", "duration_s": 20 * 3_600})
    assert other.capture_path.read_bytes() != weekend.capture_path.read_bytes()
    alerts = replay(other)
    assert alerts and all(a.asset in ("PYUSD", None) for a in alerts)
    assert all("USDC" not in a.message and "USDe" not in a.message for a in alerts)
    assert not [a for a in alerts if a.kind == "venue_local_depeg"]


def test_cli_replays_the_scenario_with_its_own_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``liqmon replay --scenario stablecoin-weekend``: its engine.toml (USDC as the peg
    asset) is used without --config, and the table printed is the March 2023 one."""
    from streams.cli import main

    for name in [n for n in os.environ if n.startswith("LIQMON_")]:
        monkeypatch.delenv(name)
    out = tmp_path / "run"
    rc = main(["replay", "--scenario", "stablecoin-weekend", "--knob", "duration_s=36000",
               "--inline", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "calibration against the public figures of the March 2023 USDC depeg" in printed
    alerts = [orjson.loads(line) for line in (out / "alerts.jsonl").read_bytes().splitlines()]
    assert {a["venue"] for a in alerts if a["kind"] == "peg_deviation"} == SOURCES | {"index"}
    assert all(a["asset"] in ("USDC", None) for a in alerts)
    assert not [a for a in alerts if a["kind"] == "venue_local_depeg"]
