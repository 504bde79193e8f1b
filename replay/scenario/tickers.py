"""Frames whose inputs are known before the run, built for the whole day at once.

The simple Binance spot tickers (symbols without a modelled book) and the USD-M
``markPrice@1s`` frames depend only on exogenous price paths and on the BTC/alt market
makers' liquidity, which the agents' state does not feed back into. Their arithmetic is
done on numpy arrays, element for element the same IEEE operations as the scalar code
it replaces, and each raw frame is formatted once into an :class:`orjson.Fragment`
(the bytes ``orjson.dumps`` of the equivalent dict would give).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import orjson

from replay.scenario.wire import decimals

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: ``T`` of every markPrice frame: the next funding time, 04:00 UTC on 11 Oct.
FUNDING_OFFSET_MS = 8 * 3600 * 1000


def simple_tickers(
    sym: str, tick: float, price: FloatArray, liq: FloatArray, times: IntArray
) -> list[orjson.Fragment]:
    """bookTicker raw frames of a symbol without a book, one per second in ``times``.

    Bid/ask straddle the price by a spread of 3 bps over the liquidity factor (capped at
    20%), rounded out to the tick; both sides quote 40,000 × liquidity + 200 USD.
    """
    pd = decimals(tick)
    p = price[times]
    lq = liq[times]
    spread = np.maximum(tick, p * np.minimum(0.0003 / np.maximum(lq, 0.002), 0.2))
    bid = np.maximum(tick, np.floor((p - spread / 2) / tick + 1e-9) * tick)
    ask = np.maximum(bid + tick, np.ceil((p + spread / 2) / tick - 1e-9) * tick)
    usd = 40_000 * lq + 200
    return [
        orjson.Fragment(f'{{"u":{10_000_000 + t},"s":"{sym}","b":"{b:.{pd}f}","B":"{bq:.2f}",'
                        f'"a":"{a:.{pd}f}","A":"{aq:.2f}"}}')
        for t, b, bq, a, aq in zip(times.tolist(), bid.tolist(), (usd / bid).tolist(),
                                   ask.tolist(), (usd / ask).tolist(), strict=True)
    ]


def mark_prices(
    sym: str, pd: int, mark: FloatArray, index: FloatArray, t0_ms: int, offset_ms: int
) -> list[orjson.Fragment]:
    """markPriceUpdate raw frames of a USD-M symbol for every second of the run."""
    funding = t0_ms + FUNDING_OFFSET_MS
    first = t0_ms + offset_ms
    return [
        orjson.Fragment(f'{{"e":"markPriceUpdate","E":{first + 1000 * t},"s":"{sym}",'
                        f'"p":"{m:.{pd}f}","P":"{m:.{pd}f}","i":"{i:.{pd}f}",'
                        f'"r":"0.00010000","T":{funding}}}')
        for t, (m, i) in enumerate(zip(mark.tolist(), index.tolist(), strict=True))
    ]
