"""The e2e bench section at a low rate: a local Binance spot and USDⓈ-M server → ``liqmon live`` →
broker → worker → ``alerts.cascade``. Checks that alerts come back and that the counts agree from one
process to the next; no timing thresholds (the figures are measurements, not requirements)."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.e2e import bench_e2e

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.timeout(300)]


def test_bench_e2e_low_rate_figures_are_consistent(tmp_path: Path) -> None:
    result = bench_e2e(2_000, 3.0, workdir=tmp_path)
    server, live, worker = result["server"], result["live"], result["worker"]

    # The server pushed bookTicker frames and depth diffs; the live book started from REST.
    assert server["bookticker_frames"] > 0 and server["depth_diff_frames"] > 0
    assert server["frames_pushed"] == server["bookticker_frames"] + server["depth_diff_frames"]
    assert server["rest_snapshots"] >= 1
    # Every pushed frame and liquidation print reached the live process, processed or counted as
    # shed (plus the REST snapshots and at most one connection-reset frame), none was
    # dead-lettered, the connections never dropped.
    liquidations = result["liquidations"]
    arrived = server["frames_pushed"] + liquidations["sent"] - live["frames_shed"]
    assert arrived <= live["frames"] <= arrived + server["rest_snapshots"] + 1
    assert live["deadletters"] == 0 and live["reconnects"] == 0
    # Every liquidation print became an event the worker processed.
    assert liquidations["sent"] > 0 and liquidations["lost"] == 0
    assert liquidations["processed_by_worker"] == liquidations["sent"]
    # The worker processed exactly what the live process normalised.
    assert worker["events"] == live["events"] > 0
    assert worker["events_not_processed"] == 0

    # Peg alerts came back; every one the worker acknowledged was read back.
    assert result["peg_alerts"] > 0
    assert result["peg_alerts"] <= worker["alerts_acked"] <= result["alerts_read"]
    by_kind = result["alert_latency_by_kind_ms"]
    assert by_kind["peg_deviation"]["alerts"] == result["peg_alerts"]
    assert sum(k["alerts"] for k in by_kind.values()) == result["alerts_read"]
    assert result["receive_to_alert_p50_ms"] <= result["receive_to_alert_p99_ms"] <= result["receive_to_alert_max_ms"]
    assert result["receive_to_alert_p50_ms"] > 0

    # The artefacts a closer look needs are left in the work directory.
    assert (tmp_path / "alerts-e2e.jsonl").read_bytes().count(b"\n") == result["alerts_read"]
    assert "liqmon: live on 2 connections to binance-spot, binance-usdm" in (tmp_path / "live-e2e.log").read_text()
