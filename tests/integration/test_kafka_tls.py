"""liqmon over TLS: Debian's stunnel4 terminates TLS on 127.0.0.1 in front of the embedded broker.

The test makes its own CA and a server certificate for 127.0.0.1 (openssl), starts Tansu
on a plaintext port advertising the stunnel port (so every connection a client makes after
the bootstrap goes through TLS as well) and stunnel between them. Then:

- good CA: ``liqmon worker`` and ``liqmon replay --no-worker`` with
  ``LIQMON_KAFKA_SECURITY_PROTOCOL=SSL`` give the same ``alerts.jsonl``, byte for byte, as
  the inline replay of the same window;
- wrong CA: the worker and the replay stop with one line, exit code 2;
- a plaintext client against the TLS port: the same, naming PLAINTEXT.

SASL is not tested here: the embedded broker has no SASL users (see
``tests/unit/test_kafka_security.py`` for the settings reaching the clients).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from streams.kafka.broker import free_port, tansu_binary
from streams.kafka.security import KafkaConnectError, start_admin
from streams.settings import Settings
from tests.integration.test_alertmanager_live import WINDOW
from tests.integration.test_pipeline import real_usde_capture
from tests.integration.test_prometheus_live import clean_env, process, tail, wait_until

__all__ = ["real_usde_capture"]  # a module fixture shared with test_pipeline

STUNNEL = shutil.which("stunnel4") or shutil.which("stunnel")
OPENSSL = shutil.which("openssl")
HOST = "127.0.0.1"

pytestmark = [
    pytest.mark.broker,
    pytest.mark.timeout(300),
    pytest.mark.skipif(STUNNEL is None or OPENSSL is None, reason="needs stunnel4, openssl (system-deps.sh)"),
]


def openssl(*args: str) -> None:
    assert OPENSSL is not None
    subprocess.run([OPENSSL, *args], check=True, capture_output=True, timeout=60)


def make_ca(directory: Path, name: str) -> tuple[Path, Path]:
    key, cert = directory / f"{name}.key", directory / f"{name}.pem"
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
            "-subj", f"/CN={name}", "-days", "1")
    return cert, key


def make_server_cert(directory: Path, ca: tuple[Path, Path]) -> tuple[Path, Path]:
    key, csr, cert = directory / "server.key", directory / "server.csr", directory / "server.pem"
    ext = directory / "san.cnf"
    ext.write_text(f"subjectAltName=IP:{HOST},DNS:localhost\n", encoding="utf-8")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", "/CN=localhost")
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]), "-CAcreateserial",
            "-out", str(cert), "-days", "1", "-extfile", str(ext))
    return cert, key


@dataclass(frozen=True)
class TlsBroker:
    bootstrap: str  # the stunnel (TLS) address, which the broker advertises
    ca: Path
    wrong_ca: Path
    stunnel_log: Path


def stunnel_config(directory: Path, tls_port: int, plain_port: int, cert: tuple[Path, Path]) -> Path:
    config = directory / "stunnel.conf"
    config.write_text(
        f"foreground = yes\npid =\ndebug = 5\noutput = {directory / 'stunnel.log'}\n"
        f"[kafka]\naccept = {HOST}:{tls_port}\nconnect = {HOST}:{plain_port}\n"
        f"cert = {cert[0]}\nkey = {cert[1]}\n",
        encoding="utf-8",
    )
    return config


def tls_answers(bootstrap: str, ca: Path) -> bool:
    async def check() -> bool:
        settings = Settings(kafka_bootstrap=bootstrap, kafka_security_protocol="SSL", kafka_ssl_cafile=ca)
        try:
            admin = await start_admin(bootstrap, settings, request_timeout_ms=2000)
        except KafkaConnectError:
            return False
        await admin.close()
        return True

    return asyncio.run(check())


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsBroker]:
    directory = tmp_path_factory.mktemp("tls")
    ca = make_ca(directory, "liqmon-test-ca")
    wrong_ca, _ = make_ca(directory, "some-other-ca")
    plain_port, tls_port = free_port(), free_port()
    with ExitStack() as stack:
        stack.enter_context(process(
            [tansu_binary(), "broker", "--listener-url", f"tcp://{HOST}:{plain_port}",
             "--advertised-listener-url", f"tcp://{HOST}:{tls_port}", "--storage-engine", "memory://tansu/"],
            directory / "tansu.log"))
        assert STUNNEL is not None
        config = stunnel_config(directory, tls_port, plain_port, make_server_cert(directory, ca))
        stack.enter_context(process([STUNNEL, str(config)], directory / "stunnel.out"))
        bootstrap = f"{HOST}:{tls_port}"
        wait_until(lambda: tls_answers(bootstrap, ca[0]), 60,
                   lambda: "the broker over TLS\n" + tail(directory / "stunnel.log") + tail(directory / "tansu.log"))
        yield TlsBroker(bootstrap, ca[0], wrong_ca, directory / "stunnel.log")


def tls_env(broker: TlsBroker, ca: Path, **extra: str) -> dict[str, str]:
    return clean_env(LIQMON_KAFKA_BOOTSTRAP=broker.bootstrap, LIQMON_BROKER_KIND="tansu", LIQMON_METRICS_PORT="0",
                     LIQMON_KAFKA_SECURITY_PROTOCOL="SSL", LIQMON_KAFKA_SSL_CAFILE=str(ca), **extra)


def liqmon(*args: str) -> list[str]:
    return [sys.executable, "-m", "streams.cli", *args]


def test_worker_and_replay_over_tls_give_the_inline_alerts(
    tls_broker: TlsBroker, real_usde_capture: Path, tmp_path: Path
) -> None:
    window = list(WINDOW[:4])
    inline = subprocess.run(liqmon("replay", "--capture", str(real_usde_capture), *window, "--inline", "--quiet",
                                   "--out", str(tmp_path / "inline")),
                            env=clean_env(), capture_output=True, text=True, timeout=120, check=False)
    assert inline.returncode == 0, inline.stderr
    accepted_before = tls_broker.stunnel_log.read_text(encoding="utf-8").count("accepted connection")
    env = tls_env(tls_broker, tls_broker.ca)
    with process(liqmon("worker"), tmp_path / "worker.log", env) as worker:
        replay = subprocess.run(liqmon("replay", "--capture", str(real_usde_capture), *window, "--no-worker",
                                       "--quiet", "--out", str(tmp_path / "tls")),
                                env=env, capture_output=True, text=True, timeout=240, check=False)
        assert worker.poll() is None, tail(tmp_path / "worker.log")
    assert replay.returncode == 0, replay.stderr[-2000:] + tail(tmp_path / "worker.log")
    expected = (tmp_path / "inline" / "alerts.jsonl").read_bytes()
    assert expected and (tmp_path / "tls" / "alerts.jsonl").read_bytes() == expected
    accepted = tls_broker.stunnel_log.read_text(encoding="utf-8").count("accepted connection")
    assert accepted - accepted_before >= 4, "the clients did not go through the TLS proxy"


@pytest.mark.parametrize("command", [("worker",), ("replay", "--no-worker", "--quiet")])
def test_a_wrong_ca_fails_in_one_line(tls_broker: TlsBroker, real_usde_capture: Path, command: tuple[str, ...],
                                      tmp_path: Path) -> None:
    args = [*command, "--capture", str(real_usde_capture), "--out", str(tmp_path)] if len(command) > 1 else command
    proc = subprocess.run(liqmon(*args), env=tls_env(tls_broker, tls_broker.wrong_ca),
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"liqmon: error: cannot connect to Kafka at {tls_broker.bootstrap} over SSL: TLS certificate not trusted "
        "(unable to get local issuer certificate) (check LIQMON_KAFKA_BOOTSTRAP, LIQMON_KAFKA_SECURITY_PROTOCOL "
        "and LIQMON_KAFKA_SSL_CAFILE / _SASL_*)"
    ]


def test_a_plaintext_client_against_tls_fails_in_one_line(tls_broker: TlsBroker) -> None:
    env = clean_env(LIQMON_KAFKA_BOOTSTRAP=tls_broker.bootstrap, LIQMON_METRICS_PORT="0")
    proc = subprocess.run(liqmon("worker"), env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"liqmon: error: cannot connect to Kafka at {tls_broker.bootstrap} over PLAINTEXT: "
                               "the broker closed the connection without a Kafka answer")
