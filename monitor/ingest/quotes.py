"""USD prices of quote currencies as of a time: a book converts at its own timestamp.

A venue quoting USDe in USDT is converted to USD with the USDT/USD price (RISK_MODEL §1,
price keys). Converting a lagging book with a fresher USDT/USD price mixes two moments:
in a market-wide move the premium of one time is applied to the book of another (issue
19 §4). :class:`QuoteHistory` keeps each quote currency's recent USD prices in event
time, so an event at ``ts_ms`` converts with the quote's last price at or before
``ts_ms`` (the earliest kept price when the event is older than all of them).
"""

from __future__ import annotations

from bisect import bisect_right, insort
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

__all__ = ["QuoteHistory"]

#: Sentinel "newest time" of a quote currency without a feed: nothing is ever older.
NO_FEED_TS_MS = -(2**62)


@dataclass(slots=True)
class QuoteHistory:
    """Each quote currency's USD prices in event-time order, over the last ``window_ms``."""

    window_ms: int
    #: quote → (times ms, USD prices), both sorted by time.
    series: dict[str, tuple[list[int], list[float]]] = field(default_factory=dict)

    def update(self, quote: str, ts_ms: int, usd: float) -> None:
        """Record the quote's USD price at ``ts_ms``; forget prices older than the window."""
        times, prices = self.series.setdefault(quote, ([], []))
        if times and ts_ms == times[-1] and usd == prices[-1]:
            return  # the same update again (a broadcast record reaches every partition)
        if not times or ts_ms >= times[-1]:
            times.append(ts_ms)
            prices.append(usd)
        else:  # out of order: keep the series sorted (same time: after the older entry)
            k = bisect_right(times, ts_ms)
            insort(times, ts_ms)
            prices.insert(k, usd)
        cut = bisect_right(times, times[-1] - self.window_ms)
        if cut > 1:  # keep one price at or before the cut for lookups just after it
            del times[: cut - 1]
            del prices[: cut - 1]

    def newest_ts_ms(self, quote: str) -> int:
        """Time of the quote's newest price (:data:`NO_FEED_TS_MS` without a feed)."""
        got = self.series.get(quote)
        return got[0][-1] if got else NO_FEED_TS_MS

    def as_of(self, quote: str, ts_ms: int) -> float:
        """The quote's USD price at ``ts_ms``: its last price at or before then (as-of join)."""
        times, prices = self.series[quote]
        return prices[max(bisect_right(times, ts_ms) - 1, 0)]

    def as_of_rows(
        self, quotes: list[str], src: NDArray[np.int64], ts_ms: NDArray[np.int64], usd: NDArray[np.float64]
    ) -> NDArray[np.float64]:
        """:meth:`as_of` for every row whose time is before its quote's newest price.

        ``quotes[src[k]]`` is row k's quote currency and ``usd[k]`` its latest USD price;
        rows at or after the newest price keep it. Same floats as :meth:`as_of` row by row.
        """
        out = usd
        for i, quote in enumerate(quotes):
            newest = self.newest_ts_ms(quote)
            if newest == NO_FEED_TS_MS:
                continue
            rows = np.flatnonzero((src == i) & (ts_ms < newest))
            if not len(rows):
                continue
            times, prices = self.series[quote]
            at = np.searchsorted(np.asarray(times, dtype=np.int64), ts_ms[rows], side="right") - 1
            if out is usd:
                out = usd.copy()
            out[rows] = np.asarray(prices, dtype=np.float64)[np.maximum(at, 0)]
        return out
