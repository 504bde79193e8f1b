"""The books whose every input is known before the run, framed apart from the agents.

Binance spot BTC and ETH, Binance USD-M BTC and the Bybit, OKX and Hyperliquid majors are
priced by exogenous paths and quoted with the BTC market makers' liquidity, which the
agents do not feed back into. :class:`MarketBooks` frames them second by second; the
simulation runs it in a child process (:mod:`replay.scenario.feed`) while its own step
loop runs, and merges the serialised lines.

Merging: within a second the lines are ordered by ``ts_ms``, ties in the order the frames
were made. These books' frames were made before any other frame with the same ``ts_ms``
(their offsets, 5/6 and 12/13 ms for the spot books, only meet the markPrice frames of
later USD-M symbols), so a stable sort of (these lines + the others) keeps that order.
"""

from __future__ import annotations

from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import numpy as np
import numpy.typing as npt

from replay.capture import dumps_line
from replay.scenario import wire
from replay.scenario.config import T0_MS

FloatArray = npt.NDArray[np.float64]
Frame = tuple[int, str, str, Any]
Line = tuple[int, str, bytes]

#: Binance spot books framed here, and the Bybit/OKX/Hyperliquid coins.
SPOT_ASSETS = ("BTC", "ETH")
COINS = ("BTC", "ETH", "SOL")


@dataclass
class MarketBooks:
    """Frames of the exogenous books, one second at a time (books keep their state)."""

    books: dict[str, wire.Book]
    #: (offset ms, channel, mid path) of the Binance spot books.
    spot: list[tuple[int, str, FloatArray]]
    perp_btc: FloatArray
    venue_px: dict[tuple[str, str], FloatArray]
    lf_btc: list[float]
    depth_tick: list[bool]
    book_tick: list[bool]

    def frames(self, t: int) -> list[Frame]:
        """This second's frames in the order the venues' streams are visited."""
        ts = T0_MS + t * 1000
        liq = self.lf_btc[t]
        depth_tick, book_tick = self.depth_tick[t], self.book_tick[t]
        frames: list[Frame] = []
        for (off, channel, mid), asset in zip(self.spot, SPOT_ASSETS, strict=True):
            book = self.books[f"bs:{asset}"]
            if depth_tick or book_tick or not book.started:
                frames += wire.binance_depth(book, ts + off, float(mid[t]), liq, False)
            if book_tick:
                frames.append((ts + off + 1, "binance-spot", channel,
                               wire.binance_book_ticker(book, ts + off + 1, False)))
        book = self.books["bu:BTC"]
        if depth_tick or book_tick or not book.started:
            frames += wire.binance_depth(book, ts + 300, float(self.perp_btc[t]), liq, True)
        if book_tick:
            frames.append((ts + 301, "binance-usdm", "btcusdt@bookTicker",
                           wire.binance_book_ticker(book, ts + 301, True)))
        if depth_tick:
            self._majors(t, ts, liq, frames)
        return frames

    def _majors(self, t: int, ts: int, liq: float, frames: list[Frame]) -> None:
        for coin in COINS:
            frames.append((ts + 500, "bybit-linear", f"orderbook.50.{coin}USDT",
                           wire.bybit_book(self.books[f"by:{coin}"], ts + 500,
                                           float(self.venue_px[("bybit", coin)][t]), liq)))
            frames.append((ts + 520, "okx", "books",
                           wire.okx_book(self.books[f"ok:{coin}"], ts + 520,
                                         float(self.venue_px[("okx", coin)][t]), liq)))
            frames.append((ts + 540, "hyperliquid", "l2Book", {
                "channel": "l2Book",
                "data": wire.hyperliquid_l2(self.books[f"hl:{coin}"], ts + 540,
                                            float(self.venue_px[("hyperliquid", coin)][t]),
                                            liq)}))

    def lines(self, t: int) -> list[Line]:
        """This second's frames as (ts_ms, venue, capture line), ordered by ts_ms."""
        frames = self.frames(t)
        frames.sort(key=itemgetter(0))
        return [(ts, venue, dumps_line(ts, venue, channel, raw))
                for ts, venue, channel, raw in frames]
