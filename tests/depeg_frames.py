"""A small capture shared by replay tests: USDe on binance-spot departs from the peg, Uniswap
and Curve hold (two independent witnesses, as a venue-local depeg needs by default)."""

from __future__ import annotations

from typing import Any

Frame = tuple[int, str, str, dict[str, Any]]


def usde_depeg_frames(t0_ms: int, minutes: int, depeg: range, low: float = 0.65) -> list[Frame]:
    """One binance-spot USDe price a minute (``low`` during ``depeg`` minutes, else 1.0) and two
    deep pools near par (Uniswap quoted in USDT, Curve in USDC)."""
    frames: list[Frame] = []
    for minute in range(minutes):
        ts = t0_ms + minute * 60_000
        px = low if minute in depeg else 1.0
        frames.append((ts, "binance-spot", "price", {"base": "USDe", "quote": "USDT", "price": px}))
        frames.append((ts + 1, "uniswap-v3", "price",
                       {"base": "USDe", "quote": "USDT", "price": 0.999, "depth_usd": 50_000_000}))
        frames.append((ts + 1, "curve", "price",
                       {"base": "USDe", "quote": "USDC", "price": 0.9995, "depth_usd": 20_000_000}))
    return frames
