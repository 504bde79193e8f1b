"""Fetch the venues' instrument tables at ``liqmon live`` start (``[live.instruments]``).

One or more requests per venue whose feeds the session runs, to the endpoints the venues
document (:mod:`monitor.ingest.wire.instrument_sources`): Binance ``exchangeInfo`` (spot and
USDⓈ-M), Bybit v5 ``instruments-info``, OKX ``public/instruments`` (one request per
``instType``), Hyperliquid ``POST /info {"type": "meta"}``. The runner records each
venue's table as an ``instruments`` frame, so a replay of the recording resolves every
symbol as the session did. A venue that does not answer, or answers in another format,
is logged and left out: its symbols resolve with the built-in grammar.
"""

from __future__ import annotations

import logging

import aiohttp
import orjson

from monitor.ingest.wire import WireError
from monitor.ingest.wire.instrument_sources import SOURCE_PARSERS
from monitor.ingest.wire.instruments import Instrument
from streams.feeds.config import LiveConfig
from streams.feeds.rest import fetch_json

__all__ = ["fetch_instruments", "wanted_venues"]

log = logging.getLogger(__name__)


def wanted_venues(live: LiveConfig) -> list[str]:
    """Venues with an enabled feed and an instruments endpoint (none when fetching is off)."""
    if not live.instruments.enabled:
        return []
    return [name for name, feed in sorted(live.venues.items())
            if feed.enabled and feed.streams and name in live.instruments.urls]


def _parser_prefix(venue: str) -> str | None:
    return next((prefix for prefix in SOURCE_PARSERS if venue.startswith(prefix)), None)


async def _venue_table(http: aiohttp.ClientSession, venue: str, urls: tuple[str, ...]) -> dict[str, Instrument]:
    prefix = _parser_prefix(venue)
    if prefix is None:
        raise WireError("unknown_channel", f"no instruments format known for venue {venue!r}")
    table: dict[str, Instrument] = {}
    for url in urls:
        resp = await fetch_json(http, url, {"type": "meta"} if prefix == "hyperliquid" else None)
        table.update(SOURCE_PARSERS[prefix](resp, venue))
    return table


async def fetch_instruments(live: LiveConfig) -> dict[str, dict[str, Instrument]]:
    """Venue → its instrument table, for every wanted venue that answered in its documented format."""
    venues = wanted_venues(live)
    out: dict[str, dict[str, Instrument]] = {}
    if not venues:
        return out
    timeout = aiohttp.ClientTimeout(total=live.instruments.timeout_s)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        for venue in venues:
            urls = live.instruments.urls[venue]
            try:
                out[venue] = await _venue_table(http, venue, urls)
            except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError, WireError) as exc:
                log.warning("%s instruments from %s: %s; the built-in symbol grammar stays", venue, urls, exc)
    return out
