"""Fetch the venues' margin tables at ``liqmon live`` start (RISK_MODEL §3).

One request per venue whose feeds the session runs, to the endpoint its docs name
(:mod:`monitor.venue_tables`): Hyperliquid ``POST /info {"type": "meta"}``, Bybit
``GET /v5/spot-margin-trade/collateral``, OKX ``GET
/api/v5/public/discount-rate-interest-free-quota``. A response is kept exactly as sent,
once the pure parser has read it; the runner records each as a ``margin_tables`` frame, so
``liqmon stress --margin-tables`` (and any later reader) uses the session's own tables. A
venue that does not answer, or answers in another format, is logged and left out: its
built-in table (which names its source and date) stays in force.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson

from monitor.venue_tables import (
    VenueTableError,
    bybit_collateral_tiers,
    hyperliquid_margin_tables,
    okx_discount_tiers,
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
}
_PARSERS: dict[str, Callable[[Any], object]] = {
    "hyperliquid": hyperliquid_margin_tables,
    "bybit": bybit_collateral_tiers,
    "okx": okx_discount_tiers,
}


def wanted_parts(live: LiveConfig) -> list[str]:
    """Parts whose venue has an enabled feed in this session (none when fetching is off)."""
    if not live.margin_tables.enabled:
        return []
    enabled = {name for name, feed in live.venues.items() if feed.enabled and feed.streams}
    return [part for part, venues in PART_VENUES.items() if enabled.intersection(venues)]


def _url(live: LiveConfig, part: str) -> str:
    cfg = live.margin_tables
    return {"hyperliquid": cfg.hyperliquid_url, "bybit": cfg.bybit_url, "okx": cfg.okx_url}[part]


async def fetch_margin_tables(live: LiveConfig) -> dict[str, Any]:
    """Part → the venue's response, for every wanted part that answered in its documented format."""
    parts = wanted_parts(live)
    out: dict[str, Any] = {}
    if not parts:
        return out
    timeout = aiohttp.ClientTimeout(total=live.margin_tables.timeout_s)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        for part in parts:
            url = _url(live, part)
            try:
                resp = await fetch_json(http, url, {"type": "meta"} if part == "hyperliquid" else None)
                _PARSERS[part](resp)
            except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError, VenueTableError) as exc:
                log.warning("%s margin tables from %s: %s; the built-in table stays", part, url, exc)
                continue
            out[part] = resp
    return out
