"""Engine configuration: frozen, strict (unknown keys fail), hashed to a stable id.

Every threshold the engine uses lives here with the public default from RISK_MODEL.md.
Values that could not be sourced publicly are marked *assumed* in their description.
The ``config_hash`` of a config goes on every alert and every replay summary so a user
can tell which thresholds produced an alert.
"""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Mapping
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from monitor.alerts import SEVERITIES
from monitor.events import BOOK_BANDS_BPS
from monitor.protocol import Severity
from monitor.risk_params import RiskParams

__all__ = [
    "CascadeConfig",
    "EngineConfig",
    "IngestConfig",
    "LiquidityConfig",
    "PegBand",
    "PegConfig",
    "PegSource",
    "SignalsConfig",
    "SpiralRunConfig",
    "VenueMarkedAsset",
    "config_hash",
    "error_place",
    "load_config_text",
]

# Severity order (monitor.alerts); a peg level is the index in SEVERITIES plus one (0 = normal).


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)  # TOML spells inf and nan


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


SourceKind = Literal["book", "trade", "oracle", "pool"]

#: Staleness window per source kind when a ``[[peg.sources]]`` entry gives none (all
#: *assumed*): books and trade prints tick within seconds; an oracle with a heartbeat and
#: a deviation threshold is fresh as long as its last update is within the heartbeat
#: (Chainlink stablecoin feeds: 1 h–24 h, 1 h assumed); a pool sampled hourly is fresh for
#: one sampling period plus a 5-minute margin.
DEFAULT_STALE_AFTER_MS: dict[str, int] = {
    "book": 30_000,
    "trade": 60_000,
    "oracle": 3_600_000,
    "pool": 3_900_000,
}


class PegSource(_Frozen):
    """One declared price source of the peg monitor (``[[peg.sources]]``)."""

    #: Venue id of the source (as in the capture / feed).
    venue: str
    kind: SourceKind = "book"
    #: Price older than this (event time) is stale; None = the kind's default above.
    stale_after_ms: int | None = Field(default=None, gt=0)
    #: Multiplies the source's depth in the depth-weighted index.
    weight: float = Field(default=1.0, gt=0)
    #: A price whose reported depth (book: within the band; trade: the print's notional)
    #: is below this never moves a level nor the index; 0 = no minimum. Prices that
    #: report no depth are not filtered.
    min_depth_usd: float = Field(default=0.0, ge=0)

    @property
    def stale_window_ms(self) -> int:
        return self.stale_after_ms if self.stale_after_ms is not None else DEFAULT_STALE_AFTER_MS[self.kind]


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
    #: A venue's price older than this (event time) is stale: out of the index and out
    #: of the venue-local test; its alerts are resolved (reason ``stale``). Applies to
    #: venues not declared in ``sources``.
    stale_after_ms: int = Field(default=300_000, gt=0)
    #: A venue-local depeg needs at least this many *other* sources fresh and inside the
    #: band (independent witnesses); fewer → "undetermined", no alert (*assumed*: 2).
    min_witnesses: int = Field(default=2, ge=1)
    #: Declared sources: kind, staleness window, index weight, minimum depth.
    sources: tuple[PegSource, ...] = ()
    #: Weight of a venue that reports no depth (generic price feeds without depth_usd).
    default_depth_usd: float = Field(default=1_000_000.0, gt=0)

    @field_validator("sources")
    @classmethod
    def _sources_unique(cls, sources: tuple[PegSource, ...]) -> tuple[PegSource, ...]:
        venues = [src.venue for src in sources]
        if len(set(venues)) != len(venues):
            raise ValueError("peg.sources: each venue at most once")
        return sources

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
    #: Events per batch record (the wire unit for market data, DESIGN "Throughput"); a
    #: record also closes at monitor.ingest.batch.MAX_BATCH_VALUES numbers (about 1,800 book
    #: events), which keeps it inside Kafka's default message size. The figures behind
    #: the default are in the README ("Benchmarks"): per-record costs of the worker are
    #: spread over more events; live feeds close batches on a short linger anyway.
    batch_max_events: int = Field(default=4_096, gt=0, le=10_000)
    #: Event-time span of one batch record.
    #: (Live publishers also close batches on a short wall-clock linger; in a replay at
    #: full speed this span is what keeps sparse assets from costing one record per event.)
    batch_max_span_ms: int = Field(default=15_000, gt=0)
    #: Every this much receive time, batches older than the span are closed and a tick
    #: (event time reached T − span) goes to every partition, so partitions without data
    #: still advance the watermark the global stage waits for (*assumed*).
    tick_interval_ms: int = Field(default=1_000, gt=0)
    #: Quote currencies: converted to USD with their own price key (default price 1.0).
    quote_prices_usd: dict[str, float] = Field(
        default_factory=lambda: {"USDT": 1.0, "USDC": 1.0, "FDUSD": 1.0, "USD": 1.0}
    )
    #: A quote currency's USD prices are kept this long (event time), so an event converts
    #: with the price as of its own timestamp (issue 19 §4; *assumed*: 1 h).
    quote_history_ms: int = Field(default=3_600_000, gt=0)
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


