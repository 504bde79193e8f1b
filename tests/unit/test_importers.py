"""Importers: every file in ../shared/data/oct10 becomes an ordered, replayable capture."""

from __future__ import annotations

import argparse
import csv
import gzip
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from replay.capture import CaptureLine, iter_capture
from replay.importers import (
    ImporterError,
    add_import_parser,
    detect_kind,
    import_file,
    iter_file,
    iter_klines,
    merge_captures,
    run_import,
    split_symbol,
    symbol_from_filename,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA = REPO_ROOT.parent / "shared" / "data" / "oct10"

# file → (kind, expected line count: data rows, or bars x 4, or snapshots)
EXPECTED: dict[str, tuple[str, int]] = {
    "usde_usdt_binance_1m.csv": ("klines", 1801 * 4),
    "usde_usdt_uniswap_v3_blocks.csv": ("pool_blocks", 2980),
    "btcusdt_binance_bookdepth.csv": ("book_depth", 2879),
    "btcusdt_binance_5m_index.csv": ("index_klines", 288),
    "btcusd_perp_binance_1m_index.csv": ("index_klines", 1440),
    "binance-delivery_trades_2025-10-10_ATOMUSD_PERP.csv.gz": ("tardis_trades", 116501),
    "coinbase_trades_2025-10-10_ENA-USD.csv.gz": ("tardis_trades", 45169),
    "gemini_trades_2025-10-10_BTCUSD.csv.gz": ("tardis_trades", 24706),
}

needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"shared data not at {DATA}")


def _distinct_depth_times() -> int:
    with (DATA / "btcusdt_binance_bookdepth.csv").open() as fh:
        return len({row["timestamp"].strip() for row in csv.DictReader(fh)})


@needs_data
def test_every_shared_file_is_covered() -> None:
    files = {p.name for p in DATA.iterdir() if p.name != "SOURCES.md"}
    assert files == set(EXPECTED)


@needs_data
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_import_round_trip(name: str, tmp_path: Path) -> None:
    kind, expected = EXPECTED[name]
    if kind == "book_depth":
        expected = _distinct_depth_times()
    path = DATA / name
    assert detect_kind(path) == kind
    out = tmp_path / "cap.jsonl.gz"
    n = import_file(path, out)
    assert n == expected
    read = list(iter_capture(out))
    assert len(read) == n
    assert all(isinstance(line, CaptureLine) for line in read)
    ts = [line.ts_ms for line in read]  # type: ignore[union-attr]
    assert ts == sorted(ts)
    # Same tuples back as the generator made (envelope and payload).
    direct = list(iter_file(path))
    first = read[0]
    assert isinstance(first, CaptureLine)
    assert (first.ts_ms, first.venue, first.channel, first.raw) == direct[0]


@needs_data
def test_usde_klines_mid_equals_bar_prices() -> None:
    path = DATA / "usde_usdt_binance_1m.csv"
    with path.open() as fh:
        bars = list(csv.DictReader(fh))
    lines = list(iter_file(path))
    assert len(lines) == 4 * len(bars)
    updates = [raw["u"] for _, _, _, raw in lines]
    assert updates == sorted(updates) and len(set(updates)) == len(updates)
    for i, bar in enumerate(bars):
        o, h, lo, c = (Decimal(bar[k]) for k in ("open", "high", "low", "close"))
        want = [o, lo, h, c] if c >= o else [o, h, lo, c]
        chunk = lines[4 * i : 4 * i + 4]
        mids = [(Decimal(r["b"]) + Decimal(r["a"])) / 2 for _, _, _, r in chunk]
        assert mids == want, bar
        spreads = {Decimal(r["a"]) - Decimal(r["b"]) for _, _, _, r in chunk}
        assert spreads == {Decimal("0.0001")}
        offsets = [ts - chunk[0][0] for ts, _, _, _ in chunk]
        assert offsets == [0, 15_000, 30_000, 59_000]
        assert {(v, ch) for _, v, ch, _ in chunk} == {("binance-spot", "usdeusdt@bookTicker")}
        assert all(r["s"] == "USDEUSDT" for _, _, _, r in chunk)
    # The depeg low is in the data and survives the import exactly.
    assert min(Decimal(r["b"]) + Decimal("0.00005") for _, _, _, r in lines) == Decimal("0.65")


