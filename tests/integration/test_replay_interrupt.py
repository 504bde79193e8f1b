"""Ctrl-C during a replay stops it cleanly and still writes what it has (exit code 130)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from replay.capture import write_capture
from replay.importers import iter_file

pytestmark = pytest.mark.timeout(240)


@pytest.mark.parametrize("mode", ["inline", pytest.param("kafka", marks=pytest.mark.broker)])
def test_sigint_writes_partial_outputs(oct10_dir: Path, tmp_path: Path, mode: str) -> None:
    capture = tmp_path / "usde.jsonl.gz"
    write_capture(capture, iter_file(oct10_dir / "usde_usdt_binance_1m.csv"))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "streams.cli", "replay", "--capture", str(capture), "--speed", "2000",
           "--out", str(out), "--quiet", "--metrics-port", "0"]
    if mode == "inline":
        cmd.append("--inline")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIQMON_")}
    # Ctrl-C as a terminal sends it: the child starts with SIGINT at its default even when
    # this run inherited it ignored (a job started in the background by a script).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # a caught signal resets on exec
    try:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    finally:
        signal.signal(signal.SIGINT, previous)
    time.sleep(8 if mode == "kafka" else 4)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    summary = orjson.loads((out / "summary.json").read_bytes())
    assert summary["interrupted"] is True
    assert 0 < summary["frames"] < 4 * 1801  # stopped part-way, and said so
    assert (out / "alerts.jsonl").exists() and (out / "report.html").exists()