class LiquidityConfig(_Frozen):
    """Order-book liquidity per (venue, symbol) (RISK_MODEL §4)."""

    #: Half-life of the event-time EWMA baselines of depth (*assumed*).
    baseline_half_life_ms: int = Field(default=1_800_000, gt=0)
    #: Bid depth within this distance of mid is the withdrawal measure (RISK_MODEL §4: 200 bps).
    withdrawal_band_bps: int = 200
    #: Withdrawal: bid depth below this fraction of its baseline … (*assumed*)
    withdrawal_ratio: float = Field(default=0.3, gt=0, lt=1)
    #: … while seller-initiated trade volume over ``trade_window_ms`` is under this fraction
    #: of the depth lost (the rest went by cancels, not fills) (*assumed*).
    fill_share_ratio: float = Field(default=0.5, gt=0, le=1)
    #: Time constant of the decayed sell-volume sum matched against the depth lost (*assumed*).
    trade_window_ms: int = Field(default=120_000, gt=0)
    #: … held this long (event time), so one swept snapshot pages nobody (*assumed*).
    withdrawal_min_duration_ms: int = Field(default=120_000, ge=0)
    #: Withdrawal clears when bid depth is back above this fraction of the baseline (*assumed*).
    recover_ratio: float = Field(default=0.6, gt=0, le=1)
    #: The baseline is trusted after this much event time and this many book updates (*assumed*).
    warmup_ms: int = Field(default=600_000, ge=0)
    warmup_updates: int = Field(default=10, ge=1)
    #: Books whose baseline is below this are too thin to judge (*assumed*).
    min_baseline_usd: float = Field(default=10_000.0, ge=0)
    #: Symbols exported as per-book metrics (closed label set).
    metric_symbols: tuple[str, ...] = (
        "BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "USDEUSDT", "ENAUSDT", "SUIUSDT",
        "AVAXUSDT", "DOGEUSDT", "ATOMUSDT", "BTC-USDT", "ETH-USDT", "BTC", "ETH",
    )
    #: Vacuum (breadth): withdrawal on at least this share of the monitored books … (*assumed*)
    vacuum_share_ratio: float = Field(default=0.5, gt=0, le=1)
    #: … with at least this many books monitored (*assumed*).
    vacuum_min_books: int = Field(default=2, ge=1)
    #: A book's depth goes to the global stage (spiral ladders) at most this often (event time).
    depth_signal_interval_ms: int = Field(default=60_000, gt=0)

    @field_validator("withdrawal_band_bps")
    @classmethod
    def _known_band(cls, band: int) -> int:
        if band not in BOOK_BANDS_BPS:
            raise ValueError(f"withdrawal_band_bps must be one of {BOOK_BANDS_BPS}")
        return band


class VenueMarkedAsset(_Frozen):
    """An asset a venue values from its own book until ``until_ts_ms`` (RISK_MODEL §1)."""

    venue: str
    asset: str
    until_ts_ms: int | None = None


