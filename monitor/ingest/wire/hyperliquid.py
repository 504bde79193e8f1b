"""Hyperliquid frames (FEEDS.md "Hyperliquid"): ``l2Book`` snapshots and ``trades``.

Frames are ``{"channel": ..., "data": ...}``; the capture channel is ``channel``. Perp
coins (``BTC``) are quoted in USDC; spot pairs are named ``BASE/QUOTE``. There is no
public all-market liquidation stream.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from monitor.events import KIND_TRADE, MarketEvent
from monitor.ingest.orderbook import ACTION_SNAPSHOT, RULE_SNAPSHOTS, BookFrame
from monitor.ingest.wire._common import (
    WireError,
    field,
    print_fields,
    timestamp_ms,
)
from monitor.ingest.wire.binance import levels, text_field
from monitor.ingest.wire.instruments import (
    BUILTIN_CONTRACT_VALUES,
    NO_INSTRUMENTS,
    ContractValues,
    InstrumentTable,
    resolve,
)

__all__ = ["PERP_QUOTE", "coin_pair", "parse_l2_book", "parse_trades"]

#: Settlement currency of Hyperliquid perps.
PERP_QUOTE = "USDC"


def coin_pair(coin: str, aliases: Mapping[str, str]) -> tuple[str, str]:
    """(base, quote) of a Hyperliquid coin: ``BTC`` → (BTC, USDC); ``PURR/USDC`` splits."""
    inst = resolve("hyperliquid", coin, aliases)
    return inst.base, inst.quote


def _data(raw: Any) -> Any:
    if not isinstance(raw, dict):
        raise WireError("wrong_type", f"frame must be a JSON object, got {type(raw).__name__}")
    return field(raw, "data")


def parse_l2_book(
    venue: str, channel: str, raw: Any, recv_ts_ms: int, aliases: Mapping[str, str],
    max_future_skew_ms: int, contract_values: ContractValues = BUILTIN_CONTRACT_VALUES,
    instruments: InstrumentTable = NO_INSTRUMENTS,
) -> list[BookFrame]:
    """``l2Book``: ``{coin, levels: [bids, asks], time}``, each level ``{px, sz, n}``; a full book."""
    data = _data(raw)
    if not isinstance(data, dict):
        raise WireError("wrong_type", "field 'data' must be an object")
    coin = text_field(data, "coin")
    sides = field(data, "levels")
    if not isinstance(sides, list) or len(sides) != 2:
        raise WireError("wrong_type", "field 'levels' must be [bids, asks]")
    ts = timestamp_ms(field(data, "time"), "time", recv_ts_ms, max_future_skew_ms)
    inst = resolve(venue, coin, aliases, contract_values, instruments)
    return [
        BookFrame(
            RULE_SNAPSHOTS, coin, inst.asset, inst.quote, ACTION_SNAPSHOT, ts,
            levels(sides[0], "levels[0]"), levels(sides[1], "levels[1]"),
        )
    ]


def parse_trades(
    venue: str, raw: Any, recv_ts_ms: int, aliases: Mapping[str, str], max_future_skew_ms: int,
    contract_values: ContractValues = BUILTIN_CONTRACT_VALUES, instruments: InstrumentTable = NO_INSTRUMENTS,
) -> list[MarketEvent]:
    """``trades``: ``[{coin, side, px, sz, hash, time, tid, users}]``; ``side`` B = buy aggressor."""
    data = _data(raw)
    if not isinstance(data, list) or not all(isinstance(x, dict) for x in data):
        raise WireError("wrong_type", "field 'data' must be a list of trades")
    out: list[MarketEvent] = []
    for item in data:
        coin = text_field(item, "coin")
        sign, price, qty, ts = print_fields(
            item, ("side", "B", "A"), "px", "sz", "time", recv_ts_ms, max_future_skew_ms)
        inst = resolve(venue, coin, aliases, contract_values, instruments)
        out.append(MarketEvent(
            KIND_TRADE, venue, coin, inst.asset, inst.quote, ts, recv_ts_ms, price, inst.base_qty(qty, price),
            sign, 0.0,
        ))
    return out
