"""Generic sources: channel ``price`` with raw ``{"base", "quote", "price", "depth_usd"?, "ts_ms"?}``.

For on-chain pools fed by an indexer, index klines, or a user's own price service.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from monitor.events import KIND_PRICE, KIND_TRADE, MarketEvent
from monitor.ingest.wire._common import (
    WireError,
    field,
    non_negative,
    positive_price,
    side_sign,
    split_symbol,
    timestamp_ms,
)

__all__ = ["parse_price", "parse_trade"]


def parse_price(
    venue: str, raw: Any, recv_ts_ms: int, aliases: Mapping[str, str], max_future_skew_ms: int
) -> MarketEvent:
    """A generic price point; ``depth_usd`` (optional) weights it in the index."""
    if not isinstance(raw, dict):
        raise WireError("wrong_type", f"price frame must be a JSON object, got {type(raw).__name__}")
    base = field(raw, "base")
    quote = field(raw, "quote")
    if not isinstance(base, str) or not base or not isinstance(quote, str) or not quote:
        raise WireError("wrong_type", "fields 'base' and 'quote' must be non-empty strings")
    price = positive_price(field(raw, "price"), "price")
    depth_usd = non_negative(raw["depth_usd"], "depth_usd") if "depth_usd" in raw else 0.0
    ts = recv_ts_ms
    if "ts_ms" in raw:
        ts = timestamp_ms(raw["ts_ms"], "ts_ms", recv_ts_ms, max_future_skew_ms)
    base = aliases.get(base.upper(), base)
    quote = quote.upper()
    symbol = f"{base}/{quote}"
    return MarketEvent(KIND_PRICE, venue, symbol, base, quote, ts, recv_ts_ms, price, depth_usd, 0.0, 0.0)


def parse_trade(
    venue: str, raw: Any, recv_ts_ms: int, aliases: Mapping[str, str], max_future_skew_ms: int
) -> MarketEvent:
    """A generic trade print: ``{"symbol", "side": "buy"|"sell", "price", "amount", "ts_ms"?}``.

    The layout ``liqmon import`` writes for Tardis-style trade CSVs of venues without a
    native connector (Coinbase, Gemini, ...); ``side`` is the aggressor's.
    """
    if not isinstance(raw, dict):
        raise WireError("wrong_type", f"trade frame must be a JSON object, got {type(raw).__name__}")
    symbol = field(raw, "symbol")
    if not isinstance(symbol, str) or not symbol:
        raise WireError("wrong_type", "field 'symbol' must be a non-empty string")
    sign = side_sign(raw, "side", "buy", "sell", reason="wrong_type")
    price = positive_price(field(raw, "price"), "price")
    qty = non_negative(field(raw, "amount"), "amount")
    ts = recv_ts_ms
    if "ts_ms" in raw:
        ts = timestamp_ms(raw["ts_ms"], "ts_ms", recv_ts_ms, max_future_skew_ms)
    base, quote = split_symbol(symbol, aliases)
    return MarketEvent(
        KIND_TRADE, venue, symbol, base, quote, ts, recv_ts_ms, price, qty, sign, 0.0
    )
