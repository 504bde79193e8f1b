"""Live feed configuration: venues, streams, endpoints, timeouts (frozen, strict).

The ``liqmon live --config FILE`` TOML holds the engine configuration plus a ``[live]``
table validated here; endpoints can be overridden per venue on the command line. The
default watches what October needed (issue 5): USDe, wBETH, BTC, ETH, SOL books and
trades on Binance spot, USDⓈ-M mark price, depth and all-market liquidations, Bybit and
OKX perpetual books and liquidations, Hyperliquid books and trades.

OKX sizes swaps and futures in contracts: ``[live.okx_contract_values]`` maps an
instrument family to its contract value (``ct_val`` in ``ct_val_ccy``: the base asset for
linear contracts, USD for inverse ones). Entries are added to (or replace) the built-in
table :data:`monitor.ingest.wire.okx.BUILTIN_CONTRACT_VALUES`; frames of an instrument with no
entry are dead-lettered (``unknown_contract_value``), never guessed.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from monitor.config import EngineConfig
from monitor.ingest.orderbook import DEFAULT_SNAPSHOT_RETRY_MS
from monitor.ingest.wire.okx import BUILTIN_CONTRACT_VALUES, ContractValues
from streams.backoff import BackoffPolicy
from streams.feeds.base import VenueAdapter
from streams.feeds.overload import OverloadConfig
from streams.feeds.venues import binance, bybit, hyperliquid, okx

__all__ = [
    "ADAPTERS",
    "ContractValue",
    "InstrumentsConfig",
    "LiveConfig",
    "MarginTablesConfig",
    "VenueFeed",
    "build_adapter",
    "default_instrument_urls",
    "default_okx_contract_values",
    "default_venues",
    "split_config",
]

#: Venue id → adapter class.
ADAPTERS: dict[str, type[VenueAdapter]] = {
    "binance-spot": binance.BinanceSpot,
    "binance-usdm": binance.BinanceUsdm,
    "bybit-linear": bybit.BybitLinear,
    "bybit-spot": bybit.BybitSpot,
    "okx": okx.Okx,
    "hyperliquid": hyperliquid.Hyperliquid,
}


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)  # TOML spells inf and nan


class VenueFeed(_Frozen):
    """One venue: its streams (venue-native names) and optional endpoint overrides."""

    streams: tuple[str, ...]
    enabled: bool = True
    ws_url: str | None = None
    rest_url: str | None = None
    #: A subscribed channel silent for this long (receive time) is stale (assumed: 60 s).
    stale_after_s: float = Field(default=60.0, gt=0)
    #: Liquidation channels are quiet in calm markets (assumed: 15 min).
    liquidation_stale_after_s: float = Field(default=900.0, gt=0)


def default_venues() -> dict[str, VenueFeed]:
    spot = ("usdeusdt", "wbetheth", "btcusdt", "ethusdt", "solusdt")
    perps = ("btcusdt", "ethusdt", "solusdt")
    coins = ("BTC", "ETH", "SOL")
    return {
        "binance-spot": VenueFeed(
            streams=tuple(f"{s}@{kind}" for s in spot for kind in ("depth@100ms", "bookTicker", "aggTrade"))
        ),
        "binance-usdm": VenueFeed(
            streams=(
                *(f"{s}@{kind}" for s in perps for kind in ("depth@100ms", "markPrice@1s")),
                "!forceOrder@arr",
            )
        ),
        "bybit-linear": VenueFeed(
            streams=tuple(f"{kind}.{c}USDT" for c in coins for kind in ("orderbook.50", "allLiquidation"))
        ),
        "okx": VenueFeed(
            streams=(*(f"books:{c}-USDT-SWAP" for c in coins), "liquidation-orders:SWAP")
        ),
        "hyperliquid": VenueFeed(streams=tuple(f"{kind}:{c}" for c in coins for kind in ("l2Book", "trades"))),
    }


class ContractValue(_Frozen):
    """One instrument family's contract: ``ct_val`` units of ``ct_val_ccy`` per contract (OKX ctVal/ctValCcy)."""

    ct_val: float = Field(gt=0, allow_inf_nan=False)
    ct_val_ccy: str = Field(min_length=1)


