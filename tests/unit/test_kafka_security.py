"""Kafka security settings reach every client liqmon builds; the SASL password never shows.

The embedded broker (Tansu 0.6.0) has no SASL users liqmon's clients could log in with,
so SASL is tested here up to the clients' own configuration; TLS is tested end to end in
``tests/integration/test_kafka_tls.py``.
"""

from __future__ import annotations

import ast
import os
import ssl
import subprocess
import sys
from pathlib import Path

import faust
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from pydantic import ValidationError

from streams.kafka.security import faust_security, kafka_client_options
from streams.settings import Settings, settings_error_line

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "s3cr3t-Pa55"
#: Kafka clients that are not built with kafka_client_options, and why.
EXEMPT = {("streams/kafka/broker.py", "AIOKafkaAdminClient"): "readiness probe of the embedded broker (PLAINTEXT only)"}


def sasl_ssl(tmp_path: Path, **extra: object) -> Settings:
    ca = tmp_path / "ca.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(tmp_path / "ca.key"),
                    "-out", str(ca), "-subj", "/CN=test-ca", "-days", "1"], check=True, capture_output=True)
    fields: dict[str, object] = {
        "kafka_bootstrap": "kafka.example:9096", "kafka_security_protocol": "SASL_SSL",
        "kafka_sasl_mechanism": "SCRAM-SHA-512", "kafka_sasl_username": "liqmon",
        "kafka_sasl_password": PASSWORD, "kafka_ssl_cafile": ca, **extra,
    }
    return Settings(**fields)  # type: ignore[arg-type]


def test_plaintext_adds_nothing() -> None:
    settings = Settings(kafka_bootstrap="127.0.0.1:9092")
    assert kafka_client_options(settings) == {} and faust_security(settings) == {}


async def test_sasl_ssl_reaches_aiokafka_and_faust_clients(tmp_path: Path) -> None:
    settings = sasl_ssl(tmp_path)
    options = kafka_client_options(settings)
    assert options["security_protocol"] == "SASL_SSL"
    assert (options["sasl_mechanism"], options["sasl_plain_username"], options["sasl_plain_password"]) == (
        "SCRAM-SHA-512", "liqmon", PASSWORD)
    assert isinstance(options["ssl_context"], ssl.SSLContext)
    assert options["ssl_context"].verify_mode == ssl.CERT_REQUIRED and options["ssl_context"].check_hostname
    producer = AIOKafkaProducer(bootstrap_servers="kafka.example:9096", **options)
    consumer = AIOKafkaConsumer(bootstrap_servers="kafka.example:9096", **options)
    try:
        for inner in (producer.client, consumer._client):
            assert (inner._security_protocol, inner._sasl_mechanism, inner._sasl_plain_username) == (
                "SASL_SSL", "SCRAM-SHA-512", "liqmon")
            assert inner._ssl_context is options["ssl_context"]
    finally:
        await producer.stop()
        await consumer.stop()
    credentials = faust_security(settings)["broker_credentials"]
    assert isinstance(credentials, faust.SASLCredentials)
    assert (credentials.protocol.value, credentials.mechanism.value, credentials.username) == (
        "SASL_SSL", "SCRAM-SHA-512", "liqmon")
    assert credentials.ssl_context is not None


def test_ssl_without_sasl_gives_faust_ssl_credentials(tmp_path: Path) -> None:
    settings = sasl_ssl(tmp_path, kafka_security_protocol="SSL", kafka_sasl_username=None, kafka_sasl_password=None)
    assert set(kafka_client_options(settings)) == {"security_protocol", "ssl_context"}
    assert isinstance(faust_security(settings)["broker_credentials"], faust.SSLCredentials)


def test_the_password_is_never_printed(tmp_path: Path) -> None:
    settings = sasl_ssl(tmp_path)
    assert PASSWORD not in repr(settings) and PASSWORD not in str(settings.model_dump())
    with pytest.raises(ValidationError) as caught:
        sasl_ssl(tmp_path, kafka_sasl_username=None)
    line = settings_error_line(caught.value)
    assert PASSWORD not in line
    assert "LIQMON_KAFKA_SASL_USERNAME" in line and "\n" not in line


