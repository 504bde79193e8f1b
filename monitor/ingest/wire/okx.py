"""OKX v5 public frames (FEEDS.md "OKX v5"): books, liquidation-orders, trades.

Frames are ``{arg: {channel, instId|instType}, [action], data: [...]}``; the capture
channel is ``arg.channel``. Swap and futures sizes are in contracts: they are converted
to base units with a contract-value table (``ctVal``/``ctValCcy`` of
``GET /api/v5/public/instruments``), keyed by instrument family. Linear contracts have
``ctValCcy`` = base (qty = sz × ctVal); inverse ones ``ctValCcy`` = USD
(qty = sz × ctVal / price). A derivative without a known contract value is rejected
(``unknown_contract_value``) rather than guessed; in a frame carrying several
instruments only the unknown ones are rejected. Symbols resolve through the instrument
model (:mod:`monitor.ingest.wire.instruments`): a dated future (``BTC-USD-220304``) is its own
asset, an option (``BTC-USD-220304-32000-P``) is refused with ``unsupported_instrument``.

The table comes from the feeds config (``[live.okx_contract_values]``, defaults
:data:`BUILTIN_CONTRACT_VALUES`); a live session records it as a ``contract_values``
frame (:func:`parse_contract_values`), so its capture replays with the same sizes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from monitor.events import KIND_LIQUIDATION, KIND_TRADE, MarketEvent
from monitor.ingest.orderbook import ACTION_DELTA, ACTION_SNAPSHOT, RULE_OKX, BookFrame
from monitor.ingest.wire._common import (
    PartialWireError,
    WireError,
    field,
    finite_float,
    non_negative,
    positive_price,
    timestamp_ms,
)
from monitor.ingest.wire.binance import int_field, levels, text_field
from monitor.ingest.wire.instruments import (
    BUILTIN_CONTRACT_VALUES,
    NO_INSTRUMENTS,
    ContractValues,
    Instrument,
    InstrumentTable,
    contract_family,
    resolve,
)

__all__ = [
    "BUILTIN_CONTRACT_VALUES",
    "ContractValues",
    "contract_family",
    "contract_qty",
    "contract_values_raw",
    "parse_books",
    "parse_contract_values",
    "parse_liquidations",
    "parse_trades",
]

_SKIPPED_REASONS = ("unknown_contract_value", "unsupported_instrument")


def contract_qty(
    inst_id: str, sz: float, price: float, table: ContractValues,
    instruments: InstrumentTable = NO_INSTRUMENTS,
) -> float:
    """Base quantity of ``sz``: contracts × ctVal (linear) or × ctVal / price (inverse)."""
    return resolve("okx", inst_id, {}, table, instruments).base_qty(sz, price)


def _raise_skipped(skipped: list[tuple[str, str]], events: list[MarketEvent]) -> None:
    """Reject the items that cannot be sized: the whole frame, or only them (partial)."""
    if not skipped:
        return
    reason = skipped[0][0]
    detail = "; ".join(sorted({d for r, d in skipped if r == reason}))
    if events:
        raise PartialWireError(reason, detail, events)
    raise WireError(reason, detail)


def _check_family(family: Any) -> str:
    if not isinstance(family, str):
        raise WireError("wrong_type", "contract value keys must be instrument families (strings)")
    parts = family.upper().split("-")
    if len(parts) != 2 or not all(parts):
        raise WireError("wrong_value", f"contract value key {family!r:.40} is not an instrument family BASE-QUOTE")
    return family.upper()


def parse_contract_values(raw: Any) -> dict[str, tuple[float, str]]:
    """``contract_values`` frame ``{"values": {family: {"ct_val", "ct_val_ccy"}}}`` → table."""
    if not isinstance(raw, dict):
        raise WireError("wrong_type", f"frame must be a JSON object, got {type(raw).__name__}")
    values = field(raw, "values")
    if not isinstance(values, dict):
        raise WireError("wrong_type", "field 'values' must be an object")
    out: dict[str, tuple[float, str]] = {}
    for family, entry in values.items():
        key = _check_family(family)
        if not isinstance(entry, dict):
            raise WireError("wrong_type", f"contract value of {key} must be an object")
        ct_val = finite_float(field(entry, "ct_val"), "ct_val")
        if ct_val <= 0.0:
            raise WireError("wrong_value", f"ct_val of {key} must be > 0, got {ct_val}")
        ccy = field(entry, "ct_val_ccy")
        if not isinstance(ccy, str) or not ccy:
            raise WireError("wrong_type", f"ct_val_ccy of {key} must be a non-empty string")
        out[key] = (ct_val, ccy.upper())
    return out


def contract_values_raw(table: ContractValues) -> dict[str, Any]:
    """The ``contract_values`` frame of ``table`` (inverse of :func:`parse_contract_values`)."""
    return {"values": {k: {"ct_val": v[0], "ct_val_ccy": v[1]} for k, v in sorted(table.items())}}


def _frame(raw: Any) -> tuple[Mapping[str, Any], list[Mapping[str, Any]]]:
    if not isinstance(raw, dict):
        raise WireError("wrong_type", f"frame must be a JSON object, got {type(raw).__name__}")
    arg = field(raw, "arg")
    if not isinstance(arg, dict):
        raise WireError("wrong_type", "field 'arg' must be an object")
    data = field(raw, "data")
    if not isinstance(data, list) or not all(isinstance(x, dict) for x in data):
        raise WireError("wrong_type", "field 'data' must be a list of objects")
    return arg, data


def _ts(value: Any, name: str, recv_ts_ms: int, max_future_skew_ms: int) -> int:
    return timestamp_ms(int_field(value, name), name, recv_ts_ms, max_future_skew_ms)


def _contract_levels(inst: Instrument, value: Any, name: str) -> tuple[tuple[float, float], ...]:
    return tuple((px, inst.base_qty(sz, px)) for px, sz in levels(value, name))


def parse_books(
    venue: str, channel: str, raw: Any, recv_ts_ms: int, aliases: Mapping[str, str],
    max_future_skew_ms: int, contract_values: ContractValues = BUILTIN_CONTRACT_VALUES,
    instruments: InstrumentTable = NO_INSTRUMENTS,
) -> list[BookFrame]:
    """``books``: ``action`` snapshot/update, ``data: [{asks, bids, ts, checksum, seqId, prevSeqId}]``."""
    arg, data = _frame(raw)
    inst_id = text_field(arg, "instId")
    action = field(raw, "action")
    if action not in ("snapshot", "update"):
        raise WireError("wrong_value", f"field 'action' must be snapshot or update, got {action!r:.20}")
    inst = resolve(venue, inst_id, aliases, contract_values, instruments)
    out: list[BookFrame] = []
    for item in data:
        out.append(BookFrame(
            RULE_OKX, inst_id, inst.asset, inst.quote,
            ACTION_SNAPSHOT if action == "snapshot" else ACTION_DELTA,
            _ts(field(item, "ts"), "ts", recv_ts_ms, max_future_skew_ms),
            _contract_levels(inst, field(item, "bids"), "bids"),
            _contract_levels(inst, field(item, "asks"), "asks"),
            last_id=int_field(field(item, "seqId"), "seqId"),
            prev_id=int_field(item.get("prevSeqId", -1), "prevSeqId"),
        ))
    return out


def _liquidated_side(d: Mapping[str, Any]) -> float:
    """+1 when a long was liquidated: ``posSide`` long, or in net mode a ``sell`` order."""
    pos_side = d.get("posSide", "net")
    side = field(d, "side")
    if pos_side == "long" or (pos_side in ("net", "") and side == "sell"):
        return 1.0
    if pos_side == "short" or (pos_side in ("net", "") and side == "buy"):
        return -1.0
    raise WireError("wrong_value", f"posSide {pos_side!r:.10} / side {side!r:.10}")


def _sizable(
    venue: str, inst_id: str, aliases: Mapping[str, str], contract_values: ContractValues,
    instruments: InstrumentTable, skipped: list[tuple[str, str]],
) -> Instrument | None:
    """The instrument of one item, or None (recorded in ``skipped``) when it cannot be sized."""
    try:
        return resolve(venue, inst_id, aliases, contract_values, instruments)
    except WireError as exc:
        if exc.reason not in _SKIPPED_REASONS:
            raise
        skipped.append((exc.reason, exc.detail))
        return None


def parse_liquidations(
    venue: str, raw: Any, recv_ts_ms: int, aliases: Mapping[str, str], max_future_skew_ms: int,
    contract_values: ContractValues = BUILTIN_CONTRACT_VALUES,
    instruments: InstrumentTable = NO_INSTRUMENTS,
) -> list[MarketEvent]:
    """``liquidation-orders``: ``data: [{instId, details: [{side, posSide, bkPx, sz, ts}]}]``.

    ``posSide`` long/short names the liquidated position; in net mode a ``sell`` order
    closes a long. Notional = base qty × bankruptcy price.
    """
    _arg, data = _frame(raw)
    out: list[MarketEvent] = []
    skipped: list[tuple[str, str]] = []
    for item in data:
        inst_id = text_field(item, "instId")
        inst = _sizable(venue, inst_id, aliases, contract_values, instruments, skipped)
        if inst is None:
            continue
        details = field(item, "details")
        if not isinstance(details, list) or not all(isinstance(d, dict) for d in details):
            raise WireError("wrong_type", "field 'details' must be a list of objects")
        for d in details:
            long_liquidated = _liquidated_side(d)
            price = positive_price(field(d, "bkPx"), "bkPx")
            qty = inst.base_qty(non_negative(field(d, "sz"), "sz"), price)
            ts = _ts(field(d, "ts"), "ts", recv_ts_ms, max_future_skew_ms)
            out.append(MarketEvent(
                KIND_LIQUIDATION, venue, inst_id, inst.asset, inst.quote, ts, recv_ts_ms, price, qty,
                long_liquidated, price * qty,
            ))
    _raise_skipped(skipped, out)
    return out


def parse_trades(
    venue: str, raw: Any, recv_ts_ms: int, aliases: Mapping[str, str], max_future_skew_ms: int,
    contract_values: ContractValues = BUILTIN_CONTRACT_VALUES,
    instruments: InstrumentTable = NO_INSTRUMENTS,
) -> list[MarketEvent]:
    """``trades``: ``data: [{instId, tradeId, px, sz, side, ts}]``; ``side`` is the taker side."""
    _arg, data = _frame(raw)
    out: list[MarketEvent] = []
    skipped: list[tuple[str, str]] = []
    for item in data:
        inst_id = text_field(item, "instId")
        inst = _sizable(venue, inst_id, aliases, contract_values, instruments, skipped)
        if inst is None:
            continue
        side = field(item, "side")
        if side not in ("buy", "sell"):
            raise WireError("wrong_value", f"field 'side' must be buy or sell, got {side!r:.20}")
        price = positive_price(field(item, "px"), "px")
        qty = inst.base_qty(non_negative(field(item, "sz"), "sz"), price)
        ts = _ts(field(item, "ts"), "ts", recv_ts_ms, max_future_skew_ms)
        out.append(MarketEvent(
            KIND_TRADE, venue, inst_id, inst.asset, inst.quote, ts, recv_ts_ms, price, qty,
            1.0 if side == "buy" else -1.0, 0.0,
        ))
    _raise_skipped(skipped, out)
    return out
