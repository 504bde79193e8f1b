"""Bybit v5 public frames (FEEDS.md "Bybit v5"): orderbook, allLiquidation, publicTrade.

Every data frame is ``{topic, type, ts, data, [cts]}``; the capture channel is the topic
(``orderbook.50.BTCUSDT``, ``allLiquidation.BTCUSDT``, ``publicTrade.BTCUSDT``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from monitor.events import KIND_LIQUIDATION, KIND_TRADE, MarketEvent
from monitor.ingest.orderbook import ACTION_DELTA, ACTION_SNAPSHOT, RULE_BYBIT, BookFrame
from monitor.ingest.wire._common import (
    WireError,
    field,
    print_fields,
    timestamp_ms,
)
from monitor.ingest.wire.binance import int_field, levels, text_field
from monitor.ingest.wire.instruments import (
    BUILTIN_CONTRACT_VALUES,
    NO_INSTRUMENTS,
    ContractValues,
    InstrumentTable,
    resolve,
)

__all__ = ["parse_all_liquidation", "parse_orderbook", "parse_public_trade"]


def _frame(raw: Any) -> Mapping[str, Any]:
    if not isinstance(raw, dict):
        raise WireError("wrong_type", f"frame must be a JSON object, got {type(raw).__name__}")
    return raw


def _items(frame: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    data = field(frame, "data")
    if not isinstance(data, list) or not all(isinstance(x, dict) for x in data):
        raise WireError("wrong_type", "field 'data' must be a list of objects")
    return data


def parse_orderbook(
    venue: str, channel: str, raw: Any, recv_ts_ms: int, aliases: Mapping[str, str],
    max_future_skew_ms: int, contract_values: ContractValues = BUILTIN_CONTRACT_VALUES,
    instruments: InstrumentTable = NO_INSTRUMENTS,
) -> list[BookFrame]:
    """``orderbook.{depth}.{symbol}``: snapshot resets (also ``u = 1`` restarts); delta applies."""
    frame = _frame(raw)
    kind = field(frame, "type")
    if kind not in (ACTION_SNAPSHOT, ACTION_DELTA):
        raise WireError("wrong_value", f"field 'type' must be snapshot or delta, got {kind!r:.20}")
    data = field(frame, "data")
    if not isinstance(data, dict):
        raise WireError("wrong_type", "field 'data' must be an object")
    symbol = text_field(data, "s")
    ts = timestamp_ms(field(frame, "ts"), "ts", recv_ts_ms, max_future_skew_ms)
    inst = resolve(venue, symbol, aliases, contract_values, instruments)
    return [
        BookFrame(
            RULE_BYBIT, symbol, inst.asset, inst.quote, kind, ts,
            levels(field(data, "b"), "b"), levels(field(data, "a"), "a"),
            last_id=int_field(field(data, "u"), "u"),
        )
    ]



def _print(
    venue: str, item: Mapping[str, Any], recv_ts_ms: int, aliases: Mapping[str, str],
    max_future_skew_ms: int, contract_values: ContractValues, instruments: InstrumentTable,
) -> tuple[str, str, str, float, float, float, int]:
    """The shared fields of a trade or liquidation item ``{T, s, S, v, p}``.

    Returns (symbol, asset, quote, +1.0 for ``S = Buy`` / −1.0 for ``Sell``, price, qty, ts_ms).
    """
    symbol = text_field(item, "s")
    sign, price, qty, ts = print_fields(item, ("S", "Buy", "Sell"), "p", "v", "T", recv_ts_ms, max_future_skew_ms)
    inst = resolve(venue, symbol, aliases, contract_values, instruments)
    return symbol, inst.asset, inst.quote, sign, price, inst.base_qty(qty, price), ts


def parse_all_liquidation(
    venue: str, raw: Any, recv_ts_ms: int, aliases: Mapping[str, str], max_future_skew_ms: int,
    contract_values: ContractValues = BUILTIN_CONTRACT_VALUES, instruments: InstrumentTable = NO_INSTRUMENTS,
) -> list[MarketEvent]:
    """``allLiquidation.{symbol}``: ``data: [{T, s, S, v, p}]``; ``S = Buy`` liquidates a long.

    ``v`` is in base units for linear contracts, ``p`` the bankruptcy price; notional = v × p.
    """
    out: list[MarketEvent] = []
    for item in _items(_frame(raw)):
        symbol, base, quote, buy, price, qty, ts = _print(
            venue, item, recv_ts_ms, aliases, max_future_skew_ms, contract_values, instruments)
        out.append(MarketEvent(
            KIND_LIQUIDATION, venue, symbol, base, quote, ts, recv_ts_ms, price, qty,
            buy, price * qty,  # S = Buy: a long was liquidated
        ))
    return out


def parse_public_trade(
    venue: str, raw: Any, recv_ts_ms: int, aliases: Mapping[str, str], max_future_skew_ms: int,
    contract_values: ContractValues = BUILTIN_CONTRACT_VALUES, instruments: InstrumentTable = NO_INSTRUMENTS,
) -> list[MarketEvent]:
    """``publicTrade.{symbol}``: ``data: [{T, s, S, v, p, ...}]``; ``S`` is the taker side."""
    out: list[MarketEvent] = []
    for item in _items(_frame(raw)):
        symbol, base, quote, buy, price, qty, ts = _print(
            venue, item, recv_ts_ms, aliases, max_future_skew_ms, contract_values, instruments)
        out.append(MarketEvent(
            KIND_TRADE, venue, symbol, base, quote, ts, recv_ts_ms, price, qty, buy, 0.0,
        ))
    return out
