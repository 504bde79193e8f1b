"""Importers: downloadable market-data formats → capture lines.

Every importer is a generator of ``(ts_ms, venue, channel, raw)`` tuples, in time order,
ready for :func:`replay.capture.write_capture`. :func:`import_file` detects the kind from
the header (and, where the header is ambiguous, the file name) and writes a capture.

Kinds and what they emit
------------------------
``klines``
    Binance kline CSV (``open_time,open,high,low,close,volume,close_time,...``; times in
    ms, or µs as in Binance's 2025+ spot dumps; header optional) and the minute-bar CSV
    ``minute_utc,open,high,low,close,volume`` (``YYYY-mm-dd HH:MM:SS`` UTC). Each bar
    becomes four Binance spot ``bookTicker`` frames, venue ``binance-spot``, channel
    ``<symbol lower>@bookTicker``, raw ``{"u", "s", "b", "B", "a", "A"}`` (strings, as
    Binance sends them), along the standard OHLC path: open at bar open + 0, then low and
    high (close >= open) or high and low (close < open) at + 1/4 and + 1/2 of the bar
    (+15 s, +30 s for 1-minute bars), close at bar end − 1 s (+59 s). ``b = price − tick/2``
    and ``a = price + tick/2`` in decimal arithmetic, so the mid equals the bar price
    exactly. Klines carry no book size: ``B`` and ``A`` are a nominal quantity
    (option ``qty``, default :data:`DEFAULT_NOMINAL_QTY`, an assumed value). With
    ``emit_trades=True`` the bar volume is also spread over four ``<symbol>@aggTrade``
    frames (one per path point, volume/4 each; ``m`` true when the price moved down).
``index_klines``
    Binance index/price klines (same CSV layout, zero volume; chosen when the file name
    contains ``index``) → generic ``price`` frames, venue ``binance-index``, one per bar
    at the bar close (``close_time + 1``), raw ``{"base", "quote", "price", "symbol"}``.
``pool_blocks``
    Block-level pool CSV ``ts_s,block,tick,usde_price_usdt,tvl_usd`` → generic ``price``
    frames, venue ``uniswap-v3`` (option ``venue``), raw
    ``{"base": "USDe", "quote": "USDT", "price", "depth_usd", "block", "tick"}``.
``book_depth``
    Binance futures ``bookDepth`` dump (``timestamp,percentage,depth,notional,
    weighted_avg_price``; one row per band −5…+5 every ~30 s) → one frame per snapshot
    time, venue ``binance-usdm``, channel ``<symbol lower>@bookDepth``. The raw record is
    liqmon-defined (Binance has no such websocket stream)::

        {"e": "bookDepth", "E": <snapshot ms>, "s": "BTCUSDT",
         "bands": [{"pct": -5, "depth": <cumulative base qty>,
                    "notional_usd": <cumulative quote notional>,
                    "weighted_avg_price": <avg price of the band>}, ...]}

    ``bands`` is sorted by ``pct``; a negative ``pct`` is the bid side (cumulative from
    mid down to that percentage), positive the ask side.
``tardis_trades``
    Tardis-style trade CSV (``exchange,symbol,timestamp,local_timestamp,id,side,price,
    amount``; µs; plain or gzip). Line time = ``local_timestamp // 1000``. Binance
    exchanges become Binance ``aggTrade`` frames (``binance`` → ``binance-spot``,
    ``binance-futures`` → ``binance-usdm``, ``binance-delivery`` → ``binance-coinm``;
    channel ``<symbol lower>@aggTrade``); any other exchange gives venue = exchange name,
    channel ``trade``, raw ``{"symbol", "side", "price", "amount", "id", "ts_ms"}``.
``binance_aggtrades``
    Binance public ``aggTrades`` dump (``agg_trade_id,price,quantity,first_trade_id,
    last_trade_id,transact_time,is_buyer_maker[,is_best_match]``; header optional) →
    ``aggTrade`` frames, venue ``binance-spot`` (option).

Errors: any malformed row raises :class:`ImporterError` naming the file and line.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import heapq
import io
import math
import sys
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import IO, Any

from monitor.limits import MAX_INPUT_NUMBER
from replay.capture import write_capture
from replay.storage import STORAGE_ERRNOS

__all__ = [
    "DEFAULT_NOMINAL_QTY",
    "KINDS",
    "TICK_SIZES",
    "CaptureTuple",
    "ImporterError",
    "add_import_parser",
    "detect_kind",
    "import_file",
    "iter_binance_aggtrades",
    "iter_book_depth",
    "iter_file",
    "iter_index_klines",
    "iter_klines",
    "iter_pool_blocks",
    "iter_tardis_trades",
    "merge_captures",
    "run_import",
    "split_symbol",
    "symbol_from_filename",
]

CaptureTuple = tuple[int, str, str, Any]

KINDS = (
    "klines",
    "index_klines",
    "pool_blocks",
    "book_depth",
    "tardis_trades",
    "binance_aggtrades",
)

#: Nominal top-of-book quantity for bookTicker frames built from klines (assumed value:
#: klines carry no book size).
DEFAULT_NOMINAL_QTY = "100000"

#: Known spot tick sizes (Binance exchangeInfo PRICE_FILTER); others fall back to a
#: tick of about 0.1 bp of the price.
TICK_SIZES: dict[str, str] = {
    "USDEUSDT": "0.0001",
    "USDCUSDT": "0.0001",
    "FDUSDUSDT": "0.0001",
    "BTCUSDT": "0.01",
    "ETHUSDT": "0.01",
    "SOLUSDT": "0.01",
    "BNBUSDT": "0.01",
}

_QUOTES = ("FDUSD", "USDT", "USDC", "BUSD", "TUSD", "USD", "EUR", "BTC", "ETH", "BNB")
_BASE_CASE = {"USDE": "USDe", "SUSDE": "sUSDe", "WBETH": "wBETH", "WSTETH": "wstETH"}
_BINANCE_TARDIS_VENUES = {
    "binance": "binance-spot",
    "binance-futures": "binance-usdm",
    "binance-delivery": "binance-coinm",
}

#: Largest magnitude of a number cell (every input's bound, ``monitor.limits``) and of an
#: integer cell (exact as a float, and in a capture's 64-bit integers even as ms × 1000).
_MAX_NUMBER = Decimal(MAX_INPUT_NUMBER)
_MAX_INT = 2**53
_KLINE_HEADER = ("open_time", "open", "high", "low", "close", "volume", "close_time")
_MINUTE_HEADER = ("minute_utc", "open", "high", "low", "close", "volume")
_POOL_HEADER = ("ts_s", "block", "tick", "usde_price_usdt", "tvl_usd")
_DEPTH_HEADER = ("timestamp", "percentage", "depth", "notional", "weighted_avg_price")
_TARDIS_HEADER = (
    "exchange", "symbol", "timestamp", "local_timestamp", "id", "side", "price", "amount",
)
_AGG_HEADER = (
    "agg_trade_id", "price", "quantity", "first_trade_id", "last_trade_id",
    "transact_time", "is_buyer_maker",
)


class ImporterError(Exception):
    """A file cannot be imported; the message names the file and, if known, the line."""


# ---------------------------------------------------------------------------- helpers


def _open_text(path: Path) -> IO[str]:
    """Open a CSV as text, gunzipping when the content is gzip."""
    if not path.exists():
        raise ImporterError(f"{path}: file not found")
    if path.is_dir():
        raise ImporterError(f"{path}: is a directory, not a file")
    with path.open("rb") as probe:
        head = probe.read(2)
    if head == b"\x1f\x8b":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return path.open("r", encoding="utf-8", newline="")


class _Rows:
    """CSV rows with file/line context for error messages."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.line_no = 0

    def fail(self, msg: str) -> ImporterError:
        return ImporterError(f"{self.path.name} line {self.line_no}: {msg}")

    def __call__(self) -> Iterator[list[str]]:
        try:
            with _open_text(self.path) as fh:
                for row in csv.reader(fh):
                    self.line_no += 1
                    if not row or all(not c.strip() for c in row):
                        continue
                    yield [c.strip() for c in row]
        except (OSError, EOFError, UnicodeDecodeError, csv.Error) as exc:
            raise ImporterError(
                f"{self.path.name} line {self.line_no + 1}: unreadable ({exc})"
            ) from None

    def dec(self, row: list[str], idx: int, name: str) -> Decimal:
        text = self.cell(row, idx, name)
        try:
            value = Decimal(text)
        except InvalidOperation:
            raise self.fail(f"column {name!r}: not a number: {text!r}") from None
        if not value.is_finite():
            raise self.fail(f"column {name!r}: not a finite number: {text!r}")
        if abs(value) > _MAX_NUMBER:
            raise self.fail(f"column {name!r}: beyond ±{MAX_INPUT_NUMBER:.0e}: {text:.40}")
        return value

    def num(self, row: list[str], idx: int, name: str) -> float:
        return float(self.dec(row, idx, name))

    def int_(self, row: list[str], idx: int, name: str) -> int:
        """An integer cell (``12`` or ``12.0``) within ±2**53 (a timestamp in µs, an id)."""
        text = self.cell(row, idx, name)
        try:
            value = int(text)
        except ValueError:
            try:
                f = float(text)
            except ValueError:
                raise self.fail(f"column {name!r}: not an integer: {text!r}") from None
            if not f.is_integer():
                raise self.fail(f"column {name!r}: not an integer: {text!r}") from None
            value = int(f)
        if abs(value) > _MAX_INT:
            raise self.fail(f"column {name!r}: beyond ±2**53: {text:.40}")
        return value

    def cell(self, row: list[str], idx: int, name: str) -> str:
        if idx >= len(row):
            raise self.fail(f"missing column {name!r} (row has {len(row)} fields)")
        return row[idx]

    def utc(self, row: list[str], idx: int, name: str) -> int:
        text = self.cell(row, idx, name)
        try:
            dt = datetime.strptime(text, "%Y-%m-%d %H:%M:%S")
        except ValueError:
            raise self.fail(
                f"column {name!r}: expected 'YYYY-mm-dd HH:MM:SS' UTC, got {text!r}"
            ) from None
        return int(dt.replace(tzinfo=UTC).timestamp()) * 1000


