"""``liqmon stress --accounts``: the file's lines checked straight into columns, in parts on
the machine's cores.

A file of at least two parts' worth of lines (:data:`PART_LINES` each) is cut into
contiguous parts, one per process: one per core (:func:`streams.cmd.forked.cores`) unless
``--jobs`` says how many. Forked children decode
the later parts while the command decodes the first, and their columns come back to be
joined in file order (:meth:`monitor.accounts.lines.AccountLines.extend`). Whatever the
parts, the accounts, their columns' values and the error are those of reading the file
in one pass: the first bad line or repeated id in the file is the one reported, a
repeated id across parts included.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson

from monitor.accounts import lines as account_lines
from monitor.accounts.columns import AccountColumns, ColumnsBuilder
from monitor.accounts.lines import AccountLines
from monitor.risk_params import RiskParams
from monitor.stages.stress import StressInputError, parse_account
from streams.cmd.forked import Forked, cores

__all__ = ["PART_LINES", "line_batches", "read_accounts", "read_lines"]

#: Fewest lines a part is given: below two parts' worth, a file is read in one process
#: (a fork and the columns' way back cost more than they save on a small file).
PART_LINES = 40_000


def read_lines(path: str) -> list[bytes]:
    """The file's lines (ending at ``\\n``, ``\\r\\n`` or ``\\r``), blank ones included."""
    try:
        return Path(path).read_bytes().splitlines()
    except OSError as exc:
        raise StressInputError(path, 0, "", f"cannot read: {exc.strerror or exc}") from None


def line_batches(lines: list[bytes], start: int = 0, stop: int | None = None
                 ) -> Iterator[tuple[list[int], list[bytes]]]:
    """(line numbers, the lines' bytes) of the non-blank lines of ``lines[start:stop]``, up
    to :data:`monitor.accounts.lines.BATCH_LINES` lines at a time (account lines are decoded
    a batch at a time, and a batch with a line that is not plain line by line); numbered
    from 1 at ``lines[0]``."""
    size = account_lines.BATCH_LINES  # read when called: tests make batches small
    end = len(lines) if stop is None else stop
    for first in range(start, end, size):
        batch = lines[first:min(first + size, end)]
        numbers = range(first + 1, first + 1 + len(batch))
        if all(map(bytes.strip, batch)):
            yield list(numbers), batch
        else:
            kept = [n for n, raw in zip(numbers, batch, strict=True) if raw.strip()]
            yield kept, [lines[n - 1] for n in kept]


def _first_repeat(lines: Sequence[int], ids: Sequence[str], seen: dict[str, None]) -> int:
    """The line of the first of ``ids`` seen before them or earlier among them."""
    known = set(seen)
    for line, account_id in zip(lines, ids, strict=True):
        if account_id in known:
            return line
        known.add(account_id)
    raise AssertionError("no repeated id in the batch")


def _add_one_by_one(accounts: AccountLines, lines: Sequence[int], raws: Sequence[bytes], seen: dict[str, None],
                    path: str) -> None:
    for line, raw in zip(lines, raws, strict=True):
        try:
            account_id = accounts.add_line(raw, line)
        except orjson.JSONDecodeError as exc:
            raise StressInputError(path, line, "", f"invalid JSON: {exc}") from None
        if account_id in seen:
            raise StressInputError(path, line, "account_id", "duplicate id")
        seen[account_id] = None


def _new_accounts(path: str, params: RiskParams) -> AccountLines:
    return AccountLines(ColumnsBuilder(params), lambda obj, line: parse_account(obj, path, line))


