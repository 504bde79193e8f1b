"""Instrument model per venue: what a symbol is, and how its sizes become base units.

Every venue symbol maps to an :class:`Instrument`: base, quote, settle currency, kind
(spot, perpetual, dated future with its expiry, option), contract value and multiplier,
linear or inverse. The parsers resolve symbols with :func:`resolve` instead of guessing
from the symbol string alone:

1. the venue's instrument table (:data:`InstrumentTable`), taken from the venue's own
   instruments endpoint at the start of a live session and recorded in the capture as an
   ``instruments`` frame (:func:`parse_instruments`, :func:`instruments_raw`), so a replay
   resolves exactly as the session did;
2. otherwise the built-in fallback: the venue's documented symbol grammar
   (:func:`fallback_instrument`), with OKX contract values from the contract-value table
   (``contract_values`` frame, :data:`BUILTIN_CONTRACT_VALUES`).

Sources for the fields and the grammars:

- Binance spot ``GET /api/v3/exchangeInfo`` (``symbols[].baseAsset/quoteAsset``) and
  USDⓈ-M ``GET /fapi/v1/exchangeInfo`` (``contractType`` PERPETUAL / CURRENT_QUARTER /
  NEXT_QUARTER, ``deliveryDate`` ms, ``marginAsset``): a delivery contract is named
  ``<pair>_<YYMMDD>`` (``BTCUSDT_210625``), options ``BTC-210625-30000-C``.
- Bybit v5 ``GET /v5/market/instruments-info`` (``contractType`` LinearPerpetual /
  LinearFutures / InversePerpetual / InverseFutures, ``baseCoin``, ``quoteCoin``,
  ``settleCoin``, ``deliveryTime``); symbol enum (bybit-exchange.github.io/docs/v5/enum):
  USDC perpetuals are ``BTCPERP``, USDC futures ``BTC-26JUN25``, options
  ``BTC-26JUN25-100000-C``.
- OKX ``GET /api/v5/public/instruments`` (``instType`` SPOT / SWAP / FUTURES / OPTION,
  ``ctVal``, ``ctMult``, ``ctValCcy``, ``ctType`` linear/inverse, ``expTime``): ids
  ``BTC-USDT``, ``BTC-USDT-SWAP``, ``BTC-USD-220304``, ``BTC-USD-220304-32000-P``.
- Hyperliquid ``POST /info {"type": "meta"}`` (``universe[].name``, ``szDecimals``): perps
  are named by coin and settle in USDC; spot pairs ``PURR/USDC`` (``spotMeta``).

Dated futures trade at a basis to the perpetual, so their events carry their own asset
name (:attr:`Instrument.asset`, ``BTC-20210625``) and therefore their own price keys and
batches, never the perpetual's. Options are refused (``unsupported_instrument``): their
price is a premium, not the underlying's price, and no stage of liqmon models them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from monitor.ingest.wire._common import WireError, field, finite_float, split_symbol

__all__ = [
    "BUILTIN_CONTRACT_VALUES",
    "INSTRUMENT_KINDS",
    "KIND_FUTURE",
    "KIND_OPTION",
    "KIND_PERPETUAL",
    "KIND_SPOT",
    "NO_INSTRUMENTS",
    "ContractValues",
    "Instrument",
    "InstrumentTable",
    "contract_family",
    "fallback_instrument",
    "instruments_raw",
    "parse_instruments",
    "resolve",
]

KIND_SPOT = "spot"
KIND_PERPETUAL = "perpetual"
KIND_FUTURE = "future"
KIND_OPTION = "option"
INSTRUMENT_KINDS = (KIND_SPOT, KIND_PERPETUAL, KIND_FUTURE, KIND_OPTION)

#: Instrument family → (ctVal, ctValCcy) (OKX, ``GET /api/v5/public/instruments``).
ContractValues = Mapping[str, tuple[float, str]]
#: The OKX contract values of a session without a ``contract_values`` frame. SWAP and
#: FUTURES of a family share them.
BUILTIN_CONTRACT_VALUES: ContractValues = {
    "BTC-USDT": (0.01, "BTC"),
    "ETH-USDT": (0.1, "ETH"),
    "SOL-USDT": (1.0, "SOL"),
    "BTC-USD": (100.0, "USD"),
    "ETH-USD": (10.0, "USD"),
}


@dataclass(frozen=True, slots=True)
class Instrument:
    """One tradable instrument of a venue (sizes: ``size × contract_value × multiplier``)."""

    symbol: str
    base: str
    quote: str
    settle: str
    kind: str
    #: Delivery time of a dated future or option (ms UTC); None otherwise.
    expiry_ms: int | None = None
    #: Units per contract: base units (linear) or quote units (inverse); 1 when the venue
    #: sizes in base units.
    contract_value: float = 1.0
    contract_multiplier: float = 1.0
    #: Contract value in the quote currency (OKX ``ctType`` inverse, Bybit inverse).
    inverse: bool = False

    @property
    def asset(self) -> str:
        """The asset its events are batched and priced under: a dated future has its own."""
        if self.kind == KIND_FUTURE and self.expiry_ms is not None:
            day = datetime.fromtimestamp(self.expiry_ms / 1000, tz=UTC)
            return f"{self.base}-{day:%Y%m%d}"
        return self.base

    def base_qty(self, size: float, price: float) -> float:
        """Base units of ``size``: size × ctVal × ctMult (linear), ÷ price when inverse (OKX ctType)."""
        units = size * self.contract_value * self.contract_multiplier
        return units / price if self.inverse else units


#: Symbol (upper case) → instrument, one table per venue.
InstrumentTable = Mapping[str, Instrument]
NO_INSTRUMENTS: InstrumentTable = {}

# Expiries are at 08:00 UTC on Binance (USDⓈ-M delivery), Bybit and OKX.
_EXPIRY_HOUR_UTC = 8
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_BINANCE_DELIVERY = re.compile(r"^([A-Z0-9]+)_(\d{6})$")
_BINANCE_COINM_PERP = re.compile(r"^([A-Z0-9]+)_PERP$")
_BINANCE_OPTION = re.compile(r"^([A-Z0-9]+)-(\d{6})-\d+(\.\d+)?-[CP]$")
_BYBIT_USDC_PERP = re.compile(r"^([A-Z0-9]+)PERP$")
_BYBIT_FUTURE = re.compile(r"^([A-Z0-9]+)-(\d{1,2}[A-Z]{3}\d{2})$")
_BYBIT_OPTION = re.compile(r"^([A-Z0-9]+)-(\d{1,2}[A-Z]{3}\d{2})-\d+(\.\d+)?-[CP](-[A-Z]+)?$")
_OKX_DATE = re.compile(r"^\d{6}$")


def _expiry_yymmdd(text: str, symbol: str) -> int:
    """08:00 UTC of a ``YYMMDD`` date (Binance and OKX expiries)."""
    try:
        day = datetime(2000 + int(text[:2]), int(text[2:4]), int(text[4:6]), _EXPIRY_HOUR_UTC, tzinfo=UTC)
    except ValueError:
        raise WireError("unknown_symbol", f"{symbol!r} names no valid expiry date") from None
    return int(day.timestamp() * 1000)


def _expiry_dmy(text: str, symbol: str) -> int:
    """08:00 UTC of a Bybit ``26JUN25`` date."""
    day_txt, month_txt, year_txt = text[:-5], text[-5:-2], text[-2:]
    if month_txt not in _MONTHS:
        raise WireError("unknown_symbol", f"{symbol!r} names no valid expiry date")
    return _expiry_yymmdd(f"{year_txt}{_MONTHS.index(month_txt) + 1:02d}{int(day_txt):02d}", symbol)


def _unsupported(symbol: str) -> WireError:
    return WireError("unsupported_instrument", f"{symbol!r} is an option: its price is a premium, not sized here")


def _pair(symbol: str, aliases: Mapping[str, str]) -> tuple[str, str]:
    return split_symbol(symbol, aliases)


def _binance(venue: str, sym: str, aliases: Mapping[str, str]) -> Instrument:
    if _BINANCE_OPTION.match(sym):
        raise _unsupported(sym)
    delivery = _BINANCE_DELIVERY.match(sym)
    if delivery:
        base, quote = _pair(delivery.group(1), aliases)
        expiry = _expiry_yymmdd(delivery.group(2), sym)
        return Instrument(sym, base, quote, quote, KIND_FUTURE, expiry_ms=expiry)
    perp = _BINANCE_COINM_PERP.match(sym)
    if perp:
        base, quote = _pair(perp.group(1), aliases)
        return Instrument(sym, base, quote, base, KIND_PERPETUAL)
    base, quote = _pair(sym, aliases)
    kind = KIND_SPOT if venue.endswith("spot") else KIND_PERPETUAL
    return Instrument(sym, base, quote, quote, kind)


def _bybit(venue: str, sym: str, aliases: Mapping[str, str]) -> Instrument:
    if _BYBIT_OPTION.match(sym):
        raise _unsupported(sym)
    if venue.endswith("spot"):
        base, quote = _pair(sym, aliases)
        return Instrument(sym, base, quote, quote, KIND_SPOT)
    future = _BYBIT_FUTURE.match(sym)
    if future:
        head = future.group(1)
        # USDC futures name the coin only (BTC-26JUN25); USDT ones the pair (BTCUSDT-26JUN25).
        base, quote = _pair(head, aliases) if head.endswith("USDT") else (aliases.get(head, head), "USDC")
        return Instrument(sym, base, quote, quote, KIND_FUTURE, expiry_ms=_expiry_dmy(future.group(2), sym))
    perp = _BYBIT_USDC_PERP.match(sym)
    if perp:
        base = perp.group(1)
        return Instrument(sym, aliases.get(base, base), "USDC", "USDC", KIND_PERPETUAL)
    base, quote = _pair(sym, aliases)
    return Instrument(sym, base, quote, quote, KIND_PERPETUAL)


def contract_family(inst_id: str) -> str:
    """Instrument family of an OKX instrument id: ``BTC-USDT-SWAP`` → ``BTC-USDT``."""
    return "-".join(inst_id.upper().split("-")[:2])


def _okx_unknown(inst_id: str) -> WireError:
    family = contract_family(inst_id)
    return WireError(
        "unknown_contract_value",
        f"no contract value (ctVal) configured for {inst_id}: add {family} to the OKX contract values",
    )


def _okx(sym: str, aliases: Mapping[str, str], contract_values: ContractValues) -> Instrument:
    parts = sym.split("-")
    if len(parts) == 5 and parts[4] in ("C", "P"):
        raise _unsupported(sym)
    base, quote = _pair(sym, aliases)
    if len(parts) == 2:
        return Instrument(sym, base, quote, quote, KIND_SPOT)
    if len(parts) != 3 or not (parts[2] == "SWAP" or _OKX_DATE.match(parts[2])):
        raise WireError("unknown_symbol", f"{sym!r} is not an OKX spot, swap, future or option id")
    entry = contract_values.get(contract_family(sym))
    if entry is None:
        raise _okx_unknown(sym)
    ct_val, ct_ccy = entry
    inverse = ct_ccy.upper() != parts[0]
    settle = parts[0] if inverse else quote
    if parts[2] == "SWAP":
        return Instrument(sym, base, quote, settle, KIND_PERPETUAL, contract_value=ct_val, inverse=inverse)
    return Instrument(
        sym, base, quote, settle, KIND_FUTURE, expiry_ms=_expiry_yymmdd(parts[2], sym),
        contract_value=ct_val, inverse=inverse,
    )


def _hyperliquid(sym: str, aliases: Mapping[str, str]) -> Instrument:
    if "/" in sym:
        base, quote = _pair(sym, aliases)
        return Instrument(sym, base, quote, quote, KIND_SPOT)
    if sym.startswith("@"):
        raise WireError("unknown_symbol", f"spot index {sym!r} has no name; subscribe by pair")
    return Instrument(sym, aliases.get(sym, sym), "USDC", "USDC", KIND_PERPETUAL)


def fallback_instrument(
    venue: str, symbol: str, aliases: Mapping[str, str],
    contract_values: ContractValues = BUILTIN_CONTRACT_VALUES,
) -> Instrument:
    """The instrument a venue's documented symbol grammar names (no table entry)."""
    sym = symbol.upper()
    if venue.startswith("binance"):
        return _binance(venue, sym, aliases)
    if venue.startswith("bybit"):
        return _bybit(venue, sym, aliases)
    if venue.startswith("okx"):
        return _okx(sym, aliases, contract_values)
    if venue.startswith("hyperliquid"):
        return _hyperliquid(sym, aliases)
    base, quote = _pair(sym, aliases)
    return Instrument(sym, base, quote, quote, KIND_SPOT)


