"""Calibration of a synthetic run against the public 10 Oct 2025 figures.

Every figure is measured from what the run wrote — the capture frames (Binance spot and
USD-M bookTicker mids, the rebuilt BTCUSDT perp book, the on-chain pool prices) and the
simulated engines' ``liquidations.jsonl`` (Binance does not stream spot-collateral
liquidations) — and compared with the target in ../shared/OCT10_FACTS.md with a stated
tolerance.
"""

from __future__ import annotations

import io
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from replay.capture import CaptureLine, iter_capture

__all__ = ["CalibrationRow", "CaptureStats", "calibrate", "calibration_table", "format_table", "scan_capture"]

T0_MS = 1_760_126_400_000  # 10 Oct 2025 20:00 UTC


def _at(hhmm: str) -> int:
    h, m = (int(x) for x in hhmm.split(":"))
    if h < 20:
        h += 24
    return T0_MS + ((h - 20) * 3600 + m * 60) * 1000


def _clock(ts_ms: int | None) -> str:
    if ts_ms is None:
        return "n/a"
    return datetime.fromtimestamp(ts_ms / 1000, tz=UTC).strftime("%H:%M:%S")


@dataclass(frozen=True)
class CalibrationRow:
    """One public figure, the run's figure and whether it is within tolerance."""

    figure: str
    target: str
    tolerance: str
    value: str
    passed: bool


