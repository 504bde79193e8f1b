"""Venue-native frames for the synthetic day: book ladders, diffs and message shapes.

Book snapshots a live connector would fetch over REST are recorded as one frame on
channel ``<symbol lower>@depthSnapshot`` (Binance; raw = the REST ``/depth`` response:
``{"lastUpdateId", "bids", "asks"}``, futures add ``E`` and ``T``), emitted just before
the first diff of that book. Bybit and OKX send their own snapshot messages; Hyperliquid
``l2Book`` is always a full snapshot. Hyperliquid frames keep the websocket envelope
``{"channel", "data"}``; Binance frames are the bare payload (no combined-stream wrapper).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

#: Level distances from mid (bps) for the part of the book market makers withdraw...
NEAR_BPS = (5, 10, 20, 35, 50, 75, 100, 150, 200, 300, 400)
NEAR_WEIGHTS = (0.03, 0.05, 0.08, 0.09, 0.1, 0.1, 0.11, 0.12, 0.11, 0.11, 0.1)
#: ...and the far bids/asks that stay ("bids only 4–10% from mid").
FAR_BPS = (450, 500, 700, 1000)


def decimals(step: float) -> int:
    """Decimal places needed to print multiples of step."""
    text = f"{step:.12f}".rstrip("0")
    return len(text.split(".")[1]) if "." in text else 0


@dataclass
class Book:
    """One book: static shape plus the last emitted ladder and sequence numbers."""

    venue: str
    symbol: str
    tick: float
    qty_step: float
    depth5_usd: float
    far_usd: float
    base_spread_bps: float
    contract_size: float = 1.0
    seq: int = 1_000_000
    bids: dict[str, str] = field(default_factory=dict)
    asks: dict[str, str] = field(default_factory=dict)
    started: bool = False
    after_snapshot: bool = True

    def __post_init__(self) -> None:
        self.pd = decimals(self.tick)
        self.qd = decimals(self.qty_step)
        self._pfmt = f".{self.pd}f"
        self._qfmt = f".{self.qd}f"
        #: A zero size as printed (a level that rounds to it is not quoted).
        self._zero_qty = format(0.0, self._qfmt)
        #: 10**pd when the tick is a power of ten: the price printed for n ticks then reads
        #: back as exactly n / 10**pd (both are the double nearest n·10^-pd).
        self._scale = 10.0 ** self.pd if self.tick == 10.0 ** -self.pd else 0.0
        #: (distance from mid, USD at full liquidity) of the near levels; far distances.
        self._near = tuple((b / 1e4, w * self.depth5_usd) for b, w in zip(NEAR_BPS, NEAR_WEIGHTS, strict=True))
        self._far = tuple(b / 1e4 for b in FAR_BPS)
        self._last: tuple[float, float, dict[str, str], dict[str, str]] | None = None
        self._by_liquidity: dict[float, list[tuple[float, float]]] = {}

    def px(self, value: float, up: bool) -> str:
        ticks = value / self.tick
        n = int(ticks + 0.999999) if up else int(ticks + 1e-9)
        return f"{max(n, 1) * self.tick:.{self.pd}f}"

    def _levels(self, mid: float, liquidity: float) -> list[tuple[float, float]]:
        """(distance from mid, USD) of every level, nearest first (callers do not mutate).

        The half spread is the wider of the makers' spread and half a tick; when it is the
        makers' spread the levels depend on the liquidity factor alone, which takes a few
        dozen values (one per count of quoting makers), and are reused.
        """
        spread_bps = min(self.base_spread_bps / max(liquidity, 0.002), 2_000.0)
        half = spread_bps / 2e4
        tick_half = 0.5 * self.tick / mid
        if half < tick_half:
            return self._spaced(tick_half, liquidity)
        levels = self._by_liquidity.get(liquidity)
        if levels is None:
            levels = self._by_liquidity[liquidity] = self._spaced(half, liquidity)
        return levels

    def _spaced(self, half: float, liquidity: float) -> list[tuple[float, float]]:
        levels = [(dist if dist > half else half, usd * liquidity) for dist, usd in self._near]
        levels[0] = (half, levels[0][1])  # the first level sits at the half spread
        levels += [(dist, self.far_usd) for dist in self._far if dist >= half]
        return levels

    def ladder(self, mid: float, liquidity: float) -> tuple[dict[str, str], dict[str, str]]:
        """Bid and ask ladders ({price: qty}) for a mid and a liquidity factor in (0, 1].

        The same mid and liquidity as the last call return the last ladders (callers never
        mutate them). Bids are in descending and asks in ascending price order: the
        distances grow and a price already quoted is skipped.
        """
        last = self._last
        if last is not None and last[0] == mid and last[1] == liquidity:
            return last[2], last[3]
        bids, asks = self._fill(mid, self._levels(mid, liquidity))
        self._last = (mid, liquidity, bids, asks)
        return bids, asks

    def top(self, mid: float, liquidity: float) -> tuple[str, str, str, str]:
        """What :meth:`best` would give after storing ``ladder(mid, liquidity)``, cheaply."""
        levels = self._levels(mid, liquidity)
        bids, asks = self._fill(mid, levels[:1])
        if not bids or not asks:
            bids, asks = self._fill(mid, levels)
        bp, ap = next(iter(bids)), next(iter(asks))
        return bp, bids[bp], ap, asks[ap]

    def tops(self, mid: FloatArray, liquidity: FloatArray) -> list[tuple[str, str, str, str]]:
        """:meth:`top` of every (mid, liquidity) pair, the level arithmetic done on arrays.

        The same IEEE operations as :meth:`_levels` and :meth:`_fill` element for element;
        a pair whose first level prints a zero size takes :meth:`top` itself.
        """
        if not self._scale:
            return [self.top(m, lq) for m, lq in zip(mid.tolist(), liquidity.tolist(), strict=True)]
        tick, scale, size = self.tick, self._scale, self.contract_size
        half = np.minimum(self.base_spread_bps / np.maximum(liquidity, 0.002), 2_000.0) / 2e4
        tick_half = 0.5 * tick / mid
        half = np.where(half < tick_half, tick_half, half)
        usd = self._near[0][1] * liquidity
        nb = np.maximum(np.floor(mid * (1 - half) / tick + 1e-9), 1.0)
        na = np.maximum(np.floor(mid * (1 + half) / tick + 0.999999), 1.0)
        pfmt, qfmt, zero = self._pfmt, self._qfmt, self._zero_qty
        out = []
        for m, lq, b, a, qb, qa in zip(mid.tolist(), liquidity.tolist(), nb.tolist(),
                                       na.tolist(), (usd / (nb / scale) / size).tolist(),
                                       (usd / (na / scale) / size).tolist(), strict=True):
            bq, aq = format(qb, qfmt), format(qa, qfmt)
            if zero in (bq, aq):
                out.append(self.top(m, lq))
            else:
                out.append((format(b * tick, pfmt), bq, format(a * tick, pfmt), aq))
        return out

    def _fill(
        self, mid: float, levels: list[tuple[float, float]]
    ) -> tuple[dict[str, str], dict[str, str]]:
        """The hot loop of generation: price and size every level (:meth:`px` inlined).

        With a power-of-ten tick a printed price reads back as ticks / 10**pd (at least
        one tick, so never below the tick), and a contract size of 1 divides nothing away:
        those books take the short path. Sizes are never negative, so a printed size other
        than zero is a positive one.
        """
        tick, size, pfmt, qfmt = self.tick, self.contract_size, self._pfmt, self._qfmt
        zero, scale = self._zero_qty, self._scale
        bids: dict[str, str] = {}
        asks: dict[str, str] = {}
        if scale and size == 1.0:
            for d, usd in levels:
                nb = int(mid * (1 - d) / tick + 1e-9)
                nb = nb if nb > 1 else 1
                bp = format(nb * tick, pfmt)
                qs = format(usd / (nb / scale), qfmt)
                if qs != zero and bp not in bids:
                    bids[bp] = qs
                na = int(mid * (1 + d) / tick + 0.999999)
                na = na if na > 1 else 1
                ap = format(na * tick, pfmt)
                qs = format(usd / (na / scale), qfmt)
                if qs != zero and ap not in asks:
                    asks[ap] = qs
            return bids, asks
        for d, usd in levels:
            nb = int(mid * (1 - d) / tick + 1e-9)
            nb = nb if nb > 1 else 1
            na = int(mid * (1 + d) / tick + 0.999999)
            na = na if na > 1 else 1
            bp = format(nb * tick, pfmt)
            ap = format(na * tick, pfmt)
            price_b = nb / scale if scale else float(bp)
            qs = format(usd / (price_b if price_b > tick else tick) / size, qfmt)
            if qs != zero and bp not in bids:
                bids[bp] = qs
            qas = format(usd / (na / scale if scale else float(ap)) / size, qfmt)
            if qas != zero and ap not in asks:
                asks[ap] = qas
        return bids, asks

    def diff(
        self, bids: dict[str, str], asks: dict[str, str]
    ) -> tuple[list[list[str]], list[list[str]]]:
        """Changed levels since the last ladder (qty "0" removes a level); stores the new one."""
        db = [[p, q] for p, q in bids.items() if self.bids.get(p) != q]
        db += [[p, "0"] for p in self.bids if p not in bids]
        da = [[p, q] for p, q in asks.items() if self.asks.get(p) != q]
        da += [[p, "0"] for p in self.asks if p not in asks]
        self.bids, self.asks = bids, asks
        return db, da

    def best(self) -> tuple[str, str, str, str]:
        """Best bid price, qty, best ask price, qty of the stored ladder (its first levels)."""
        bp = next(iter(self.bids))
        ap = next(iter(self.asks))
        return bp, self.bids[bp], ap, self.asks[ap]


def _sorted_levels(side: dict[str, str], desc: bool) -> list[list[str]]:
    return [[p, side[p]] for p in sorted(side, key=float, reverse=desc)]


def binance_depth(
    book: Book, ts: int, mid: float, liquidity: float, futures: bool
) -> list[tuple[int, str, str, Any]]:
    """A Binance depth@100ms diff (preceded, the first time, by the REST snapshot frame)."""
    bids, asks = book.ladder(mid, liquidity)
    out: list[tuple[int, str, str, Any]] = []
    sym = book.symbol
    if not book.started:
        book.started = True
        book.bids, book.asks = bids, asks
        snap: dict[str, Any] = {"lastUpdateId": book.seq}
        if futures:
            snap.update({"E": ts, "T": ts})
        snap["bids"] = _sorted_levels(bids, True)
        snap["asks"] = _sorted_levels(asks, False)
        out.append((ts, book.venue, f"{sym.lower()}@depthSnapshot", snap))
        return out
    db, da = book.diff(bids, asks)
    if not db and not da:
        return out
    first = book.seq + 1
    last = book.seq + len(db) + len(da)
    prev = book.seq
    if futures and book.after_snapshot:
        # USD-M: the first event after a snapshot spans it (U <= lastUpdateId <= u).
        first, prev = book.seq, book.seq - 1
    book.after_snapshot = False
    raw: dict[str, Any] = {"e": "depthUpdate", "E": ts}
    if futures:
        raw["T"] = ts
    raw.update({"s": sym, "U": first, "u": last})
    if futures:
        raw["pu"] = prev
    raw["b"] = db
    raw["a"] = da
    book.seq = last
    out.append((ts, book.venue, f"{sym.lower()}@depth@100ms", raw))
    return out


def binance_book_ticker(
    book: Book, ts: int, futures: bool, top: tuple[str, str, str, str] | None = None
) -> dict[str, Any]:
    """bookTicker from ``top`` or else the book's stored ladder (futures add e, E, T)."""
    bp, bq, ap, aq = top if top is not None else book.best()
    raw: dict[str, Any] = {}
    if futures:
        raw.update({"e": "bookTicker", "u": book.seq, "s": book.symbol})
    else:
        raw.update({"u": book.seq, "s": book.symbol})
    raw.update({"b": bp, "B": bq, "a": ap, "A": aq})
    if futures:
        raw.update({"T": ts, "E": ts})
    return raw