#: Fallback instruments already worked out, by (venue, symbol), with the aliases and
#: contract values they were worked out from (the same objects, by identity: the ingest
#: passes its config's aliases and replaces a contract-value table, never edits it). Every
#: frame names its symbol, and the grammar is the same each time. Bounded: a feed of ever
#: new symbols empties it rather than growing it.
_FALLBACKS: dict[tuple[str, str], tuple[Mapping[str, str], ContractValues, Instrument]] = {}
_FALLBACKS_KEPT = 4096


def resolve(
    venue: str, symbol: str, aliases: Mapping[str, str],
    contract_values: ContractValues = BUILTIN_CONTRACT_VALUES,
    instruments: InstrumentTable = NO_INSTRUMENTS,
) -> Instrument:
    """The instrument of ``symbol``: the venue's table first, else the built-in fallback.

    Options are refused (``unsupported_instrument``) whichever way they are found.
    """
    known = instruments.get(symbol.upper())
    if known is None:
        seen = _FALLBACKS.get((venue, symbol))
        if seen is not None and seen[0] is aliases and seen[1] is contract_values:
            return seen[2]
        found = fallback_instrument(venue, symbol, aliases, contract_values)
        if len(_FALLBACKS) >= _FALLBACKS_KEPT:
            _FALLBACKS.clear()
        _FALLBACKS[(venue, symbol)] = (aliases, contract_values, found)
        return found
    if known.kind == KIND_OPTION:
        raise _unsupported(symbol)
    return known