def _to_ms(value: int) -> int:
    """Binance dump time → ms (spot dumps from 2025 are in µs)."""
    return value // 1000 if value >= 10**14 else value


def _check_order(rows: _Rows, prev: int, ts: int) -> None:
    if ts < prev:
        raise rows.fail(
            f"rows are not time-ordered ({ts} ms after {prev} ms); sort the file first"
        )


def _fmt(d: Decimal) -> str:
    """Plain decimal text (no exponent), as Binance prints numbers."""
    text = format(d, "f")
    return text


def _fnum(d: Decimal) -> str:
    """Decimal text with trailing zeros trimmed (for quantities)."""
    if d == d.to_integral_value():
        return format(d.quantize(Decimal(1)), "f")
    return format(d.normalize(), "f")


def split_symbol(symbol: str) -> tuple[str, str]:
    """Split an exchange symbol into (base, quote), e.g. USDEUSDT → ("USDe", "USDT")."""
    sym = symbol.upper().replace("-", "").replace("/", "")
    for suffix in ("_PERP", "PERP"):
        if sym.endswith(suffix):
            sym = sym[: -len(suffix)]
            break
    sym = sym.rstrip("_")
    for quote in _QUOTES:
        if sym.endswith(quote) and len(sym) > len(quote):
            base = sym[: -len(quote)]
            return _BASE_CASE.get(base, base), quote
    return _BASE_CASE.get(sym, sym), "USD"


