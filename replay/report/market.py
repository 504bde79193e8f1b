"""What the report derives from market batches: USD prices, the alt index, bid depth, liquidations.

``queue`` is on the replay hot path and only extends the pending chunk with the batch's rows
and its sources' ids; :meth:`MarketRecorder.take_chunk` turns the chunk into numpy columns
(one C-level pass per column) and :meth:`MarketRecorder.process` records them vectorised
into the :class:`replay.report.series.SeriesStore` (the series are described in
:mod:`replay.report.recorder`).
"""

from __future__ import annotations

from dataclasses import dataclass
from operator import itemgetter

import numpy as np
from numpy.typing import NDArray

from monitor.config import EngineConfig
from monitor.events import (
    BOOK_BANDS_BPS,
    KIND_BOOK,
    KIND_BOOK_INVALID,
    KIND_LIQUIDATION,
    KIND_PRICE,
    KIND_QUOTE,
    KIND_TRADE,
)
from monitor.ingest.batch import Batch
from replay.report.series import SeriesStore

__all__ = ["MarketChunk", "MarketRecorder"]

_ROLE_SKIP, _ROLE_OTHER, _ROLE_PRICE, _ROLE_ALT = 0, 1, 2, 3
_COL = tuple(itemgetter(j) for j in range(8))


@dataclass(frozen=True, slots=True)
class MarketChunk:
    """The pending events as columns: kind, source id, time, fields f1–f4, book rows' depth."""

    kind: NDArray[np.int64]
    gsrc: NDArray[np.int64]
    ts: NDArray[np.int64]
    f: NDArray[np.float64]
    book_rows: NDArray[np.int64]
    book_depth: NDArray[np.float64]