# -- the ``instruments`` capture frame ---------------------------------------------------


def _text(entry: Mapping[str, Any], name: str, symbol: str) -> str:
    value = field(entry, name)
    if not isinstance(value, str) or not value:
        raise WireError("wrong_type", f"{name} of instrument {symbol!r:.40} must be a non-empty string")
    return value


def _positive(entry: Mapping[str, Any], name: str, symbol: str) -> float:
    value = finite_float(entry.get(name, 1.0), name)
    if value <= 0.0:
        raise WireError("wrong_value", f"{name} of instrument {symbol!r:.40} must be > 0, got {value}")
    return value


def _instrument(entry: Any) -> Instrument:
    if not isinstance(entry, dict):
        raise WireError("wrong_type", "each instrument must be an object")
    symbol = _text(entry, "symbol", "?").upper()
    kind = _text(entry, "kind", symbol)
    if kind not in INSTRUMENT_KINDS:
        raise WireError("wrong_value", f"kind of {symbol!r:.40} must be one of {', '.join(INSTRUMENT_KINDS)}")
    expiry = entry.get("expiry_ms")
    if expiry is not None and (isinstance(expiry, bool) or not isinstance(expiry, int)):
        raise WireError("wrong_type", f"expiry_ms of {symbol!r:.40} must be an integer")
    if kind in (KIND_FUTURE, KIND_OPTION) and expiry is None:
        raise WireError("missing_field", f"{kind} {symbol!r:.40} has no expiry_ms")
    inverse = entry.get("inverse", False)
    if not isinstance(inverse, bool):
        raise WireError("wrong_type", f"inverse of {symbol!r:.40} must be a boolean")
    return Instrument(
        symbol, _text(entry, "base", symbol).upper(), _text(entry, "quote", symbol).upper(),
        _text(entry, "settle", symbol).upper(), kind, expiry_ms=expiry,
        contract_value=_positive(entry, "contract_value", symbol),
        contract_multiplier=_positive(entry, "contract_multiplier", symbol), inverse=inverse,
    )