def symbol_from_filename(path: Path) -> str | None:
    """Guess the exchange symbol from a file name (usde_usdt_binance_1m.csv → USDEUSDT)."""
    name = path.name
    for ext in (".gz", ".csv", ".zip"):
        if name.lower().endswith(ext):
            name = name[: -len(ext)]
    if "-" in name and "_" not in name.split("-")[0]:
        # Binance dump names: BTCUSDT-1m-2025-10-10, BTCUSDT-aggTrades-2025-10-10
        head = name.split("-")[0]
        return head.upper() if head.isalnum() else None
    parts = name.lower().split("_")
    if "binance" in parts:
        parts = parts[: parts.index("binance")]
    if not parts or not all(p.isalnum() for p in parts):
        return None
    if parts[-1] == "perp" and len(parts) > 1:
        return "".join(parts[:-1]).upper() + "_PERP"
    return "".join(parts).upper()


def _symbol(path: Path, opts: dict[str, Any]) -> str:
    sym = opts.get("symbol") or symbol_from_filename(path)
    if not sym:
        raise ImporterError(f"{path.name}: cannot tell the symbol from the file name; pass symbol")
    return str(sym).upper()


def _default_tick(symbol: str, price: Decimal) -> Decimal:
    known = TICK_SIZES.get(symbol)
    if known is not None:
        return Decimal(known)
    if price <= 0:
        return Decimal("0.0001")
    exponent = math.floor(math.log10(float(price))) - 5
    return Decimal(1).scaleb(exponent)


