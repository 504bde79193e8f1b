"""Sinks under faults: the webhook receiver and Alertmanager go down, then come back.

A ``liqmon worker`` with ``LIQMON_WEBHOOK_URL`` and ``LIQMON_ALERTMANAGER_URL`` processes a
paced replay of the real 10 October USDe depeg. Once the first alert reached the test's
webhook receiver, the receiver and Debian's Alertmanager (committed config, receiver URL
templated) stop; the replay goes on raising alerts. After the replay, the outage lasts
``LIQMON_TEST_SINK_OUTAGE_S`` more seconds (default 5; the product has no limit: its retry
queue backs off up to 30 s between attempts for as long as it takes), then both start again
on the same ports. Every alert must then arrive, with its id and content unchanged,
Alertmanager must hold the right active alerts again (its memory was lost with the restart:
the sink re-sends what is active), and nothing may be counted as dropped. The cooldown is
off (``LIQMON_ALERT_COOLDOWN_MS=0``), so "every alert" is every alert of the run. The
bounded queue's overflow is covered in ``tests/unit/test_retry_queue.py``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from contextlib import ExitStack
from pathlib import Path

import pytest

from monitor.protocol import Alert
from streams.kafka.broker import embedded_broker, free_port
from streams.sinks.alert_sinks import CooldownSink, StdoutSink
from tests.integration.am_harness import (
    ALERTMANAGER,
    AlertmanagerProcess,
    HookReceiver,
    alertmanager_config,
    metric_value,
)
from tests.integration.test_alertmanager_live import WINDOW, expected_active, liqmon, liqmon_active
from tests.integration.test_pipeline import read_alerts, real_usde_capture
from tests.integration.test_prometheus_live import clean_env, process, tail, wait_until

__all__ = ["real_usde_capture"]  # a module fixture shared with test_pipeline

pytestmark = [
    pytest.mark.faults,
    pytest.mark.broker,
    pytest.mark.prometheus,
    pytest.mark.timeout(420),
    pytest.mark.skipif(ALERTMANAGER is None, reason="prometheus-alertmanager not installed (scripts/system-deps.sh)"),
]

OUTAGE_S = float(os.environ.get("LIQMON_TEST_SINK_OUTAGE_S", "5"))

#: Worker log lines that tell the group's and the consumer's story: the test's workers log at
#: info, so a failing wait shows both workers' joins, recoveries and sink retries.
STORY_MARKERS = ("Joined group", "Revoking", "(Re-)joining", "Recovery", "Fetcher", "Signal received",
                 "kept for retry", "receiver back", "dropped", "ERROR", "Traceback", "wait_empty")


def story(path: Path) -> str:
    """A failing wait's account of a worker: its group and recovery lines, then its log's end."""
    text = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
    lines = [line[:200] for line in text.splitlines() if any(marker in line for marker in STORY_MARKERS)]
    return f"--- {path.name}: story\n" + "\n".join(lines[-80:]) + f"\n--- {path.name}: end\n" + tail(path)


def children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (from /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def crash(worker: subprocess.Popen[bytes]) -> None:
    """SIGKILL a ``liqmon worker`` and its faust worker: nothing gets to drain."""
    for pid in [*children(worker.pid), worker.pid]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    worker.wait(timeout=10)


@pytest.mark.parametrize("killed", [False, True], ids=["same-worker", "worker-killed-in-the-outage"])
def test_every_alert_arrives_after_the_webhook_and_alertmanager_come_back(
    real_usde_capture: Path, tmp_path: Path, killed: bool
) -> None:
    """With ``killed``, the worker holding the waiting alerts is SIGKILLed in the outage and a
    new one started: the alerts' offsets were not committed, so the new worker sends them."""
    hook = HookReceiver()
    am = AlertmanagerProcess(alertmanager_config(tmp_path / "alertmanager.yml", hook.url("/am")), tmp_path)
    metrics_port = free_port()
    with ExitStack() as stack:
        stack.callback(hook.stop)
        stack.callback(am.stop)
        hook.start()
        am.start()
        broker = stack.enter_context(embedded_broker(log_path=tmp_path / "broker.log"))
        env = clean_env(LIQMON_KAFKA_BOOTSTRAP=broker.bootstrap, LIQMON_BROKER_KIND="tansu",
                        LIQMON_METRICS_PORT=str(metrics_port), LIQMON_WEBHOOK_URL=hook.url("/hook"),
                        LIQMON_ALERTMANAGER_URL=am.url, LIQMON_ALERT_COOLDOWN_MS="0",
                        LIQMON_ALERTMANAGER_RESEND_S="2", LIQMON_LOG_LEVEL="info")
        worker = stack.enter_context(process(liqmon("worker"), tmp_path / "worker.log", env))
        replay = stack.enter_context(process(
            liqmon("replay", "--capture", str(real_usde_capture), *WINDOW, "--no-worker", "--quiet",
                   "--out", str(tmp_path / "out")), tmp_path / "replay.log", env))
        # Both receivers go down once the first alert arrived; the replay goes on raising alerts.
        wait_until(lambda: bool(hook.on("/hook")) or replay.poll() is not None, 120,
                   lambda: "a first delivered alert\n" + tail(tmp_path / "worker.log"))
        hook.stop()
        am.stop()
        before_outage = len(hook.on("/hook"))
        assert replay.wait(timeout=240) == 0, tail(tmp_path / "replay.log") + tail(tmp_path / "worker.log")
        alerts = read_alerts(tmp_path / "out" / "alerts.jsonl")
        cooldown = CooldownSink(StdoutSink(), cooldown_ms=0)  # only drops a resolution never fired
        expected = {a["alert_id"]: a for a in alerts if cooldown.should_pass(Alert.from_obj(a))}
        assert len(expected) >= 5 and 1 <= before_outage < len(expected), (before_outage, len(expected))

        def queued(sink: str) -> float | None:
            return metric_value(metrics_port, "liqmon_alert_queue_depth", {"sink": sink})

        # The rest waits in the two queues while the receivers are down.
        waiting = len(expected) - before_outage
        wait_until(lambda: (queued("webhook") or 0) >= waiting and (queued("alertmanager") or 0) >= 1, 60,
                   lambda: f"queues filled: {queued('webhook')}, {queued('alertmanager')}\n"
                   + tail(tmp_path / "worker.log"))
        time.sleep(OUTAGE_S)  # the outage goes on; the worker keeps retrying
        assert len(hook.on("/hook")) == before_outage and worker.poll() is None
        worker_log_path = tmp_path / "worker.log"
        if killed:
            crash(worker)
            worker_log_path = tmp_path / "worker-after-crash.log"
            worker = stack.enter_context(process(liqmon("worker"), worker_log_path, env))
            wait_until(lambda: (queued("webhook") or 0) >= waiting, 120,
                       lambda: f"the new worker queued {queued('webhook')} of {waiting}\n"
                       + story(tmp_path / "worker.log") + story(worker_log_path))
        hook.start()  # same ports: the worker's settings do not change
        am.start()

        def delivered() -> set[str]:
            return {p.headers.get("X-Liqmon-Alert-Id", "") for p in hook.on("/hook")}

        wait_until(lambda: delivered() >= set(expected), 120,
                   lambda: f"{len(expected) - len(delivered() & set(expected))} alerts still missing\n"
                   + story(worker_log_path))
        want_active = expected_active(alerts, cooldown_ms=0)
        wait_until(lambda: {k: a["labels"]["severity"] for k, a in liqmon_active(am).items()} == want_active, 60,
                   lambda: f"Alertmanager active {sorted(liqmon_active(am))} != {want_active}")
        wait_until(lambda: queued("webhook") == 0 and queued("alertmanager") == 0, 60, lambda: "queues emptied")
        # The worker is still up, so an absent series means nothing was ever dropped.
        assert metric_value(metrics_port, "liqmon_worker_up", {}) == 1
        dropped = {(sink, reason): metric_value(metrics_port, "liqmon_alerts_dropped_total",
                                                {"sink": sink, "reason": reason})
                   for sink in ("webhook", "alertmanager") for reason in ("overflow", "rejected")}
        worker_log = tail(tmp_path / "worker.log", 200_000)

    assert set(dropped.values()) == {None}, dropped
    assert delivered() == set(expected)
    for post in hook.on("/hook"):
        assert post.body == expected[post.body["alert_id"]]  # same id, same alert
    assert "webhook: receiver unavailable" in worker_log
    assert "alertmanager: receiver unavailable" in worker_log
    if not killed:  # the new worker's first attempt may already find the receivers back
        assert "receiver back" in worker_log
