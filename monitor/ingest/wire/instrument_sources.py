"""The venues' instruments endpoints → instrument tables (:mod:`monitor.ingest.wire.instruments`).

Pure: the live session fetches the responses (:mod:`streams.feeds.instruments`) and records
the resulting tables as ``instruments`` frames. Formats, from the venues' documentation:

- Binance spot ``GET /api/v3/exchangeInfo`` and USDⓈ-M ``GET /fapi/v1/exchangeInfo``:
  ``{"symbols": [{symbol, baseAsset, quoteAsset, [marginAsset, contractType,
  deliveryDate]}]}``; ``contractType`` PERPETUAL or a dated kind (CURRENT_QUARTER,
  NEXT_QUARTER, CURRENT_MONTH, NEXT_MONTH) with ``deliveryDate`` in ms.
- Bybit v5 ``GET /v5/market/instruments-info?category=spot|linear``:
  ``{"result": {"list": [{symbol, baseCoin, quoteCoin, [settleCoin, contractType,
  deliveryTime]}]}}``; ``contractType`` LinearPerpetual / LinearFutures / InversePerpetual
  / InverseFutures, ``deliveryTime`` ms as a string (``"0"`` for perpetuals).
- OKX ``GET /api/v5/public/instruments?instType=SPOT|SWAP|FUTURES|OPTION``:
  ``{"data": [{instType, instId, baseCcy, quoteCcy, settleCcy, uly, ctVal, ctMult,
  ctValCcy, ctType, expTime}]}``; ``ctType`` linear/inverse.
- Hyperliquid ``POST /info {"type": "meta"}``: ``{"universe": [{name, szDecimals, ...}]}``,
  perpetuals settled in USDC.

An item that does not read is an error for the whole response (``WireError``): a table
that silently lacks instruments would send their frames back to the fallback unnoticed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from monitor.ingest.wire._common import WireError, field, finite_float
from monitor.ingest.wire.instruments import (
    KIND_FUTURE,
    KIND_OPTION,
    KIND_PERPETUAL,
    KIND_SPOT,
    Instrument,
)

__all__ = [
    "SOURCE_PARSERS",
    "binance_instruments",
    "bybit_instruments",
    "hyperliquid_instruments",
    "okx_instruments",
]


def _items(resp: Any, *path: str) -> list[Mapping[str, Any]]:
    node = resp
    for name in path:
        if not isinstance(node, dict):
            raise WireError("wrong_type", f"instruments response: '{name}' is not inside an object")
        node = field(node, name)
    if not isinstance(node, list) or not all(isinstance(x, dict) for x in node):
        raise WireError("wrong_type", f"instruments response: '{'.'.join(path)}' must be a list of objects")
    return node


def _text(item: Mapping[str, Any], name: str) -> str:
    value = field(item, name)
    if not isinstance(value, str) or not value:
        raise WireError("wrong_type", f"instrument field '{name}' must be a non-empty string")
    return value.upper()


def _ms(value: Any, name: str) -> int:
    ms = int(finite_float(value, name))
    if ms <= 0:
        raise WireError("wrong_value", f"instrument field '{name}' must be a time in ms, got {value!r:.20}")
    return ms


def binance_instruments(resp: Any, venue: str) -> dict[str, Instrument]:
    """Binance ``exchangeInfo`` (spot or USDⓈ-M) → table."""
    out: dict[str, Instrument] = {}
    for item in _items(resp, "symbols"):
        symbol, base, quote = _text(item, "symbol"), _text(item, "baseAsset"), _text(item, "quoteAsset")
        contract = item.get("contractType")
        if venue.endswith("spot") or not contract:
            out[symbol] = Instrument(symbol, base, quote, quote, KIND_SPOT)
            continue
        settle = _text(item, "marginAsset") if "marginAsset" in item else quote
        if contract == "PERPETUAL":
            out[symbol] = Instrument(symbol, base, quote, settle, KIND_PERPETUAL)
        else:
            expiry = _ms(field(item, "deliveryDate"), "deliveryDate")
            out[symbol] = Instrument(symbol, base, quote, settle, KIND_FUTURE, expiry_ms=expiry)
    return out


def bybit_instruments(resp: Any, venue: str) -> dict[str, Instrument]:
    """Bybit v5 ``instruments-info`` (spot or linear) → table."""
    out: dict[str, Instrument] = {}
    for item in _items(resp, "result", "list"):
        symbol, base, quote = _text(item, "symbol"), _text(item, "baseCoin"), _text(item, "quoteCoin")
        contract = item.get("contractType")
        if venue.endswith("spot") or not contract:
            out[symbol] = Instrument(symbol, base, quote, quote, KIND_SPOT)
            continue
        settle = _text(item, "settleCoin")
        inverse = str(contract).startswith("Inverse")
        if str(contract).endswith("Perpetual"):
            out[symbol] = Instrument(symbol, base, quote, settle, KIND_PERPETUAL, inverse=inverse)
        else:
            expiry = _ms(field(item, "deliveryTime"), "deliveryTime")
            out[symbol] = Instrument(symbol, base, quote, settle, KIND_FUTURE, expiry_ms=expiry, inverse=inverse)
    return out


_OKX_KINDS = {"SPOT": KIND_SPOT, "SWAP": KIND_PERPETUAL, "FUTURES": KIND_FUTURE, "OPTION": KIND_OPTION}


def _okx_one(item: Mapping[str, Any]) -> Instrument:
    inst_id = _text(item, "instId")
    kind = _OKX_KINDS.get(str(item.get("instType")))
    if kind is None:
        raise WireError("wrong_value", f"instType of {inst_id} must be one of {', '.join(_OKX_KINDS)}")
    if kind == KIND_SPOT:
        base, quote = _text(item, "baseCcy"), _text(item, "quoteCcy")
        return Instrument(inst_id, base, quote, quote, KIND_SPOT)
    base, _, quote = _text(item, "uly").partition("-")
    ct_val = finite_float(field(item, "ctVal"), "ctVal")
    ct_mult = finite_float(item.get("ctMult") or 1, "ctMult")
    if ct_val <= 0 or ct_mult <= 0:
        raise WireError("wrong_value", f"ctVal and ctMult of {inst_id} must be > 0")
    expiry = None if kind == KIND_PERPETUAL else _ms(field(item, "expTime"), "expTime")
    return Instrument(
        inst_id, base, quote, _text(item, "settleCcy"), kind, expiry_ms=expiry,
        contract_value=ct_val, contract_multiplier=ct_mult, inverse=item.get("ctType") == "inverse",
    )


def okx_instruments(resp: Any, venue: str = "okx") -> dict[str, Instrument]:
    """OKX ``public/instruments`` (any ``instType``) → table."""
    return {inst.symbol: inst for inst in map(_okx_one, _items(resp, "data"))}


def hyperliquid_instruments(resp: Any, venue: str = "hyperliquid") -> dict[str, Instrument]:
    """Hyperliquid ``meta`` → table of its perpetuals (USDC)."""
    out: dict[str, Instrument] = {}
    for item in _items(resp, "universe"):
        name = _text(item, "name")
        out[name] = Instrument(name, name, "USDC", "USDC", KIND_PERPETUAL)
    return out


#: Venue prefix → the parser of its instruments endpoint's response.
SOURCE_PARSERS: dict[str, Callable[[Any, str], dict[str, Instrument]]] = {
    "binance": binance_instruments,
    "bybit": bybit_instruments,
    "okx": okx_instruments,
    "hyperliquid": hyperliquid_instruments,
}