# ---------------------------------------------------------------------------- klines


def _kline_rows(rows: _Rows) -> Iterator[tuple[int, int, list[str]]]:
    """Yield (open_ms, interval_ms, row) for either kline layout."""
    it = rows()
    first = next(it, None)
    if first is None:
        raise ImporterError(f"{rows.path.name}: file is empty")
    lower = tuple(c.lower() for c in first)
    minute = lower[: len(_MINUTE_HEADER)] == _MINUTE_HEADER
    pending: list[list[str]] = []
    if not minute and lower[: len(_KLINE_HEADER)] != _KLINE_HEADER:
        if not first[0].isdigit():
            raise rows.fail(
                f"not a kline CSV: header {','.join(first[:7])!r}, expected "
                f"{','.join(_KLINE_HEADER)} or {','.join(_MINUTE_HEADER)}"
            )
        pending.append(first)  # headerless Binance dump
    prev = -(2**62)

    def body() -> Iterator[list[str]]:
        yield from pending
        yield from it

    for row in body():
        if minute:
            open_ms = rows.utc(row, 0, "minute_utc")
            interval = 60_000
        else:
            open_ms = _to_ms(rows.int_(row, 0, "open_time"))
            close_ms = _to_ms(rows.int_(row, 6, "close_time"))
            interval = close_ms - open_ms + 1
            if interval <= 0:
                raise rows.fail("close_time is before open_time")
        _check_order(rows, prev, open_ms)
        prev = open_ms
        yield open_ms, interval, row


