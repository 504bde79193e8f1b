"""Parser throughput per venue on synthetic frames (for ``liqmon bench``).

Measures the pure normalisation step (:func:`monitor.ingest.wire.normalize` and
:func:`monitor.ingest.wire.parse_book`) on a single core: frames per second per venue, over a
mix of that venue's book, trade and liquidation frames in their documented shapes.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

from monitor.config import EngineConfig
from monitor.ingest.wire import is_book_channel, normalize, parse_book

__all__ = ["parser_throughput", "synthetic_frames"]

T0_MS = 1_760_130_000_000


def _levels(rng: random.Random, mid: float, side: int, n: int) -> list[list[str]]:
    return [[f"{mid + side * (i + 1) * 0.1:.1f}", f"{rng.uniform(0.0, 3.0):.3f}"] for i in range(n)]


def synthetic_frames(venue: str, n: int = 2_000, seed: int = 1) -> list[tuple[str, Any]]:
    """``n`` (channel, raw) frames of ``venue`` in the venue's wire format."""
    rng = random.Random(seed)
    out: list[tuple[str, Any]] = []
    for i in range(n):
        ts = T0_MS + i * 10
        mid = 100_000.0 + rng.uniform(-50, 50)
        pick = i % 4
        if venue.startswith("binance"):
            if pick < 2:
                data = {"e": "depthUpdate", "E": ts, "T": ts, "s": "BTCUSDT", "U": i * 10 + 1, "u": i * 10 + 10,
                        "pu": i * 10, "b": _levels(rng, mid, -1, 10), "a": _levels(rng, mid, 1, 10)}
                out.append(("btcusdt@depth@100ms", {"stream": "btcusdt@depth@100ms", "data": data}))
            elif pick == 2:
                data = {"e": "aggTrade", "E": ts, "s": "BTCUSDT", "a": i, "p": f"{mid:.1f}", "q": "0.01",
                        "f": i, "l": i, "T": ts, "m": bool(i & 1)}
                out.append(("btcusdt@aggTrade", {"stream": "btcusdt@aggTrade", "data": data}))
            else:
                data = {"e": "forceOrder", "E": ts, "o": {"s": "BTCUSDT", "S": "SELL", "q": "0.5", "p": f"{mid:.1f}",
                        "ap": f"{mid:.1f}", "X": "FILLED", "l": "0.5", "z": "0.5", "T": ts}}
                out.append(("!forceOrder@arr", {"stream": "!forceOrder@arr", "data": data}))
        elif venue.startswith("bybit"):
            if pick < 3:
                out.append(("orderbook.50.BTCUSDT", {
                    "topic": "orderbook.50.BTCUSDT", "type": "delta", "ts": ts, "cts": ts,
                    "data": {"s": "BTCUSDT", "b": _levels(rng, mid, -1, 10), "a": _levels(rng, mid, 1, 10),
                             "u": i + 2, "seq": i}}))
            else:
                out.append(("allLiquidation.BTCUSDT", {
                    "topic": "allLiquidation.BTCUSDT", "type": "snapshot", "ts": ts,
                    "data": [{"T": ts, "s": "BTCUSDT", "S": "Buy", "v": "0.2", "p": f"{mid:.1f}"}]}))
        elif venue == "okx":
            if pick < 3:
                out.append(("books", {
                    "arg": {"channel": "books", "instId": "BTC-USDT-SWAP"}, "action": "update",
                    "data": [{"asks": [[*lv, "0", "1"] for lv in _levels(rng, mid, 1, 10)],
                              "bids": [[*lv, "0", "1"] for lv in _levels(rng, mid, -1, 10)],
                              "ts": str(ts), "checksum": 0, "seqId": i + 1, "prevSeqId": i}]}))
            else:
                out.append(("liquidation-orders", {
                    "arg": {"channel": "liquidation-orders", "instType": "SWAP"},
                    "data": [{"instId": "BTC-USDT-SWAP", "instType": "SWAP", "details": [
                        {"side": "sell", "posSide": "long", "bkPx": f"{mid:.1f}", "sz": "20", "bkLoss": "0",
                         "ccy": "", "ts": str(ts)}]}]}))
        elif venue == "hyperliquid":
            if pick < 2:
                book = [[{"px": p, "sz": q, "n": 1} for p, q in _levels(rng, mid, side, 20)] for side in (-1, 1)]
                out.append(("l2Book", {"channel": "l2Book", "data": {"coin": "BTC", "time": ts, "levels": book}}))
            else:
                out.append(("trades", {"channel": "trades", "data": [
                    {"coin": "BTC", "side": "B", "px": f"{mid:.1f}", "sz": "0.1", "hash": "0x0", "time": ts,
                     "tid": i, "users": ["0xa", "0xb"]}]}))
        else:
            raise ValueError(f"no synthetic frames for venue {venue!r}")
    return out


def parser_throughput(seconds: float = 1.0) -> dict[str, float]:
    """Frames per second per venue parser (single core), each measured for about ``seconds``."""
    cfg = EngineConfig().ingest
    aliases, skew = cfg.asset_aliases, cfg.max_future_skew_ms
    results: dict[str, float] = {}
    for venue in ("binance-spot", "binance-usdm", "bybit-linear", "okx", "hyperliquid"):
        frames = synthetic_frames(venue)
        parsers: list[tuple[Callable[..., Any], str, Any]] = [
            (parse_book if is_book_channel(venue, ch) else normalize, ch, raw) for ch, raw in frames
        ]
        done = 0
        started = time.perf_counter()
        deadline = started + seconds
        while True:
            for fn, channel, raw in parsers:
                fn(venue, channel, raw, T0_MS + 60_000, aliases, skew)
            done += len(parsers)
            if time.perf_counter() >= deadline:
                break
        results[venue] = done / (time.perf_counter() - started)
    return results