class SignalsConfig(_Frozen):
    """Stage-1 signals (per-asset engine → the global stage) and price keys (RISK_MODEL §1)."""

    #: Unified accounts are re-evaluated at most this often in event time; price moves in
    #: between are accumulated, not lost (*assumed*: one second of event time).
    account_eval_interval_ms: int = Field(default=1_000, ge=0)
    #: A price key is re-published when it moved at least this much (*assumed*).
    price_move_bps: float = Field(default=5.0, ge=0)
    #: Venue id → the venue part of ``ASSET@VENUE``; unlisted ids are used as they are.
    venue_price_keys: dict[str, str] = Field(
        default_factory=lambda: {
            "binance-spot": "binance",
            "binance-usdm": "binance-usdm",
            "binance-coinm": "binance-coinm",
            "binance-index": "binance-index",
            "bybit-spot": "bybit",
            "bybit-linear": "bybit-linear",
        }
    )
    #: Venues left out of the consolidated ``ASSET`` index (index klines double-count).
    index_exclude_venues: tuple[str, ...] = ()
    #: Venues whose ``price`` frames are conversion rates, not markets (RISK_MODEL §1: a
    #: redemption rate such as WBETH/ETH is a feed): they publish ``rate:BASE/QUOTE`` keys,
    #: and never enter a peg monitor or an index. A key ``rate:A/B*C`` is that rate × key C.
    rate_venues: tuple[str, ...] = ("binance-rate",)
    #: Assets whose net trade flow feeds cascade stage 3 (RISK_MODEL §6).
    flow_assets: tuple[str, ...] = ("USDe",)
    #: Balances without a price key: these are valued at ``ASSET@VENUE`` (Binance marked
    #: USDe, wBETH and BNSOL to its own books until the 14 Oct 2025 change, OCT10_FACTS).
    venue_marked_assets: tuple[VenueMarkedAsset, ...] = (
        VenueMarkedAsset(venue="binance", asset="USDe", until_ts_ms=1_760_400_000_000),
        VenueMarkedAsset(venue="binance", asset="BNSOL", until_ts_ms=1_760_400_000_000),
        VenueMarkedAsset(venue="binance", asset="wBETH", until_ts_ms=1_760_400_000_000),
    )


class CascadeConfig(_Frozen):
    """Cascade stage detector (RISK_MODEL §6). Windows are event time."""

    macro_assets: tuple[str, ...] = ("BTC", "ETH")
    #: Stage 1: BTC/ETH index falls ≥ 5% within 60 min (RISK_MODEL §6).
    macro_drop_pct: float = Field(default=5.0, gt=0, lt=100)
    window_ms: int = Field(default=3_600_000, gt=0)
    #: Stage 2: an alt is in drawdown at this fall from its window high (*assumed*) …
    alt_drawdown_pct: float = Field(default=10.0, gt=0, lt=100)
    #: … on this share of the alts seen (*assumed*) …
    alt_breadth_ratio: float = Field(default=0.5, gt=0, le=1)
    #: … or liquidation flow over ``flow_window_ms`` above this multiple of its baseline.
    liquidation_flow_ratio: float = Field(default=3.0, gt=1)
    min_liquidation_flow_usd: float = Field(default=1_000_000.0, ge=0)
    #: Stage 3: net sell flow of the flow assets above this multiple of baseline (*assumed*).
    sell_flow_ratio: float = Field(default=3.0, gt=1)
    min_sell_flow_usd: float = Field(default=1_000_000.0, ge=0)
    #: … or loop positions repaying at least this much debt within ``flow_window_ms``
    #: (deleveraging seen on ``positions.loops`` updates; *assumed*).
    min_deleverage_usd: float = Field(default=1_000_000.0, ge=0)
    flow_window_ms: int = Field(default=300_000, gt=0)
    flow_baseline_half_life_ms: int = Field(default=3_600_000, gt=0)
    #: Stage 4: peg level (0 normal … 4 critical) at or above this on any venue: "high".
    depeg_min_level: int = Field(default=3, ge=1, le=4)
    #: Stage 9: alts down ≥ 50% from the pre-shock reference (RISK_MODEL §6).
    alt_crash_pct: float = Field(default=50.0, gt=0, lt=100)
    #: Assets never counted as alts (besides macro assets, peg assets, quote currencies).
    not_alts: tuple[str, ...] = ("USDe", "sUSDe", "USDT", "USDC", "FDUSD", "DAI", "wBETH",
                                 "wstETH", "BNSOL", "WBTC")
    #: A stage stays active this long after its signal last held (*assumed*).
    hold_ms: int = Field(default=900_000, ge=0)