class MarketRecorder:
    """Sources and roles of the assets, the pending chunk and the alt index's state."""

    def __init__(self, cfg: EngineConfig, store: SeriesStore, chunk_events: int) -> None:
        self._store = store
        self.chunk_events = chunk_events
        peg_assets = tuple(cfg.peg.assets)
        self._depth_col = 8 + BOOK_BANDS_BPS.index(cfg.liquidity.withdrawal_band_bps)
        self._quote_usd = dict(cfg.ingest.quote_prices_usd)
        self._price_assets = frozenset(peg_assets) | {"BTC"}
        self._not_alts = (
            frozenset(cfg.cascade.not_alts) | frozenset(cfg.cascade.macro_assets)
            | frozenset(peg_assets) | frozenset(self._quote_usd)
        )
        self._roles: dict[str, int] = {}
        self.batches = 0
        self.events = 0
        # sources (asset, venue, symbol, quote) → global id, and per-id attributes
        self._gid: dict[tuple[str, tuple[str, str, str]], int] = {}
        self._g_role: list[int] = []
        self._g_q: list[float] = []
        self._g_pair: list[int] = []  # (asset, venue) pair id
        self._g_venue: list[int] = []
        self._g_quoted: list[bool] = []
        self._g_key: list[tuple[str, str, str]] = []  # (asset, venue, symbol)
        self._pairs: dict[tuple[str, str], int] = {}
        self._venues: dict[str, int] = {}
        # the pending chunk: rows of routed batches and their sources' global ids
        self._p_rows: list[list[float]] = []
        self._p_ids: list[int] = []
        self._p_nsrc: list[int] = []
        self._p_lens: list[int] = []
        # alt index state: per (asset, venue) pair, first and last price
        self._alt_base: dict[int, float] = {}
        self._alt_last: dict[int, float] = {}
        self._alt_bucket: int | None = None
        self._alt_open: float | None = None

    def queue(self, batch: Batch) -> bool:
        """Queue one routed market batch; True when the chunk holds ``chunk_events`` events.

        Only extends a list with the batch's rows (the native form of the replay-side
        batches) and maps its few sources to ids: a couple of µs per batch.
        """
        asset = batch.asset
        role = self._roles.get(asset)
        if role is None:
            role = self._classify(asset)
        if role == _ROLE_SKIP:
            return False
        rows = batch.rows
        if not rows:
            return False
        gid = self._gid
        ids = self._p_ids
        sources = batch.sources
        for s in sources:
            g = gid.get((asset, s))
            ids.append(self._new_source(asset, s, role) if g is None else g)
        self._p_nsrc.append(len(sources))
        self._p_lens.append(len(rows))
        self._p_rows.extend(rows)
        return len(self._p_rows) >= self.chunk_events

    def pending_events(self) -> int:
        """Events queued and not yet processed (at most ``chunk_events`` + one batch)."""
        return len(self._p_rows)

    def take_chunk(self) -> MarketChunk | None:
        """The pending events as columns (the chunk is then empty); None when there are none."""
        rows = self._p_rows
        if not rows:
            return None
        n = len(rows)
        lens = np.array(self._p_lens, dtype=np.int64)
        nsrc = np.array(self._p_nsrc, dtype=np.int64)
        flat_ids = np.array(self._p_ids, dtype=np.int64)
        # one C-level pass per column (no per-row containers: the row view is ragged)
        kind = np.fromiter(map(_COL[0], rows), np.float64, n).astype(np.int64)
        local = np.fromiter(map(_COL[1], rows), np.float64, n).astype(np.int64)
        ts = np.fromiter(map(_COL[2], rows), np.float64, n).astype(np.int64)
        f = np.column_stack([np.fromiter(map(_COL[j], rows), np.float64, n) for j in range(4, 8)])
        gsrc = flat_ids[np.repeat(np.cumsum(nsrc) - nsrc, lens) + local]
        book_rows = np.flatnonzero(kind == KIND_BOOK)
        col = self._depth_col
        book_depth = np.fromiter((rows[i][col] for i in book_rows.tolist()), np.float64, book_rows.size)
        self.batches += len(self._p_lens)
        self.events += n
        self._p_rows, self._p_ids, self._p_nsrc, self._p_lens = [], [], [], []
        return MarketChunk(kind, gsrc, ts, f, book_rows, book_depth)

    def process(self, chunk: MarketChunk) -> None:
        """Record a chunk's prices, alt index, bid depth and liquidation notional."""
        kind, gsrc, ts, f = chunk.kind, chunk.gsrc, chunk.ts, chunk.f
        n = kind.shape[0]
        role = np.array(self._g_role, dtype=np.int64)[gsrc]
        q = np.array(self._g_q, dtype=np.float64)[gsrc]
        pair = np.array(self._g_pair, dtype=np.int64)[gsrc]
        store = self._store

        # prices of the peg assets, BTC and the alts
        is_quote = kind == KIND_QUOTE
        is_book = kind == KIND_BOOK
        priced = (is_quote | is_book | (kind == KIND_PRICE)) & (role >= _ROLE_PRICE)
        quoted = self._g_quoted
        for g in np.unique(gsrc[priced]).tolist():
            quoted[g] = True
        use = priced | ((kind == KIND_TRADE) & (role >= _ROLE_PRICE) & ~np.array(quoted, dtype=bool)[gsrc])
        px = np.where(is_quote, (f[:, 0] + f[:, 1]) * 0.5, np.where(is_book, f[:, 2], f[:, 0])) * q
        use &= np.isfinite(px) & (px > 0)
        keys = list(self._pairs)
        main = use & (role == _ROLE_PRICE)
        if main.any():
            store.record(pair[main], ts[main], px[main], False, lambda c: ("price", *keys[c]))
        alt = use & (role == _ROLE_ALT)
        if alt.any():
            self._alt_update(pair[alt], ts[alt], px[alt])

        # bid depth within the withdrawal band (an invalid book is a gap)
        books = is_book | (kind == KIND_BOOK_INVALID)
        if books.any():
            depth = np.full(n, np.nan)
            depth[chunk.book_rows] = chunk.book_depth * q[chunk.book_rows]
            gkeys = self._g_key
            store.record(gsrc[books], ts[books], depth[books], False, lambda c: ("depth", *gkeys[c]))

        # liquidation notional per venue
        liq = kind == KIND_LIQUIDATION
        if liq.any():
            fl = f[liq]
            usd = np.where(fl[:, 3] > 0, fl[:, 3], fl[:, 0] * fl[:, 1]) * q[liq]
            ok = np.isfinite(usd) & (usd > 0)
            if ok.any():
                venue = np.array(self._g_venue, dtype=np.int64)[gsrc[liq][ok]]
                names = list(self._venues)
                store.record(venue, ts[liq][ok], usd[ok], True, lambda c: ("liq", names[c]))

    def align(self, bucket_ms: int) -> None:
        """The store's buckets widened to ``bucket_ms``: the alt index's open bucket follows."""
        if self._alt_bucket is not None:
            self._alt_bucket = self._alt_bucket // bucket_ms * bucket_ms

    def open_alt_point(self) -> tuple[int, float] | None:
        """(bucket, value) of the alt index's bucket still open, if any."""
        if self._alt_bucket is not None and self._alt_open is not None:
            return self._alt_bucket, self._alt_open
        return None

    def _classify(self, asset: str) -> int:
        if asset in self._quote_usd:
            role = _ROLE_SKIP
        elif asset in self._price_assets:
            role = _ROLE_PRICE
        elif asset in self._not_alts:
            role = _ROLE_OTHER
        else:
            role = _ROLE_ALT
        self._roles[asset] = role
        return role

    def _new_source(self, asset: str, source: tuple[str, str, str], role: int) -> int:
        g = len(self._g_role)
        self._gid[(asset, source)] = g
        venue, symbol, quote = source
        self._g_role.append(role)
        self._g_q.append(self._quote_usd.get(quote, float("nan")))
        self._g_pair.append(self._pairs.setdefault((asset, venue), len(self._pairs)))
        self._g_venue.append(self._venues.setdefault(venue, len(self._venues)))
        self._g_quoted.append(False)
        self._g_key.append((asset, venue, symbol))
        return g

    def _alt_update(self, pairs: NDArray[np.int64], ts: NDArray[np.int64], px: NDArray[np.float64]) -> None:
        """Advance the alt index bucket by bucket: last price per pair, then the index of the bucket."""
        width = self._store.bucket_ms
        n_pairs = len(self._pairs)
        b = ts // width
        b0 = int(b.min())
        key = (b - b0) * n_pairs + pairs  # ascending by bucket, then pair
        u, first_rev = np.unique(key[::-1], return_index=True)
        last = px[key.size - 1 - first_rev]
        offs = u // n_pairs
        cuts = np.flatnonzero(np.r_[True, offs[1:] != offs[:-1], True])
        base, latest = self._alt_base, self._alt_last
        for start, end in zip(cuts[:-1].tolist(), cuts[1:].tolist(), strict=True):
            bucket = (b0 + int(offs[start])) * width
            if self._alt_bucket is not None and bucket > self._alt_bucket and self._alt_open is not None:
                self._store.put(("alt_index",), self._alt_bucket, self._alt_open)
            if self._alt_bucket is None or bucket > self._alt_bucket:
                self._alt_bucket = bucket
            for pair, p in zip((u[start:end] % n_pairs).tolist(), last[start:end].tolist(), strict=True):
                base.setdefault(pair, p)
                latest[pair] = p
            self._alt_open = self._alt_value()

    def _alt_value(self) -> float | None:
        """Equal-weight mean over assets of (mean over venues of price / first price) × 100."""
        per_asset: dict[str, list[float]] = {}
        keys = list(self._pairs)
        for pair in sorted(self._alt_last):
            per_asset.setdefault(keys[pair][0], []).append(self._alt_last[pair] / self._alt_base[pair])
        if not per_asset:
            return None
        return 100.0 * sum(sum(r) / len(r) for r in per_asset.values()) / len(per_asset)
