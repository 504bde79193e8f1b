"""The streams whose every input is known before the run, framed apart from the agents.

Prices of BTC, ETH, SOL and the alts (spot, perp and the other venues' majors) are
exogenous paths, and the BTC and alt market makers react to BTC's drawdown only, so every
frame of these streams is fixed before the agents step: the Binance spot tickers and the
BTC/ETH books, every USD-M stream, the Bybit/OKX/Hyperliquid majors. The agents' own
books (USDe, wBETH, BNSOL), trades, liquidations and pools stay in the simulation.

:class:`ExogenousBooks` frames the exogenous books a second at a time; the simulation
runs it in a child process (:mod:`replay.scenario.day.feed`) while its agents step.
:class:`PrebuiltLines` holds the ticker and markPrice lines built for the whole day (by
the child, on its first second); each second they are packed with the books' lines.

Merging: within a second the capture is ordered by ``ts_ms``, ties in the order the
frames were made. The books (spot offsets 5/6 and 12/13 ms, USD-M BTC 300/301, majors
500–540) share a ``ts_ms`` with the prebuilt lines only at 12/13 ms, with the markPrice
lines of the third and fourth USD-M symbols, which were made after the ETH spot book's
frames: a stable sort puts the prebuilt lines after the books' lines of the same
``ts_ms``. The simulation's own frames (its books at spot indices 3–5, liquidations at
250/400/600/700/750, aggTrade 900, Bybit USDe 560, pools 800, rates 850–853) share none
with the child's lines (markPrice 10–17, tickers 6 + 7·i, USD-M tickers 302–308; the
books above), and :func:`merge` would put them after the child's lines of a shared one.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter
from dataclasses import dataclass
from itertools import accumulate
from operator import itemgetter
from typing import Any

import numpy as np
import numpy.typing as npt

from replay.capture import dumps_line
from replay.scenario.config import T0_MS
from replay.scenario.day import tickers, wire

FloatArray = npt.NDArray[np.float64]
Frame = tuple[int, str, str, Any]
Line = tuple[int, str, bytes]
#: One second of lines packed for a pipe: the newline-terminated lines joined, each
#: line's ts_ms, the byte offset where each line ends, and the lines per venue.
Second = tuple[bytes, list[int], list[int], dict[str, int]]

MAJORS = ("BTC", "ETH", "SOL")
#: Spot books whose mid the agents move: framed by the simulation itself.
AGENT_BOOKS = ("USDe", "wBETH", "BNSOL")


@dataclass(frozen=True)
class ExogenousInputs:
    """Paths, liquidity and sampling the exogenous streams are framed from."""

    px: dict[str, FloatArray]
    alt_px: dict[str, FloatArray]
    perp_px: dict[str, FloatArray]
    venue_px: dict[tuple[str, str], FloatArray]
    #: (asset, symbol, tick) of every Binance spot symbol, in stream order.
    spot_syms: list[tuple[str, str, float]]
    usdm: list[str]
    lf_btc: list[float]
    lf_alts: list[float]
    depth_tick: list[bool]
    book_tick: list[bool]
    books: dict[str, wire.Book]


class ExogenousBooks:
    """Frames of the exogenous books, one second at a time (books keep their state)."""

    def __init__(self, inputs: ExogenousInputs) -> None:
        self.x = inputs
        #: (offset ms, channel, book, mid path) of the Binance spot books framed here.
        self._spot = [(5 + idx * 7, f"{sym.lower()}@bookTicker", inputs.books[f"bs:{asset}"],
                       inputs.px[asset])
                      for idx, (asset, sym, _) in enumerate(inputs.spot_syms)
                      if f"bs:{asset}" in inputs.books and asset not in AGENT_BOOKS]
        #: The ticker and markPrice lines, packed with the books' lines.
        self.prebuilt = PrebuiltLines(inputs)

    def frames(self, t: int) -> list[Frame]:
        """This second's frames, in the order they are made."""
        x = self.x
        ts = T0_MS + t * 1000
        liq = x.lf_btc[t]
        depth_tick, book_tick = x.depth_tick[t], x.book_tick[t]
        frames: list[Frame] = []
        for off, channel, book, mid in self._spot:
            if depth_tick or book_tick or not book.started:
                frames += wire.binance_depth(book, ts + off, float(mid[t]), liq, False)
            if book_tick:
                frames.append((ts + off + 1, "binance-spot", channel,
                               wire.binance_book_ticker(book, ts + off + 1, False)))
        book = x.books["bu:BTC"]
        if depth_tick or book_tick or not book.started:
            frames += wire.binance_depth(book, ts + 300, float(x.perp_px["BTC"][t]), liq, True)
        if book_tick:
            frames.append((ts + 301, "binance-usdm", "btcusdt@bookTicker",
                           wire.binance_book_ticker(book, ts + 301, True)))
        if depth_tick:
            self._majors(t, ts, liq, frames)
        return frames

    def _majors(self, t: int, ts: int, liq: float, frames: list[Frame]) -> None:
        """Bybit, OKX and Hyperliquid books of BTC, ETH and SOL."""
        books, venue_px = self.x.books, self.x.venue_px
        for coin in MAJORS:
            frames.append((ts + 500, "bybit-linear", f"orderbook.50.{coin}USDT",
                           wire.bybit_book(books[f"by:{coin}"], ts + 500,
                                           float(venue_px[("bybit", coin)][t]), liq)))
            frames.append((ts + 520, "okx", "books",
                           wire.okx_book(books[f"ok:{coin}"], ts + 520,
                                         float(venue_px[("okx", coin)][t]), liq)))
            frames.append((ts + 540, "hyperliquid", "l2Book", {
                "channel": "l2Book",
                "data": wire.hyperliquid_l2(books[f"hl:{coin}"], ts + 540,
                                            float(venue_px[("hyperliquid", coin)][t]), liq)}))

    def second(self, t: int) -> Second:
        """This second's lines, ordered by ts_ms, packed for the trip from the child.

        The books' frames and then :attr:`prebuilt`'s lines, stably sorted by ts_ms: a
        prebuilt line comes after the frames of the same ts_ms.
        """
        lines = [(ts, venue, dumps_line(ts, venue, channel, raw))
                 for ts, venue, channel, raw in self.frames(t)]
        lines += self.prebuilt.lines(t)
        lines.sort(key=itemgetter(0))
        blobs = [line + b"\n" for _, _, line in lines]
        return (b"".join(blobs), [line[0] for line in lines], list(accumulate(map(len, blobs))),
                dict(Counter(line[1] for line in lines)))


