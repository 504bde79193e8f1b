"""The embedded broker that cannot start says why in one line, at once: its port taken by
another process, a port that does not exist, a broker process that exits before it answers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from streams.kafka.broker import BrokerError, embedded_broker, free_port, wait_for_kafka


def _liqmon(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIQMON_")}
    return subprocess.run([sys.executable, "-m", "streams.cli", *args], env=env, capture_output=True, text=True,
                          timeout=120, check=False)


def test_a_port_another_process_listens_on_is_one_line_and_exit_2() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = _liqmon("broker", "--port", str(port))
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [f"liqmon: error: cannot listen on 127.0.0.1:{port}: Address already in use"]
    assert proc.stdout == ""


@pytest.mark.parametrize("port", ["65536", "-1"])
def test_a_port_that_does_not_exist_is_one_line_and_exit_2(port: str) -> None:
    proc = _liqmon("broker", "--port", port)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [f"liqmon: error: no such TCP port: {port} (1-65535)"]


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
