"""``liqmon stress``: read positions, accounts, prices (and optional books), apply shocks and
print one JSON report. Input problems exit with code 2 and one line naming file, line, field.

Run standalone: ``python -m streams.cmd.stress --positions P.jsonl --prices PRICES.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

from monitor.accounts import lines as account_lines
from monitor.accounts.columns import ColumnsBuilder
from monitor.accounts.lines import AccountLines
from monitor.models.loops.lending import Position
from monitor.risk_params import RiskParams
from monitor.stages.stress import (
    StressInputError,
    StressReport,
    check_price_keys,
    parse_account,
    parse_books,
    parse_position,
    parse_prices,
    parse_shock,
    stress_report,
)
from replay.gcpause import gc_paused

__all__ = ["EXIT_INPUT_ERROR", "EXIT_OK", "add_parser", "main", "run"]

EXIT_OK = 0
EXIT_INPUT_ERROR = 2
_PROG = "liqmon stress"


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--positions", metavar="P.jsonl", help="lending positions, one per line")
    parser.add_argument("--accounts", metavar="A.jsonl", help="unified accounts, one per line")
    parser.add_argument("--prices", metavar="PRICES.json", required=True,
                        help='{"PRICE_KEY": price_usd}')
    parser.add_argument("--shock", action="append", default=[], metavar="KEY=PCT",
                        help="multiply KEY by (1 + PCT), e.g. USDe@binance=-35%% (repeatable)")
    parser.add_argument("--books", metavar="BOOKS.json",
                        help='bids {"PRICE_KEY": [[price, qty], ...]}; enables the spiral')
    parser.add_argument("--margin-tables", metavar="TABLES",
                        help='venue margin tables instead of the built-in ones: a JSON document '
                             '{"hyperliquid": meta, "bybit": ..., "okx": ...} or a capture '
                             "with margin_tables frames (recorded by liqmon live)")


def add_parser(subparsers: Any) -> None:
    """Register the ``stress`` sub-command on an argparse subparsers object."""
    parser = subparsers.add_parser(
        "stress",
        help="apply price shocks to positions and accounts, estimate the spiral",
        description=__doc__,
    )
    _add_arguments(parser)
    parser.set_defaults(func=run)


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not allowed")


def _load_json(path: str) -> Any:
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except OSError as exc:
        raise StressInputError(path, 0, "", f"cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise StressInputError(path, 0, "", f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:
        line = getattr(exc, "lineno", 0)
        raise StressInputError(path, line, "", f"invalid JSON: {exc}") from None


def _jsonl_batches(path: str) -> Iterator[tuple[list[int], list[bytes]]]:
    """(line numbers, the lines' bytes) of the non-blank lines, up to
    :data:`monitor.accounts.lines.BATCH_LINES` lines of the file at a time (account lines
    are decoded a batch at a time, and a batch with a line that is not plain line by line):
    lines end at ``\n``, ``\r\n`` or ``\r``."""
    try:
        lines = Path(path).read_bytes().splitlines()
    except OSError as exc:
        raise StressInputError(path, 0, "", f"cannot read: {exc.strerror or exc}") from None
    size = account_lines.BATCH_LINES  # read when called: tests make batches small
    for start in range(0, len(lines), size):
        batch = lines[start:start + size]
        numbers = range(start + 1, start + 1 + len(batch))
        if all(map(bytes.strip, batch)):
            yield list(numbers), batch
        else:
            kept = [n for n, raw in zip(numbers, batch, strict=True) if raw.strip()]
            yield kept, [lines[n - 1] for n in kept]


def _jsonl_lines(path: str) -> Iterator[tuple[int, bytes]]:
    """(line number, the line's bytes) of each non-blank line, one at a time."""
    for numbers, raws in _jsonl_batches(path):
        yield from zip(numbers, raws, strict=True)


def _iter_jsonl(path: str) -> Iterator[tuple[int, Any]]:
    """(line number, its JSON value) of each non-blank line, one at a time. Strict JSON in
    UTF-8 (no NaN, no Infinity): a bad line is a :class:`StressInputError` naming it."""
    for n, raw in _jsonl_lines(path):
        try:
            yield n, orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise StressInputError(path, n, "", f"invalid JSON: {exc}") from None


def _margin_tables(path: str, params: RiskParams) -> RiskParams:
    """Risk parameters with the venue tables of ``--margin-tables`` (RISK_MODEL §3). The
    reader (and the capture reader under it) is imported only when asked for."""
    from replay.margin_tables import load_margin_tables

    return load_margin_tables(Path(path), params)


def _first_repeat(lines: Sequence[int], ids: Sequence[str], seen: set[str]) -> int:
    """The line of the first of ``ids`` seen before them or earlier among them."""
    known = set(seen)
    for line, account_id in zip(lines, ids, strict=True):
        if account_id in known:
            return line
        known.add(account_id)
    raise AssertionError("no repeated id in the batch")


def _add_one_by_one(accounts: AccountLines, lines: Sequence[int], raws: Sequence[bytes], seen: set[str],
                    path: str) -> None:
    for line, raw in zip(lines, raws, strict=True):
        try:
            account_id = accounts.add_line(raw, line)
        except orjson.JSONDecodeError as exc:
            raise StressInputError(path, line, "", f"invalid JSON: {exc}") from None
        if account_id in seen:
            raise StressInputError(path, line, "account_id", "duplicate id")
        seen.add(account_id)


def _read_accounts(path: str, params: RiskParams) -> AccountLines:
    """The ``--accounts`` lines checked straight into columns (``monitor.accounts.lines``),
    a batch at a time, so a file of a million accounts is never held as Python objects at
    once; the first bad line or repeated id in the file is a :class:`StressInputError`
    naming line and field."""
    accounts = AccountLines(ColumnsBuilder(params), lambda obj, line: parse_account(obj, path, line))
    seen: set[str] = set()
    for lines, raws in _jsonl_batches(path):
        ids = accounts.add_plain_lines(raws, lines)
        if ids is None:
            _add_one_by_one(accounts, lines, raws, seen, path)
            continue
        fresh = set(ids)
        if len(fresh) != len(ids) or not seen.isdisjoint(fresh):
            raise StressInputError(path, _first_repeat(lines, ids, seen), "account_id", "duplicate id")
        seen |= fresh
    return accounts


def _build_report(args: argparse.Namespace) -> StressReport:
    params: RiskParams = getattr(args, "risk_params", None) or RiskParams()
    if getattr(args, "margin_tables", None):
        params = _margin_tables(args.margin_tables, params)
    prices = parse_prices(_load_json(args.prices), args.prices)
    positions: list[tuple[int, Position]] = []
    seen: set[str] = set()
    if args.positions:
        for line, obj in _iter_jsonl(args.positions):
            pos = parse_position(obj, args.positions, line, params)
            if pos.position_id in seen:
                raise StressInputError(args.positions, line, "position_id", "duplicate id")
            seen.add(pos.position_id)
            positions.append((line, pos))
    accounts = _read_accounts(args.accounts, params) if args.accounts else None
    check_price_keys(positions, prices, positions_source=args.positions or "", prices_source=args.prices)
    missing = accounts.first_missing_price(prices) if accounts is not None else None
    if missing is not None:
        line, field, key = missing
        raise StressInputError(args.accounts, line, field, f"no price for {key!r} in {args.prices}")
    shocks: dict[str, float] = {}
    for text in args.shock:
        key, move = parse_shock(text)
        if key not in prices:
            raise StressInputError("--shock", 0, key, f"no price for this key in {args.prices}")
        shocks[key] = move
    books = parse_books(_load_json(args.books), args.books) if args.books else None
    return stress_report(
        [p for _, p in positions],
        accounts if accounts is not None else [],
        prices,
        shocks=shocks,
        books=books,
        params=params,
    )


def run(args: argparse.Namespace) -> int:
    """Execute ``liqmon stress``; print the JSON report; 0 on success, 2 on bad input."""
    # Millions of decoded lines and report rows, no reference cycles: the collector stays off
    # until the report is written and freed (switched on over that heap, its first full
    # pass would cost a tenth of a second for nothing).
    with gc_paused():
        try:
            report = _build_report(args)
        except StressInputError as exc:
            print(f"{_PROG}: error: {exc}", file=sys.stderr)
            return EXIT_INPUT_ERROR
        _write_report(report)
        del report
    return EXIT_OK


#: Where the account rows go in the report's head as orjson indents it: the top-level key's
#: empty list (rows and their keys sit deeper, behind more spaces).
_ROWS_AT = b'\n  "accounts": []'


def _write_report(report: StressReport) -> None:
    """The report on stdout, the account rows streamed a chunk at a time, never all held as
    dicts or as text. The bytes are those of ``orjson.dumps(report.document(),
    option=OPT_INDENT_2)`` and a newline: each chunk is dumped as a list, its lines indented
    one level more (orjson escapes the newlines inside strings, so every newline byte is
    layout) and its brackets dropped. orjson writes the same document as
    json.dump(indent=2) many times faster; it spells small and large floats without an
    exponent sign (4.2e-05 → 0.000042) and writes non-ASCII characters as UTF-8."""
    head = orjson.dumps(report.head, option=orjson.OPT_INDENT_2)
    at = head.index(_ROWS_AT) + len(_ROWS_AT) - 1  # between the brackets of the empty list
    sys.stdout.flush()
    out = sys.stdout.buffer
    out.write(head[:at])
    sep = b""
    for chunk in report.account_chunks():
        text = orjson.dumps(chunk, option=orjson.OPT_INDENT_2).replace(b"\n", b"\n  ")
        del chunk
        out.write(sep)
        out.write(memoryview(text)[1:-4])  # without "[" and "\n  ]"
        sep = b","
    out.write(b"\n  " if sep else b"")
    out.write(head[at:])
    out.write(b"\n")
    out.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry point with the same arguments as the sub-command."""
    parser = argparse.ArgumentParser(prog=_PROG, description=__doc__)
    _add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
