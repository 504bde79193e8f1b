"""``liqmon replay`` as a user runs it (inline, no broker): the story first, phases last, the cache."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import orjson

from replay.capture import write_capture
from tests.depeg_frames import usde_depeg_frames

T0 = 1_760_130_000_000  # 10 Oct 2025 21:00 UTC


def liqmon(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIQMON_")}
    return subprocess.run([sys.executable, "-m", "streams.cli", *args], capture_output=True, text=True,
                          timeout=300, env=env, check=False)


def depeg_day(tmp_path: Path) -> list[str]:
    """A USDe depeg on binance-spot only, and three Binance accounts holding USDe priced there."""
    write_capture(tmp_path / "day.jsonl", usde_depeg_frames(T0, 40, range(10, 30)))
    accounts = [{"account_id": f"a{i}", "venue": "binance", "model": "binance-pm",
                 "balances": [{"asset": "USDe", "amount": 1_000_000.0, "price_key": "USDe@binance"},
                              {"asset": "USDT", "amount": -loan, "price_key": "USDT"}]}
                for i, loan in enumerate((300_000.0, 700_000.0, 750_000.0))]
    (tmp_path / "accounts.jsonl").write_bytes(b"".join(orjson.dumps(a) + b"\n" for a in accounts))
    return ["--capture", str(tmp_path / "day.jsonl"), "--accounts", str(tmp_path / "accounts.jsonl"), "--inline"]


def test_the_first_lines_say_what_happened_and_the_last_the_time_of_each_phase(tmp_path: Path) -> None:
    args = depeg_day(tmp_path)
    proc = liqmon("replay", *args, "--out", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    n_alerts = len((tmp_path / "out" / "alerts.jsonl").read_bytes().splitlines())
    assert lines[0] == f"liqmon: what happened ({n_alerts} alerts)"
    assert re.match(r"  21:1\d:\d\d  first venue-local depeg: USDe on binance-spot at 0\.6500 USD", lines[1]), lines[1]
    liquidated = next(x for x in lines[:10] if "accounts liquidated:" in x)
    assert re.match(r"  21:1\d:\d\d  accounts liquidated: 2 unified accounts ", liquidated), liquidated
    assert "loops at risk: no loop positions were loaded" in proc.stdout
    assert "every alert" not in proc.stdout
    assert re.search(r"^time: inputs [\d.]+ s · replay [\d.]+ s · report [\d.]+ s · total [\d.]+ s$", lines[-1])
    assert (tmp_path / "out" / "snapshots.jsonl").read_bytes()

    verbose = liqmon("replay", *args, "--out", str(tmp_path / "verbose"), "--verbose")
    assert verbose.returncode == 0, verbose.stderr
    assert f"every alert ({n_alerts})" in verbose.stdout
    assert verbose.stdout.count("unified_liquidation ") >= 2 + proc.stdout.count("unified_liquidation ")


def test_a_second_run_takes_the_scenario_from_the_cache(tmp_path: Path) -> None:
    args = ["replay", "--scenario", "calm", "--knob", "duration_s=300", "--inline",
            "--scenario-cache", str(tmp_path / "cache")]
    first = liqmon(*args, "--out", str(tmp_path / "a"))
    assert first.returncode == 0, first.stderr
    assert "liqmon: scenario generated" in first.stderr
    second = liqmon(*args, "--out", str(tmp_path / "b"))
    assert second.returncode == 0, second.stderr
    assert "liqmon: scenario from the cache" in second.stderr
    assert (tmp_path / "a" / "alerts.jsonl").read_bytes() == (tmp_path / "b" / "alerts.jsonl").read_bytes()
    assert re.search(r"^time: scenario [\d.]+ s · inputs", second.stdout, re.MULTILINE)
    assert len(list((tmp_path / "cache").iterdir())) == 1