def _read_part(accounts: AccountLines, batches: Iterator[tuple[list[int], list[bytes]]], path: str
               ) -> tuple[list[str], StressInputError | None]:
    """Add the lines of ``batches`` to ``accounts`` a batch at a time; (the ids of the lines
    added, in line order; the first bad line or id repeated among them, else None)."""
    seen: dict[str, None] = {}  # insertion-ordered: the ids in line order
    try:
        for lines, raws in batches:
            ids = accounts.add_plain_lines(raws, lines)
            if ids is None:
                _add_one_by_one(accounts, lines, raws, seen, path)
                continue
            fresh = dict.fromkeys(ids)
            if len(fresh) != len(ids) or not seen.keys().isdisjoint(fresh):
                repeat = _first_repeat(lines, ids, seen)
                seen.update(dict.fromkeys(ids[:lines.index(repeat)]))  # the ids before it
                raise StressInputError(path, repeat, "account_id", "duplicate id")
            seen.update(fresh)
    except StressInputError as exc:
        return list(seen), exc
    return list(seen), None


@dataclass(frozen=True)
class _Part:
    """A part read by a child: its accounts' columns (None after a bad line), the ids of its
    lines before any bad one with their line numbers, and its first bad line
    (:class:`StressInputError`'s fields: the error does not pickle as it is)."""

    columns: AccountColumns | None
    lines: list[int]
    ids: list[str]
    error: tuple[str, int, str, str] | None


def _read_child_part(path: str, params: RiskParams, lines: list[bytes], start: int, stop: int) -> _Part:
    """:func:`_read_part` of ``lines[start:stop]`` in a forked child, in a picklable form."""
    accounts = _new_accounts(path, params)
    ids, error = _read_part(accounts, line_batches(lines, start, stop), path)
    columns = accounts.columns() if len(accounts) and error is None else None
    fields = None if error is None else (error.source, error.line, error.field, error.message)
    # The ids are those of the first lines added (a bad line or a repeated id may have been
    # added before it was found): their line numbers are the first of the part's.
    return _Part(columns, accounts.lines[:len(ids)], ids, fields)


def _check_part(part: _Part, path: str, seen: set[str]) -> None:
    """Raise the part's first problem in file order: an id of an earlier part repeated
    (ids of its lines before its own bad line), else its own bad line."""
    if not seen.isdisjoint(part.ids):
        raise StressInputError(path, _first_seen_line(part, seen), "account_id", "duplicate id")
    if part.error is not None:
        raise StressInputError(*part.error)
    seen.update(part.ids)


def _first_seen_line(part: _Part, seen: set[str]) -> int:
    """The line of the part's first id in ``seen``."""
    return next(line for line, account_id in zip(part.lines, part.ids, strict=True) if account_id in seen)


def _bounds(n_lines: int, jobs: int | None) -> list[int]:
    """Where the parts of a file of ``n_lines`` lines start, and its end: ``jobs`` parts
    (every core if None) of at least :data:`PART_LINES` lines, at least one."""
    n_parts = max(1, min(jobs or cores(), n_lines // max(1, PART_LINES)))
    return [n_lines * k // n_parts for k in range(n_parts + 1)]


def read_accounts(path: str, params: RiskParams, jobs: int | None = None) -> AccountLines:
    """The ``--accounts`` lines checked straight into columns (``monitor.accounts.lines``),
    a batch at a time, so a file of a million accounts is never held as Python objects at
    once; in parts, up to ``jobs`` processes (module docstring). The first bad line or
    repeated id in the file is a :class:`StressInputError` naming line and field."""
    lines = read_lines(path)
    bounds = _bounds(len(lines), jobs)
    children = [Forked(_read_child_part, path, params, lines, start, stop,
                       what=f"reading lines {start + 1}-{stop} of {path}")
                for start, stop in itertools.pairwise(bounds[1:])]
    try:
        accounts = _new_accounts(path, params)
        ids, error = _read_part(accounts, line_batches(lines, bounds[0], bounds[1]), path)
        if error is not None:
            raise error
        seen = set(ids)
        while children:
            part = children.pop(0).result()
            _check_part(part, path, seen)
            if part.columns is not None:
                accounts.extend(part.columns, [lines[n - 1] for n in part.lines], part.lines)
        return accounts
    finally:
        for child in children:
            child.cancel()