def parse_instruments(raw: Any, aliases: Mapping[str, str] | None = None) -> dict[str, Instrument]:
    """``instruments`` frame ``{"instruments": [{symbol, base, quote, settle, kind, ...}]}`` → table.

    Bases and quotes are upper case on the wire; ``aliases`` maps them to liqmon's asset
    names (``USDE`` → ``USDe``), as the fallback does.
    """
    if not isinstance(raw, dict):
        raise WireError("wrong_type", f"frame must be a JSON object, got {type(raw).__name__}")
    entries = field(raw, "instruments")
    if not isinstance(entries, list):
        raise WireError("wrong_type", "field 'instruments' must be a list")
    names = aliases or {}
    out: dict[str, Instrument] = {}
    for entry in entries:
        inst = _instrument(entry)
        out[inst.symbol] = Instrument(
            inst.symbol, names.get(inst.base, inst.base), names.get(inst.quote, inst.quote), inst.settle,
            inst.kind, inst.expiry_ms, inst.contract_value, inst.contract_multiplier, inst.inverse,
        )
    return out


def instruments_raw(table: InstrumentTable) -> dict[str, Any]:
    """The ``instruments`` frame of ``table`` (inverse of :func:`parse_instruments`)."""
    return {"instruments": [
        {
            "symbol": i.symbol, "base": i.base.upper(), "quote": i.quote.upper(), "settle": i.settle,
            "kind": i.kind, "expiry_ms": i.expiry_ms, "contract_value": i.contract_value,
            "contract_multiplier": i.contract_multiplier, "inverse": i.inverse,
        }
        for _, i in sorted(table.items())
    ]}
