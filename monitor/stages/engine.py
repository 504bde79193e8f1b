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

from monitor.config import EngineConfig
from monitor.events import (
    KIND_PRICE,
    KIND_QUOTE,
    ROW_LENGTHS,
)
from monitor.ingest.batch import Batch
from monitor.ingest.quotes import QuoteHistory
from monitor.models.liquidity import BOOK_TRANSITIONS, BookState, LiquidityMonitor
from monitor.models.peg.asset_peg import AssetPeg
from monitor.models.peg.bands import PegRules, PriceColumns, weighted_median
from monitor.models.peg.batch import apply_batch
from monitor.protocol import Alert, Signal
from monitor.signals import PartitionClock
from monitor.stages.batch_scan import BatchScan, RowScanner

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
        self._rows = RowScanner(
            self.quote_history, self.liquidity, self._rate_venues, self._quoted, self._withdraw_band
        )

    # -- state -----------------------------------------------------------------------
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
        peg = self._peg(asset) if asset in self.peg_assets else None
        quote_usd = [self.quote_usd.get(s[2]) for s in batch.sources]
        scan = BatchScan.of(batch.sources)
        flow_asset = asset in self._flow_assets
        fast = self._vector_prices(batch, quote_usd, peg)
        if fast is not None:
            # Vectorised path (only quotes/prices, no peg level change): same state as the row loop.
            scan.take_vector(fast, counts)
        else:
            on_price = peg.on_price if peg is not None else None
            result.unpriced += self._rows.scan(batch, scan, quote_usd, on_price, flow_asset, counts, result.alerts)
            result.books_touched.update(scan.books_touched)
        if peg is not None:
            result.state_changed = peg.dirty
            peg.dirty = False
        for i, was_priced in enumerate(scan.priced):
            if was_priced:
                self._quoted.add(batch.sources[i])
        if not flow_asset:
            scan.net_sell_usd = 0.0
        self._emit_price_signals(asset, peg, scan, result, clock)
        self._emit_state_signals(asset, peg, scan, result, clock)
        if scan.max_ts:
            clock.advance(scan.max_ts)

    def _emit_price_signals(
        self, asset: str, peg: AssetPeg | None, scan: BatchScan, result: BatchResult, clock: PartitionClock
    ) -> None:
        """Rates, each source's price (with the batch's low and high) and the asset index, on a move."""
        sig = result.signals
        sent = self.sent_prices
        move = self._move_ratio
        for key in sorted(scan.rates):
            t, rate = scan.rates[key]
            last = sent.get(key)
            if rate > 0 and (last is None or abs(rate / last - 1.0) >= move):
                sent[key] = rate
                sig.append(clock.stamp(t, asset, "price", {"key": key, "price": rate}))
        for i in sorted(scan.last_px):
            t, px, depth = scan.last_px[i]
            venue = scan.sources[i][0]
            if px <= 0:
                continue
            self.mids_usd[(asset, venue)] = (px, depth, t)
            key = f"{asset}@{venue_key(venue, self._venue_keys)}"
            points: list[tuple[int, float]] = []
            ext = scan.extremes.get(i)
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
        if scan.last_px:
            index = self._index_price(asset, peg, scan.max_ts)
            if index is not None:
                last = sent.get(asset)
                if last is None or abs(index / last - 1.0) >= move:
                    sent[asset] = index
                    sig.append(clock.stamp(scan.max_ts, asset, "price", {"key": asset, "price": index}))

    def _emit_state_signals(
        self, asset: str, peg: AssetPeg | None, scan: BatchScan, result: BatchResult, clock: PartitionClock
    ) -> None:
        """Peg levels that changed, book transitions, depth snapshots, liquidations and flow."""
        sig = result.signals
        max_ts = scan.max_ts
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
        for st, code, t in scan.transitions:
            state = BOOK_TRANSITIONS[code]
            result.state_changed = True
            base = st.baseline_usd or 0.0
            depth = st.bid_usd[self._withdraw_band] if st.bid_usd else 0.0
            sig.append(clock.stamp(t, asset, "book", {
                "venue": st.venue, "symbol": st.symbol, "state": state,
                "depth_usd": round(depth, 2), "baseline_usd": round(base, 2),
            }))
        self._emit_depth_signals(asset, scan, sig, clock)
        if scan.liq_long_usd or scan.liq_short_usd:
            sig.append(clock.stamp(max_ts, asset, "liq", {
                "long_usd": round(scan.liq_long_usd, 2), "short_usd": round(scan.liq_short_usd, 2),
            }))
        if scan.net_sell_usd:
            sig.append(clock.stamp(max_ts, asset, "flow", {"net_sell_usd": round(scan.net_sell_usd, 2)}))

    def _emit_depth_signals(self, asset: str, scan: BatchScan, sig: list[Signal], clock: PartitionClock) -> None:
        """Each valid book's depth bands, at most once per ``depth_signal_interval_ms``."""
        interval = self._depth_interval_ms
        for st in scan.books:
            if st is None or not st.valid or not st.bid_usd:
                continue
            last_sent = st.last_depth_signal_ms
            if last_sent is not None and st.last_ts_ms - last_sent < interval:
                continue
            st.last_depth_signal_ms = st.last_ts_ms
            key = f"{asset}@{venue_key(st.venue, self._venue_keys)}"
            sig.append(clock.stamp(st.last_ts_ms, asset, "depth", {
                "venue": st.venue, "symbol": st.symbol, "key": key, "mid": st.mid_usd,
                "bid_usd": [round(x, 2) for x in st.bid_usd],
            }))

    def _vector_prices(
        self, batch: Batch, quote_usd: list[float | None], peg: AssetPeg | None
    ) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64], NDArray[np.float64]] | None:
        """(src, ts_ms, price_usd, depth_usd) when the batch can skip the row loop, else None.

        Possible when every event is a quote or a price with a USD-priced quote currency,
        and — for a peg asset — the peg monitor applied the whole batch at once
        (:func:`monitor.models.peg.batch.apply_batch`, exactly the per-event result).
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
        if peg is not None and not apply_batch(peg, PriceColumns(venues, cols.src, cols.ts_ms, price, depth)):
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
