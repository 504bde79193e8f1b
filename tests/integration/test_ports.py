"""A port a command cannot take is one line saying which and why, at once, never a
traceback: the embedded broker's (taken by another process, out of range, a broker process
that exits before it answers) and the ``/metrics`` of a worker or of a replay's worker."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.kafka.broker import BrokerError, embedded_broker, free_port, start_broker, wait_for_kafka


def _liqmon(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LIQMON_")}
    return subprocess.run([sys.executable, "-m", "streams.cli", *args], env={**clean, **env}, capture_output=True,
                          text=True, timeout=300, check=False)


@contextlib.contextmanager
def _taken_port() -> Iterator[int]:
    """A loopback port another process (this one) listens on for the block."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield int(taken.getsockname()[1])


def test_a_port_another_process_listens_on_is_one_line_and_exit_2() -> None:
    with _taken_port() as port:
        proc = _liqmon("broker", "--port", str(port))
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [f"liqmon: error: cannot listen on 127.0.0.1:{port}: Address already in use"]
    assert proc.stdout == ""


@pytest.mark.parametrize("port", ["65536", "-1"])
def test_a_port_that_does_not_exist_is_one_line_and_exit_2(port: str) -> None:
    proc = _liqmon("broker", "--port", port)
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[-1] == f"liqmon broker: error: argument --port: not a TCP port: {port} (0-65535)"


def test_the_library_refuses_a_port_that_does_not_exist() -> None:
    with pytest.raises(BrokerError, match=r"no such TCP port: 70000 \(1-65535\)"):
        start_broker(70000)


def _metrics_line(port: int) -> str:
    return (f"cannot serve /metrics on 127.0.0.1:{port}: Address already in use "
            "(choose another port, or 0 to turn /metrics off)")


def test_a_worker_whose_metrics_port_is_taken_is_one_line_and_exit_2() -> None:
    with _taken_port() as port:
        proc = _liqmon("worker", LIQMON_METRICS_PORT=str(port))
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[-1] == f"liqmon: error: {_metrics_line(port)}"
    assert "Traceback" not in proc.stderr


def test_a_replay_whose_worker_cannot_serve_metrics_says_what_the_worker_said(tmp_path: Path, oct10_dir: Path) -> None:
    capture = tmp_path / "usde.jsonl.gz"
    assert _liqmon("import", str(oct10_dir / "usde_usdt_binance_1m.csv"), "--out", str(capture)).returncode == 0
    with _taken_port() as port:
        proc = _liqmon("replay", "--capture", str(capture), "--quiet", "--out", str(tmp_path / "out"),
                       "--metrics-port", str(port))
    assert proc.returncode == 1
    last = proc.stderr.splitlines()[-1]
    assert last.startswith("liqmon: replay failed: the worker exited before ") and last.endswith(
        f"(see worker.log); it said: {_metrics_line(port)}"), proc.stderr


def test_a_replay_beside_another_takes_a_free_metrics_port(tmp_path: Path, oct10_dir: Path) -> None:
    """Two replays side by side: the second's worker finds 9466, the replays' default, taken
    (here by this test) and serves /metrics on a free port, said in its log (before: the
    worker exited and so did the replay). A port asked for is still refused when taken
    (above)."""
    capture = tmp_path / "usde.jsonl.gz"
    assert _liqmon("import", str(oct10_dir / "usde_usdt_binance_1m.csv"), "--out", str(capture)).returncode == 0
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        with contextlib.suppress(OSError):  # already taken by another process: as good
            held.bind(("127.0.0.1", 9466))
            held.listen()
        proc = _liqmon("replay", "--capture", str(capture), "--quiet", "--out", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    said = (tmp_path / "out" / "worker.log").read_text()
    assert "liqmon: /metrics on 127.0.0.1:" in said and "(9466 is taken: another replay?)" in said


def test_worker_once_without_a_bootstrap_is_one_line_and_exit_2() -> None:
    proc = _liqmon("worker", "--once")
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == ["liqmon: error: liqmon worker --once needs LIQMON_KAFKA_BOOTSTRAP (without "
                                        "it, `liqmon worker` starts an embedded broker)"]


def test_a_broker_process_that_exits_is_an_error_at_once_not_after_the_timeout() -> None:
    # A process that exits at once, on an address nobody answers on: without the process,
    # the wait would last the whole timeout (an hour here).
    gone = subprocess.Popen([sys.executable, "-c", "raise SystemExit(7)"])
    gone.wait(timeout=60)
    with pytest.raises(BrokerError, match=r"exited with code 7 before it answered"):
        wait_for_kafka(f"127.0.0.1:{free_port()}", timeout_s=3600, process=gone)


def test_the_port_of_a_stopped_broker_can_be_taken_again() -> None:
    # Connections the first broker closed may leave the address in TIME_WAIT: still free.
    with embedded_broker() as broker:
        port = broker.port
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
    with embedded_broker(port) as again:
        assert again.port == port
