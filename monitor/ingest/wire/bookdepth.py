"""Binance futures ``bookDepth`` dump records → book summaries (KIND_BOOK).

The record is the one ``replay.importers.iter_book_depth`` writes (venue ``binance-usdm``,
channel ``<symbol>@bookDepth``)::

    {"e": "bookDepth", "E": <ms>, "s": "BTCUSDT",
     "bands": [{"pct": -5, "depth": <base qty>, "notional_usd": <quote>, ...}, ...]}

A negative ``pct`` is cumulative bid depth from mid down to that percentage, positive the
ask side. Mapping to :data:`monitor.events.BOOK_BANDS_BPS` (10, 50, 100, 200, 500 bps):

- a band at exactly the same distance (1% → 100 bps, 2% → 200 bps, 5% → 500 bps) is used
  when it is *sane*; otherwise the nearest wider sane band of the same side (an upper
  bound of the true depth);
- 10 and 50 bps have no dump band: they take the narrowest sane band (an upper bound);
- bid bands narrower than :data:`TRUSTED_BID_PCT` (5%) are never used: in the public
  dump the ±1% and ±2% bid bands are faulty from 15:30 on 10 Oct 2025, and the ±3%/±4%
  bands carry the same frozen lot (see below). So every bid band up to 500 bps reports
  the 5% cumulative depth, an upper bound, and the withdrawal rule (bid depth within
  200 bps) measures the 5% bid depth for this source.

A band is sane when its cumulative depth is not above a wider band's and its weighted
average price lies on its own side of the other side's narrowest band (a bid band whose
average price is above the asks is stale: the dump's ±1% and ±2% bid bands from 15:30 on
10 Oct 2025 carry a frozen 17.65 BTC at 121,363 while BTC trades near 110,000, see
``data/oct10/SOURCES.md``). The dump has no best bid/ask: best bid and ask are the
narrowest sane bands' average prices, mid their midpoint (an estimate); when no bid band
is sane the ask estimate stands for both (spread reported as 0).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from monitor.events import BOOK_BANDS_BPS, KIND_BOOK, MarketEvent
from monitor.ingest.wire._common import (
    WireError,
    field,
    finite_float,
    non_negative,
    split_symbol,
    timestamp_ms,
)

__all__ = ["TRUSTED_BID_PCT", "band_depths", "parse_book_depth"]

#: Narrowest bid band of the dump that is used for depth (see the module doc).
TRUSTED_BID_PCT = 5.0


def _side(
    bands: list[tuple[float, float, float]], other_best: float | None, bid: bool,
    min_pct: float = 0.0,
) -> tuple[list[float], float | None]:
    """Depths per BOOK band for one side and its best-price estimate (narrowest sane band).

    ``bands`` are (distance pct, cumulative notional, weighted average price), nearest first.
    """
    monotone = [
        b for i, b in enumerate(bands)
        if b[1] > 0 and all(b[1] <= w[1] * (1 + 1e-9) for w in bands[i + 1 :])
    ]
    priced = [
        b for b in monotone
        if b[2] > 0 and (other_best is None or (b[2] <= other_best if bid else b[2] >= other_best))
    ]
    best = priced[0][2] if priced else None
    # Depth: sane bands; at or beyond ``min_pct`` the band is trusted as published.
    usable = [b for b in monotone if b[0] >= min_pct - 1e-9 or (min_pct == 0.0 and b in priced)]
    out: list[float] = []
    for bps in BOOK_BANDS_BPS:
        pct = bps / 100.0
        pick = next((b for b in usable if b[0] >= pct - 1e-9), None)
        if pick is None:
            pick = usable[-1] if usable else None
        out.append(pick[1] if pick is not None else 0.0)
    return out, best


def band_depths(
    raw_bands: list[tuple[float, float, float]],
) -> tuple[list[float], list[float], float | None, float | None]:
    """(bid depths, ask depths, best bid estimate, best ask estimate) per BOOK band."""
    bids = sorted(((-p, n, w) for p, n, w in raw_bands if p < 0), key=lambda b: b[0])
    asks = sorted(((p, n, w) for p, n, w in raw_bands if p > 0), key=lambda b: b[0])
    ask_ref = asks[0][2] if asks and asks[0][2] > 0 else None
    bid_out, best_bid = _side(bids, ask_ref, bid=True, min_pct=TRUSTED_BID_PCT)
    ask_out, best_ask = _side(asks, best_bid, bid=False)
    return bid_out, ask_out, best_bid, best_ask


def parse_book_depth(
    venue: str, raw: Any, recv_ts_ms: int, aliases: Mapping[str, str], max_future_skew_ms: int
) -> MarketEvent:
    """A bookDepth record → one KIND_BOOK summary (bands mapped as in the module doc)."""
    if not isinstance(raw, dict):
        raise WireError("wrong_type", f"frame must be a JSON object, got {type(raw).__name__}")
    symbol = field(raw, "s")
    if not isinstance(symbol, str) or not symbol:
        raise WireError("wrong_type", "field 's' must be a non-empty string")
    ts = timestamp_ms(field(raw, "E"), "E", recv_ts_ms, max_future_skew_ms)
    items = field(raw, "bands")
    if not isinstance(items, list) or not items:
        raise WireError("wrong_type", "field 'bands' must be a non-empty list")
    parsed: list[tuple[float, float, float]] = []
    for item in items:
        if not isinstance(item, dict):
            raise WireError("wrong_type", "each band must be an object")
        pct = finite_float(field(item, "pct"), "pct")
        if pct == 0 or abs(pct) > 100:
            raise WireError("wrong_value", f"band pct {pct} out of range")
        notional = non_negative(field(item, "notional_usd"), "notional_usd")
        wavg = non_negative(item.get("weighted_avg_price", 0.0), "weighted_avg_price")
        parsed.append((pct, notional, wavg))
    bids, asks, best_bid, best_ask = band_depths(parsed)
    if best_ask is None:
        best_ask = best_bid
    if best_bid is None:
        # Every bid band is contaminated by a stale lot above the asks: no bid price
        # estimate; the mid falls back to the ask side (spread unknown, reported as 0).
        best_bid = best_ask
    if best_bid is None or best_ask is None or best_bid > best_ask:
        raise WireError("invalid_book", f"no sane bid or ask band for {symbol}")
    mid = (best_bid + best_ask) * 0.5
    spread_bps = (best_ask - best_bid) / mid * 10_000.0
    base, quote = split_symbol(symbol, aliases)
    return MarketEvent(
        KIND_BOOK, venue, symbol, base, quote, ts, recv_ts_ms, best_bid, best_ask, mid,
        spread_bps, (*bids, *asks),
    )