class SpiralRunConfig(_Frozen):
    """Spiral estimate on the live state (RISK_MODEL §7); shocks are ``risk.spiral``."""

    #: Event-time interval between runs of the standard shocks; 0 = only on demand (*assumed*).
    interval_ms: int = Field(default=300_000, ge=0)
    #: A run of the standard shocks is skipped (the last results stand) unless a price or a
    #: ladder's bid depth moved by more than this ratio of itself since the last run, or a
    #: position or account changed (*assumed*; ``monitor/stages/global_risk/spiral_gate.py``). Left out of the
    #: config hash: alert ids do not depend on it.
    tolerance_ratio: float = Field(default=0.001, ge=0.0, exclude=True)
    #: Threads the standard shocks' spirals run on, each on its own copy of the accounts'
    #: book (the results are the same for any count; left out of the config hash). Two for
    #: the two cores of the machines measured; one copy of the book's figures per thread
    #: beyond the first (≈ 100 MB at 10⁶ accounts of four entries).
    threads: int = Field(default=2, ge=1, le=64, exclude=True)
    #: With account shards (``LIQMON_ACCOUNT_SHARDS``), whether the aggregation stage keeps
    #: a copy of every account's checked document for the spirals (the shards alone
    #: evaluate them): the spirals then cover every account, as one global stage's do, for
    #: ≈ 1.3 KB per account and the accounts' load on the aggregation worker. False: the
    #: spirals cover the loop positions only and ``liqmon spiral`` names the accounts left
    #: out. Left out of the config hash: alert ids do not depend on it.
    copy_sharded_accounts: bool = Field(default=True, exclude=True)


class EngineConfig(_Frozen):
    """The whole engine configuration (the shipped default is ``EngineConfig()``)."""

    peg: PegConfig = Field(default_factory=PegConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    liquidity: LiquidityConfig = Field(default_factory=LiquidityConfig)
    signals: SignalsConfig = Field(default_factory=SignalsConfig)
    cascade: CascadeConfig = Field(default_factory=CascadeConfig)
    spiral_run: SpiralRunConfig = Field(default_factory=SpiralRunConfig)
    risk: RiskParams = Field(default_factory=RiskParams)

    @model_validator(mode="after")
    def _peg_assets_not_quotes(self) -> EngineConfig:
        clash = set(self.peg.assets) & set(self.ingest.quote_prices_usd)
        if clash:
            raise ValueError(f"peg assets cannot also be quote currencies: {sorted(clash)}")
        return self

    @property
    def config_hash(self) -> str:
        return config_hash(self)


def error_place(error: Mapping[str, Any]) -> str:
    """Where one of pydantic's errors is, dotted (``peg.bands.0.threshold_bps``; "" for the whole)."""
    return ".".join(str(part) for part in error["loc"])


def config_hash(config: BaseModel) -> str:
    """Stable 12-hex id of a config: sha256 of its canonical JSON (sorted keys)."""
    canon = orjson.dumps(config.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canon).hexdigest()[:12]


def load_config_text(text: str) -> EngineConfig:
    """Parse a TOML document into an EngineConfig (unknown keys raise). A ``[live]`` table
    (a ``liqmon live --config`` file) belongs to the live process and is left out."""
    data = tomllib.loads(text)
    data.pop("live", None)
    return EngineConfig.model_validate(data)
