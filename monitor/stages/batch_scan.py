"""One pass over an asset's batch: what it leaves for the peg monitor, the books and the signals.

The partition engine (:mod:`monitor.stages.engine`) scans each market batch once, either row by
row (:class:`RowScanner`) or, for batches of quotes and prices only, vectorised
(:meth:`BatchScan.take_vector`). Both fill the same :class:`BatchScan`: per source its
latest USD price and the batch's low and high (so a wick inside one batch still reaches
the accounts priced on it), conversion rates, book state transitions, liquidated USD and
taker flow. Pure: time comes with the events.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from monitor.events import KIND_BOOK, KIND_BOOK_INVALID, KIND_LIQUIDATION, KIND_PRICE, KIND_QUOTE, KIND_TRADE
from monitor.ingest.batch import Batch
from monitor.ingest.quotes import QuoteHistory
from monitor.models.liquidity import TRANSITION_INVALID, BookState, LiquidityMonitor
from monitor.protocol import Alert

__all__ = ["BatchScan", "PriceSink", "RowScanner", "Source"]

#: (venue, symbol, quote) of a batch's source.
Source = tuple[str, str, str]
#: The peg monitor's per-price entry: (venue, ts_ms, price_usd, depth_usd, alerts out).
PriceSink = Callable[[str, int, float, float, list[Alert]], None]


@dataclass
class BatchScan:
    """What one batch of one asset left behind, per source index."""

    sources: list[Source]
    books: list[BookState | None]
    priced: list[bool]
    #: per source index: (ts, price_usd, depth_usd) of its latest price in the batch
    last_px: dict[int, tuple[int, float, float]] = field(default_factory=dict)
    #: per source index: [ts_low, low, ts_high, high] of its prices in the batch
    extremes: dict[int, list[float]] = field(default_factory=dict)
    #: rate:BASE/QUOTE key → (ts, rate) of the conversion-rate feeds in the batch
    rates: dict[str, tuple[int, float]] = field(default_factory=dict)
    transitions: list[tuple[BookState, int, int]] = field(default_factory=list)
    #: Books (venue, symbol) updated by the batch (metrics).
    books_touched: set[tuple[str, str]] = field(default_factory=set)
    max_ts: int = 0
    liq_long_usd: float = 0.0
    liq_short_usd: float = 0.0
    net_sell_usd: float = 0.0

    @classmethod
    def of(cls, sources: list[Source]) -> BatchScan:
        return cls(sources, [None] * len(sources), [False] * len(sources))

    def note_price(self, i: int, t: int, px: float, depth: float) -> None:
        """A USD price of source ``i``: the latest, and the batch's low / high so far."""
        self.last_px[i] = (t, px, depth)
        self.priced[i] = True
        ext = self.extremes.get(i)
        if ext is None:
            self.extremes[i] = [t, px, t, px]
        elif px < ext[1]:
            ext[0], ext[1] = t, px
        elif px > ext[3]:
            ext[2], ext[3] = t, px

    def take_vector(
        self,
        columns: tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64], NDArray[np.float64]],
        counts: list[int],
    ) -> None:
        """The vectorised path's (src, ts_ms, price_usd, depth_usd): same state as the rows."""
        src, ts_arr, px_arr, depth_arr = columns
        n_rows = len(src)
        for i, n_i in enumerate(np.bincount(src, minlength=len(self.sources)).tolist()):
            if not n_i:
                continue
            counts[i] += n_i
            # Rows of source i (all of them, the common one-source batch, without a scan).
            rows_i = np.arange(n_rows) if n_i == n_rows else np.flatnonzero(src == i)
            px_i = px_arr[rows_i]
            last, lo, hi = int(rows_i[-1]), int(rows_i[np.argmin(px_i)]), int(rows_i[np.argmax(px_i)])
            self.last_px[i] = (int(ts_arr[last]), float(px_arr[last]), float(depth_arr[last]))
            self.priced[i] = True
            # argmin/argmax take the first extreme, as the row loop's strict comparisons do.
            self.extremes[i] = [int(ts_arr[lo]), float(px_arr[lo]), int(ts_arr[hi]), float(px_arr[hi])]
        self.max_ts = int(ts_arr.max()) if n_rows else 0


