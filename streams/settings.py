"""Process settings from the environment (the only module that reads it).

``LIQMON_KAFKA_BOOTSTRAP`` unset means: run on the embedded broker. Thresholds and
other engine parameters come from a TOML file (``LIQMON_CONFIG`` or ``--config``),
validated by :class:`monitor.config.EngineConfig`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from monitor.config import EngineConfig, error_place, load_config_text

__all__ = [
    "ConfigFileError",
    "KafkaSecurityProtocol",
    "LogLevel",
    "SaslMechanism",
    "Settings",
    "load_engine_config",
    "read_config_file",
    "settings_error_line",
]

T = TypeVar("T")

KafkaSecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
#: A TCP port, 0 meaning off.
Port = Annotated[int, Field(ge=0, le=65535)]
#: The worker's log levels (faust's names), ``LIQMON_LOG_LEVEL`` in any case.
LogLevel = Literal["crit", "error", "warn", "info", "debug"]
_ENV_PREFIX = "LIQMON_"


class ConfigFileError(Exception):
    """The engine config file is missing or invalid (one-line message)."""


class Settings(BaseSettings):
    """Environment settings, prefix ``LIQMON_``."""

    model_config = SettingsConfigDict(env_prefix="LIQMON_", extra="ignore", frozen=True, allow_inf_nan=False)

    kafka_bootstrap: str | None = None
    #: "tansu" when the bootstrap points at the embedded broker (enables its workarounds).
    broker_kind: Literal["kafka", "tansu"] = "kafka"
    config: Path | None = None
    #: Venue margin tables (a JSON document or a recording) over the config's built-ins.
    margin_tables: Path | None = None
    app_id: str = Field(default="liqmon", min_length=1)
    #: The embedded broker's log level (its RUST_LOG: error, warn, info, debug).
    broker_log: str = "warn"
    partitions: int = Field(default=8, ge=1)
    #: Unified accounts split by id over this many shards, each run by the worker owning
    #: its partition of ``risk.shards`` (0: the global stage holds them all). Fixed for a
    #: deployment: the shard of an account is its id's CRC-32 modulo this.
    account_shards: int = Field(default=0, ge=0, le=256)
    replication_factor: int = Field(default=1, ge=1)
    #: Where /metrics listens (an explicit 0.0.0.0 for every interface, never by an empty value).
    metrics_addr: str = Field(default="127.0.0.1", min_length=1)
    metrics_port: Port = 9464
    live_metrics_port: Port = 9465
    replay_metrics_port: Port = 9466
    #: A metrics port found taken is replaced by a free one, said in the log (the worker a
    #: replay starts on the replays' default port: another replay may hold it).
    metrics_port_fallback: bool = False
    data_dir: Path | None = None
    rebalance_timeout_s: float | None = Field(default=None, gt=0)
    #: How long the broker may hold a worker's fetch (None: 50 ms embedded, 1,500 ms Kafka).
    fetch_max_wait_ms: int | None = Field(default=None, ge=0)
    webhook_url: str | None = None
    alertmanager_url: str | None = None
    #: Alerts one sink (webhook, Alertmanager) holds while its receiver is down.
    alert_queue_max: int = Field(default=10_000, ge=1)
    #: How often active alerts are re-sent to Alertmanager (below its resolve_timeout, 5 min).
    alertmanager_resend_s: float = Field(default=60.0, gt=0)
    #: Print every delivered alert as one human line on the worker's stdout.
    alert_stdout: bool = False
    #: Per-(kind, venue, asset) cooldown of the delivery sinks, event time.
    alert_cooldown_ms: int = Field(default=300_000, ge=0)
    #: The worker's log level.
    log_level: LogLevel = "warn"
    #: Seconds between checkpoints of a stage's state (the global stage waits longer when a
    #: checkpoint is costly: at least 20x its last write). Records since the last checkpoint
    #: are what a crash makes a worker read again.
    checkpoint_interval_s: float = Field(default=2.0, gt=0)
    #: Seconds SIGTERM leaves a worker to stop cleanly before it exits anyway.
    stop_timeout_s: float = Field(default=8.0, gt=0)
    #: Seconds without reaching the broker after which a worker restarts (and waits for it).
    broker_lost_s: float = Field(default=15.0, gt=0)
    # Kafka security (streams/kafka/security.py turns these into client options).
    kafka_security_protocol: KafkaSecurityProtocol = "PLAINTEXT"
    kafka_sasl_mechanism: SaslMechanism = "PLAIN"
    kafka_sasl_username: str | None = None
    #: Never logged: SecretStr prints as '**********'.
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None
    kafka_ssl_certfile: Path | None = None
    kafka_ssl_keyfile: Path | None = None

    @property
    def embedded(self) -> bool:
        return self.broker_kind == "tansu"

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_case(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("webhook_url", "alertmanager_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            # The value may hold a token: never echo it.
            raise ValueError("not an http(s) URL (expected http[s]://host[:port]/path)")
        return value

    @field_validator("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile")
    @classmethod
    def _readable_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"no such file: {value}")
        return value

    @model_validator(mode="after")
    def _kafka_security_complete(self) -> Settings:
        protocol = self.kafka_security_protocol
        if protocol != "PLAINTEXT" and not self.kafka_bootstrap:
            raise ValueError(f"LIQMON_KAFKA_SECURITY_PROTOCOL={protocol} needs LIQMON_KAFKA_BOOTSTRAP "
                             "(the embedded broker speaks PLAINTEXT only)")
        if protocol.startswith("SASL") and not (self.kafka_sasl_username and self.kafka_sasl_password):
            raise ValueError(f"LIQMON_KAFKA_SECURITY_PROTOCOL={protocol} needs LIQMON_KAFKA_SASL_USERNAME "
                             "and LIQMON_KAFKA_SASL_PASSWORD")
        if (self.kafka_ssl_certfile is None) != (self.kafka_ssl_keyfile is None):
            raise ValueError("LIQMON_KAFKA_SSL_CERTFILE and LIQMON_KAFKA_SSL_KEYFILE go together")
        return self


def settings_error_line(exc: ValidationError) -> str:
    """One line naming the offending environment variable(s), never the secret values."""
    parts: list[str] = []
    for error in exc.errors(include_input=False, include_url=False):
        where = error_place(error)
        message = str(error["msg"]).removeprefix("Value error, ")
        parts.append(f"{_ENV_PREFIX}{where.upper()}: {message}" if where else message)
    return "invalid setting: " + "; ".join(parts)


def load_engine_config(path: Path | None, margin_tables: Path | None = None) -> EngineConfig:
    """Read the engine TOML (or the shipped defaults when ``path`` is None), with the venue
    margin tables of ``margin_tables`` (:mod:`replay.margin_tables`) in place of the built-ins."""
    config = _load_engine_toml(path)
    if margin_tables is None:
        return config
    from monitor.stages.stress import StressInputError
    from replay.margin_tables import load_margin_tables

    try:
        risk = load_margin_tables(margin_tables, config.risk)
    except StressInputError as exc:
        raise ConfigFileError(f"margin tables {exc}") from None
    return config.model_copy(update={"risk": risk})


def read_config_file(path: Path, parse: Callable[[str], T]) -> T:
    """``parse`` of a config file's text; a file that cannot be read or parsed is one line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigFileError(f"cannot read config {path}: {exc.strerror}") from None
    try:
        return parse(text)
    except ValidationError as exc:  # each refused value: where it is in the file, and why
        detail = "; ".join(f"{error_place(error)}: {error['msg']}" for error in exc.errors(include_url=False))
        raise ConfigFileError(f"invalid config {path}: {detail}") from None
    except Exception as exc:  # tomllib and the parsers' own checks: worth one clear line too
        detail = "; ".join(line.strip() for line in str(exc).splitlines()[:4])
        raise ConfigFileError(f"invalid config {path}: {detail}") from None


def _load_engine_toml(path: Path | None) -> EngineConfig:
    return EngineConfig() if path is None else read_config_file(path, load_config_text)
