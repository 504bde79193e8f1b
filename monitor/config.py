"""Engine configuration: frozen, strict (unknown keys fail), hashed to a stable id.

Every threshold the engine uses lives here with the public default from RISK_MODEL.md.
Values that could not be sourced publicly are marked *assumed* in their description.
The ``config_hash`` of a config goes on every alert and every replay summary so a user
can tell which thresholds produced an alert.
"""

from __future__ import annotations

import hashlib
import tomllib
from typing import Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "SEVERITIES",
    "EngineConfig",
    "IngestConfig",
    "PegBand",
    "PegConfig",
    "config_hash",
    "load_config_text",
]

Severity = Literal["info", "warning", "high", "critical"]
#: Severity order; a peg level is the index in this tuple plus one (0 = normal).
SEVERITIES: tuple[Severity, ...] = ("info", "warning", "high", "critical")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PegBand(_Frozen):
    """One peg band: entered at ``threshold_bps`` held for ``min_duration_ms``."""

    severity: Severity
    threshold_bps: float = Field(gt=0)
    min_duration_ms: int = Field(ge=0)


def _default_bands() -> tuple[PegBand, ...]:
    # RISK_MODEL §5: normal ±50 bps, warning 100, high 300, critical 1,000 bps.
    # Minimum durations are *assumed* (no public figure): long enough that one print
    # pages nobody, short enough to see a minute-scale depeg within its first minutes.
    return (
        PegBand(severity="info", threshold_bps=50.0, min_duration_ms=300_000),
        PegBand(severity="warning", threshold_bps=100.0, min_duration_ms=60_000),
        PegBand(severity="high", threshold_bps=300.0, min_duration_ms=60_000),
        PegBand(severity="critical", threshold_bps=1_000.0, min_duration_ms=60_000),
    )


class PegConfig(_Frozen):
    """Peg monitor settings (RISK_MODEL §5)."""

    assets: tuple[str, ...] = ("USDe",)
    peg_usd: float = 1.0
    bands: tuple[PegBand, ...] = Field(default_factory=_default_bands)
    #: De-escalate when |deviation| < threshold × (1 − hysteresis_ratio) … (assumed 0.2)
    hysteresis_ratio: float = Field(default=0.2, ge=0.0, lt=1.0)
    #: … continuously for this long (assumed).
    clear_duration_ms: int = Field(default=120_000, ge=0)
    #: A venue-local depeg needs the venue at this severity or worse …
    venue_local_min_severity: Severity = "warning"
    #: … while the reference (other venues' index) is within ±normal_band_bps.
    normal_band_bps: float = Field(default=50.0, gt=0)
    #: A venue's price older than this (event time) is stale: out of the index.
    stale_after_ms: int = Field(default=300_000, gt=0)
    #: Weight of a venue that reports no depth (generic price feeds without depth_usd).
    default_depth_usd: float = Field(default=1_000_000.0, gt=0)

    @field_validator("bands")
    @classmethod
    def _bands_ordered(cls, bands: tuple[PegBand, ...]) -> tuple[PegBand, ...]:
        if [b.severity for b in bands] != list(SEVERITIES):
            raise ValueError("peg bands must be exactly info, warning, high, critical in order")
        thresholds = [b.threshold_bps for b in bands]
        if thresholds != sorted(thresholds) or len(set(thresholds)) != len(thresholds):
            raise ValueError("peg band thresholds must be strictly increasing")
        return bands


class IngestConfig(_Frozen):
    """Validation limits and batching of the ingest side (replayer, live feeds)."""

    #: Frames larger than this go to the dead-letter topic as ``oversize``.
    max_frame_bytes: int = Field(default=65_536, gt=0)
    #: Venue event time more than this after the receive time is ``timestamp_future``.
    max_future_skew_ms: int = Field(default=60_000, gt=0)
    #: Receive times jumping more than this past the stream's watermark are rejected.
    max_watermark_jump_ms: int = Field(default=6 * 3_600_000, gt=0)
    #: Events per batch record (the wire unit for market data, DESIGN "Throughput").
    batch_max_events: int = Field(default=256, gt=0, le=10_000)
    #: Event-time span of one batch record.
    batch_max_span_ms: int = Field(default=250, gt=0)
    #: Quote currencies: converted to USD with their own price key (default price 1.0).
    quote_prices_usd: dict[str, float] = Field(
        default_factory=lambda: {"USDT": 1.0, "USDC": 1.0, "FDUSD": 1.0, "USD": 1.0}
    )
    #: Exchange tickers → canonical asset names.
    asset_aliases: dict[str, str] = Field(
        default_factory=lambda: {
            "USDE": "USDe",
            "SUSDE": "sUSDe",
            "WBETH": "wBETH",
            "WSTETH": "wstETH",
            "XBT": "BTC",
        }
    )


class EngineConfig(_Frozen):
    """The whole engine configuration (the shipped default is ``EngineConfig()``)."""

    peg: PegConfig = Field(default_factory=PegConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)

    @model_validator(mode="after")
    def _peg_assets_not_quotes(self) -> EngineConfig:
        clash = set(self.peg.assets) & set(self.ingest.quote_prices_usd)
        if clash:
            raise ValueError(f"peg assets cannot also be quote currencies: {sorted(clash)}")
        return self

    @property
    def config_hash(self) -> str:
        return config_hash(self)


def config_hash(config: BaseModel) -> str:
    """Stable 12-hex id of a config: sha256 of its canonical JSON (sorted keys)."""
    canon = orjson.dumps(config.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canon).hexdigest()[:12]


def load_config_text(text: str) -> EngineConfig:
    """Parse a TOML document into an EngineConfig (unknown keys raise)."""
    data = tomllib.loads(text)
    return EngineConfig.model_validate(data)
