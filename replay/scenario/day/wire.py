"""Venue-native frames for the synthetic day: book ladders, diffs and message shapes.

Book snapshots a live connector would fetch over REST are recorded as one frame on
channel ``<symbol lower>@depthSnapshot`` (Binance; raw = the REST ``/depth`` response:
``{"lastUpdateId", "bids", "asks"}``, futures add ``E`` and ``T``), emitted just before
the first diff of that book. Bybit and OKX send their own snapshot messages; Hyperliquid
``l2Book`` is always a full snapshot. Hyperliquid frames keep the websocket envelope
``{"channel", "data"}``; Binance frames are the bare payload (no combined-stream wrapper).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
Frame = tuple[int, str, str, Any]

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
        """The hot loop of generation: price (ticks rounded away from mid, at least one) and size every level.

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


def spot_symbols(alt_ticks: list[tuple[str, float]]) -> list[tuple[str, str, float]]:
    """(asset, symbol, tick) of every Binance spot symbol, in stream order."""
    syms = [("BTC", "BTCUSDT", 0.01), ("ETH", "ETHUSDT", 0.01), ("SOL", "SOLUSDT", 0.01),
            ("USDe", "USDEUSDT", 0.0001), ("wBETH", "WBETHUSDT", 0.01),
            ("BNSOL", "BNSOLUSDT", 0.01)]
    syms += [(base, f"{base}USDT", tick) for base, tick in alt_ticks]
    return syms


def venue_books(usdm: list[str], alt_ticks: dict[str, float]) -> dict[str, Book]:
    """The modelled books by key (``bs:`` Binance spot, ``bu:`` USD-M, ``by:`` Bybit,
    ``ok:`` OKX, ``hl:`` Hyperliquid), USD-M books for the symbols in ``usdm``."""
    book = Book
    books = {
        "bs:BTC": book("binance-spot", "BTCUSDT", 0.01, 0.00001, 120e6, 0.4e6, 0.2),
        "bs:ETH": book("binance-spot", "ETHUSDT", 0.01, 0.0001, 80e6, 0.3e6, 0.3),
        "bs:USDe": book("binance-spot", "USDEUSDT", 0.0001, 1.0, 89e6, 0.3e6, 1.0),
        "bs:wBETH": book("binance-spot", "WBETHUSDT", 0.01, 0.0001, 12e6, 0.05e6, 3.0),
        "bs:BNSOL": book("binance-spot", "BNSOLUSDT", 0.01, 0.001, 5e6, 0.02e6, 4.0),
        "bu:BTC": book("binance-usdm", "BTCUSDT", 0.1, 0.001, 550e6, 1.0e6, 0.1),
        "by:USDe": book("bybit-spot", "USDEUSDT", 0.0001, 1.0, 30e6, 0.1e6, 1.0),
    }
    for coin, tick, qs, d5 in (("BTC", 0.1, 0.001, 300e6), ("ETH", 0.01, 0.01, 150e6),
                               ("SOL", 0.01, 0.1, 50e6)):
        books[f"by:{coin}"] = book("bybit-linear", f"{coin}USDT", tick, qs, d5, 0.5e6, 0.2)
        ct = {"BTC": 0.01, "ETH": 0.1, "SOL": 1.0}[coin]
        books[f"ok:{coin}"] = book("okx", f"{coin}-USDT-SWAP", tick, 1.0, d5 * 0.8, 0.4e6,
                                0.3, contract_size=ct)
        books[f"hl:{coin}"] = book("hyperliquid", coin, tick * 10 if coin == "BTC" else tick,
                                qs, d5 * 0.5, 0.3e6, 0.5)
    for s in usdm:
        if s != "BTC":
            tick = 0.01 if s in ("ETH", "SOL") else alt_ticks[s]
            books[f"bu:{s}"] = book("binance-usdm", f"{s}USDT", tick, 0.001, 40e6, 0.2e6, 0.5)
    return books


class PerpSymbol(Protocol):
    """What the liquidation frames need to know of a perp book."""

    venue: str
    symbol: str
    coin: str


def liquidation_frames(
    b: PerpSymbol, ts: int, price: float, events: list[tuple[str, float, float]],
    trade_ids: Iterator[int],
) -> list[Frame]:
    """A perp book's liquidations of one second as its venue streams them (Hyperliquid's
    trades take their ids from ``trade_ids``)."""
    pd = 1 if b.coin == "BTC" else (2 if b.coin in ("ETH", "SOL") else 5)
    if b.venue == "binance-usdm":
        # Binance pushes at most one liquidation per symbol per second: the last one.
        side, q, bk = events[-1]
        qty = f"{q:.3f}"
        return [(ts + 400, b.venue, "!forceOrder@arr", {
            "e": "forceOrder", "E": ts + 400,
            "o": {"s": b.symbol, "S": "SELL" if side == "long" else "BUY", "o": "LIMIT",
                  "f": "IOC", "q": qty, "p": f"{bk:.{pd}f}", "ap": f"{price:.{pd}f}",
                  "X": "FILLED", "l": qty, "z": qty, "T": ts + 390}})]
    if b.venue == "bybit-linear":
        out = []
        for half in (0, 1):
            part = events[half::2]
            if part:
                out.append((ts + 250 + 500 * half, b.venue, f"allLiquidation.{b.symbol}", {
                    "topic": f"allLiquidation.{b.symbol}", "type": "snapshot",
                    "ts": ts + 250 + 500 * half,
                    "data": [{"T": ts + 200 + 500 * half, "s": b.symbol,
                              "S": "Buy" if side == "long" else "Sell", "v": f"{q:.3f}",
                              "p": f"{bk:.{pd}f}"} for side, q, bk in part]}))
        return out
    if b.venue == "okx":
        ct = {"BTC": 0.01, "ETH": 0.1, "SOL": 1.0}[b.coin]
        return [(ts + 600, b.venue, "liquidation-orders", {
            "arg": {"channel": "liquidation-orders", "instType": "SWAP"},
            "data": [{"instId": b.symbol, "instType": "SWAP", "uly": f"{b.coin}-USDT",
                      "details": [{"side": "sell" if side == "long" else "buy",
                                   "posSide": side, "bkPx": f"{bk:.{pd}f}",
                                   "sz": str(max(1, round(q / ct))), "bkLoss": "0",
                                   "ccy": "", "ts": str(ts + 550)}
                                  for side, q, bk in events]}]})]
    trades = []
    for side, q, _bk in events:
        trade_id = next(trade_ids)
        trades.append({"coin": b.coin, "side": "A" if side == "long" else "B",
                       "px": f"{price:.{pd}f}", "sz": f"{q:.4f}",
                       "hash": f"0x{trade_id:064x}", "time": ts + 700,
                       "tid": trade_id,
                       "users": [f"0x{(trade_id * 7919) % (1 << 160):040x}",
                                 "0x" + "2e3d94f0562703b25c83308a05046ddaf9a8dd14"]})
    return [(ts + 700, "hyperliquid", "trades", {"channel": "trades", "data": trades})]