@pytest.mark.parametrize(("env", "names"), [
    ({"LIQMON_KAFKA_SECURITY_PROTOCOL": "SSL"}, "LIQMON_KAFKA_BOOTSTRAP"),
    ({"LIQMON_KAFKA_BOOTSTRAP": "h:1", "LIQMON_KAFKA_SECURITY_PROTOCOL": "TLS"}, "LIQMON_KAFKA_SECURITY_PROTOCOL"),
    ({"LIQMON_KAFKA_BOOTSTRAP": "h:1", "LIQMON_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
      "LIQMON_KAFKA_SASL_PASSWORD": PASSWORD}, "LIQMON_KAFKA_SASL_USERNAME"),
    ({"LIQMON_KAFKA_BOOTSTRAP": "h:1", "LIQMON_KAFKA_SASL_MECHANISM": "GSSAPI"}, "LIQMON_KAFKA_SASL_MECHANISM"),
    ({"LIQMON_KAFKA_BOOTSTRAP": "h:1", "LIQMON_KAFKA_SSL_CAFILE": "/nonexistent/ca.pem"}, "LIQMON_KAFKA_SSL_CAFILE"),
    ({"LIQMON_KAFKA_BOOTSTRAP": "h:1", "LIQMON_KAFKA_SSL_CERTFILE": "/etc/hostname"}, "LIQMON_KAFKA_SSL_KEYFILE"),
    ({"LIQMON_WEBHOOK_URL": "hooks.example/" + PASSWORD}, "LIQMON_WEBHOOK_URL"),
])
def test_a_bad_kafka_setting_is_one_line_naming_it(env: dict[str, str], names: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.startswith("LIQMON_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValidationError) as caught:
        Settings()
    line = settings_error_line(caught.value)
    assert names in line and PASSWORD not in line and "\n" not in line, line


def test_the_command_line_prints_that_line_and_exits_2() -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LIQMON_")}
    env = {"LIQMON_KAFKA_BOOTSTRAP": "h:1", "LIQMON_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
           "LIQMON_KAFKA_SASL_PASSWORD": PASSWORD}
    proc = subprocess.run([sys.executable, "-m", "streams.cli", "worker"], env={**clean, **env},
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "liqmon: error: invalid setting: LIQMON_KAFKA_SECURITY_PROTOCOL=SASL_SSL needs LIQMON_KAFKA_SASL_USERNAME "
        "and LIQMON_KAFKA_SASL_PASSWORD"
    ]


def kafka_client_calls() -> list[tuple[str, str, bool]]:
    """(file, client class, built with **kafka_client_options(...)) of every client call."""
    found = []
    for path in sorted([*ROOT.glob("streams/**/*.py"), *ROOT.glob("replay/**/*.py"), *ROOT.glob("benchmarks/**/*.py")]):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            if name in {"AIOKafkaProducer", "AIOKafkaConsumer", "AIOKafkaAdminClient"}:
                secured = any(k.arg is None and isinstance(k.value, ast.Call)
                              and getattr(k.value.func, "id", None) == "kafka_client_options" for k in node.keywords)
                found.append((str(path.relative_to(ROOT)), name, secured))
    return found


def test_every_kafka_client_is_built_with_the_security_helper() -> None:
    calls = kafka_client_calls()
    assert len(calls) >= 12, calls  # replay, live, spiral, benches, topic creation
    unsecured = [(f, c) for f, c, secured in calls if not secured and (f, c) not in EXEMPT]
    assert not unsecured, unsecured
    app_source = (ROOT / "streams" / "app" / "faust_app.py").read_text(encoding="utf-8")
    assert "faust_security(settings)" in app_source  # the faust app's producer, consumer and admin