@dataclass
class RowScanner:
    """The row-by-row scan of a batch: each event kind to its processor, USD-converted."""

    quote_history: QuoteHistory
    liquidity: LiquidityMonitor
    rate_venues: frozenset[str]
    #: Sources (venue, symbol, quote) with quotes/books/prices: their trades set no mid.
    quoted: set[Source]
    withdraw_band: int

    def scan(
        self, batch: Batch, scan: BatchScan, quote_usd: list[float | None], on_price: PriceSink | None,
        flow_asset: bool, counts: list[int], out: list[Alert],
    ) -> int:
        """Every row of ``batch`` into ``scan``; returns the events without a USD quote."""
        sources, asset, unpriced = batch.sources, batch.asset, 0
        quote_newest_ms = [self.quote_history.newest_ts_ms(s[2]) for s in sources]
        for row in batch.rows:
            kind, i, t = row[0], int(row[1]), int(row[2])
            counts[i] += 1
            if kind == KIND_PRICE and sources[i][0] in self.rate_venues:
                # A conversion rate, not a market: forwarded raw as rate:BASE/QUOTE.
                scan.max_ts = max(scan.max_ts, t)
                scan.rates[f"rate:{asset.upper()}/{sources[i][2].upper()}"] = (t, row[4])
                continue
            q = quote_usd[i]
            if q is None:
                unpriced += 1
                continue
            scan.max_ts = max(scan.max_ts, t)
            if t < quote_newest_ms[i]:
                q = self.quote_history.as_of(sources[i][2], t)
            if kind == KIND_QUOTE:
                f1, f2 = row[4], row[5]
                self._price(scan, on_price, out, i, t, (f1 + f2) * 0.5 * q, (f1 * row[6] + f2 * row[7]) * q)
            elif kind == KIND_PRICE:
                self._price(scan, on_price, out, i, t, row[4] * q, row[5] * q)
            elif kind == KIND_BOOK:
                st = self._book(scan, i, asset)
                px, depth = self._on_book(scan, st, row, t, q, out)
                self._price(scan, on_price, out, i, t, px, depth)
            elif kind == KIND_TRADE:
                self._on_trade(scan, i, row, t, q, flow_asset)
            elif kind == KIND_LIQUIDATION:
                usd = (row[7] if row[7] > 0 else row[4] * row[5]) * q
                if row[6] > 0:
                    scan.liq_long_usd += usd
                else:
                    scan.liq_short_usd += usd
            elif kind == KIND_BOOK_INVALID:
                self._on_invalid(scan, i, asset, t)
        return unpriced

    @staticmethod
    def _price(
        scan: BatchScan, on_price: PriceSink | None, out: list[Alert], i: int, t: int, px: float, depth: float
    ) -> None:
        """A USD price: to the peg monitor first, then as the source's last / low / high."""
        if on_price is not None:
            on_price(scan.sources[i][0], t, px, depth, out)
        scan.note_price(i, t, px, depth)

    def _book(self, scan: BatchScan, i: int, asset: str) -> BookState:
        st = scan.books[i]
        if st is None:
            venue, symbol, _ = scan.sources[i]
            st = scan.books[i] = self.liquidity.book(venue, symbol, asset)
        return st

    def _on_book(
        self, scan: BatchScan, st: BookState, row: list[float], t: int, q: float, out: list[Alert]
    ) -> tuple[float, float]:
        """A book update; returns its USD mid and the depth in the withdrawal band."""
        code = self.liquidity.on_book(st, t, row, q, out)
        if code:
            scan.transitions.append((st, code, t))
        scan.books_touched.add((st.venue, st.symbol))
        band = self.withdraw_band
        return row[6] * q, st.bid_usd[band] + st.ask_usd[band]

    def _on_trade(self, scan: BatchScan, i: int, row: list[float], t: int, q: float, flow_asset: bool) -> None:
        notional = row[4] * row[5] * q
        tb = scan.books[i]
        if tb is None:
            tb = scan.books[i] = self.liquidity.books.get((scan.sources[i][0], scan.sources[i][1]))
        if tb is not None:
            self.liquidity.on_trade(tb, t, notional, row[6])
        if flow_asset:
            scan.net_sell_usd -= row[6] * notional
        if not scan.priced[i] and scan.sources[i] not in self.quoted:
            scan.last_px[i] = (t, row[4] * q, 0.0)

    def _on_invalid(self, scan: BatchScan, i: int, asset: str, t: int) -> None:
        st = self._book(scan, i, asset)
        was_valid = st.valid
        self.liquidity.on_invalid(st, t)
        scan.last_px.pop(i, None)
        if was_valid:
            scan.transitions.append((st, TRANSITION_INVALID, t))
