"""Normalised market events: the only market data that crosses into the engine.

Wire frames are decoded by the pure parsers in :mod:`monitor.wire` into these small
immutable records; every one carries the venue's own timestamp (``ts_ms``, or the
receive time where the venue sends none) and our receive timestamp (``recv_ts_ms``).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["KIND_PRICE", "KIND_QUOTE", "KIND_TRADE", "MarketEvent"]

#: Best bid/ask update: f1 = bid, f2 = ask, f3 = bid qty, f4 = ask qty (base units).
KIND_QUOTE = 0
#: Trade print: f1 = price, f2 = qty (base units), f3 = +1 buyer-initiated / −1 seller, f4 = 0.
KIND_TRADE = 1
#: Price from a generic source (pool, index, own service): f1 = price, f2 = depth_usd (0 = unknown).
KIND_PRICE = 2


@dataclass(frozen=True, slots=True)
class MarketEvent:
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

    @property
    def source_key(self) -> tuple[str, str, str]:
        return (self.venue, self.symbol, self.quote)
