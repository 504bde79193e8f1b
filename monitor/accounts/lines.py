"""``liqmon stress`` account lines decoded straight into columns (RISK_MODEL.md §3 inputs).

A JSON line whose shape is the plain one (known keys only, strings non-empty, numbers
finite ints or floats within ±2**53 and the :class:`monitor.models.margin.Account` bounds,
no ``collateral_rates`` override) is decoded and checked in one pass by msgspec into the
structs below, and written to a :class:`monitor.accounts.columns.ColumnsBuilder` without
building a pydantic model. Every other line is parsed with orjson and goes through
``Account.model_validate`` (``monitor.stages.stress.parse_account``), which either accepts it
or raises the error the command has always printed: the fast check accepts only lines the
model accepts, with the same values, so a bad line gives the same message and the same
line number as before. The :class:`Account` of a line is built only when asked for (the
liquidation engine needs it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from operator import attrgetter
from typing import Annotated, Any

import msgspec
import numpy as np
import orjson
from msgspec import Meta

from monitor.accounts.columns import AccountColumns, ColumnsBuilder, concatenated
from monitor.models.margin import Account, AccountModel

__all__ = ["BATCH_LINES", "AccountLines", "plain_account"]

#: Numbers beyond this magnitude are left to pydantic (its float conversion, bounds and
#: messages): every int up to it is exact as a float, and the bound rejects NaN and ±inf.
_EXACT = float(2**53 - 1)
_Number = Annotated[float, Meta(ge=-_EXACT, le=_EXACT)]
_Text = Annotated[str, Meta(min_length=1)]


class _Balance(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """A plain ``Balance`` (``monitor.models.margin``): its fields, types and bounds."""

    asset: _Text
    amount: _Number
    price_key: _Text
    loan_mmr: Annotated[float, Meta(ge=0.0, lt=1.0)] | None = None


class _Perp(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """A plain ``Perp``: its fields, types and bounds (finite, within ±2**53)."""

    symbol: _Text
    qty: _Number
    entry_price: Annotated[float, Meta(gt=0.0, le=_EXACT)]
    price_key: _Text
    mmr: Annotated[float, Meta(gt=0.0, lt=1.0)] | None = None
    cum: Annotated[float, Meta(ge=0.0, le=_EXACT)] | None = None


class _Account(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """A plain ``Account``: lists of plain balances and perps, no collateral-rate override."""

    account_id: _Text
    venue: _Text
    model: AccountModel
    balances: list[_Balance] = msgspec.field(default_factory=list)
    perps: list[_Perp] = msgspec.field(default_factory=list)
    collateral_rates: None = None


_DECODER = msgspec.json.Decoder(_Account)
#: Lines decoded together by :meth:`AccountLines.add_lines` (and ``liqmon stress``'s reader).
BATCH_LINES = 2048
_ACCOUNT_ID = attrgetter("account_id")


def _plain(obj: Any) -> _Account | None:
    """A decoded line in the plain shape, checked in C (msgspec), else None (the model decides)."""
    try:
        return msgspec.convert(obj, _Account)
    except msgspec.ValidationError:
        return None


def plain_account(obj: Any) -> bool:
    """Whether a decoded line has the plain shape that ``Account.model_validate`` accepts
    unchanged (balances and perps with known keys, strings non-empty, numbers finite and
    within ±2**53 and the model's bounds, no collateral-rate override)."""
    return _plain(obj) is not None


class AccountLines:
    """Accounts of a ``--accounts`` file as columns, with each one's line number and, on
    demand, its :class:`Account` (built from the line, or the model pydantic returned)."""

    def __init__(self, builder: ColumnsBuilder, validate: Callable[[Any, int], Account]) -> None:
        self._builder = builder
        self._validate = validate
        self._sources: list[Any] = []
        self._columns: AccountColumns | None = None
        #: Columns of the accounts before the builder's, in order (see :meth:`extend`).
        self._done: list[AccountColumns] = []
        #: The input line of each account.
        self.lines: list[int] = []

    def __len__(self) -> int:
        return len(self.lines)

    def add(self, obj: Any, line: int, raw: bytes | None = None) -> str:
        """Check one decoded line and add it; its account id (the caller rejects duplicates).
        A line that is not plain goes to ``validate``, which raises on a bad one. With the
        line's ``raw`` JSON, a plain line keeps only those bytes (decoded again if its
        :class:`Account` is asked for), not the decoded objects."""
        plain = _plain(obj)
        if plain is None:
            acct = self._validate(obj, line)
            self._columns = None
            self._builder.add(acct)
            self._sources.append(acct)
            self.lines.append(line)
            return acct.account_id
        return self._add_plain(plain, line, obj if raw is None else raw)

    def add_line(self, raw: bytes, line: int) -> str:
        """One JSON line, decoded and checked in one pass when it is plain; any other line is
        parsed with orjson (``orjson.JSONDecodeError`` on bad JSON) and goes to :meth:`add`.
        Its account id."""
        try:
            plain = _DECODER.decode(raw)
        except msgspec.MsgspecError:
            return self.add(orjson.loads(raw), line, raw)
        return self._add_plain(plain, line, raw)

    def add_plain_lines(self, raws: Sequence[bytes], lines: Sequence[int]) -> list[str] | None:
        """Several JSON lines (and their line numbers) at once when every one is plain: each
        decoded and checked in C, their columns built in bulk (:meth:`ColumnsBuilder.add_plain`),
        the same as :meth:`add_line` one by one; their account ids. None, adding nothing, when
        a line is not plain (the caller adds them one by one, each with its own error)."""
        try:
            plain = list(map(_DECODER.decode, raws))
        except msgspec.MsgspecError:
            return None
        self._columns = None
        self._builder.add_plain(plain)
        self._sources.extend(raws)
        self.lines.extend(lines)
        return list(map(_ACCOUNT_ID, plain))

    def add_lines(self, raws: Sequence[bytes], lines: Sequence[int]) -> None:
        """JSON lines in order, as :meth:`add_line` adds them one by one: :data:`BATCH_LINES`
        at a time through :meth:`add_plain_lines`, a batch with a line that is not plain line
        by line (for lines whose ids are known to differ: nothing is checked between them)."""
        for start in range(0, len(raws), BATCH_LINES):
            batch, numbers = raws[start:start + BATCH_LINES], lines[start:start + BATCH_LINES]
            if self.add_plain_lines(batch, numbers) is None:
                for raw, line in zip(batch, numbers, strict=True):
                    self.add_line(raw, line)

    def _add_plain(self, acct: _Account, line: int, source: Any) -> str:
        b = self._builder
        self._columns = None
        model = acct.model
        b.start_account(acct.account_id, acct.venue, model)
        for bal in acct.balances:
            b.add_balance(bal.asset, bal.amount, bal.price_key, bal.loan_mmr,
                          b.venue_balance_table(model, bal.asset))
        for p in acct.perps:
            b.add_perp(p.symbol, p.qty, p.entry_price, p.price_key, b.perp_table(model, p.symbol, p.mmr, p.cum))
        self._sources.append(source)
        self.lines.append(line)
        return acct.account_id

    def extend(self, columns: AccountColumns, raws: Sequence[bytes], lines: Sequence[int]) -> None:
        """Accounts decoded elsewhere (another process of the same file, the same parameters)
        after those added so far: their columns, each one's JSON line (its :class:`Account`
        is built from it when asked for) and line number. The columns of all are then
        :func:`~monitor.accounts.columns.concatenated`: each entry as it was, equal tables
        shared."""
        if len(raws) != columns.n_accounts or len(lines) != columns.n_accounts:
            raise ValueError(f"{columns.n_accounts} accounts, {len(raws)} lines, {len(lines)} line numbers")
        if len(self._builder):
            self._done.append(self._builder.columns())
            self._builder = self._builder.fresh()
        self._done.append(columns)
        self._columns = None
        self._sources.extend(raws)
        self.lines.extend(lines)

    def account(self, i: int) -> Account:
        """Account ``i`` (in file order) as the model ``Account.model_validate`` gives."""
        source = self._sources[i]
        if isinstance(source, Account):
            return source
        return Account.model_validate(orjson.loads(source) if isinstance(source, bytes) else source)

    def columns(self) -> AccountColumns:
        """The columns of the accounts added, in file order."""
        if self._columns is None:
            if not self._done:
                self._columns = self._builder.columns()
            else:
                after = [self._builder.columns()] if len(self._builder) else []
                self._columns = concatenated([*self._done, *after])
        return self._columns

    def first_missing_price(self, prices: Mapping[str, float]) -> tuple[int, str, str] | None:
        """(line, field, key) of the first entry, in file order, whose price key has no
        price (``balances[i].price_key`` or ``perps[i].price_key``), else None."""
        columns = self.columns()
        missing = [k for k, key in enumerate(columns.keys) if key not in prices]
        if not missing:
            return None
        entries = np.flatnonzero(np.isin(columns.entry_key, missing))
        e = int(entries[0])
        a = int(np.searchsorted(columns.entry_start, e, side="right")) - 1
        first = int(columns.entry_start[a])
        n_balances = int((~columns.entry_is_perp[first:e]).sum())
        field = f"perps[{e - first - n_balances}]" if columns.entry_is_perp[e] else f"balances[{e - first}]"
        return self.lines[a], f"{field}.price_key", columns.keys[int(columns.entry_key[e])]
