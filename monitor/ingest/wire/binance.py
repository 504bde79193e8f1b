"""Binance spot and USDⓈ-M frames (FEEDS.md "Binance").

bookTicker, aggTrade, markPrice (→ KIND_PRICE), forceOrder (→ KIND_LIQUIDATION), diff
depth and REST depth snapshots (→ :class:`monitor.ingest.orderbook.BookFrame`). Accepts both the
bare payload and the combined-stream wrapper ``{"stream", "data"}``.

The small field helpers at the bottom (``int_field``, ``text_field``, ``levels``) are
shared by the other venue modules.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from monitor.events import KIND_LIQUIDATION, KIND_PRICE, KIND_QUOTE, KIND_TRADE, MarketEvent
from monitor.ingest.orderbook import (
    ACTION_DELTA,
    ACTION_SNAPSHOT,
    RULE_BINANCE_SPOT,
    RULE_BINANCE_USDM,
    BookFrame,
)
from monitor.ingest.wire._common import (
    MAX_WIRE_NUMBER,
    MIN_WIRE_PRICE,
    WireError,
    field,
    non_negative,
    positive_price,
    side_sign,
    timestamp_ms,
)
from monitor.ingest.wire.instruments import (
    BUILTIN_CONTRACT_VALUES,
    NO_INSTRUMENTS,
    ContractValues,
    InstrumentTable,
    resolve,
)

__all__ = [
    "book_rule",
    "int_field",
    "levels",
    "parse_agg_trade",
    "parse_book_ticker",
    "parse_depth_diff",
    "parse_depth_snapshot",
    "parse_force_order",
    "parse_mark_price",
    "text_field",
    "unwrap",
]


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
    venue: str, raw: Any, recv_ts_ms: int, aliases: Mapping[str, str], max_future_skew_ms: int,
    contract_values: ContractValues = BUILTIN_CONTRACT_VALUES, instruments: InstrumentTable = NO_INSTRUMENTS,
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
    inst = resolve(venue, symbol, aliases, contract_values, instruments)
    return MarketEvent(KIND_QUOTE, venue, symbol, inst.asset, inst.quote, ts, recv_ts_ms, bid, ask, bid_qty, ask_qty)


def parse_agg_trade(
    venue: str, raw: Any, recv_ts_ms: int, aliases: Mapping[str, str], max_future_skew_ms: int,
    contract_values: ContractValues = BUILTIN_CONTRACT_VALUES, instruments: InstrumentTable = NO_INSTRUMENTS,
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
    inst = resolve(venue, symbol, aliases, contract_values, instruments)
    qty = inst.base_qty(qty, price)
    # Buyer is maker ⇒ the aggressor sold into the bid.
    side = -1.0 if maker else 1.0
    return MarketEvent(KIND_TRADE, venue, symbol, inst.asset, inst.quote, ts, recv_ts_ms, price, qty, side, 0.0)


def parse_mark_price(
    venue: str, raw: Any, recv_ts_ms: int, aliases: Mapping[str, str], max_future_skew_ms: int,
    contract_values: ContractValues = BUILTIN_CONTRACT_VALUES, instruments: InstrumentTable = NO_INSTRUMENTS,
) -> list[MarketEvent]:
    """``<symbol>@markPrice[@1s]`` / ``!markPrice@arr``: ``{e, E, s, p (mark), i, P, r, T}``."""
    payload: Any = raw["data"] if isinstance(raw, dict) and "stream" in raw and "data" in raw else raw
    items = payload if isinstance(payload, list) else [unwrap(payload)]
    out: list[MarketEvent] = []
    for data in items:
        if not isinstance(data, dict):
            raise WireError("wrong_type", "markPrice item must be an object")
        symbol = text_field(data, "s")
        mark = positive_price(field(data, "p"), "p")
        ts = timestamp_ms(field(data, "E"), "E", recv_ts_ms, max_future_skew_ms)
        inst = resolve(venue, symbol, aliases, contract_values, instruments)
        out.append(MarketEvent(KIND_PRICE, venue, symbol, inst.asset, inst.quote, ts, recv_ts_ms, mark, 0.0, 0.0, 0.0))
    return out


def parse_force_order(
    venue: str, raw: Any, recv_ts_ms: int, aliases: Mapping[str, str], max_future_skew_ms: int,
    contract_values: ContractValues = BUILTIN_CONTRACT_VALUES, instruments: InstrumentTable = NO_INSTRUMENTS,
) -> MarketEvent:
    """``forceOrder``: ``{e, E, o: {s, S, q, p, ap, X, l, z, T}}``; ``S = SELL`` liquidates a long.

    Quantity is the filled quantity ``z`` (the order quantity ``q`` while nothing is filled),
    price the average fill ``ap`` (the order price ``p`` while 0); Binance pushes at most one
    liquidation per symbol per second, so these prints are lower bounds.
    """
    data = unwrap(raw)
    order = field(data, "o")
    if not isinstance(order, dict):
        raise WireError("wrong_type", "field 'o' must be an object")
    symbol = text_field(order, "s")
    # A SELL order closes a long: the long side was liquidated (+1).
    long_liquidated = side_sign(order, "S", "SELL", "BUY")
    filled = non_negative(order.get("z", 0), "z")
    qty = filled if filled > 0.0 else non_negative(field(order, "q"), "q")
    avg = non_negative(order.get("ap", 0), "ap")
    price = positive_price(avg, "ap") if avg > 0.0 else positive_price(field(order, "p"), "p")
    ts = timestamp_ms(field(order, "T"), "T", recv_ts_ms, max_future_skew_ms)
    inst = resolve(venue, symbol, aliases, contract_values, instruments)
    qty = inst.base_qty(qty, price)
    return MarketEvent(
        KIND_LIQUIDATION, venue, symbol, inst.asset, inst.quote, ts, recv_ts_ms, price, qty,
        long_liquidated, price * qty,
    )


def book_rule(venue: str) -> str:
    """Sequence rule of a Binance venue: USDⓈ-M futures (``pu``) or spot (``U``)."""
    return RULE_BINANCE_USDM if "usdm" in venue or "futures" in venue else RULE_BINANCE_SPOT


def parse_depth_diff(
    venue: str, channel: str, raw: Any, recv_ts_ms: int, aliases: Mapping[str, str],
    max_future_skew_ms: int, contract_values: ContractValues = BUILTIN_CONTRACT_VALUES,
    instruments: InstrumentTable = NO_INSTRUMENTS,
) -> list[BookFrame]:
    """``<symbol>@depth[@100ms]``: ``{e, E, s, U, u, b, a}`` (futures add ``T``, ``pu``)."""
    data = unwrap(raw)
    symbol = text_field(data, "s")
    rule = book_rule(venue)
    first_id = int_field(field(data, "U"), "U")
    last_id = int_field(field(data, "u"), "u")
    prev_id = int_field(field(data, "pu"), "pu") if rule == RULE_BINANCE_USDM else -1
    if first_id > last_id:
        raise WireError("wrong_value", f"U {first_id} > u {last_id}")
    ts = timestamp_ms(field(data, "E"), "E", recv_ts_ms, max_future_skew_ms)
    inst = resolve(venue, symbol, aliases, contract_values, instruments)
    return [
        BookFrame(
            rule, symbol.upper(), inst.asset, inst.quote, ACTION_DELTA, ts,
            levels(field(data, "b"), "b"), levels(field(data, "a"), "a"),
            last_id=last_id, first_id=first_id, prev_id=prev_id,
        )
    ]


def parse_depth_snapshot(
    venue: str, channel: str, raw: Any, recv_ts_ms: int, aliases: Mapping[str, str],
    max_future_skew_ms: int, contract_values: ContractValues = BUILTIN_CONTRACT_VALUES,
    instruments: InstrumentTable = NO_INSTRUMENTS,
) -> list[BookFrame]:
    """REST ``/api/v3/depth`` or ``/fapi/v1/depth``: ``{lastUpdateId, [E, T,] bids, asks}``.

    Recorded as channel ``<symbol>@depthSnapshot`` (the REST body names no symbol).
    """
    if not isinstance(raw, dict):
        raise WireError("wrong_type", f"depth snapshot must be a JSON object, got {type(raw).__name__}")
    symbol = channel.split("@", 1)[0].upper()
    if not symbol:
        raise WireError("unknown_symbol", f"channel {channel!r} names no symbol")
    last_id = int_field(field(raw, "lastUpdateId"), "lastUpdateId")
    ts = recv_ts_ms
    if "E" in raw:
        ts = timestamp_ms(raw["E"], "E", recv_ts_ms, max_future_skew_ms)
    inst = resolve(venue, symbol, aliases, contract_values, instruments)
    return [
        BookFrame(
            book_rule(venue), symbol, inst.asset, inst.quote, ACTION_SNAPSHOT, ts,
            levels(field(raw, "bids"), "bids"), levels(field(raw, "asks"), "asks"),
            last_id=last_id,
        )
    ]


# -- field helpers shared by the venue modules ----------------------------------------


#: The integers a venue's id or timestamp may take: signed or unsigned 64-bit (orjson's range).
_MIN_INT, _MAX_INT = -(2**63), 2**64


def int_field(value: Any, name: str) -> int:
    """An integer id or timestamp sent as a JSON integer or a decimal string (OKX), within
    64 bits (a JSON integer orjson gives as an int is; a string of any length may not be)."""
    out: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        out = value
    elif isinstance(value, str):
        with contextlib.suppress(ValueError):
            out = int(value)
    if out is None:
        raise WireError("wrong_type", f"field '{name}' must be an integer, got {value!r:.40}")
    if not _MIN_INT <= out < _MAX_INT:
        raise WireError("out_of_range", f"field '{name}' is beyond a 64-bit integer: {value!r:.40}")
    return out


def text_field(obj: Mapping[str, Any], name: str) -> str:
    """A non-empty string field."""
    value = field(obj, name)
    if not isinstance(value, str) or not value:
        raise WireError("wrong_type", f"field '{name}' must be a non-empty string")
    return value


#: Wire types a level's price and size may take (``bool`` is not one: ``type(True) is bool``).
_NUMERIC_TYPES = frozenset((str, float, int))


def _plain_levels(value: list[Any]) -> tuple[tuple[float, float], ...] | None:
    """The common case: ``[[price, qty, ...], ...]`` all valid; None sends it to :func:`levels`.

    Same acceptance as the checked path (finite, ``MIN_WIRE_PRICE`` <= price, 0 <= qty,
    both within ``MAX_WIRE_NUMBER``; NaN fails every comparison), without its per-value calls: any level
    it does not accept is judged again, with the exact error, by the checked path.
    """
    out: list[tuple[float, float]] = []
    append, numeric = out.append, _NUMERIC_TYPES
    try:
        for level in value:
            if type(level) is list:
                price_raw, qty_raw = level[0], level[1]  # IndexError: fewer than two
            elif type(level) is dict:
                price_raw, qty_raw = level["px"], level["sz"]  # Hyperliquid's levels
            else:
                return None
            if type(price_raw) not in numeric or type(qty_raw) not in numeric:
                return None
            price, qty = float(price_raw), float(qty_raw)
            if not (MIN_WIRE_PRICE <= price <= MAX_WIRE_NUMBER and 0.0 <= qty <= MAX_WIRE_NUMBER):
                return None
            append((price, qty))
    except (ValueError, OverflowError, IndexError, KeyError):
        return None
    return tuple(out)


_Price = Annotated[float, Meta(ge=MIN_WIRE_PRICE, le=MAX_WIRE_NUMBER)]
_Qty = Annotated[float, Meta(ge=0.0, le=MAX_WIRE_NUMBER)]


class _PairLevels(msgspec.Struct, array_like=True):
    """``[levels]`` with levels ``[[price, qty], ...]`` (Binance, Bybit). The levels are
    wrapped in a struct because msgspec keeps a struct's type information on the class,
    where a bare ``list[tuple[...]]`` is worked out again on every call (≈ 4× the time)."""

    levels: list[tuple[_Price, _Qty]]


class _QuadLevels(msgspec.Struct, array_like=True):
    """``[levels]`` with OKX's levels ``[[price, qty, "0", orders], ...]`` (the last two
    fields ignored, as :func:`_plain_levels` ignores them)."""

    levels: list[tuple[_Price, _Qty, Any, Any]]


#: Widths of the levels msgspec converts: numbers or numeric strings, within their bounds.
_TYPED_WIDTHS = (2, 4)


def _typed_levels(value: list[Any], width: int) -> tuple[tuple[float, float], ...] | None:
    """Levels of ``width`` fields converted and checked in C by msgspec (lax: a numeric
    string becomes its float, as ``float()`` reads it); None sends anything it does not
    take to :func:`_plain_levels`. It takes a subset of what that takes, with the same
    values to the bit (property test) but for the sign of a zero quantity ("-0" reads as
    0.0, where ``float()`` gives -0.0): a quantity not above 0 removes its level either
    way, so the books never depend on which path took a frame."""
    try:
        if width == 2:
            return tuple(msgspec.convert([value], _PairLevels, strict=False).levels)
        quads = msgspec.convert([value], _QuadLevels, strict=False).levels
    except msgspec.ValidationError:
        return None
    return tuple([(row[0], row[1]) for row in quads])


def levels(value: Any, name: str, max_levels: int = 10_000) -> tuple[tuple[float, float], ...]:
    """Book levels ``[[price, qty, ...], ...]`` or ``[{px, sz, n}, ...]`` as (price, qty)."""
    if not isinstance(value, list):
        raise WireError("wrong_type", f"field '{name}' must be a list of levels")
    if len(value) > max_levels:
        raise WireError("too_many_levels", f"field '{name}' has {len(value)} levels")
    width = len(value[0]) if value and type(value[0]) is list else 0
    plain = _typed_levels(value, width) if width in _TYPED_WIDTHS else None
    if plain is None:
        plain = _plain_levels(value)
    return plain if plain is not None else checked_levels(value, name)


def checked_levels(value: list[Any], name: str) -> tuple[tuple[float, float], ...]:
    """Every level checked value by value, with the exact error (the reference of :func:`levels`)."""
    out: list[tuple[float, float]] = []
    for level in value:
        if isinstance(level, dict):
            price_raw, qty_raw = field(level, "px"), field(level, "sz")
        elif isinstance(level, list) and len(level) >= 2:
            price_raw, qty_raw = level[0], level[1]
        else:
            raise WireError("wrong_type", f"a level in '{name}' is not [price, qty]")
        out.append((positive_price(price_raw, name), non_negative(qty_raw, name)))
    return tuple(out)