def iter_klines(
    path: Path,
    *,
    symbol: str | None = None,
    venue: str = "binance-spot",
    tick_size: str | Decimal | None = None,
    qty: str | Decimal = DEFAULT_NOMINAL_QTY,
    emit_trades: bool = False,
    first_update_id: int = 1,
) -> Iterator[CaptureTuple]:
    """Bars → Binance spot bookTicker frames along the OHLC path (mid = bar price exactly)."""
    rows = _Rows(path)
    sym = _symbol(path, {"symbol": symbol})
    book_ch = f"{sym.lower()}@bookTicker"
    trade_ch = f"{sym.lower()}@aggTrade"
    qty_text = _fnum(Decimal(str(qty)))
    tick = Decimal(str(tick_size)) if tick_size is not None else None
    upd = first_update_id
    trade_id = 1
    last_price: Decimal | None = None
    for open_ms, interval, row in _kline_rows(rows):
        o = rows.dec(row, 1, "open")
        h = rows.dec(row, 2, "high")
        lo = rows.dec(row, 3, "low")
        c = rows.dec(row, 4, "close")
        vol = rows.dec(row, 5, "volume")
        if lo > min(o, c) or h < max(o, c) or lo <= 0:
            raise rows.fail(f"inconsistent bar: open {o} high {h} low {lo} close {c}")
        path_prices = (o, lo, h, c) if c >= o else (o, h, lo, c)
        offsets = (0, interval // 4, interval // 2, max(interval - 1000, interval // 2 + 1))
        bar_tick = tick if tick is not None else _default_tick(sym, o)
        half = bar_tick / 2
        for off, price in zip(offsets, path_prices, strict=True):
            ts = open_ms + off
            yield (
                ts,
                venue,
                book_ch,
                {
                    "u": upd,
                    "s": sym,
                    "b": _fmt(price - half),
                    "B": qty_text,
                    "a": _fmt(price + half),
                    "A": qty_text,
                },
            )
            upd += 1
            if emit_trades and vol > 0:
                down = last_price is not None and price < last_price
                yield (
                    ts,
                    venue,
                    trade_ch,
                    {
                        "e": "aggTrade",
                        "E": ts,
                        "s": sym,
                        "a": trade_id,
                        "p": _fmt(price),
                        "q": _fnum(vol / 4),
                        "f": trade_id,
                        "l": trade_id,
                        "T": ts,
                        "m": down,
                    },
                )
                trade_id += 1
            last_price = price


def iter_index_klines(
    path: Path, *, symbol: str | None = None, venue: str = "binance-index"
) -> Iterator[CaptureTuple]:
    """Index/price klines → generic price frames at each bar close."""
    rows = _Rows(path)
    sym = _symbol(path, {"symbol": symbol})
    base, quote = split_symbol(sym)
    for open_ms, interval, row in _kline_rows(rows):
        close = rows.num(row, 4, "close")
        if close <= 0:
            raise rows.fail(f"non-positive close {close}")
        yield (
            open_ms + interval,
            venue,
            "price",
            {"base": base, "quote": quote, "price": close, "symbol": sym},
        )


# ---------------------------------------------------------------------------- pools


def _expect_header(rows: _Rows, row: list[str] | None, header: tuple[str, ...]) -> None:
    if row is None:
        raise ImporterError(f"{rows.path.name}: file is empty")
    got = tuple(c.lower() for c in row[: len(header)])
    if got != header:
        raise rows.fail(f"unexpected header {','.join(row)!r}, expected {','.join(header)}")


def iter_pool_blocks(
    path: Path,
    *,
    venue: str = "uniswap-v3",
    base: str = "USDe",
    quote: str = "USDT",
) -> Iterator[CaptureTuple]:
    """Block-level pool CSV → generic price frames with pool TVL as depth_usd."""
    rows = _Rows(path)
    it = rows()
    _expect_header(rows, next(it, None), _POOL_HEADER)
    prev = -(2**62)
    for row in it:
        ts = rows.int_(row, 0, "ts_s") * 1000
        block = rows.int_(row, 1, "block")
        tick = rows.int_(row, 2, "tick")
        price = rows.num(row, 3, "usde_price_usdt")
        tvl = rows.num(row, 4, "tvl_usd")
        if price <= 0:
            raise rows.fail(f"non-positive price {price}")
        _check_order(rows, prev, ts)
        prev = ts
        yield (
            ts,
            venue,
            "price",
            {
                "base": base,
                "quote": quote,
                "price": price,
                "depth_usd": tvl,
                "block": block,
                "tick": tick,
            },
        )


# ---------------------------------------------------------------------------- book depth


def iter_book_depth(
    path: Path, *, symbol: str | None = None, venue: str = "binance-usdm"
) -> Iterator[CaptureTuple]:
    """Binance bookDepth dump → one liqmon bookDepth record per snapshot time."""
    rows = _Rows(path)
    sym = _symbol(path, {"symbol": symbol})
    channel = f"{sym.lower()}@bookDepth"
    it = rows()
    _expect_header(rows, next(it, None), _DEPTH_HEADER)
    cur_ts: int | None = None
    bands: list[dict[str, Any]] = []
    seen: set[int] = set()

    def frame(ts: int) -> CaptureTuple:
        ordered = sorted(bands, key=lambda b: float(b["pct"]))
        return (ts, venue, channel, {"e": "bookDepth", "E": ts, "s": sym, "bands": ordered})

    for row in it:
        ts = rows.utc(row, 0, "timestamp")
        pct_d = rows.dec(row, 1, "percentage")
        pct: int | float = int(pct_d) if pct_d == pct_d.to_integral_value() else float(pct_d)
        band = {
            "pct": pct,
            "depth": rows.num(row, 2, "depth"),
            "notional_usd": rows.num(row, 3, "notional"),
            "weighted_avg_price": rows.num(row, 4, "weighted_avg_price"),
        }
        if ts != cur_ts:
            if cur_ts is not None:
                if ts < cur_ts:
                    _check_order(rows, cur_ts, ts)
                yield frame(cur_ts)
            cur_ts = ts
            bands = []
            seen = set()
        key = int(pct_d * 1000)
        if key in seen:
            raise rows.fail(f"duplicate band {pct} at {row[0]}")
        seen.add(key)
        bands.append(band)
    if cur_ts is not None:
        yield frame(cur_ts)


# ---------------------------------------------------------------------------- trades


def iter_tardis_trades(path: Path, *, venue: str | None = None) -> Iterator[CaptureTuple]:
    """Tardis trade CSV → Binance aggTrade frames (binance*) or generic trade frames."""
    rows = _Rows(path)
    it = rows()
    _expect_header(rows, next(it, None), _TARDIS_HEADER)
    prev = -(2**62)
    for row in it:
        exchange = rows.cell(row, 0, "exchange")
        sym = rows.cell(row, 1, "symbol")
        ts_ms = rows.int_(row, 2, "timestamp") // 1000
        local_ms = rows.int_(row, 3, "local_timestamp") // 1000
        trade_id_text = rows.cell(row, 4, "id")
        side = rows.cell(row, 5, "side").lower()
        price = rows.dec(row, 6, "price")
        amount = rows.dec(row, 7, "amount")
        if side not in ("buy", "sell", "unknown"):
            raise rows.fail(f"column 'side': expected buy/sell, got {side!r}")
        if price <= 0 or amount < 0:
            raise rows.fail(f"bad price/amount {price}/{amount}")
        _check_order(rows, prev, local_ms)
        prev = local_ms
        binance_venue = _BINANCE_TARDIS_VENUES.get(exchange)
        if binance_venue is not None:
            tid = rows.int_(row, 4, "id")
            yield (
                local_ms,
                venue or binance_venue,
                f"{sym.lower()}@aggTrade",
                {
                    "e": "aggTrade",
                    "E": ts_ms,
                    "s": sym.upper(),
                    "a": tid,
                    "p": _fmt(price),
                    "q": _fmt(amount),
                    "f": tid,
                    "l": tid,
                    "T": ts_ms,
                    "m": side == "sell",
                },
            )
        else:
            yield (
                local_ms,
                venue or exchange,
                "trade",
                {
                    "symbol": sym,
                    "side": side,
                    "price": float(price),
                    "amount": float(amount),
                    "id": trade_id_text,
                    "ts_ms": ts_ms,
                },
            )


def iter_binance_aggtrades(
    path: Path, *, symbol: str | None = None, venue: str = "binance-spot"
) -> Iterator[CaptureTuple]:
    """Binance aggTrades dump → aggTrade frames (line time = transact_time)."""
    rows = _Rows(path)
    sym = _symbol(path, {"symbol": symbol})
    channel = f"{sym.lower()}@aggTrade"
    it = rows()
    first = next(it, None)
    pending: list[list[str]] = []
    if first is None:
        raise ImporterError(f"{path.name}: file is empty")
    if first[0].isdigit():
        pending.append(first)
    else:
        _expect_header(rows, first, _AGG_HEADER)
    prev = -(2**62)

    def body() -> Iterator[list[str]]:
        yield from pending
        yield from it

    for row in body():
        agg_id = rows.int_(row, 0, "agg_trade_id")
        price = rows.dec(row, 1, "price")
        qty = rows.dec(row, 2, "quantity")
        first_id = rows.int_(row, 3, "first_trade_id")
        last_id = rows.int_(row, 4, "last_trade_id")
        ts = _to_ms(rows.int_(row, 5, "transact_time"))
        maker = rows.cell(row, 6, "is_buyer_maker").lower()
        if maker not in ("true", "false"):
            raise rows.fail(f"column 'is_buyer_maker': expected true/false, got {maker!r}")
        _check_order(rows, prev, ts)
        prev = ts
        yield (
            ts,
            venue,
            channel,
            {
                "e": "aggTrade",
                "E": ts,
                "s": sym,
                "a": agg_id,
                "p": _fmt(price),
                "q": _fmt(qty),
                "f": first_id,
                "l": last_id,
                "T": ts,
                "m": maker == "true",
            },
        )


# ---------------------------------------------------------------------------- dispatch


def detect_kind(path: Path) -> str:
    """Tell the importer kind from the file's header line (and name for index klines)."""
    rows = _Rows(path)
    first = next(rows(), None)
    if first is None:
        raise ImporterError(f"{path.name}: file is empty")
    head = tuple(c.lower() for c in first)
    name = path.name.lower()
    if head[: len(_KLINE_HEADER)] == _KLINE_HEADER or (
        len(head) >= 11 and head[0].isdigit() and len(head[0]) >= 13
    ):
        return "index_klines" if "index" in name else "klines"
    if head[: len(_MINUTE_HEADER)] == _MINUTE_HEADER:
        return "klines"
    if head[: len(_POOL_HEADER)] == _POOL_HEADER:
        return "pool_blocks"
    if head[: len(_DEPTH_HEADER)] == _DEPTH_HEADER:
        return "book_depth"
    if head[: len(_TARDIS_HEADER)] == _TARDIS_HEADER:
        return "tardis_trades"
    if head[: len(_AGG_HEADER)] == _AGG_HEADER or (
        7 <= len(head) <= 8 and head[0].isdigit() and head[6] in ("true", "false")
    ):
        return "binance_aggtrades"
    raise ImporterError(
        f"{path.name} line 1: unknown format (header {','.join(first[:8])!r}); "
        f"name it with --kind (kind= in Python): one of {', '.join(KINDS)}"
    )


_OPTS: dict[str, tuple[str, ...]] = {
    "klines": ("symbol", "venue", "tick_size", "qty", "emit_trades", "first_update_id"),
    "index_klines": ("symbol", "venue"),
    "pool_blocks": ("venue", "base", "quote"),
    "book_depth": ("symbol", "venue"),
    "tardis_trades": ("venue",),
    "binance_aggtrades": ("symbol", "venue"),
}


def iter_file(path: Path, kind: str | None = None, **opts: Any) -> Iterator[CaptureTuple]:
    """Capture lines for one file; kind detected when None; unset (None) options ignored."""
    path = Path(path)
    kind = kind or detect_kind(path)
    if kind not in _OPTS:
        raise ImporterError(
            f"{path.name}: unknown kind {kind!r}; expected one of {', '.join(KINDS)}"
        )
    given = {k: v for k, v in opts.items() if v is not None}
    unknown = set(given) - set(_OPTS[kind])
    if unknown:
        raise ImporterError(
            f"{path.name}: option(s) {', '.join(sorted(unknown))} do not apply to kind {kind}"
        )
    if kind == "klines":
        return iter_klines(path, **given)
    if kind == "index_klines":
        return iter_index_klines(path, **given)
    if kind == "pool_blocks":
        return iter_pool_blocks(path, **given)
    if kind == "book_depth":
        return iter_book_depth(path, **given)
    if kind == "tardis_trades":
        return iter_tardis_trades(path, **given)
    return iter_binance_aggtrades(path, **given)


def merge_captures(iterables: Iterable[Iterable[CaptureTuple]]) -> Iterator[CaptureTuple]:
    """Heap-merge time-ordered line streams by ts_ms; ties keep input order (stable)."""
    return heapq.merge(*iterables, key=lambda line: line[0])


def import_file(path: Path, out_path: Path, kind: str | None = None, **opts: Any) -> int:
    """Import one file into a capture at out_path; returns the number of lines written."""
    return write_capture(Path(out_path), iter_file(Path(path), kind, **opts))


# ---------------------------------------------------------------------------- CLI glue


def add_import_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Register `liqmon import FILE... --out OUT.jsonl.gz [--kind K] [--venue V] [--symbol S]`."""
    parser = subparsers.add_parser(
        "import",
        help="convert downloaded market data (klines, bookDepth, Tardis trades, pool CSV) "
        "into a capture file",
    )
    parser.add_argument("inputs", nargs="+", type=Path, metavar="FILE")
    parser.add_argument("--out", required=True, type=Path, help="capture to write (.jsonl[.gz])")
    parser.add_argument("--kind", choices=KINDS, default=None, help="format (default: detect)")
    parser.add_argument("--venue", default=None, help="override the venue id")
    parser.add_argument("--symbol", default=None, help="override the symbol (e.g. USDEUSDT)")
    parser.set_defaults(func=run_import)
    return parser


def run_import(args: argparse.Namespace) -> int:
    """Run `liqmon import`; errors print one line to stderr and return 2 (1 when the output's
    storage fails: a full disk)."""
    try:
        streams: list[Iterator[CaptureTuple]] = []
        for path in args.inputs:
            kind = args.kind or detect_kind(path)
            opts: dict[str, Any] = {"venue": args.venue}
            if "symbol" in _OPTS[kind]:
                opts["symbol"] = args.symbol
            streams.append(iter_file(path, kind, **opts))
        count = write_capture(args.out, merge_captures(streams))
    except ImporterError as exc:
        print(f"liqmon import: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"liqmon import: cannot write {args.out}: {exc.strerror or exc}", file=sys.stderr)
        # the storage's failure (a full disk) is the machine's, not the user's: exit 1 as for every output
        return 1 if exc.errno in STORAGE_ERRNOS else 2
    print(f"wrote {count} lines to {args.out}")
    return 0
