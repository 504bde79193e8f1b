"""Binance spot and USDⓈ-M frames: bookTicker, aggTrade (FEEDS.md "Binance").

Accepts both the bare payload and the combined-stream wrapper ``{"stream", "data"}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from monitor.events import KIND_QUOTE, KIND_TRADE, MarketEvent
from monitor.wire._common import (
    WireError,
    field,
    non_negative,
    positive_price,
    split_symbol,
    timestamp_ms,
)

__all__ = ["parse_agg_trade", "parse_book_ticker", "unwrap"]


def unwrap(raw: Any) -> Mapping[str, Any]:
    """The payload of a (possibly combined-stream) Binance frame."""
    if not isinstance(raw, dict):
        raise WireError("wrong_type", f"frame must be a JSON object, got {type(raw).__name__}")
    if "data" in raw and "stream" in raw:
        data = raw["data"]
        if not isinstance(data, dict):
            raise WireError("wrong_type", "combined-stream 'data' must be an object")
        return data
    return raw


def parse_book_ticker(
    venue: str, raw: Any, recv_ts_ms: int, aliases: Mapping[str, str], max_future_skew_ms: int
) -> MarketEvent:
    """``<symbol>@bookTicker``: spot ``{u, s, b, B, a, A}``; futures add ``e, E, T``."""
    data = unwrap(raw)
    symbol = field(data, "s")
    if not isinstance(symbol, str) or not symbol:
        raise WireError("wrong_type", "field 's' must be a non-empty string")
    bid = positive_price(field(data, "b"), "b")
    ask = positive_price(field(data, "a"), "a")
    bid_qty = non_negative(field(data, "B"), "B")
    ask_qty = non_negative(field(data, "A"), "A")
    if bid > ask:
        raise WireError("crossed_book", f"bid {bid} > ask {ask} for {symbol}")
    ts = recv_ts_ms
    if "E" in data:
        ts = timestamp_ms(data["E"], "E", recv_ts_ms, max_future_skew_ms)
    base, quote = split_symbol(symbol, aliases)
    return MarketEvent(KIND_QUOTE, venue, symbol, base, quote, ts, recv_ts_ms, bid, ask, bid_qty, ask_qty)


def parse_agg_trade(
    venue: str, raw: Any, recv_ts_ms: int, aliases: Mapping[str, str], max_future_skew_ms: int
) -> MarketEvent:
    """``<symbol>@aggTrade``: ``{e, E, s, a, p, q, f, l, T, m}``; ``m`` = buyer is maker."""
    data = unwrap(raw)
    symbol = field(data, "s")
    if not isinstance(symbol, str) or not symbol:
        raise WireError("wrong_type", "field 's' must be a non-empty string")
    price = positive_price(field(data, "p"), "p")
    qty = non_negative(field(data, "q"), "q")
    maker = field(data, "m")
    if not isinstance(maker, bool):
        raise WireError("wrong_type", "field 'm' must be a boolean")
    ts = timestamp_ms(field(data, "T"), "T", recv_ts_ms, max_future_skew_ms)
    base, quote = split_symbol(symbol, aliases)
    # Buyer is maker ⇒ the aggressor sold into the bid.
    side = -1.0 if maker else 1.0
    return MarketEvent(KIND_TRADE, venue, symbol, base, quote, ts, recv_ts_ms, price, qty, side, 0.0)