def default_okx_contract_values() -> dict[str, ContractValue]:
    """The built-in OKX table (instrument family → contract value)."""
    return {k: ContractValue(ct_val=v, ct_val_ccy=ccy) for k, (v, ccy) in BUILTIN_CONTRACT_VALUES.items()}


class MarginTablesConfig(_Frozen):
    """Venue margin tables ``liqmon live`` fetches at start and records (RISK_MODEL §3).

    A venue's part is fetched only when one of its feeds is enabled (Hyperliquid:
    ``hyperliquid``; Bybit: ``bybit-linear``/``bybit-spot``, risk limits ``bybit-linear``;
    OKX: ``okx``). Endpoints: see :mod:`monitor.ingest.venue_tables`.
    """

    enabled: bool = True
    hyperliquid_url: str = "https://api.hyperliquid.xyz/info"
    bybit_url: str = "https://api.bybit.com/v5/spot-margin-trade/collateral"
    okx_url: str = "https://www.okx.com/api/v5/public/discount-rate-interest-free-quota"
    #: Bybit risk limits: one ``?category=linear&symbol=S`` request per symbol.
    bybit_risk_limit_url: str = "https://api.bybit.com/v5/market/risk-limit"
    bybit_risk_limit_symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
    #: OKX position tiers: ``?instType=SWAP&tdMode=cross&instFamily=…``, at most five
    #: families a request (the endpoint's limit); each family needs a contract value in
    #: :data:`monitor.ingest.wire.instruments.BUILTIN_CONTRACT_VALUES` (tiers are in contracts).
    okx_position_tiers_url: str = "https://www.okx.com/api/v5/public/position-tiers"
    okx_position_tier_families: tuple[str, ...] = ("BTC-USDT", "ETH-USDT", "SOL-USDT")
    timeout_s: float = Field(default=10.0, gt=0)


def default_instrument_urls() -> dict[str, tuple[str, ...]]:
    """Each venue's instruments endpoint(s) (:mod:`monitor.ingest.wire.instrument_sources`)."""
    okx = "https://www.okx.com/api/v5/public/instruments?instType="
    bybit = "https://api.bybit.com/v5/market/instruments-info?limit=1000&category="
    return {
        "binance-spot": ("https://api.binance.com/api/v3/exchangeInfo",),
        "binance-usdm": ("https://fapi.binance.com/fapi/v1/exchangeInfo",),
        "bybit-spot": (bybit + "spot",),
        "bybit-linear": (bybit + "linear",),
        "okx": (okx + "SPOT", okx + "SWAP", okx + "FUTURES"),
        "hyperliquid": ("https://api.hyperliquid.xyz/info",),
    }


class InstrumentsConfig(_Frozen):
    """Instrument tables ``liqmon live`` fetches at start and records (``instruments`` frames).

    Off by default: with it on, a session also calls each enabled venue's instruments
    endpoint once at start; without it, symbols resolve with the built-in grammar.
    """

    enabled: bool = False
    #: Venue → its endpoint(s); every response of a venue goes into one table.
    urls: dict[str, tuple[str, ...]] = Field(default_factory=default_instrument_urls)
    timeout_s: float = Field(default=10.0, gt=0)


