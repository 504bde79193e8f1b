"""Frames whose inputs are known before the run, built for the whole day at once.

The simple Binance spot tickers (symbols without a modelled book) and the USD-M
``markPrice@1s`` frames depend only on exogenous price paths and on the BTC/alt market
makers' liquidity, which the agents' state does not feed back into. Their arithmetic is
done on numpy arrays, element for element the same IEEE operations as the scalar code
it replaces, and each frame is formatted once into its whole capture line: the bytes
:func:`replay.capture.dumps_line` gives for the same frame (compact JSON, keys in order).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from replay.scenario.day.wire import Book, decimals

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: ``T`` of every markPrice frame: the next funding time, 04:00 UTC on 11 Oct.
FUNDING_OFFSET_MS = 8 * 3600 * 1000


def _head(venue: str, channel: str) -> str:
    """%-template of a capture line's start (``%d`` ts_ms, then raw follows); encoded, a
    bytes template prints numbers as str formatting does and needs no encoding after."""
    return '{"ts_ms":%d,"venue":"' + venue + '","channel":"' + channel + '","raw":'


def simple_tickers(
    sym: str, tick: float, price: FloatArray, liq: FloatArray, times: IntArray, t0_ms: int
) -> list[bytes]:
    """bookTicker lines of a symbol without a book, one per second in ``times``.

    Bid/ask straddle the price by a spread of 3 bps over the liquidity factor (capped at
    20%), rounded out to the tick; both sides quote 40,000 × liquidity + 200 USD. The
    line's ts_ms is t0_ms + 1000·t.
    """
    pd = str(decimals(tick))
    p = price[times]
    lq = liq[times]
    spread = np.maximum(tick, p * np.minimum(0.0003 / np.maximum(lq, 0.002), 0.2))
    bid = np.maximum(tick, np.floor((p - spread / 2) / tick + 1e-9) * tick)
    ask = np.maximum(bid + tick, np.ceil((p + spread / 2) / tick - 1e-9) * tick)
    usd = 40_000 * lq + 200
    fmt = (_head("binance-spot", f"{sym.lower()}@bookTicker")
           + '{"u":%d,"s":"' + sym + '","b":"%.' + pd + 'f","B":"%.2f","a":"%.' + pd
           + 'f","A":"%.2f"}}').encode()
    return [
        fmt % (t0_ms + 1000 * t, 10_000_000 + t, b, bq, a, aq)
        for t, b, bq, a, aq in zip(times.tolist(), bid.tolist(), (usd / bid).tolist(),
                                   ask.tolist(), (usd / ask).tolist(), strict=True)
    ]


def mark_prices(
    sym: str, pd: int, mark: FloatArray, index: FloatArray, t0_ms: int, offset_ms: int
) -> list[bytes]:
    """markPriceUpdate lines of a USD-M symbol for every second (ts_ms = E)."""
    spec = "%." + str(pd) + "f"
    fmt = (_head("binance-usdm", f"{sym.lower()}@markPrice@1s")
           + '{"e":"markPriceUpdate","E":%d,"s":"' + sym + '","p":"' + spec + '","P":"' + spec
           + '","i":"' + spec + '","r":"0.00010000","T":' + str(t0_ms + FUNDING_OFFSET_MS)
           + "}}").encode()
    first = t0_ms + offset_ms
    out = []
    for t, (m, i) in enumerate(zip(mark.tolist(), index.tolist(), strict=True)):
        ts = first + 1000 * t
        out.append(fmt % (ts, ts, m, m, i))
    return out


def futures_tickers(
    book: Book, mark: FloatArray, liq: FloatArray, times: IntArray, t0_ms: int
) -> list[bytes]:
    """USD-M bookTicker lines of a book no diff is sent for, one per second in ``times``.

    Its best levels are those of ``book.ladder(mark, liq)`` (:meth:`Book.tops`) and its
    update id stays the book's; ts_ms = E = T = t0_ms + 1000·t.
    """
    fmt = (_head("binance-usdm", f"{book.symbol.lower()}@bookTicker")
           + '{"e":"bookTicker","u":' + str(book.seq) + ',"s":"' + book.symbol
           + '","b":"%s","B":"%s","a":"%s","A":"%s","T":%d,"E":%d}}')
    out = []
    for t, (bp, bq, ap, aq) in zip(times.tolist(), book.tops(mark, liq), strict=True):
        ts = t0_ms + 1000 * t
        out.append((fmt % (ts, bp, bq, ap, aq, ts, ts)).encode())
    return out
