"""The streams whose every input is known before the run, framed apart from the agents.

Prices of BTC, ETH, SOL and the alts (spot, perp and the other venues' majors) are
exogenous paths, and the BTC and alt market makers react to BTC's drawdown only, so every
frame of these streams is fixed before the agents step: the Binance spot tickers and the
BTC/ETH books, every USD-M stream, the Bybit/OKX/Hyperliquid majors. The agents' own
books (USDe, wBETH, BNSOL), trades, liquidations and pools stay in the simulation.
:class:`ExogenousStreams` frames a second at a time; the simulation runs it in a child
process (:mod:`replay.scenario.feed`) while its agents step, and merges the lines.

Merging: within a second the capture is ordered by ``ts_ms``, ties in the order the
frames were made. No frame of these streams shares a ``ts_ms`` with one of the
simulation's (spot offsets 5 + 7·i and 6 + 7·i ms by symbol index, markPrice 10–17,
USD-M books 300–308, majors 500–540; the simulation's own books sit at indices 3–5,
liquidations at 250/400/600/700/750, aggTrade 900, Bybit USDe 560, pools 800, rates
850–853), and each side is in its own order, so a stable sort of the two keeps it.
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
from replay.scenario import tickers, wire
from replay.scenario.config import T0_MS

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


class ExogenousStreams:
    """Frames of the exogenous streams, one second at a time (books keep their state).

    The simple tickers' and markPrice capture lines are built for the whole run on the
    first call (in the child process, when it runs in one).
    """

    def __init__(self, inputs: ExogenousInputs) -> None:
        self.x = inputs
        #: (offset ms, channel, book, mid path, prebuilt ticker lines) per spot symbol.
        self._spot: list[tuple[int, str, wire.Book | None, FloatArray, list[bytes]]] = []
        self._marks: list[list[bytes]] = []
        #: Prebuilt bookTicker lines of the USD-M symbols other than BTC (book ticks only).
        self._usdm_tickers: list[list[bytes]] = []
        self._rank: list[int] = []

    def _prepare(self) -> None:
        x = self.x
        times = np.flatnonzero(x.book_tick)
        self._rank = (np.cumsum(x.book_tick) - 1).tolist()
        for idx, (asset, sym, tick) in enumerate(x.spot_syms):
            if asset in AGENT_BOOKS:
                continue
            book = x.books.get(f"bs:{asset}")
            price = x.px[asset] if asset in x.px else x.alt_px[asset]
            ticks: list[bytes] = []
            if book is None:
                liq = np.array(x.lf_btc if asset in MAJORS else x.lf_alts)
                ticks = tickers.simple_tickers(sym, tick, price, liq, times,
                                               T0_MS + 5 + idx * 7 + 1)
            self._spot.append((5 + idx * 7, f"{sym.lower()}@bookTicker", book, price, ticks))
        for j, coin in enumerate(x.usdm):
            index = x.px[coin] if coin in x.px else x.alt_px[coin]
            pd = 1 if coin == "BTC" else (2 if coin in MAJORS else 5)
            self._marks.append(tickers.mark_prices(f"{coin}USDT", pd, x.perp_px[coin], index,
                                                   T0_MS, 10 + j))
            liq = np.array(x.lf_btc if coin in MAJORS else x.lf_alts)[times]
            self._usdm_tickers.append([] if coin == "BTC" else tickers.futures_tickers(
                x.books[f"bu:{coin}"], x.perp_px[coin][times], liq, times, T0_MS + 301 + j))

    def frames(self, t: int) -> tuple[list[Frame], list[Line]]:
        """This second's frames, and its prebuilt lines, each in the order made."""
        if not self._rank:
            self._prepare()
        ts = T0_MS + t * 1000
        frames: list[Frame] = []
        built: list[Line] = []
        self._spot_frames(t, ts, frames, built)
        self._usdm_frames(t, ts, frames, built)
        if self.x.depth_tick[t]:
            self._majors(t, ts, frames)
        return frames, built

    def _spot_frames(self, t: int, ts: int, frames: list[Frame], built: list[Line]) -> None:
        depth_tick, book_tick = self.x.depth_tick[t], self.x.book_tick[t]
        rank = self._rank[t]
        for off, channel, book, mid, ticks in self._spot:
            if book is None:
                if book_tick:
                    built.append((ts + off + 1, "binance-spot", ticks[rank]))
                continue
            if depth_tick or book_tick or not book.started:
                frames += wire.binance_depth(book, ts + off, float(mid[t]), self.x.lf_btc[t],
                                             False)
            if book_tick:
                frames.append((ts + off + 1, "binance-spot", channel,
                               wire.binance_book_ticker(book, ts + off + 1, False)))

    def _usdm_frames(self, t: int, ts: int, frames: list[Frame], built: list[Line]) -> None:
        """markPrice@1s every second, bookTicker of every symbol, the BTC depth."""
        x = self.x
        depth_tick, book_tick = x.depth_tick[t], x.book_tick[t]
        rank = self._rank[t]
        for j, coin in enumerate(x.usdm):
            sym = f"{coin}USDT"
            built.append((ts + 10 + j, "binance-usdm", self._marks[j][t]))
            if coin != "BTC":
                if book_tick:
                    built.append((ts + 301 + j, "binance-usdm", self._usdm_tickers[j][rank]))
                continue
            book = x.books["bu:BTC"]
            if depth_tick or book_tick or not book.started:
                frames += wire.binance_depth(book, ts + 300, float(x.perp_px[coin][t]),
                                             x.lf_btc[t], True)
            if book_tick:
                frames.append((ts + 301 + j, "binance-usdm", f"{sym.lower()}@bookTicker",
                               wire.binance_book_ticker(book, ts + 301 + j, True)))

    def _majors(self, t: int, ts: int, frames: list[Frame]) -> None:
        """Bybit, OKX and Hyperliquid books of BTC, ETH and SOL."""
        liq = self.x.lf_btc[t]
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

    def lines(self, t: int) -> list[Line]:
        """This second's frames as (ts_ms, venue, capture line), ordered by ts_ms.

        A prebuilt line shares a ts_ms with a frame only at 12/13 ms (markPrice of the
        third and fourth USD-M symbols, the ETH spot book's diff and ticker), and the
        frame was made first: frames go before prebuilt lines into the stable sort.
        """
        frames, built = self.frames(t)
        lines = [(ts, venue, dumps_line(ts, venue, channel, raw))
                 for ts, venue, channel, raw in frames]
        lines += built
        lines.sort(key=itemgetter(0))
        return lines

    def second(self, t: int) -> Second:
        """This second's lines packed for the trip from the child process (see Second)."""
        lines = self.lines(t)
        blob = b"".join([line + b"\n" for _, _, line in lines])
        ends = list(accumulate(len(line) + 1 for _, _, line in lines))
        return blob, [ts for ts, _, _ in lines], ends, dict(Counter(map(itemgetter(1), lines)))


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
