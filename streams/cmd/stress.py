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

from monitor.models.loops.lending import Position
from monitor.risk_params import RiskParams
from monitor.stages.stress import (
    StressInputError,
    StressReport,
    check_price_keys,
    parse_books,
    parse_position,
    parse_prices,
    parse_shock,
    stress_report,
)
from replay.gcpause import gc_paused
from streams.cmd.arguments import positive_count
from streams.cmd.forked import ForkedError, ForkedStream, cores
from streams.cmd.stress_accounts import PART_LINES, line_batches, read_accounts, read_lines

__all__ = ["EXIT_FAILED", "EXIT_INPUT_ERROR", "EXIT_OK", "add_parser", "main", "run"]

EXIT_OK = 0
EXIT_FAILED = 1
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
    parser.add_argument("--jobs", type=positive_count, metavar="N",
                        help="processes reading the accounts and writing their rows (default: "
                             "every core this process may use; a file is cut only in parts of "
                             f"{PART_LINES:,} lines or more)")
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
    """:func:`~streams.cmd.stress_accounts.line_batches` of the whole file."""
    return line_batches(read_lines(path))


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


def _build_report(args: argparse.Namespace) -> StressReport:
    params = _margin_tables(args.margin_tables, RiskParams()) if args.margin_tables else RiskParams()
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
    accounts = read_accounts(args.accounts, params, args.jobs) if args.accounts else None
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
    """Execute ``liqmon stress``; print the JSON report; 0 on success, 2 on bad input, 1 when
    a process reading or writing a part failed (the report, if begun, is cut short)."""
    # Millions of decoded lines and report rows, no reference cycles: the collector stays off
    # until the report is written and freed (switched on over that heap, its first full
    # pass would cost a tenth of a second for nothing).
    with gc_paused():
        try:
            report = _build_report(args)
            _write_report(report, args.jobs)
        except StressInputError as exc:
            print(f"{_PROG}: error: {exc}", file=sys.stderr)
            return EXIT_INPUT_ERROR
        except ForkedError as exc:  # a part's process killed (out of memory) or a defect
            print(f"{_PROG}: error: {exc}", file=sys.stderr)
            return EXIT_FAILED
        del report
    return EXIT_OK


#: Where the account rows go in the report's head as orjson indents it: the top-level key's
#: empty list (rows and their keys sit deeper, behind more spaces).
_ROWS_AT = b'\n  "accounts": []'
#: Fewest account rows a process is given to write: below two processes' worth, the rows
#: are written by the command alone.
PART_ROWS = 40_000


def _rows_text(rows: list[dict[str, Any]]) -> memoryview:
    """Account rows as they sit in the report: dumped as a list, its lines indented one
    level more (orjson escapes the newlines inside strings, so every newline byte is
    layout), its brackets dropped."""
    text = orjson.dumps(rows, option=orjson.OPT_INDENT_2).replace(b"\n", b"\n  ")
    return memoryview(text)[1:-4]  # without "[" and "\n  ]"


def _chunk_texts(report: StressReport, first: int, every: int) -> Iterator[memoryview]:
    """:func:`_rows_text` of the report's chunks ``first``, ``first + every``, …"""
    for chunk in report.account_chunks(first, every):
        yield _rows_text(chunk)


def _row_texts(report: StressReport, jobs: int | None = None) -> Iterator[bytes | memoryview]:
    """The text of the report's account chunks in order, written by the command and by
    forked children taking turns, chunk by chunk (``streams.cmd.forked``), when the
    report has rows enough for more than one process (:data:`PART_ROWS` each): up to
    ``jobs`` processes (every core if None)."""
    n_chunks = report.n_chunks
    writers = max(1, min(jobs or cores(), report.n_accounts // max(1, PART_ROWS), n_chunks))
    children = [ForkedStream(_chunk_texts, report, k, writers, what=f"writing account rows (part {k + 1} of {writers})")
                for k in range(1, writers)]
    try:
        own = _chunk_texts(report, 0, writers)
        for j in range(n_chunks):
            yield next(own) if j % writers == 0 else next(children[j % writers - 1])
    finally:
        for child in children:
            child.cancel()


def _write_report(report: StressReport, jobs: int | None = None) -> None:
    """The report on stdout, the account rows streamed a chunk at a time, never all held as
    dicts or as text. The bytes are those of ``orjson.dumps(report.document(),
    option=OPT_INDENT_2)`` and a newline, the chunks (:func:`_rows_text`) joined by commas.
    orjson writes the same document as json.dump(indent=2) many times faster; it spells
    small and large floats without an exponent sign (4.2e-05 → 0.000042) and writes
    non-ASCII characters as UTF-8."""
    head = orjson.dumps(report.head, option=orjson.OPT_INDENT_2)
    at = head.index(_ROWS_AT) + len(_ROWS_AT) - 1  # between the brackets of the empty list
    sys.stdout.flush()
    out = sys.stdout.buffer
    out.write(head[:at])
    sep = b""
    for text in _row_texts(report, jobs):
        out.write(sep)
        out.write(text)
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
