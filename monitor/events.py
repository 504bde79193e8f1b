"""Normalised market events: the only market data that crosses into the engine.

Wire frames are decoded by the pure parsers in :mod:`monitor.ingest.wire` into these small
immutable records; every one carries the venue's own timestamp (``ts_ms``, or the
receive time where the venue sends none) and our receive timestamp (``recv_ts_ms``).
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = [
    "BOOK_BANDS_BPS",
    "KIND_BOOK",
    "KIND_BOOK_INVALID",
    "KIND_LIQUIDATION",
    "KIND_PRICE",
    "KIND_QUOTE",
    "KIND_TRADE",
    "ROW_LENGTHS",
    "MarketEvent",
]

#: Best bid/ask update: f1 = bid, f2 = ask, f3 = bid qty, f4 = ask qty (base units).
KIND_QUOTE = 0
#: Trade print: f1 = price, f2 = qty (base units), f3 = +1 buyer-initiated / −1 seller, f4 = 0.
KIND_TRADE = 1
#: Price from a generic source (pool, index, own service): f1 = price, f2 = depth_usd (0 = unknown).
KIND_PRICE = 2
#: Order-book summary of a valid local book: f1 = best bid, f2 = best ask, f3 = mid,
#: f4 = spread_bps; ``bands`` = cumulative bid depth (quote units) within each of
#: BOOK_BANDS_BPS of mid, then cumulative ask depth within the same bands.
KIND_BOOK = 3
#: Liquidation print: f1 = price, f2 = qty (base units), f3 = +1 long liquidated /
#: −1 short liquidated, f4 = notional in quote units (venue prints are lower bounds).
KIND_LIQUIDATION = 4
#: The local book of this source has a sequence gap: invalid until resynchronised
#: (f1 = expected sequence, f2 = received sequence; 0 when not applicable).
KIND_BOOK_INVALID = 5

#: Depth bands of a book summary (RISK_MODEL §4), in bps of mid.
BOOK_BANDS_BPS: tuple[int, ...] = (10, 50, 100, 200, 500)

#: Length of a batch row per kind: kind, source, ts, recv ts, f1..f4 (+ bands for books).
ROW_LENGTHS: dict[int, int] = {
    KIND_QUOTE: 8,
    KIND_TRADE: 8,
    KIND_PRICE: 8,
    KIND_BOOK: 8 + 2 * len(BOOK_BANDS_BPS),
    KIND_LIQUIDATION: 8,
    KIND_BOOK_INVALID: 8,
}


class MarketEvent(NamedTuple):
    """One normalised market event for ``base``/``quote`` on ``venue``."""

    kind: int
    venue: str
    symbol: str
    base: str
    quote: str
    ts_ms: int
    recv_ts_ms: int
    f1: float
    f2: float
    f3: float
    f4: float
    #: Book summaries only: bid depth per band, then ask depth per band (quote units).
    bands: tuple[float, ...] = ()

    @property
    def source_key(self) -> tuple[str, str, str]:
        return (self.venue, self.symbol, self.quote)