@needs_data
def test_klines_optional_trades_and_options() -> None:
    path = DATA / "usde_usdt_binance_1m.csv"
    lines = list(iter_klines(path, emit_trades=True, tick_size="0.001", qty="5"))
    trades = [raw for _, _, ch, raw in lines if ch == "usdeusdt@aggTrade"]
    books = [raw for _, _, ch, raw in lines if ch == "usdeusdt@bookTicker"]
    assert len(books) == 1801 * 4
    assert trades and all(t["e"] == "aggTrade" for t in trades)
    assert {b["B"] for b in books} == {"5"}
    assert Decimal(books[0]["a"]) - Decimal(books[0]["b"]) == Decimal("0.001")
    with path.open() as fh:
        total = sum(Decimal(r["volume"]) for r in csv.DictReader(fh))
    assert sum(Decimal(t["q"]) for t in trades) == total


@needs_data
def test_book_depth_bands() -> None:
    lines = list(iter_file(DATA / "btcusdt_binance_bookdepth.csv"))
    ts0, venue, channel, raw = lines[0]
    assert (venue, channel, raw["e"], raw["s"]) == ("binance-usdm", "btcusdt@bookDepth",
                                                     "bookDepth", "BTCUSDT")
    assert raw["E"] == ts0
    assert [b["pct"] for b in raw["bands"]] == [-5, -4, -3, -2, -1, 1, 2, 3, 4, 5]
    # 20:45 vs 21:25: bids within 5% of mid collapsed (public figure: $535M → a few $M).
    def bid5(hhmm: str) -> float:
        for ts, _, _, r in lines:
            if ts >= _ms(f"2025-10-10 {hhmm}:00"):
                return float(next(b["notional_usd"] for b in r["bands"] if b["pct"] == -5))
        raise AssertionError(hhmm)

    assert bid5("20:45") > 400e6
    assert bid5("21:25") < 0.1 * bid5("20:45")


def _ms(text: str) -> int:
    from datetime import UTC, datetime

    return int(datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp()) * 1000


@needs_data
def test_tardis_venues_and_shapes() -> None:
    atom = next(iter(iter_file(DATA / "binance-delivery_trades_2025-10-10_ATOMUSD_PERP.csv.gz")))
    assert atom[1:3] == ("binance-coinm", "atomusd_perp@aggTrade")
    assert set(atom[3]) == {"e", "E", "s", "a", "p", "q", "f", "l", "T", "m"}
    assert atom[0] == 1760054400727  # local_timestamp µs → ms
    ena = next(iter(iter_file(DATA / "coinbase_trades_2025-10-10_ENA-USD.csv.gz")))
    assert ena[1:3] == ("coinbase", "trade")
    assert ena[3] == {"symbol": "ENA-USD", "side": "buy", "price": 0.5472, "amount": 2.1,
                      "id": "3443663", "ts_ms": 1760054410664}


@needs_data
def test_index_klines_and_pool() -> None:
    idx = list(iter_file(DATA / "btcusdt_binance_5m_index.csv"))
    assert idx[0][:3] == (1760054700000, "binance-index", "price")
    assert idx[0][3]["base"] == "BTC" and idx[0][3]["quote"] == "USDT"
    perp = list(iter_file(DATA / "btcusd_perp_binance_1m_index.csv"))
    assert perp[0][3]["quote"] == "USD" and perp[0][3]["symbol"] == "BTCUSD_PERP"
    pool = list(iter_file(DATA / "usde_usdt_uniswap_v3_blocks.csv"))
    raw = pool[0][3]
    assert (pool[0][1], pool[0][2]) == ("uniswap-v3", "price")
    assert raw["base"] == "USDe" and raw["quote"] == "USDT"
    assert {"price", "depth_usd", "block"} <= raw.keys()
    assert min(r["price"] for _, _, _, r in pool) > 0.99  # on-chain held its peg


