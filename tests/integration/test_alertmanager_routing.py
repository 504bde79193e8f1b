"""The committed Alertmanager routing under the synthetic cascade, fed by liqmon and by Prometheus.

Everything on 127.0.0.1: the synthetic 10 October scenario (the same shortened preset as
``test_prometheus_live.py``: 20:00 → 21:30 UTC, 4 altcoins, 100 perp positions per book;
the cascade turns critical at 21:15) is replayed at 100x through an embedded broker and a
``liqmon worker`` with ``LIQMON_ALERTMANAGER_URL`` set. Debian's Prometheus scrapes the
worker with a copy of the rules (``rules_for_test``) and sends its alerts to the same
Debian Alertmanager, which runs the committed ``alertmanager.yml`` with only the receiver
URL rewritten to the test's webhook receiver.

Checked: the critical cascade inhibits the per-asset pages (Alertmanager reports them
suppressed, inhibited by it); Prometheus's rules reach Alertmanager; the receiver gets a
handful of grouped notifications for thousands of liqmon alerts. The figures are printed
(``-s``) for the README. ``LIQMON_TEST_ROUTING_DAY=full`` replays the whole six-hour preset
at full speed instead (minutes; used to measure the README figure).
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from replay.scenario import generate
from streams.kafka.broker import embedded_broker, free_port
from tests.integration.am_harness import ALERTMANAGER, AlertmanagerProcess, HookReceiver, alertmanager_config
from tests.integration.test_prometheus_live import (
    KNOBS,
    PROMETHEUS,
    Prom,
    clean_env,
    process,
    prometheus_config,
    rules_for_test,
    tail,
    wait_until,
)

pytestmark = [
    pytest.mark.prometheus,
    pytest.mark.broker,
    pytest.mark.slow,
    pytest.mark.timeout(2400 if os.environ.get("LIQMON_TEST_ROUTING_DAY") == "full" else 900),
    pytest.mark.skipif(ALERTMANAGER is None or PROMETHEUS is None,
                       reason="needs Debian's prometheus and prometheus-alertmanager (scripts/system-deps.sh)"),
]

FULL_DAY = os.environ.get("LIQMON_TEST_ROUTING_DAY") == "full"
SCENARIO_KNOBS: dict[str, Any] = {} if FULL_DAY else KNOBS
SPEED = "max" if FULL_DAY else "100"
#: Kinds the committed inhibition rule silences under a critical cascade.
PER_ASSET_KINDS = {"peg_deviation", "venue_local_depeg", "margin_call", "unified_liquidation",
                   "liquidity_withdrawal", "liquidity_vacuum", "book_gap"}
#: After the replay: quiet this long (wall) with no new notification counts as settled;
#: the committed group_interval is 1 min, so updates of a changed group come within it.
QUIET_S = 70.0


def prometheus_with_alertmanager(dst: Path, rules: Path, worker_port: int, am_port: int) -> Path:
    config = yaml.safe_load(prometheus_config(dst, rules, worker_port, free_port()).read_text(encoding="utf-8"))
    config["scrape_configs"] = [c for c in config["scrape_configs"] if c["job_name"] == "liqmon-worker"]
    config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]}
    dst.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return dst


def liqmon(*args: str) -> list[str]:
    return [sys.executable, "-m", "streams.cli", *args]


def is_critical_cascade(alert: dict[str, Any]) -> bool:
    labels = alert["labels"]
    return bool(labels.get("kind") == "cascade_stage" and labels.get("severity") == "critical")


def test_cascade_is_grouped_inhibited_and_prometheus_pages_reach_alertmanager(tmp_path: Path) -> None:
    hook = HookReceiver().start()
    am = AlertmanagerProcess(alertmanager_config(tmp_path / "alertmanager.yml", hook.url("/am")), tmp_path)
    worker_port, prom_port = free_port(), free_port()
    suppressed_by_cascade: dict[str, set[str]] = {}  # kind -> fingerprints seen inhibited by it
    prometheus_alerts: set[str] = set()
    with ExitStack() as stack:
        stack.callback(hook.stop)
        stack.callback(am.stop)
        am.start()
        broker = stack.enter_context(embedded_broker(log_path=tmp_path / "broker.log"))
        env = clean_env(LIQMON_KAFKA_BOOTSTRAP=broker.bootstrap, LIQMON_BROKER_KIND="tansu",
                        LIQMON_METRICS_PORT=str(worker_port), LIQMON_ALERTMANAGER_URL=am.url,
                        LIQMON_ALERTMANAGER_RESEND_S="5")
        worker = stack.enter_context(process(liqmon("worker"), tmp_path / "worker.log", env))
        rules = rules_for_test(tmp_path / "rules.yml")
        config = prometheus_with_alertmanager(tmp_path / "prometheus.yml", rules, worker_port, am.port)
        assert PROMETHEUS is not None
        stack.enter_context(process(
            [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{prom_port}"], tmp_path / "prometheus.log"))
        scenario = generate("oct10", 1, tmp_path / "scenario", knobs=SCENARIO_KNOBS)
        wait_until(Prom(prom_port).ready, 30, lambda: "prometheus ready\n" + tail(tmp_path / "prometheus.log"))
        replay = stack.enter_context(process(
            liqmon("replay", "--capture", str(scenario.capture_path), "--positions", str(scenario.positions_path),
                   "--accounts", str(scenario.accounts_path), "--speed", SPEED, "--no-worker", "--quiet",
                   "--out", str(tmp_path / "out")), tmp_path / "replay.log", env))

        def observe() -> None:
            alerts = am.alerts()
            cascade = {a["fingerprint"] for a in alerts if is_critical_cascade(a)}
            for alert in alerts:
                labels = alert["labels"]
                if "g0.expr" in alert.get("generatorURL", ""):
                    prometheus_alerts.add(labels["alertname"])
                if (labels.get("source") == "liqmon" and labels.get("kind") in PER_ASSET_KINDS
                        and alert["status"]["state"] == "suppressed"
                        and cascade & set(alert["status"]["inhibitedBy"])):
                    suppressed_by_cascade.setdefault(labels["kind"], set()).add(alert["fingerprint"])

        while replay.poll() is None:
            observe()
            assert worker.poll() is None, "worker died\n" + tail(tmp_path / "worker.log")
            time.sleep(1.0)
        assert replay.returncode == 0, tail(tmp_path / "replay.log") + tail(tmp_path / "worker.log")
        last_count, last_change = len(hook.on("/am")), time.monotonic()
        deadline = time.monotonic() + 240
        while time.monotonic() - last_change < QUIET_S and time.monotonic() < deadline:
            observe()
            if len(hook.on("/am")) != last_count:
                last_count, last_change = len(hook.on("/am")), time.monotonic()
            time.sleep(1.0)

    alerts = [orjson.loads(line) for line in (tmp_path / "out" / "alerts.jsonl").read_bytes().splitlines()]
    notifications = hook.on("/am")
    groups = Counter(orjson.dumps(p.body["groupLabels"], option=orjson.OPT_SORT_KEYS) for p in notifications)
    print(f"\n{len(alerts)} liqmon alerts -> {len(notifications)} notifications in {len(groups)} groups "
          f"(speed {SPEED}); suppressed by the critical cascade: "
          f"{ {kind: len(prints) for kind, prints in suppressed_by_cascade.items()} }; "
          f"from Prometheus: {sorted(prometheus_alerts)}")
    for labels, count in sorted(groups.items()):
        print(f"  {count} x {labels.decode()}")

    assert any(a["kind"] == "cascade_stage" and a["severity"] == "critical" for a in alerts), "no critical cascade"
    assert suppressed_by_cascade, "no per-asset page was inhibited by the critical cascade"
    assert {"LiqmonPegDepeg", "LiqmonCascadeStage"} <= prometheus_alerts, prometheus_alerts
    assert all(p.body["receiver"] == "risk-desk" for p in notifications)
    # Grouped: thousands of liqmon alerts (most of them per account) become a handful of
    # messages, one group per (alertname, kind, venue, asset), never one per account.
    assert len(alerts) >= 1000 and 0 < len(notifications) <= len(alerts) // 20, len(notifications)
    assert all(len(p.body["alerts"]) >= 1 for p in notifications)