def bybit_book(book: Book, ts: int, mid: float, liquidity: float) -> dict[str, Any]:
    """Bybit v5 orderbook.50 snapshot (first) or delta."""
    bids, asks = book.ladder(mid, liquidity)
    book.seq += 1
    topic = f"orderbook.50.{book.symbol}"
    if not book.started:
        book.started = True
        book.bids, book.asks = bids, asks
        kind = "snapshot"
        db, da = _sorted_levels(bids, True), _sorted_levels(asks, False)
    else:
        kind = "delta"
        db, da = book.diff(bids, asks)
    return {
        "topic": topic,
        "type": kind,
        "ts": ts,
        "data": {"s": book.symbol, "b": db, "a": da, "u": book.seq, "seq": book.seq * 7},
        "cts": ts - 3,
    }


def okx_book(book: Book, ts: int, mid: float, liquidity: float) -> dict[str, Any]:
    """OKX v5 books snapshot (first, prevSeqId −1) or update (sizes in contracts)."""
    bids, asks = book.ladder(mid, liquidity)
    prev = book.seq
    book.seq += 3
    if not book.started:
        book.started = True
        book.bids, book.asks = bids, asks
        action, prev = "snapshot", -1
        db, da = _sorted_levels(bids, True), _sorted_levels(asks, False)
    else:
        action = "update"
        db, da = book.diff(bids, asks)
    return {
        "arg": {"channel": "books", "instId": book.symbol},
        "action": action,
        "data": [
            {
                "asks": [[p, q, "0", "1" if q != "0" else "0"] for p, q in da],
                "bids": [[p, q, "0", "1" if q != "0" else "0"] for p, q in db],
                "ts": str(ts),
                "checksum": 0,
                "seqId": book.seq,
                "prevSeqId": prev,
            }
        ],
    }


def hyperliquid_l2(book: Book, ts: int, mid: float, liquidity: float) -> dict[str, Any]:
    """Hyperliquid l2Book full snapshot {coin, levels: [bids, asks], time}."""
    bids, asks = book.ladder(mid, liquidity)
    book.bids, book.asks = bids, asks
    return {
        "coin": book.symbol,
        "levels": [
            [{"px": p, "sz": q, "n": 1} for p, q in bids.items()],
            [{"px": p, "sz": q, "n": 1} for p, q in asks.items()],
        ],
        "time": ts,
    }