@needs_data
def test_merge_is_ordered_and_stable(tmp_path: Path) -> None:
    a = list(iter_file(DATA / "usde_usdt_binance_1m.csv"))
    b = list(iter_file(DATA / "usde_usdt_uniswap_v3_blocks.csv"))
    merged = list(merge_captures([a, b]))
    assert len(merged) == len(a) + len(b)
    assert [m[0] for m in merged] == sorted(m[0] for m in merged)
    assert [m for m in merged if m[1] == "binance-spot"] == a
    # Stability: equal timestamps keep the order of the inputs.
    x = [(1, "x", "c", 1), (2, "x", "c", 2)]
    y = [(1, "y", "c", 1), (2, "y", "c", 2)]
    assert [m[1] for m in merge_captures([x, y])] == ["x", "y", "x", "y"]


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_bad_csv_names_file_and_line(tmp_path: Path) -> None:
    bad = _write(
        tmp_path / "usde_usdt_binance_1m.csv",
        "minute_utc,open,high,low,close,volume\n"
        "2025-10-10 00:00:00,1.0,1.0,1.0,1.0,1\n"
        "2025-10-10 00:01:00,1.0,abc,1.0,1.0,1\n",
    )
    with pytest.raises(ImporterError, match=r"usde_usdt_binance_1m\.csv line 3: .*'high'"):
        list(iter_file(bad))


def test_unknown_header_and_disorder(tmp_path: Path) -> None:
    weird = _write(tmp_path / "weird.csv", "a,b,c\n1,2,3\n")
    with pytest.raises(ImporterError, match=r"weird\.csv line 1: unknown format"):
        detect_kind(weird)
    back = _write(
        tmp_path / "pool.csv",
        "ts_s,block,tick,usde_price_usdt,tvl_usd\n10,1,0,1.0,5\n9,2,0,1.0,5\n",
    )
    with pytest.raises(ImporterError, match=r"pool\.csv line 3: rows are not time-ordered"):
        list(iter_file(back))
    bar = _write(
        tmp_path / "usde_usdt_x.csv",
        "minute_utc,open,high,low,close,volume\n2025-10-10 00:00:00,1.0,0.9,1.0,1.0,1\n",
    )
    with pytest.raises(ImporterError, match="line 2: inconsistent bar"):
        list(iter_file(bar))


def test_headerless_binance_dump_in_microseconds(tmp_path: Path) -> None:
    dump = _write(
        tmp_path / "ETHUSDT-1m-2025-10-10.csv",
        "1760054400000000,4300.10,4301.00,4299.00,4300.50,12.5,1760054459999999,0,1,0,0,0\n",
    )
    assert detect_kind(dump) == "klines"
    lines = list(iter_file(dump))
    assert [ts for ts, *_ in lines] == [1760054400000, 1760054415000, 1760054430000, 1760054459000]
    assert lines[0][2] == "ethusdt@bookTicker"
    assert (lines[0][3]["b"], lines[0][3]["a"]) == ("4300.095", "4300.105")


def test_gzip_tardis_binance_futures(tmp_path: Path) -> None:
    path = tmp_path / "t.csv.gz"
    with gzip.open(path, "wt") as fh:
        fh.write("exchange,symbol,timestamp,local_timestamp,id,side,price,amount\n")
        fh.write("binance-futures,BTCUSDT,1000000,2000000,7,sell,100.5,0.01\n")
    ((ts, venue, ch, raw),) = list(iter_file(path))
    assert (ts, venue, ch) == (2000, "binance-usdm", "btcusdt@aggTrade")
    assert raw["m"] is True and raw["p"] == "100.5" and raw["T"] == 1000


