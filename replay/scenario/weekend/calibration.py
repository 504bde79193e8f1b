"""Calibration of a ``stablecoin-weekend`` run against the public figures of March 2023.

Every figure is measured from the capture the run wrote (the books, the USDT/USD feed,
the oracle's updates, the pool's samples) and compared with ``WEEKEND_FACTS`` within a
stated tolerance. The books are taken in USD: the USDT-quoted book converted with the
USDT/USD price as of its own frame.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import defaultdict
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path

from replay.calibration import CalibrationRow
from replay.capture import CaptureLine, iter_capture
from replay.scenario.weekend.scenario import WEEKEND_FACTS, WEEKEND_T0_MS

__all__ = ["calibrate_weekend"]

_H_MS = 3_600_000
Series = list[tuple[int, float]]


def _at(hours: float) -> int:
    """Event time ``hours`` after Fri 10 Mar 2023 20:00 UTC."""
    return WEEKEND_T0_MS + int(hours * _H_MS)


def _clock(ts_ms: int | None) -> str:
    if ts_ms is None:
        return "n/a"
    return datetime.fromtimestamp(ts_ms / 1000, tz=UTC).strftime("%a %H:%M")


def _series(path: Path, asset: str) -> dict[str, Series]:
    """Per venue, the asset's USD prices; ``usdt`` is the USDT/USD feed."""
    raw_series: dict[str, Series] = defaultdict(list)
    usdt: Series = []
    for line in iter_capture(path, spelling=(b'"price"',)):  # the price channel's lines, and few others
        if not isinstance(line, CaptureLine) or line.channel != "price":
            continue
        raw = line.raw
        if raw["base"] == "USDT":
            usdt.append((line.ts_ms, float(raw["price"])))
        elif raw["base"] == asset:
            raw_series[f"{line.venue}|{raw['quote']}"].append((line.ts_ms, float(raw["price"])))
    out: dict[str, Series] = {"usdt": usdt}
    usdt_ts = [t for t, _ in usdt]
    for key, series in raw_series.items():
        venue, quote = key.split("|")
        if quote == "USDT":  # as of the frame's own time (issue 19 §4)
            out[venue] = [(t, p * usdt[max(bisect_right(usdt_ts, t) - 1, 0)][1]) for t, p in series]
        else:
            out[venue] = series
    return out


def _row(figure: str, key: str, tol: str, value: str, ok: bool) -> CalibrationRow:
    return CalibrationRow(figure, WEEKEND_FACTS[key], tol, value, ok)


def _price_rows(books: Series, kraken: Series) -> list[CalibrationRow]:
    """Low, its time, the first leg, Sunday's rebound and Monday's recovery."""
    rows: list[CalibrationRow] = []
    t_low, low = min(books, key=lambda p: p[1]) if books else (None, None)
    rows.append(_row("USDC low, books in USD", "low", "0.86-0.89", f"{low:.4f}" if low else "n/a",
                     low is not None and 0.86 <= low <= 0.89))
    rows.append(_row("USDC low time", "low_time", "Sat 02:54-12:45",
                     _clock(t_low), t_low is not None and _at(6.9) <= t_low <= _at(16.75)))
    first = next((t for t, p in kraken if p < 0.97), None)
    rows.append(_row("First leg below 0.97", "first_leg", "before Sat 02:54", _clock(first),
                     first is not None and first <= _at(6.9)))
    sunday = [p for t, p in kraken if _at(28) <= t < _at(50)]
    mean = sum(sunday) / len(sunday) if sunday else None
    rows.append(_row("Sunday mean (00:00-22:00)", "rebound", "0.95-0.98",
                     f"{mean:.4f}" if mean else "n/a", mean is not None and 0.95 <= mean <= 0.98))
    below = [t for t, p in kraken if p < 0.99]
    holds = next((t for t, _ in kraken if below and t > below[-1]), None)
    rows.append(_row("Holds >= 0.99 from", "recovery", "Mon 00:00-12:00", _clock(holds),
                     holds is not None and _at(52) <= holds <= _at(64)))
    last = kraken[-1][1] if kraken else None
    rows.append(_row("Last price (Mon 20:00)", "recovery", ">= 0.998", f"{last:.4f}" if last else "n/a",
                     last is not None and last >= 0.998))
    return rows


def _source_rows(series: dict[str, Series]) -> list[CalibrationRow]:
    """Venues together, USDT's range, the oracle's update rule, the pool's cadence."""
    rows: list[CalibrationRow] = []
    kraken, binance = series.get("kraken", []), series.get("binance-spot", [])
    by_s = {t // 1_000: p for t, p in kraken}
    gaps = [abs(p / by_s[t // 1_000] - 1.0) * 10_000 for t, p in binance if t // 1_000 in by_s]
    worst = max(gaps) if gaps else None
    rows.append(_row("Books apart (USD vs USDT book)", "together", "<= 100 bps",
                     f"{worst:.0f} bps" if worst is not None else "n/a", worst is not None and worst <= 100))
    usdt = [p for _, p in series.get("usdt", [])]
    rows.append(_row("USDT/USD range", "usdt", "0.99-1.01",
                     f"{min(usdt):.4f}-{max(usdt):.4f}" if usdt else "n/a",
                     bool(usdt) and min(usdt) >= 0.99 and max(usdt) <= 1.01))
    oracle = series.get("chainlink", [])
    moves = [abs(b[1] / a[1] - 1.0) for a, b in pairwise(oracle)]
    spans = [b[0] - a[0] for a, b in pairwise(oracle)]
    ok = bool(moves) and all(m >= 0.0025 or s >= 86_400_000 for m, s in zip(moves, spans, strict=True))
    rows.append(_row("Oracle updates: >= 0.25% or heartbeat", "oracle", "every update",
                     f"{len(oracle)} updates", ok))
    pool = [t for t, _ in series.get("curve", [])]
    steps = {b - a for a, b in pairwise(pool)}
    rows.append(_row("Pool sampled hourly", "pool", "every 3,600 s",
                     f"{len(pool)} samples", steps == {_H_MS}))
    return rows


def calibrate_weekend(out_dir: Path, asset: str = "USDC") -> list[CalibrationRow]:
    """Measure every calibrated public figure of a ``stablecoin-weekend`` run."""
    series = _series(out_dir / "capture.jsonl.gz", asset)
    books = sorted(series.get("kraken", []) + series.get("binance-spot", []))
    return _price_rows(books, series.get("kraken", [])) + _source_rows(series)