class PrebuiltLines:
    """The capture lines of the exogenous tickers and markPrice streams, built on first use.

    Binance spot tickers of the symbols without a book, markPrice@1s of every USD-M symbol
    and the bookTickers of the USD-M symbols other than BTC (whose books send no diffs).
    """

    def __init__(self, inputs: ExogenousInputs) -> None:
        self.x = inputs
        #: Per stream: (a line per book tick, else one per second; offset ms; venue; lines).
        self._streams: list[tuple[bool, int, str, list[bytes]]] = []
        self._rank: list[int] = []

    def _build(self) -> None:
        x = self.x
        times = np.flatnonzero(x.book_tick)
        self._rank = (np.cumsum(x.book_tick) - 1).tolist()
        for idx, (asset, sym, tick) in enumerate(x.spot_syms):
            if f"bs:{asset}" in x.books:
                continue
            price = x.px[asset] if asset in x.px else x.alt_px[asset]
            liq = np.array(x.lf_btc if asset in MAJORS else x.lf_alts)
            off = 5 + idx * 7 + 1
            self._streams.append((True, off, "binance-spot",
                                  tickers.simple_tickers(sym, tick, price, liq, times, T0_MS + off)))
        for j, coin in enumerate(x.usdm):
            index = x.px[coin] if coin in x.px else x.alt_px[coin]
            pd = 1 if coin == "BTC" else (2 if coin in MAJORS else 5)
            self._streams.append((False, 10 + j, "binance-usdm", tickers.mark_prices(
                f"{coin}USDT", pd, x.perp_px[coin], index, T0_MS, 10 + j)))
            if coin != "BTC":
                liq = np.array(x.lf_btc if coin in MAJORS else x.lf_alts)[times]
                self._streams.append((True, 301 + j, "binance-usdm", tickers.futures_tickers(
                    x.books[f"bu:{coin}"], x.perp_px[coin][times], liq, times, T0_MS + 301 + j)))

    def lines(self, t: int) -> list[Line]:
        """This second's prebuilt lines as (ts_ms, venue, line), in stream order."""
        if not self._rank:
            self._build()
        ts = T0_MS + t * 1000
        book_tick = self.x.book_tick[t]
        rank = self._rank[t]
        out: list[Line] = []
        for per_tick, off, venue, lines in self._streams:
            if not per_tick:
                out.append((ts + off, venue, lines[t]))
            elif book_tick:
                out.append((ts + off, venue, lines[rank]))
        return out


def merge(second: Second, own: list[Line]) -> bytes:
    """The second's capture lines: ``own`` (ordered by ts_ms) placed among the packed ones.

    An own line goes after every packed line of the same or an earlier ts_ms: the order
    a stable sort of (packed lines + own lines) gives.
    """
    blob, stamps, ends, _ = second
    pieces: list[bytes] = []
    pos = start = 0
    for ts, _, line in own:
        start = bisect_right(stamps, ts, lo=start)
        end = ends[start - 1] if start else 0
        pieces.append(blob[pos:end])
        pieces.append(line + b"\n")
        pos = end
    pieces.append(blob[pos:])
    return b"".join(pieces)