def test_symbol_helpers() -> None:
    assert symbol_from_filename(Path("usde_usdt_binance_1m.csv")) == "USDEUSDT"
    assert symbol_from_filename(Path("btcusd_perp_binance_1m_index.csv")) == "BTCUSD_PERP"
    assert symbol_from_filename(Path("BTCUSDT-aggTrades-2025-10-10.csv")) == "BTCUSDT"
    assert split_symbol("USDEUSDT") == ("USDe", "USDT")
    assert split_symbol("WBETHETH") == ("wBETH", "ETH")
    assert split_symbol("BTCUSD_PERP") == ("BTC", "USD")


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="liqmon")
    add_import_parser(parser.add_subparsers(dest="cmd"))
    return parser.parse_args(argv)


@needs_data
def test_cli_merges_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "oct10.jsonl.gz"
    args = _parse(["import", str(DATA / "usde_usdt_binance_1m.csv"),
                   str(DATA / "usde_usdt_uniswap_v3_blocks.csv"), "--out", str(out)])
    assert run_import(args) == 0
    read: list[Any] = list(iter_capture(out))
    assert len(read) == 1801 * 4 + 2980
    assert [r.ts_ms for r in read] == sorted(r.ts_ms for r in read)
    assert "wrote" in capsys.readouterr().out


def test_cli_error_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = _write(tmp_path / "weird.csv", "a,b\n")
    args = _parse(["import", str(bad), "--out", str(tmp_path / "o.jsonl")])
    assert run_import(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "weird.csv" in err
    missing = _parse(["import", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "o.jsonl")])
    assert run_import(missing) == 2
    assert "file not found" in capsys.readouterr().err


@needs_data
@pytest.mark.parametrize("name", ["full.jsonl", "full.jsonl.gz"])
def test_a_capture_onto_a_full_disk_is_one_line_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                        name: str) -> None:
    """The machine's failure, not the user's: exit 1 as for every output (2 before)."""
    out = tmp_path / name
    out.symlink_to("/dev/full")
    assert run_import(_parse(["import", str(DATA / "usde_usdt_binance_1m.csv"), "--out", str(out)])) == 1
    assert capsys.readouterr().err == f"liqmon import: cannot write {out}: No space left on device\n"


@pytest.mark.parametrize(("name", "text", "message"), [
    # an integer past 64 bits went into the capture and orjson raised as it was written
    ("pool.csv", "ts_s,block,tick,usde_price_usdt,tvl_usd\n10,99999999999999999999,0,1.0,5\n",
     "pool.csv line 2: column 'block': beyond ±2**53: 99999999999999999999"),
    ("pool.csv", "ts_s,block,tick,usde_price_usdt,tvl_usd\n1e300,1,0,1.0,5\n",
     "pool.csv line 2: column 'ts_s': beyond ±2**53: 1e300"),
    ("ENA-USD_trades.csv", "exchange,symbol,timestamp,local_timestamp,id,side,price,amount\n"
     "binance-futures,ENAUSDT,1760054410664489,1760054410706582,1" + "0" * 30 + ",buy,0.5472,2.1\n",
     "line 2: column 'id': beyond ±2**53"),
    # a percentage past a float's range was a traceback (OverflowError sorting the bands)
    ("btcusdt_binance_bookdepth.csv", "timestamp,percentage,depth,notional,weighted_avg_price\n"
     "2025-10-10 00:00:07,1" + "0" * 400 + ",8243.012,979983314.2,118886.5\n",
     "line 2: column 'percentage': beyond ±1e+18"),
    # a price of 1e400 was imported (exit 0); for a symbol without a known tick, a traceback
    ("usde_usdt_binance_1m.csv", "minute_utc,open,high,low,close,volume\n2025-10-10 00:00:00,1e400,1e400,1.0,1.0,1\n",
     "usde_usdt_binance_1m.csv line 2: column 'open': beyond ±1e+18: 1e400"),
])
def test_numbers_past_the_input_bounds_are_one_line_exit_2(
    name: str, text: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path / name, text)
    kind = ["--kind", "tardis_trades"] if "trades" in name else []
    assert run_import(_parse(["import", str(path), "--out", str(tmp_path / "o.jsonl"), *kind])) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
