"""Pure parsers from venue wire frames to :class:`monitor.events.MarketEvent`.

:func:`normalize` is the single entry point for stateless channels (quotes, trades,
prices, liquidations); :func:`parse_book` decodes order-book channels into
:class:`monitor.ingest.orderbook.BookFrame` records, which :class:`monitor.ingest.frames.Ingest` applies
to its local books. Both are used by the replayer and the live feeds alike. A frame that
cannot be decoded raises :class:`WireError` with a stable ``reason`` (the dead-letter
label) and a human ``detail``.

Channels are matched per venue prefix with an anchored pattern on the lower-cased
channel name (the name the venue uses: Binance stream names, Bybit topics, OKX and
Hyperliquid channel names).

The venues' parsers resolve every symbol through the instrument model
(:mod:`monitor.ingest.wire.instruments`): they also take the venue's contract-value table
(``contract_values``, OKX ``ctVal``) and instrument table (``instruments``);
:class:`monitor.ingest.frames.Ingest` keeps one of each per venue. A frame of several
instruments where only some cannot be sized raises :class:`PartialWireError` carrying the
events of the others.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from typing import Any

from monitor.events import MarketEvent
from monitor.ingest.orderbook import BookFrame
from monitor.ingest.wire import binance, bookdepth, bybit, generic, hyperliquid, okx
from monitor.ingest.wire._common import PartialWireError, WireError
from monitor.ingest.wire.instruments import (
    BUILTIN_CONTRACT_VALUES,
    NO_INSTRUMENTS,
    ContractValues,
    InstrumentTable,
)

__all__ = [
    "BookParser",
    "Parser",
    "PartialWireError",
    "VenueBookParser",
    "VenueParser",
    "WireError",
    "is_book_channel",
    "normalize",
    "parse_book",
]

Parser = Callable[[str, Any, int, Mapping[str, str], int], MarketEvent | list[MarketEvent] | None]
#: (venue, channel, raw, recv_ts_ms, aliases, max_future_skew_ms) → book frames.
BookParser = Callable[[str, str, Any, int, Mapping[str, str], int], list[BookFrame]]
#: Parsers of the venues' own channels: the same arguments plus the venue's contract-value
#: and instrument tables (:mod:`monitor.ingest.wire.instruments`), which resolve their symbols.
VenueParser = Callable[
    [str, Any, int, Mapping[str, str], int, ContractValues, InstrumentTable],
    MarketEvent | list[MarketEvent],
]
VenueBookParser = Callable[
    [str, str, Any, int, Mapping[str, str], int, ContractValues, InstrumentTable], list[BookFrame]
]

#: (venue prefix, anchored channel pattern, parser). Checked in order.
_VENUE_PARSERS: list[tuple[str, re.Pattern[str], VenueParser]] = [
    ("binance", re.compile(r"@bookticker$"), binance.parse_book_ticker),
    ("binance", re.compile(r"@aggtrade$"), binance.parse_agg_trade),
    ("binance", re.compile(r"(@markprice|markprice@arr)(@1s)?$"), binance.parse_mark_price),
    ("binance", re.compile(r"(@forceorder|forceorder@arr)$"), binance.parse_force_order),
    ("bybit", re.compile(r"^allliquidation\."), bybit.parse_all_liquidation),
    ("bybit", re.compile(r"^publictrade\."), bybit.parse_public_trade),
    ("hyperliquid", re.compile(r"^trades$"), hyperliquid.parse_trades),
    ("okx", re.compile(r"^liquidation-orders$"), okx.parse_liquidations),
    ("okx", re.compile(r"^trades$"), okx.parse_trades),
]

#: Generic sources and registered parsers: (venue prefix or "*", pattern, parser).
_PARSERS: list[tuple[str, re.Pattern[str], Parser]] = [
    ("*", re.compile(r"^price$"), generic.parse_price),
    # Binance's bookDepth dumps (data.binance.vision), imported with `liqmon import`.
    ("binance", re.compile(r"@bookdepth$"), bookdepth.parse_book_depth),
    ("*", re.compile(r"^trade$"), generic.parse_trade),
]

_BOOK_PARSERS: list[tuple[str, re.Pattern[str], VenueBookParser]] = [
    ("binance", re.compile(r"@depth(@\d+ms)?$"), binance.parse_depth_diff),
    ("binance", re.compile(r"@depthsnapshot$"), binance.parse_depth_snapshot),
    ("bybit", re.compile(r"^orderbook\.\d+\."), bybit.parse_orderbook),
    ("hyperliquid", re.compile(r"^l2book$"), hyperliquid.parse_l2_book),
    ("okx", re.compile(r"^books$"), okx.parse_books),
]


#: Distinct (venue, channel) pairs whose parser is remembered (a stream has a few dozen;
#: the bound keeps a stream of made-up channels from growing the cache).
_ROUTES_KEPT = 1024


@functools.lru_cache(maxsize=_ROUTES_KEPT)
def _book_parser(venue: str, channel: str) -> VenueBookParser | None:
    """The book parser of a channel (found once per pair: every frame asked again)."""
    chan = channel.lower()
    for prefix, pattern, parser in _BOOK_PARSERS:
        if venue.startswith(prefix) and pattern.search(chan):
            return parser
    return None


@functools.lru_cache(maxsize=_ROUTES_KEPT)
def _frame_parser(venue: str, channel: str) -> tuple[VenueParser | None, Parser | None]:
    """The venue parser of a channel, else its generic parser (found once per pair)."""
    chan = channel.lower()
    for prefix, pattern, venue_parser in _VENUE_PARSERS:
        if venue.startswith(prefix) and pattern.search(chan):
            return venue_parser, None
    for prefix, pattern, parser in _PARSERS:
        if (prefix == "*" or venue.startswith(prefix)) and pattern.search(chan):
            return None, parser
    return None, None


def is_book_channel(venue: str, channel: str) -> bool:
    """True when ``channel`` of ``venue`` carries order-book snapshots or diffs."""
    return _book_parser(venue, channel) is not None


def parse_book(
    venue: str,
    channel: str,
    raw: Any,
    recv_ts_ms: int,
    aliases: Mapping[str, str],
    max_future_skew_ms: int,
    contract_values: ContractValues = BUILTIN_CONTRACT_VALUES,
    instruments: InstrumentTable = NO_INSTRUMENTS,
) -> list[BookFrame] | None:
    """Book frames carried by one frame, or None when ``channel`` is not a book channel."""
    parser = _book_parser(venue, channel)
    if parser is None:
        return None
    return parser(venue, channel, raw, recv_ts_ms, aliases, max_future_skew_ms, contract_values, instruments)


def normalize(
    venue: str,
    channel: str,
    raw: Any,
    recv_ts_ms: int,
    aliases: Mapping[str, str],
    max_future_skew_ms: int,
    contract_values: ContractValues = BUILTIN_CONTRACT_VALUES,
    instruments: InstrumentTable = NO_INSTRUMENTS,
) -> list[MarketEvent]:
    """Events carried by one frame (empty for control frames such as subscription acks)."""
    venue_parser, parser = _frame_parser(venue, channel)
    if venue_parser is not None:
        events = venue_parser(venue, raw, recv_ts_ms, aliases, max_future_skew_ms, contract_values, instruments)
        return events if isinstance(events, list) else [events]
    if parser is not None:
        out = parser(venue, raw, recv_ts_ms, aliases, max_future_skew_ms)
        if out is None:
            return []
        return out if isinstance(out, list) else [out]
    raise WireError("unknown_channel", f"no parser for venue {venue!r} channel {channel!r}")
