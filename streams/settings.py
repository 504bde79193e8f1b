"""Process settings from the environment (the only module that reads it).

``LIQMON_KAFKA_BOOTSTRAP`` unset means: run on the embedded broker. Thresholds and
other engine parameters come from a TOML file (``LIQMON_CONFIG`` or ``--config``),
validated by :class:`monitor.config.EngineConfig`.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from monitor.config import EngineConfig, load_config_text

__all__ = ["ConfigFileError", "Settings", "load_engine_config"]


class ConfigFileError(Exception):
    """The engine config file is missing or invalid (one-line message)."""


class Settings(BaseSettings):
    """Environment settings, prefix ``LIQMON_``."""

    model_config = SettingsConfigDict(env_prefix="LIQMON_", extra="ignore", frozen=True)

    kafka_bootstrap: str | None = None
    #: "tansu" when the bootstrap points at the embedded broker (enables its workarounds).
    broker_kind: str = "kafka"
    config: Path | None = None
    app_id: str = "liqmon"
    partitions: int = Field(default=8, ge=1)
    replication_factor: int = Field(default=1, ge=1)
    metrics_addr: str = "127.0.0.1"
    metrics_port: int = Field(default=9464, ge=0)
    live_metrics_port: int = Field(default=9465, ge=0)
    replay_metrics_port: int = Field(default=9466, ge=0)
    data_dir: Path | None = None
    rebalance_timeout_s: float | None = None
    #: How long the broker may hold a worker's fetch (None: 50 ms embedded, 1,500 ms Kafka).
    fetch_max_wait_ms: int | None = Field(default=None, ge=0)
    webhook_url: str | None = None
    alertmanager_url: str | None = None
    #: Print every delivered alert as one human line on the worker's stdout.
    alert_stdout: bool = False
    #: Per-(kind, venue, asset) cooldown of the delivery sinks, event time.
    alert_cooldown_ms: int = Field(default=300_000, ge=0)
    log_level: str = "warn"
    #: Seconds between checkpoints of a stage's state (the global stage waits longer when a
    #: checkpoint is costly: at least 20x its last write). Records since the last checkpoint
    #: are what a crash makes a worker read again.
    checkpoint_interval_s: float = Field(default=2.0, gt=0)
    #: Seconds SIGTERM leaves a worker to stop cleanly before it exits anyway.
    stop_timeout_s: float = Field(default=8.0, gt=0)
    #: Seconds without reaching the broker after which a worker restarts (and waits for it).
    broker_lost_s: float = Field(default=15.0, gt=0)

    @property
    def embedded(self) -> bool:
        return self.broker_kind == "tansu"


def load_engine_config(path: Path | None) -> EngineConfig:
    """Read the engine TOML (or the shipped defaults when ``path`` is None)."""
    if path is None:
        return EngineConfig()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigFileError(f"cannot read config {path}: {exc.strerror}") from None
    try:
        return load_config_text(text)
    except Exception as exc:  # tomllib or pydantic: both worth one clear line
        first = str(exc).splitlines()
        detail = "; ".join(line.strip() for line in first[:4])
        raise ConfigFileError(f"invalid config {path}: {detail}") from None
