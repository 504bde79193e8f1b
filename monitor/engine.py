"""The partition engine: ``process(batch) -> BatchResult``, the pure core a worker calls.

A worker (or the inline replayer) owns one Engine per process; it holds the state of
the assets whose partitions it owns. State that must survive a restart is exposed as
plain-JSON snapshots (:meth:`Engine.snapshot` / :meth:`Engine.restore`) which the faust
agent keeps in a changelog-backed table. No I/O and no clock: time comes with events.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

import monitor.wire.bookdepth  # noqa: F401  (registers the bookDepth parser with ingest)
from monitor.alerts import Alert
from monitor.batch import Batch
from monitor.config import EngineConfig
from monitor.events import (
    KIND_BOOK,
    KIND_BOOK_INVALID,
    KIND_LIQUIDATION,
    KIND_PRICE,
    KIND_QUOTE,
    KIND_TRADE,
    ROW_LENGTHS,
)
from monitor.liquidity import BookState, LiquidityMonitor
from monitor.peg import AssetPeg, PegRules, PriceColumns, weighted_median
from monitor.quotes import QuoteHistory
from monitor.signals import PartitionClock, Signal

__all__ = ["BatchResult", "Engine", "venue_key"]

#: ``_IS_PRICE_KIND[kind]``: the kinds the vectorised price path handles (a batch of only
#: these skips the row loop). Kinds are validated small non-negative ints.
_IS_PRICE_KIND = np.zeros(max(ROW_LENGTHS) + 1, dtype=np.bool_)
_IS_PRICE_KIND[[KIND_QUOTE, KIND_PRICE]] = True
#: Smallest batch worth the vectorised path (measured: numpy's per-call cost dominates below).
_MIN_VECTOR_EVENTS = 24


def venue_key(venue: str, mapping: dict[str, str]) -> str:
    """The VENUE part of a ``ASSET@VENUE`` price key (RISK_MODEL §1): mapped, else the venue id.

    Only the mapped ids share a key (Binance's spot book is what ``USDe@binance`` means); a
    feed such as ``binance-rate`` (a redemption rate) must never pass for that book.
    """
    return mapping.get(venue, venue)


@dataclass(slots=True)
class BatchResult:
    """What one batch produced."""

    alerts: list[Alert] = field(default_factory=list)
    events_by_source: Counter[str] = field(default_factory=Counter)
    #: Events whose quote currency has no USD price (counted, not silently dropped).
    unpriced: int = 0
    #: True when a discrete state changed and the snapshot should be persisted.
    state_changed: bool = False
    #: Signals for the global stage (stage 2) and this partition's watermark after the batch.
    signals: list[Signal] = field(default_factory=list)
    partition: int = 0
    watermark_ms: int = 0
    #: Books (venue, symbol) updated by this batch (metrics).
    books_touched: set[tuple[str, str]] = field(default_factory=set)


class Engine:
    """Stateful, deterministic processor of market batches for the assets it owns."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.config_hash = config.config_hash
        self.rules = PegRules.from_config(config.peg)
        self.peg_assets = frozenset(config.peg.assets)
        self.quote_usd: dict[str, float] = dict(config.ingest.quote_prices_usd)
        #: Quote currencies' USD prices in event time: an event converts as of its own time.
        self.quote_history = QuoteHistory(config.ingest.quote_history_ms)
        self.pegs: dict[str, AssetPeg] = {}
        #: Latest (USD mid, depth USD, ts) per (asset, venue) for assets without a peg.
        self.mids_usd: dict[tuple[str, str], tuple[float, float, int]] = {}
        self.liquidity = LiquidityMonitor(config.liquidity, self.config_hash)
        self.clocks: dict[int, PartitionClock] = {}
        sig = config.signals
        self._venue_keys = dict(sig.venue_price_keys)
        self._rate_venues = frozenset(sig.rate_venues)
        #: Partitions that processed a batch since their last tick (see :meth:`process`).
        self._active_partitions: set[int] = set()
        self._index_exclude = frozenset(sig.index_exclude_venues)
        self._flow_assets = frozenset(sig.flow_assets)
        self._move_ratio = sig.price_move_bps / 10_000.0
        self._depth_interval_ms = config.liquidity.depth_signal_interval_ms
        self._withdraw_band = self.liquidity.band_index
        #: Last price sent per price key, last peg level sent per (asset, venue).
        self.sent_prices: dict[str, float] = {}
        self.sent_peg_levels: dict[tuple[str, str], int] = {}
        #: Sources (venue, symbol, quote) with quotes/books/prices: their trades set no mid.
        self._quoted: set[tuple[str, str, str]] = set()

    # -- state -----------------------------------------------------------------------
    def has_asset(self, asset: str) -> bool:
        return asset in self.pegs or any(b.asset == asset for b in self.liquidity.books.values())

    def snapshot(self, asset: str) -> dict[str, Any] | None:
        """Discrete state of one asset (peg bands, book baselines) as plain JSON."""
        peg = self.pegs.get(asset)
        books = {
            f"{v}|{s}": b.to_state()
            for (v, s), b in self.liquidity.books.items()
            if b.asset == asset
        }
        if peg is None and not books:
            return None
        return {"peg": None if peg is None else peg.to_state(), "books": books}

    def restore(self, asset: str, state: dict[str, Any]) -> None:
        peg_state = state.get("peg") if "books" in state else state
        if peg_state is not None:
            peg = AssetPeg.from_state(asset, self.rules, self.config_hash, peg_state)
            peg.venue_keys = self._venue_keys
            self.pegs[asset] = peg
        for key, st in (state.get("books") or {}).items():
            venue, symbol = key.split("|", 1)
            self.liquidity.books[(venue, symbol)] = BookState.from_state(venue, symbol, st)

    def clock(self, partition: int) -> PartitionClock:
        clk = self.clocks.get(partition)
        if clk is None:
            clk = self.clocks[partition] = PartitionClock()
        return clk

    def _peg(self, asset: str) -> AssetPeg:
        peg = self.pegs.get(asset)
        if peg is None:
            peg = AssetPeg(
                asset=asset, rules=self.rules, config_hash=self.config_hash,
                venue_keys=self._venue_keys,
            )
            self.pegs[asset] = peg
        return peg

    # -- processing ------------------------------------------------------------------
    def is_quote_asset(self, asset: str) -> bool:
        return asset in self.config.ingest.quote_prices_usd

    def advance_all(self, ts_ms: int, partitions: int) -> None:
        """Advance every partition clock (a broadcast batch reached every partition)."""
        for p in range(partitions):
            self.clock(p).advance(ts_ms)

    def process(self, batch: Batch, partition: int = 0) -> BatchResult:
        """Run every event of ``batch`` through the processors, in order."""
        result = BatchResult(partition=partition)
        clock = self.clock(partition)
        if batch.tick_ms is not None:
            # A partition that processed no batch since its previous tick is idle: its
            # watermark follows the stream's event time, so the global stage never waits on it.
            if partition not in self._active_partitions:
                clock.advance(batch.tick_ms)
            self._active_partitions.discard(partition)
            # Sources that stopped resolve their alerts even when no price of the asset comes.
            for peg in self.pegs.values():
                peg.on_time(batch.tick_ms, result.alerts)
                result.state_changed |= peg.dirty
                peg.dirty = False
            result.watermark_ms = clock.watermark_ms
            return result
        self._active_partitions.add(partition)
        asset = batch.asset
        venues = [s[0] for s in batch.sources]
        counts = [0] * len(venues)
        if self.is_quote_asset(asset):
            self._process_quote_asset(batch, counts, result)
            if batch.rows:
                last_ts = max(int(r[2]) for r in batch.rows)
                price = self.quote_usd.get(asset)
                last = self.sent_prices.get(asset)
                # Broadcast to every partition; partition 0 alone forwards it to the global
                # stage, so the signal does not depend on which partition a worker reads first.
                if partition == 0 and price and (last is None or abs(price / last - 1.0) >= self._move_ratio):
                    self.sent_prices[asset] = price
                    result.signals.append(clock.stamp(last_ts, asset, "price", {"key": asset, "price": price}))
                clock.advance(last_ts)
        else:
            self._process_asset(batch, counts, result, clock)
        result.watermark_ms = clock.watermark_ms
        for i, n in enumerate(counts):
            if n:
                result.events_by_source[venues[i]] += n
        return result

    def _process_asset(
        self, batch: Batch, counts: list[int], result: BatchResult, clock: PartitionClock
    ) -> None:
        asset = batch.asset
        sources = batch.sources
        peg = self._peg(asset) if asset in self.peg_assets else None
        on_price = peg.on_price if peg is not None else None
        quote_usd = [self.quote_usd.get(s[2]) for s in sources]
        #: per source: events before this time convert with their quote's price as of then
        quote_newest_ms = [self.quote_history.newest_ts_ms(s[2]) for s in sources]
        out = result.alerts
        liq = self.liquidity
        books: list[BookState | None] = [None] * len(sources)
        priced = [False] * len(sources)
        #: per source index: (ts, price_usd, depth_usd) of its latest price in the batch
        last_px: dict[int, tuple[int, float, float]] = {}
        #: per source index: [ts_low, low, ts_high, high] of its prices in the batch, so a wick
        #: inside one batch still reaches the accounts and loops priced on it.
        extremes: dict[int, list[float]] = {}
        #: rate:BASE/QUOTE key → (ts, rate) of the conversion-rate feeds in the batch
        rates: dict[str, tuple[int, float]] = {}
        transitions: list[tuple[BookState, int, int]] = []
        flow_asset = asset in self._flow_assets
        max_ts = 0
        liq_long = liq_short = net_sell = 0.0
        quoted = self._quoted

        def note_price(i: int, t: int, px: float, depth: float) -> None:
            """A USD price of source ``i``: to the peg monitor, and as last / low / high."""
            if on_price is not None:
                on_price(sources[i][0], t, px, depth, out)
            last_px[i] = (t, px, depth)
            priced[i] = True
            ext = extremes.get(i)
            if ext is None:
                extremes[i] = [t, px, t, px]
            elif px < ext[1]:
                ext[0], ext[1] = t, px
            elif px > ext[3]:
                ext[2], ext[3] = t, px

        fast = self._vector_prices(batch, quote_usd, peg)
        if fast is not None:
            # Vectorised path (only quotes/prices, no peg level change): same state as the row loop.
            src, ts_arr, px_arr, depth_arr = fast
            n_rows = len(src)
            for i, n_i in enumerate(np.bincount(src, minlength=len(sources)).tolist()):
                if not n_i:
                    continue
                counts[i] += n_i
                # Rows of source i (all of them, the common one-source batch, without a scan).
                rows_i = np.arange(n_rows) if n_i == n_rows else np.flatnonzero(src == i)
                px_i = px_arr[rows_i]
                last, lo, hi = int(rows_i[-1]), int(rows_i[np.argmin(px_i)]), int(rows_i[np.argmax(px_i)])
                last_px[i] = (int(ts_arr[last]), float(px_arr[last]), float(depth_arr[last]))
                priced[i] = True
                # argmin/argmax take the first extreme, as the row loop's strict comparisons do.
                extremes[i] = [int(ts_arr[lo]), float(px_arr[lo]), int(ts_arr[hi]), float(px_arr[hi])]
            max_ts = int(ts_arr.max()) if n_rows else 0
        else:
            for row in batch.rows:
                kind, idx, ts = row[0], row[1], row[2]
                i = int(idx)
                counts[i] += 1
                if kind == KIND_PRICE and sources[i][0] in self._rate_venues:
                    # A conversion rate, not a market: forwarded raw as rate:BASE/QUOTE.
                    t = int(ts)
                    max_ts = max(max_ts, t)
                    rates[f"rate:{asset.upper()}/{sources[i][2].upper()}"] = (t, row[4])
                    continue
                q = quote_usd[i]
                if q is None:
                    result.unpriced += 1
                    continue
                t = int(ts)
                max_ts = max(max_ts, t)
                if t < quote_newest_ms[i]:
                    q = self.quote_history.as_of(sources[i][2], t)
                if kind == KIND_QUOTE:
                    f1, f2 = row[4], row[5]
                    px = (f1 + f2) * 0.5 * q
                    depth = (f1 * row[6] + f2 * row[7]) * q
                    note_price(i, t, px, depth)
                elif kind == KIND_PRICE:
                    px = row[4] * q
                    depth = row[5] * q
                    note_price(i, t, px, depth)
                elif kind == KIND_BOOK:
                    st = books[i]
                    if st is None:
                        st = books[i] = liq.book(sources[i][0], sources[i][1], asset)
                    code = liq.on_book(st, t, row, q, out)
                    if code:
                        transitions.append((st, code, t))
                    px = row[6] * q
                    depth = st.bid_usd[self._withdraw_band] + st.ask_usd[self._withdraw_band]
                    note_price(i, t, px, depth)
                    result.books_touched.add((st.venue, st.symbol))
                elif kind == KIND_TRADE:
                    notional = row[4] * row[5] * q
                    tb = books[i]
                    if tb is None:
                        tb = books[i] = liq.books.get((sources[i][0], sources[i][1]))
                    if tb is not None:
                        liq.on_trade(tb, t, notional, row[6])
                    if flow_asset:
                        net_sell -= row[6] * notional
                    if not priced[i] and sources[i] not in quoted:
                        last_px[i] = (t, row[4] * q, 0.0)
                elif kind == KIND_LIQUIDATION:
                    usd = (row[7] if row[7] > 0 else row[4] * row[5]) * q
                    if row[6] > 0:
                        liq_long += usd
                    else:
                        liq_short += usd
                elif kind == KIND_BOOK_INVALID:
                    st = books[i]
                    if st is None:
                        st = books[i] = liq.book(sources[i][0], sources[i][1], asset)
                    was_valid = st.valid
                    liq.on_invalid(st, t)
                    last_px.pop(i, None)
                    if was_valid:
                        transitions.append((st, 4, t))
        if peg is not None:
            result.state_changed = peg.dirty
            peg.dirty = False
        for i, was_priced in enumerate(priced):
            if was_priced:
                quoted.add(sources[i])
        self._emit_signals(
            asset, sources, peg, last_px, extremes, rates, transitions, books, max_ts,
            liq_long, liq_short, net_sell if flow_asset else 0.0, result, clock,
        )
        if max_ts:
            clock.advance(max_ts)

    def _emit_signals(
        self,
        asset: str,
        sources: list[tuple[str, str, str]],
        peg: AssetPeg | None,
        last_px: dict[int, tuple[int, float, float]],
        extremes: dict[int, list[float]],
        rates: dict[str, tuple[int, float]],
        transitions: list[tuple[BookState, int, int]],
        books: list[BookState | None],
        max_ts: int,
        liq_long: float,
        liq_short: float,
        net_sell: float,
        result: BatchResult,
        clock: PartitionClock,
    ) -> None:
        sig = result.signals
        sent = self.sent_prices
        move = self._move_ratio
        for key in sorted(rates):
            t, rate = rates[key]
            last = sent.get(key)
            if rate > 0 and (last is None or abs(rate / last - 1.0) >= move):
                sent[key] = rate
                sig.append(clock.stamp(t, asset, "price", {"key": key, "price": rate}))
        for i in sorted(last_px):
            t, px, depth = last_px[i]
            venue = sources[i][0]
            if px <= 0:
                continue
            self.mids_usd[(asset, venue)] = (px, depth, t)
            key = f"{asset}@{venue_key(venue, self._venue_keys)}"
            points: list[tuple[int, float]] = []
            ext = extremes.get(i)
            if ext is not None:
                # The batch's low and high, in time order, before its last price.
                for pt in sorted({(int(ext[0]), ext[1]), (int(ext[2]), ext[3])}):
                    if pt[0] < t and pt[1] > 0:
                        points.append(pt)
            points.append((t, px))
            for pt_ts, pt_px in points:
                last = sent.get(key)
                if last is None or abs(pt_px / last - 1.0) >= move:
                    sent[key] = pt_px
                    sig.append(clock.stamp(pt_ts, asset, "price", {"key": key, "price": pt_px}))
        if last_px:
            index = self._index_price(asset, peg, max_ts)
            if index is not None:
                last = sent.get(asset)
                if last is None or abs(index / last - 1.0) >= move:
                    sent[asset] = index
                    sig.append(clock.stamp(max_ts, asset, "price", {"key": asset, "price": index}))
        if peg is not None and result.state_changed:
            for venue in sorted(peg.trackers):
                tracker = peg.trackers[venue]
                k = (asset, venue)
                if self.sent_peg_levels.get(k, 0) != tracker.level:
                    self.sent_peg_levels[k] = tracker.level
                    sig.append(clock.stamp(max_ts, asset, "peg", {
                        "venue": venue, "level": tracker.level,
                        "dev_bps": round(tracker.last_dev_bps, 2),
                    }))
        for st, code, t in transitions:
            state = ("", "warm", "withdrawn", "restored", "invalid")[code]
            result.state_changed = True
            base = st.baseline_usd or 0.0
            depth = st.bid_usd[self._withdraw_band] if st.bid_usd else 0.0
            sig.append(clock.stamp(t, asset, "book", {
                "venue": st.venue, "symbol": st.symbol, "state": state,
                "depth_usd": round(depth, 2), "baseline_usd": round(base, 2),
            }))
        interval = self._depth_interval_ms
        for bk in books:
            if bk is None or not bk.valid or not bk.bid_usd:
                continue
            st = bk
            last_sent = st.last_depth_signal_ms
            if last_sent is not None and st.last_ts_ms - last_sent < interval:
                continue
            st.last_depth_signal_ms = st.last_ts_ms
            key = f"{asset}@{venue_key(st.venue, self._venue_keys)}"
            sig.append(clock.stamp(st.last_ts_ms, asset, "depth", {
                "venue": st.venue, "symbol": st.symbol, "key": key, "mid": st.mid_usd,
                "bid_usd": [round(x, 2) for x in st.bid_usd],
            }))
        if liq_long or liq_short:
            sig.append(clock.stamp(max_ts, asset, "liq", {
                "long_usd": round(liq_long, 2), "short_usd": round(liq_short, 2),
            }))
        if net_sell:
            sig.append(clock.stamp(max_ts, asset, "flow", {"net_sell_usd": round(net_sell, 2)}))

    def _vector_prices(
        self, batch: Batch, quote_usd: list[float | None], peg: AssetPeg | None
    ) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64], NDArray[np.float64]] | None:
        """(src, ts_ms, price_usd, depth_usd) when the batch can skip the row loop, else None.

        Possible when every event is a quote or a price with a USD-priced quote currency,
        and — for a peg asset — the peg monitor applied the whole batch at once
        (:meth:`monitor.peg.AssetPeg.try_batch`, exactly the per-event result).
        """
        if len(batch) < _MIN_VECTOR_EVENTS or None in quote_usd:
            return None  # numpy's fixed cost per call beats the row loop on tiny batches
        if any(s[0] in self._rate_venues for s in batch.sources):
            return None
        cols = batch.columns()
        if not _IS_PRICE_KIND[cols.kind].all():
            return None
        q = self.quote_history.as_of_rows(
            [s[2] for s in batch.sources], cols.src, cols.ts_ms,
            np.asarray(quote_usd, dtype=np.float64)[cols.src],
        )
        f = cols.f
        is_quote = cols.kind == KIND_QUOTE
        price = np.where(is_quote, (f[:, 0] + f[:, 1]) * 0.5, f[:, 0]) * q
        depth = np.where(is_quote, f[:, 0] * f[:, 2] + f[:, 1] * f[:, 3], f[:, 1]) * q
        venues = [s[0] for s in batch.sources]
        if peg is not None and not peg.try_batch(PriceColumns(venues, cols.src, cols.ts_ms, price, depth)):
            return None
        return cols.src, cols.ts_ms, price, depth

    def _index_price(self, asset: str, peg: AssetPeg | None, ts_ms: int) -> float | None:
        """Consolidated ``ASSET`` key: depth-weighted median of fresh venues (RISK_MODEL §1)."""
        if peg is not None:
            got = peg.index_price(ts_ms)
            return None if got is None else got[0]
        stale_before = ts_ms - self.config.peg.stale_after_ms
        default_depth = self.config.peg.default_depth_usd
        values: list[float] = []
        weights: list[float] = []
        for (a, venue), (px, depth, t) in self.mids_usd.items():
            if a != asset or t < stale_before or venue in self._index_exclude:
                continue
            values.append(px)
            weights.append(depth if depth > 0 else default_depth)
        if not values:
            return None
        return weighted_median(values, weights)

    def _process_quote_asset(self, batch: Batch, counts: list[int], result: BatchResult) -> None:
        # A quote currency's own feed (e.g. USDT/USD): its USD price converts every quote.
        for row in batch.rows:
            kind, idx, f1 = row[0], int(row[1]), row[4]
            i = idx
            counts[i] += 1
            quote = batch.sources[i][2]
            q = 1.0 if quote == "USD" else self.quote_usd.get(quote)
            if q is None or quote == batch.asset:
                result.unpriced += 1
                continue
            if kind == KIND_QUOTE:
                usd = (f1 + row[5]) * 0.5 * q
            elif kind == KIND_PRICE:
                usd = f1 * q
            else:
                continue
            self.quote_usd[batch.asset] = usd
            self.quote_history.update(batch.asset, int(row[2]), usd)
            result.state_changed = True