class LiveConfig(_Frozen):
    """Everything ``liqmon live`` needs besides the engine config."""

    venues: dict[str, VenueFeed] = Field(default_factory=default_venues)
    backoff: BackoffPolicy = Field(default_factory=BackoffPolicy)
    #: At most one book summary per book per this much event time (plus one per resync).
    book_throttle_ms: int = Field(default=100, ge=0)
    #: Close open batches this often (wall time) so a quiet asset's events are not held back.
    flush_interval_s: float = Field(default=0.25, gt=0)
    #: Events per batch record in a live session: smaller than a replay's
    #: ([ingest] batch_max_events) because a busy asset's batch also waits until it is full
    #: (1,024 quotes fill in ~50 ms at 20k frames/s; 4,096 would hold the first ~200 ms).
    batch_max_events: int = Field(default=1_024, gt=0, le=10_000)
    #: Ticks trail receive time by this much (an allowance for venue timestamps behind
    #: receive time): how long a silent partition can hold global-stage alerts back.
    #: Recorded in the session frame so a replay of the recording ticks the same.
    tick_lag_ms: int = Field(default=2_000, ge=0)
    #: A book's depth snapshot asked for and not come (a REST body or a venue frame refused
    #: as malformed, a resubscription unanswered) is asked for again after this much time.
    snapshot_retry_ms: int = Field(default=DEFAULT_SNAPSHOT_RETRY_MS, ge=1_000)
    #: Items (batches, alerts, dead letters) waiting for the broker at most: past it, the
    #: oldest are shed and counted (``streams/feeds/backlog.py``). A batch holds at most
    #: ``batch_max_events`` events of ≈ 100 bytes: ≈ 400 MB for the default at its fullest.
    publish_backlog_items: int = Field(default=4_096, ge=1)
    #: At the end of a session, how long the broker gets to take and confirm what is left.
    publish_drain_s: float = Field(default=10.0, gt=0)
    #: Watchdog and gauge period.
    watchdog_tick_s: float = Field(default=1.0, gt=0)
    #: Seed of the backoff jitter (deterministic tests).
    seed: int = 0
    #: OKX instrument family (``BTC-USDT``) → contract value; merged over the built-in table.
    okx_contract_values: dict[str, ContractValue] = Field(default_factory=default_okx_contract_values)
    #: Venue margin tables fetched at start and recorded as ``margin_tables`` frames.
    margin_tables: MarginTablesConfig = Field(default_factory=MarginTablesConfig)
    #: Venue instrument tables fetched at start and recorded as ``instruments`` frames.
    instruments: InstrumentsConfig = Field(default_factory=InstrumentsConfig)
    #: A reader behind its venue: when to shed, lag thresholds (``[live.overload]``).
    overload: OverloadConfig = Field(default_factory=OverloadConfig)

    @field_validator("okx_contract_values", mode="before")
    @classmethod
    def _merge_contract_values(cls, value: Any) -> Any:
        if not isinstance(value, Mapping):
            return value
        merged: dict[str, Any] = dict(default_okx_contract_values())
        for family, entry in value.items():
            parts = str(family).upper().split("-")
            if len(parts) != 2 or not all(parts):
                raise ValueError(f"okx_contract_values key {family!r} is not an instrument family BASE-QUOTE")
            merged["-".join(parts)] = entry
        return merged

    def contract_values(self) -> dict[str, ContractValues]:
        """Contract-value table per contract-sized venue (recorded at the start of a session)."""
        return {"okx": {k: (v.ct_val, v.ct_val_ccy.upper()) for k, v in self.okx_contract_values.items()}}

    def with_urls(self, ws: Mapping[str, str], rest: Mapping[str, str]) -> LiveConfig:
        """A copy with per-venue endpoint overrides (``--ws-url`` / ``--rest-url``)."""
        unknown = (set(ws) | set(rest)) - set(self.venues)
        if unknown:
            raise ValueError(f"unknown venue(s) in URL overrides: {sorted(unknown)}")
        venues = {
            name: feed.model_copy(update={
                "ws_url": ws.get(name, feed.ws_url), "rest_url": rest.get(name, feed.rest_url)})
            for name, feed in self.venues.items()
        }
        return self.model_copy(update={"venues": venues})


def build_adapter(venue: str, feed: VenueFeed) -> VenueAdapter:
    """The adapter of ``venue`` with the feed's endpoint overrides."""
    cls = ADAPTERS.get(venue)
    if cls is None:
        raise ValueError(f"no connector for venue {venue!r} (known: {sorted(ADAPTERS)})")
    kwargs: dict[str, Any] = {}
    if feed.ws_url:
        kwargs["ws_url"] = feed.ws_url
    if feed.rest_url:
        kwargs["rest_url"] = feed.rest_url
    return cls(**kwargs)


class _LiveTable(_Frozen):
    """The ``[live]`` table of a config file, validated where it sits: a refused value is
    placed as ``live.margin_tables.timeout_s``, as the file spells it."""

    live: LiveConfig


def split_config(text: str) -> tuple[EngineConfig, LiveConfig]:
    """Parse a TOML file: the ``[live]`` table is the LiveConfig, the rest the EngineConfig."""
    data = tomllib.loads(text)
    live = data.pop("live", {})
    return EngineConfig.model_validate(data), _LiveTable.model_validate({"live": live}).live
