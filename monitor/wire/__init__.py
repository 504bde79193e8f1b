"""Pure parsers from venue wire frames to :class:`monitor.events.MarketEvent`.

:func:`normalize` is the single entry point used by the replayer and the live feeds.
A frame that cannot become an event raises :class:`WireError` with a stable ``reason``
(the dead-letter label) and a human ``detail``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from monitor.events import MarketEvent
from monitor.wire import binance, generic
from monitor.wire._common import WireError

__all__ = ["WireError", "normalize", "register_parser"]

Parser = Callable[[str, Any, int, Mapping[str, str], int], MarketEvent | list[MarketEvent] | None]

#: (venue prefix or "*", channel suffix) → parser. Checked in order.
_PARSERS: list[tuple[str, str, Parser]] = [
    ("binance", "@bookticker", binance.parse_book_ticker),
    ("binance", "@aggtrade", binance.parse_agg_trade),
    ("*", "price", generic.parse_price),
]


def register_parser(venue_prefix: str, channel_suffix: str, parser: Parser) -> None:
    """Add a parser for channels ending in ``channel_suffix`` on venues starting with ``venue_prefix``."""
    _PARSERS.insert(len(_PARSERS) - 1, (venue_prefix, channel_suffix.lower(), parser))


def normalize(
    venue: str,
    channel: str,
    raw: Any,
    recv_ts_ms: int,
    aliases: Mapping[str, str],
    max_future_skew_ms: int,
) -> list[MarketEvent]:
    """Events carried by one frame (empty for control frames such as subscription acks)."""
    chan = channel.lower()
    for prefix, suffix, parser in _PARSERS:
        if (prefix == "*" or venue.startswith(prefix)) and (
            chan.endswith(suffix) if prefix != "*" else chan == suffix
        ):
            out = parser(venue, raw, recv_ts_ms, aliases, max_future_skew_ms)
            if out is None:
                return []
            return out if isinstance(out, list) else [out]
    raise WireError("unknown_channel", f"no parser for venue {venue!r} channel {channel!r}")
