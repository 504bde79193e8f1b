"""Fetch the venues' margin tables at ``liqmon live`` start (RISK_MODEL §3).

Requests for each venue whose feeds the session runs, to the endpoints its docs name
(:mod:`monitor.ingest.venue_tables`): Hyperliquid ``POST /info {"type": "meta"}``, Bybit
``GET /v5/spot-margin-trade/collateral`` and ``GET /v5/market/risk-limit`` (one request per
configured symbol), OKX ``GET /api/v5/public/discount-rate-interest-free-quota`` and ``GET
/api/v5/public/position-tiers`` (up to five instrument families a request). A response is
kept exactly as sent, once the pure parser has read it; the runner records each part as a
``margin_tables`` frame, so ``liqmon stress --margin-tables`` (and any later reader) uses
the session's own tables. A part whose venue does not answer, or answers in another format,
is logged and left out: its built-in table (which names its source and date) stays in force.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import aiohttp
import orjson

from monitor.ingest.venue_tables import (
    VenueTableError,
    bybit_collateral_tiers,
    bybit_risk_limits,
    hyperliquid_margin_tables,
    okx_discount_tiers,
    okx_position_tiers,
)
from streams.feeds.config import LiveConfig
from streams.feeds.rest import fetch_json

__all__ = ["PART_VENUES", "fetch_margin_tables", "wanted_parts"]

log = logging.getLogger(__name__)

#: Margin-tables document part → the feed venues that make a session want it.
PART_VENUES: dict[str, tuple[str, ...]] = {
    "hyperliquid": ("hyperliquid",),
    "bybit": ("bybit-linear", "bybit-spot"),
    "okx": ("okx",),
    "bybit_risk_limit": ("bybit-linear",),
    "okx_position_tiers": ("okx",),
}
_PARSERS: dict[str, Callable[[Any], object]] = {
    "hyperliquid": hyperliquid_margin_tables,
    "bybit": bybit_collateral_tiers,
    "okx": okx_discount_tiers,
    "bybit_risk_limit": bybit_risk_limits,
    "okx_position_tiers": okx_position_tiers,
}
#: Instrument families per OKX position-tiers request ("no more than 5", API v5).
_OKX_FAMILIES_PER_REQUEST = 5


def wanted_parts(live: LiveConfig) -> list[str]:
    """Parts whose venue has an enabled feed in this session (none when fetching is off)."""
    if not live.margin_tables.enabled:
        return []
    enabled = {name for name, feed in live.venues.items() if feed.enabled and feed.streams}
    return [part for part, venues in PART_VENUES.items() if enabled.intersection(venues)]


def _urls(live: LiveConfig, part: str) -> list[str]:
    """The request URLs of a part: one for a whole-venue table, several for tier tables."""
    cfg = live.margin_tables
    if part == "bybit_risk_limit":
        return [f"{cfg.bybit_risk_limit_url}?{urlencode({'category': 'linear', 'symbol': s})}"
                for s in cfg.bybit_risk_limit_symbols]
    if part == "okx_position_tiers":
        fams = cfg.okx_position_tier_families
        return [f"{cfg.okx_position_tiers_url}?" + urlencode({
            "instType": "SWAP", "tdMode": "cross",
            "instFamily": ",".join(fams[i:i + _OKX_FAMILIES_PER_REQUEST])})
            for i in range(0, len(fams), _OKX_FAMILIES_PER_REQUEST)]
    return [{"hyperliquid": cfg.hyperliquid_url, "bybit": cfg.bybit_url, "okx": cfg.okx_url}[part]]


async def _fetch_part(http: aiohttp.ClientSession, live: LiveConfig, part: str) -> Any:
    """The part's response (a list of responses for the tier tables), checked by its parser."""
    urls = _urls(live, part)
    resps = [await fetch_json(http, url, {"type": "meta"} if part == "hyperliquid" else None)
             for url in urls]
    resp = resps if part in ("bybit_risk_limit", "okx_position_tiers") else resps[0]
    _PARSERS[part](resp)
    return resp


async def fetch_margin_tables(live: LiveConfig) -> dict[str, Any]:
    """Part → the venue's response(s), for every wanted part that answered in its documented format."""
    parts = wanted_parts(live)
    out: dict[str, Any] = {}
    if not parts:
        return out
    timeout = aiohttp.ClientTimeout(total=live.margin_tables.timeout_s)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        for part in parts:
            try:
                out[part] = await _fetch_part(http, live, part)
            except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError, VenueTableError) as exc:
                log.warning("%s margin tables from %s: %s; the built-in table stays",
                            part, _urls(live, part)[0], exc)
    return out
