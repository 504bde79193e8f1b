"""liqmon's alerts through Debian's real Alertmanager, with the committed routing.

Everything runs on 127.0.0.1: an embedded broker, ``liqmon worker`` / ``liqmon replay``
subprocesses with ``LIQMON_ALERTMANAGER_URL`` set, ``prometheus-alertmanager`` with a copy of
``deploy/alertmanager/alertmanager.yml`` whose only change is the receiver URL (the test's
own webhook receiver, :mod:`tests.integration.am_harness`).

The input is the real 10 October USDe data (Binance minute bars and the Uniswap v3 pool):
a Binance-only depeg that escalates to critical and clears, so alerts fire, change
severity and resolve.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import orjson
import pytest

from monitor.protocol import Alert
from streams.kafka.broker import embedded_broker, free_port
from streams.kafka.replay import ensure_topics
from streams.sinks.alert_sinks import CooldownSink, StdoutSink, alert_key, is_resolved
from tests.integration.am_harness import (
    ALERTMANAGER,
    AlertmanagerProcess,
    HookReceiver,
    alertmanager_config,
)
from tests.integration.test_pipeline import read_alerts, real_usde_capture
from tests.integration.test_prometheus_live import FakeBinance, clean_env, live_config, process, tail, wait_until

__all__ = ["real_usde_capture"]  # a module fixture shared with test_pipeline

pytestmark = [
    pytest.mark.prometheus,
    pytest.mark.broker,
    pytest.mark.slow,
    pytest.mark.timeout(420),
    pytest.mark.skipif(ALERTMANAGER is None, reason="prometheus-alertmanager not installed (scripts/system-deps.sh)"),
]

#: The depeg and its recovery (21:00 → 23:40 UTC) at 240x event time: about 40 s, so the
#: test can see alerts active before they resolve.
WINDOW = ("--from", "2025-10-10T21:00", "--to", "2025-10-10T23:40", "--speed", "240")


def liqmon(*args: str) -> list[str]:
    return [sys.executable, "-m", "streams.cli", *args]


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[tuple[AlertmanagerProcess, HookReceiver]]:
    hook = HookReceiver().start()
    am = AlertmanagerProcess(alertmanager_config(tmp_path / "alertmanager.yml", hook.url("/am")), tmp_path)
    try:
        yield am.start(), hook
    finally:
        am.stop()
        hook.stop()


def expected_active(alerts: list[dict[str, Any]], cooldown_ms: int) -> dict[tuple[Any, ...], str]:
    """(kind, venue, asset) → severity that should be firing in Alertmanager at the end.

    The cooldown decides per key in event order, which is the order the worker emits a
    key's alerts; a passed alert replaces the key's previous one, a resolution ends it.
    """
    cooldown = CooldownSink(StdoutSink(), cooldown_ms=cooldown_ms)
    active: dict[tuple[Any, ...], str] = {}
    for alert in (Alert.from_obj(a) for a in alerts):
        if not cooldown.should_pass(alert):
            continue
        if is_resolved(alert):
            active.pop(alert_key(alert), None)
        else:
            active[alert_key(alert)] = alert.severity
    return active


def liqmon_active(am: AlertmanagerProcess) -> dict[tuple[Any, ...], dict[str, Any]]:
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    for alert in am.alerts():
        labels = alert["labels"]
        if labels.get("source") == "liqmon":
            key = (labels["kind"], labels.get("venue"), labels.get("asset"))
            assert key not in out, f"two alerts active for {key}: {out[key]['labels']} and {labels}"
            out[key] = alert
    return out


def test_worker_alerts_fire_resend_and_resolve_in_alertmanager(
    real_usde_capture: Path, alertmanager: tuple[AlertmanagerProcess, HookReceiver], tmp_path: Path
) -> None:
    am, hook = alertmanager
    metrics_port = free_port()
    seen_active: dict[tuple[Any, ...], set[str]] = {}
    with ExitStack() as stack:
        broker = stack.enter_context(embedded_broker(log_path=tmp_path / "broker.log"))
        env = clean_env(LIQMON_KAFKA_BOOTSTRAP=broker.bootstrap, LIQMON_BROKER_KIND="tansu",
                        LIQMON_METRICS_PORT=str(metrics_port), LIQMON_ALERTMANAGER_URL=am.url,
                        LIQMON_ALERTMANAGER_RESEND_S="1")
        worker = stack.enter_context(process(liqmon("worker"), tmp_path / "worker.log", env))
        replay = stack.enter_context(process(
            liqmon("replay", "--capture", str(real_usde_capture), *WINDOW, "--no-worker", "--quiet",
                   "--out", str(tmp_path / "out")), tmp_path / "replay.log", env))
        while replay.poll() is None:
            for key, alert in liqmon_active(am).items():
                seen_active.setdefault(key, set()).add(alert["labels"]["severity"])
            assert worker.poll() is None, "worker died\n" + tail(tmp_path / "worker.log")
            time.sleep(0.5)
        assert replay.returncode == 0, tail(tmp_path / "replay.log") + tail(tmp_path / "worker.log")
        alerts = read_alerts(tmp_path / "out" / "alerts.jsonl")
        by_id = {a["alert_id"]: a for a in alerts}
        want = expected_active(alerts, cooldown_ms=300_000)
        assert want, "the depeg left nothing active: nothing to check"

        def final_state() -> bool:
            return {k: a["labels"]["severity"] for k, a in liqmon_active(am).items()} == want

        wait_until(final_state, 60, lambda: f"active {liqmon_active(am)} != {want}\n" + tail(tmp_path / "worker.log"))
        active = liqmon_active(am)

        # Labels are the identity (the alert_id label: the liqmon alert that opened this
        # state), annotations the figures of the latest liqmon alert in it.
        for (kind, venue, asset), item in active.items():
            labels, notes = item["labels"], item["annotations"]
            assert labels["kind"] == kind and labels["alertname"].startswith("Liqmon")
            assert (labels.get("venue"), labels.get("asset")) == (venue, asset)
            opener = by_id[labels["alert_id"]]
            assert (opener["kind"], opener["severity"]) == (kind, labels["severity"])
            source = by_id[notes["latest_alert_id"]]
            assert (source["kind"], source["severity"]) == (kind, labels["severity"])
            assert source["ts_ms"] >= opener["ts_ms"]
            assert notes["message"] == source["message"]
            assert orjson.loads(notes["evidence"]) == source["evidence"]
            assert notes["config_hash"] == source["config_hash"]

        # Re-sent while active: Alertmanager sees the alert updated again with no new liqmon alert.
        key = next(iter(active))
        first_update = active[key]["updatedAt"]
        wait_until(lambda: liqmon_active(am)[key]["updatedAt"] != first_update, 30,
                   lambda: f"a re-send of {key} (updatedAt still {first_update})")

        # Resolved when the condition cleared: seen firing during the replay, gone at the end.
        resolved_keys = {alert_key(a) for a in map(Alert.from_obj, alerts) if is_resolved(a)} - set(want)
        assert resolved_keys, "no liqmon alert resolved: the capture lost its recovery"
        for gone in resolved_keys:
            assert gone in seen_active, f"{gone} never seen active in Alertmanager"
            assert gone not in active

        # Notifications reached the receiver, built by the committed routing.
        wait_until(lambda: any(p.body["status"] == "resolved" or
                               any(a["status"] == "resolved" for a in p.body["alerts"]) for p in hook.on("/am")),
                   150, lambda: f"a resolved notification; got {[p.body['status'] for p in hook.on('/am')]}")
        notifications = hook.on("/am")
        assert all(p.body["receiver"] == "risk-desk" for p in notifications)
        notified = {a["labels"]["alertname"] for p in notifications for a in p.body["alerts"]}
        assert {"LiqmonPegDeviation", "LiqmonCascadeStage"} <= notified, notified
        print(f"\n{len(alerts)} liqmon alerts -> {len(notifications)} notifications: "
              f"{[(p.body['groupLabels'], p.body['status'], len(p.body['alerts'])) for p in notifications]}")


def test_replay_started_worker_delivers_to_alertmanager(
    real_usde_capture: Path, alertmanager: tuple[AlertmanagerProcess, HookReceiver], tmp_path: Path
) -> None:
    # The reported failure: `liqmon replay` with LIQMON_ALERTMANAGER_URL set starts its own
    # worker, which died at start-up; the replay then ended in a traceback.
    am, _hook = alertmanager
    env = clean_env(LIQMON_ALERTMANAGER_URL=am.url, LIQMON_REPLAY_METRICS_PORT="0")
    command = liqmon("replay", "--capture", str(real_usde_capture), "--quiet", "--out", str(tmp_path / "out"))
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240, check=False)
    worker_log = (tmp_path / "out" / "worker.log").read_text(encoding="utf-8", errors="replace")
    assert proc.returncode == 0, proc.stderr[-2000:] + worker_log[-2000:]
    assert "Traceback" not in worker_log, worker_log[-3000:]
    alerts = read_alerts(tmp_path / "out" / "alerts.jsonl")
    ids = {a["alert_id"] for a in alerts}
    delivered = [a for a in am.alerts() if a["labels"].get("source") == "liqmon"]
    assert delivered, "nothing reached Alertmanager\n" + worker_log[-2000:]
    assert {a["labels"]["alert_id"] for a in delivered} <= ids


def test_an_alertmanager_url_that_cannot_work_fails_the_worker_in_one_line(tmp_path: Path) -> None:
    env = clean_env(LIQMON_ALERTMANAGER_URL="alertmanager:9093", LIQMON_METRICS_PORT="0")
    for command in (liqmon("worker"), liqmon("replay", "--capture", str(tmp_path / "none.jsonl"))):
        proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)
        assert proc.returncode == 2
        assert proc.stderr.strip().splitlines() == [
            "liqmon: error: invalid setting: LIQMON_ALERTMANAGER_URL: not an http(s) URL "
            "(expected http[s]://host[:port]/path)"
        ]


def test_live_feed_alerts_reach_alertmanager(
    alertmanager: tuple[AlertmanagerProcess, HookReceiver], tmp_path: Path
) -> None:
    # `liqmon live` publishes its feed alerts (here a book sequence gap on a scripted
    # Binance endpoint) to alerts.cascade; the worker on the same broker delivers them.
    am, _hook = alertmanager
    binance = FakeBinance()
    with ExitStack() as stack:
        binance.start()
        stack.callback(binance.stop)
        broker = stack.enter_context(embedded_broker(log_path=tmp_path / "broker.log"))
        asyncio.run(ensure_topics(broker.bootstrap, 8))
        env = clean_env(LIQMON_KAFKA_BOOTSTRAP=broker.bootstrap, LIQMON_BROKER_KIND="tansu",
                        LIQMON_METRICS_PORT="0", LIQMON_LIVE_METRICS_PORT="0", LIQMON_ALERTMANAGER_URL=am.url)
        worker = stack.enter_context(process(liqmon("worker"), tmp_path / "worker.log", env))
        config = live_config(tmp_path / "live.toml", binance)
        live = stack.enter_context(process(liqmon("live", "--config", str(config)), tmp_path / "live.log", env))

        def book_gap() -> bool:
            assert worker.poll() is None, "worker died\n" + tail(tmp_path / "worker.log")
            assert live.poll() is None, "live died\n" + tail(tmp_path / "live.log")
            return any(a["labels"].get("kind") == "book_gap" and a["labels"].get("source") == "liqmon"
                       for a in am.alerts())

        wait_until(book_gap, 120, lambda: "a book_gap alert in Alertmanager\n" + tail(tmp_path / "live.log"))
    gap = next(a for a in am.alerts() if a["labels"].get("kind") == "book_gap")
    assert gap["labels"]["venue"] == "binance-spot" and gap["labels"]["alert_id"]