@dataclass
class CaptureStats:
    """Time series read from a capture: mids per (venue, symbol), pools, BTC perp bids."""

    mids: dict[tuple[str, str], list[tuple[int, float]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    pools: dict[str, list[tuple[int, float]]] = field(default_factory=lambda: defaultdict(list))
    btc_perp_bids5_usd: list[tuple[int, float]] = field(default_factory=list)
    #: Frames read of the channels scanned (others are skipped unparsed).
    frames: int = 0


#: What every line of a scanned channel spells: bookTicker, the pools' "price", the BTCUSDT
#: perp's depth (the other lines are skipped unparsed).
_SCANNED = (b"bookTicker", b'"price"', b"btcusdt@depth")


def scan_capture(path: Path) -> CaptureStats:
    """Read bookTicker mids, pool prices and the rebuilt BTCUSDT perp book from a capture
    (the lines of other channels are skipped unparsed)."""
    stats = CaptureStats()
    bids: dict[float, float] = {}
    asks: dict[float, float] = {}
    for line in iter_capture(path, spelling=_SCANNED):
        if not isinstance(line, CaptureLine):
            continue
        stats.frames += 1
        venue, channel, raw = line.venue, line.channel, line.raw
        if channel.endswith("@bookTicker") and venue in ("binance-spot", "binance-usdm"):
            mid = (float(raw["b"]) + float(raw["a"])) / 2
            stats.mids[(venue, raw["s"])].append((line.ts_ms, mid))
        elif channel == "price" and venue in ("curve", "uniswap-v3"):
            stats.pools[venue].append((line.ts_ms, float(raw["price"])))
        elif venue == "binance-usdm" and channel.startswith("btcusdt@depth"):
            if channel.endswith("depthSnapshot"):
                bids = {float(p): float(q) for p, q in raw["bids"]}
                asks = {float(p): float(q) for p, q in raw["asks"]}
            else:
                for side, levels in ((bids, raw["b"]), (asks, raw["a"])):
                    for p, q in levels:
                        if float(q) == 0:
                            side.pop(float(p), None)
                        else:
                            side[float(p)] = float(q)
            if bids and asks:
                mid = (max(bids) + min(asks)) / 2
                depth = sum(p * q for p, q in bids.items() if p >= mid * 0.95)
                stats.btc_perp_bids5_usd.append((line.ts_ms, depth))
    return stats


def _window(series: list[tuple[int, float]], start: int, end: int) -> list[tuple[int, float]]:
    return [(t, v) for t, v in series if start <= t < end]


def _min(series: list[tuple[int, float]]) -> tuple[int | None, float | None]:
    if not series:
        return None, None
    t, v = min(series, key=lambda tv: tv[1])
    return t, v


def _ratio_min(
    num: list[tuple[int, float]], den: list[tuple[int, float]], scale: float = 1.0
) -> float | None:
    """Minimum of num/den pairing each num point with the latest den point."""
    if not num or not den:
        return None
    j = 0
    best: float | None = None
    for t, v in num:
        while j + 1 < len(den) and den[j + 1][0] <= t:
            j += 1
        if den[j][0] > t:
            continue
        r = v / den[j][1] * scale
        best = r if best is None or r < best else best
    return best


def _load_liquidations(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def _row(figure: str, target: str, tol: str, value: str, ok: bool) -> CalibrationRow:
    return CalibrationRow(figure, target, tol, value, ok)


def _btc_rows(spot: dict[str, list[tuple[int, float]]]) -> list[CalibrationRow]:
    """BTC low and its time on Binance spot."""
    rows: list[CalibrationRow] = []
    t_low, btc_low = _min(_window(spot.get("BTCUSDT", []), _at("21:00"), _at("21:30")))
    rows.append(_row("BTC low, Binance spot", "102,000-105,000", "range",
                     f"{btc_low:,.0f}" if btc_low else "n/a",
                     btc_low is not None and 101_000 <= btc_low <= 105_000))
    rows.append(_row("BTC low time", "21:20", "21:14-21:25", _clock(t_low),
                     t_low is not None and _at("21:14") <= t_low <= _at("21:25")))
    return rows

def _alt_rows(spot: dict[str, list[tuple[int, float]]]) -> list[CalibrationRow]:
    """Altcoin drawdowns on Binance spot."""
    rows: list[CalibrationRow] = []
    majors = {"BTCUSDT", "ETHUSDT", "SOLUSDT", "USDEUSDT", "WBETHUSDT", "BNSOLUSDT"}
    drawdowns = []
    for sym, series in spot.items():
        if sym in majors:
            continue
        pre = _window(series, _at("20:00"), _at("21:00"))
        day = _window(series, _at("20:00"), _at("23:00"))
        if pre and day:
            high = max(v for _, v in pre)
            drawdowns.append(1 - min(v for _, v in day) / high)
    med = statistics.median(drawdowns) if drawdowns else None
    share = sum(d >= 0.80 for d in drawdowns) / len(drawdowns) if drawdowns else None
    rows.append(_row("Alt drawdown on Binance, median", "-70%...-99%", "0.70-0.99",
                     f"-{med:.1%}" if med is not None else "n/a",
                     med is not None and 0.70 <= med <= 0.99))
    rows.append(_row("Alt books falling >= 80%", ">= 20% (395/1,581 = 25%)", ">= 0.20",
                     f"{share:.0%} of {len(drawdowns)}" if share is not None else "n/a",
                     share is not None and share >= 0.20))
    return rows

def _usde_rows(spot: dict[str, list[tuple[int, float]]]) -> list[CalibrationRow]:
    """USDe on Binance spot: first break, low, recovery."""
    rows: list[CalibrationRow] = []
    usde = spot.get("USDEUSDT", [])
    first_break = next((t for t, v in usde if v < 0.92), None)
    rows.append(_row("USDe Binance first break (< 0.92)", "21:20", "+/- 5 min",
                     _clock(first_break),
                     first_break is not None and abs(first_break - _at("21:20")) <= 300_000))
    t_ulow, ulow = _min(usde)
    rows.append(_row("USDe Binance low", "0.6567 (0.65-0.66)", "0.64-0.67",
                     f"{ulow:.4f}" if ulow is not None else "n/a",
                     ulow is not None and 0.64 <= ulow <= 0.67))
    rows.append(_row("USDe Binance low time", "21:44", "21:36-21:54", _clock(t_ulow),
                     t_ulow is not None and _at("21:36") <= t_ulow <= _at("21:54")))
    hold: int | None = None
    if t_ulow is not None:
        after = [(t, v) for t, v in usde if t >= t_ulow]
        for t, v in reversed(after):
            if v < 0.98:
                break
            hold = t
    rows.append(_row("USDe Binance holds >= 0.98 from", "22:32", "+/- 15 min", _clock(hold),
                     hold is not None and abs(hold - _at("22:32")) <= 900_000))
    return rows

def _pool_rows(stats: CaptureStats) -> list[CalibrationRow]:
    """USDe on-chain pools stay near par."""
    rows: list[CalibrationRow] = []
    devs = [abs(1 - v) for series in stats.pools.values() for _, v in series]
    max_dev = max(devs) if devs else None
    rows.append(_row("USDe on-chain max deviation (Curve, Uniswap)", "< 1% (Uniswap >= 0.9941)",
                     "<= 0.01", f"{max_dev:.2%}" if max_dev is not None else "n/a",
                     max_dev is not None and max_dev <= 0.01))
    return rows

def _lst_rows(spot: dict[str, list[tuple[int, float]]]) -> list[CalibrationRow]:
    """LST/underlying ratios at the low."""
    rows: list[CalibrationRow] = []
    for sym, base, target in (("WBETHUSDT", "ETHUSDT", 0.2012), ("BNSOLUSDT", "SOLUSDT", 0.1286)):
        r = _ratio_min(spot.get(sym, []), spot.get(base, []))
        name = sym.removesuffix("USDT")
        rows.append(_row(f"{name}/{base.removesuffix('USDT')} at the low", f"{target}",
                         "+/- 0.03", f"{r:.4f}" if r is not None else "n/a",
                         r is not None and abs(r - target) <= 0.03))
    return rows

def _collateral_rows(liqs: list[dict[str, Any]]) -> list[CalibrationRow]:
    """Binance collateral liquidations by asset."""
    rows: list[CalibrationRow] = []
    coll: dict[str, float] = defaultdict(float)
    for rec in liqs:
        if rec.get("venue") == "binance" and rec.get("kind") == "collateral":
            coll[rec["asset"]] += float(rec["notional_usd"])
    u, w, b = coll.get("USDe", 0.0), coll.get("wBETH", 0.0), coll.get("BNSOL", 0.0)
    rows.append(_row("Binance collateral liquidations USDe > wBETH > BNSOL",
                     "$346M > $169M > $77M", "order",
                     f"${u / 1e6:.0f}M > ${w / 1e6:.0f}M > ${b / 1e6:.0f}M",
                     u > w > b > 0))
    return rows

def _depth_rows(stats: CaptureStats) -> list[CalibrationRow]:
    """BTCUSDT perp bid depth collapse."""
    rows: list[CalibrationRow] = []
    before = [v for _, v in _window(stats.btc_perp_bids5_usd, _at("20:40"), _at("20:50"))]
    crash = [v for _, v in _window(stats.btc_perp_bids5_usd, _at("21:15"), _at("21:35"))]
    collapse = 1 - min(crash) / statistics.fmean(before) if before and crash else None
    rows.append(_row("BTCUSDT perp bids within 5%: collapse", "$550M -> $2.1M (-99.6%)",
                     ">= 90%", f"-{collapse:.1%}" if collapse is not None else "n/a",
                     collapse is not None and collapse >= 0.90))
    return rows

def _loop_rows(liqs: list[dict[str, Any]]) -> list[CalibrationRow]:
    """USDe loop liquidations on Aave and Binance."""
    rows: list[CalibrationRow] = []
    aave_usde = sum(1 for r in liqs if r.get("venue") == "aave-v3" and r.get("kind") == "usde-loop")
    rows.append(_row("Aave USDe-loop liquidations", "0", "== 0", str(aave_usde), aave_usde == 0))
    bn_loops = sum(1 for r in liqs if r.get("venue") == "binance" and r.get("kind") == "account"
                   and r.get("account_kind") == "usde-loop")
    rows.append(_row("Binance USDe-loop account liquidations", "many", ">= 100", str(bn_loops),
                     bn_loops >= 100))
    return rows

def calibrate(result_or_capture_dir: Any) -> list[CalibrationRow]:
    """Measure every calibrated public figure in a run (a ScenarioResult or its out_dir)."""
    out_dir = Path(getattr(result_or_capture_dir, "out_dir", result_or_capture_dir))
    stats = scan_capture(out_dir / "capture.jsonl.gz")
    liqs = _load_liquidations(out_dir / "liquidations.jsonl")
    spot = {sym: s for (venue, sym), s in stats.mids.items() if venue == "binance-spot"}
    return (
        _btc_rows(spot)
        + _alt_rows(spot)
        + _usde_rows(spot)
        + _pool_rows(stats)
        + _lst_rows(spot)
        + _collateral_rows(liqs)
        + _depth_rows(stats)
        + _loop_rows(liqs)
    )


def calibration_table(rows: list[CalibrationRow]) -> Table:
    """The rows as a rich table: figure | public | tolerance | this run | ok."""
    passed = sum(r.passed for r in rows)
    caption = f"{passed}/{len(rows)} within tolerance"
    table = Table(show_edge=False, pad_edge=False, caption=caption, caption_justify="left")
    for name in ("figure", "public", "tolerance", "this run", "ok"):
        table.add_column(name, overflow="fold")
    for r in rows:
        table.add_row(r.figure, r.target, r.tolerance, r.value, "PASS" if r.passed else "[bold red]FAIL[/]")
    return table


def format_table(rows: list[CalibrationRow], width: int = 160) -> str:
    """:func:`calibration_table` as plain text (no colour), for logs and assertion messages."""
    text = io.StringIO()
    Console(file=text, width=width, color_system=None, highlight=False).print(calibration_table(rows))
    return text.getvalue().rstrip()
