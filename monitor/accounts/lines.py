"""``liqmon stress`` account lines decoded straight into columns (RISK_MODEL.md §3 inputs).

A decoded JSON line whose shape is the plain one (known keys only, strings non-empty,
numbers finite ints or floats within the :class:`monitor.models.margin.Account` bounds, no
``collateral_rates`` override) is checked here field by field and written to a
:class:`monitor.accounts.columns.ColumnsBuilder` without building a pydantic model. Every
other line goes through ``Account.model_validate`` (``monitor.stages.stress.parse_account``), which
either accepts it or raises the error the command has always printed: the fast check
accepts only lines the model accepts, with the same values, so a bad line gives the same
message and the same line number as before. The :class:`Account` of a line is built only
when asked for (the liquidation engine needs it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import orjson

from monitor.accounts.columns import MODELS, AccountColumns, ColumnsBuilder
from monitor.models.margin import Account

__all__ = ["AccountLines"]

_ACCOUNT_KEYS = frozenset({"account_id", "venue", "model", "balances", "perps", "collateral_rates"})
_BALANCE_KEYS = frozenset({"asset", "amount", "price_key", "loan_mmr"})
_PERP_KEYS = frozenset({"symbol", "qty", "entry_price", "price_key", "mmr", "cum"})
#: Ints beyond this are left to pydantic (float conversion, its bounds and messages).
_EXACT_INT = 2**53


def _text(value: Any) -> bool:
    return type(value) is str and len(value) > 0


def _number(value: Any) -> bool:
    if type(value) is float:
        return math.isfinite(value)
    return type(value) is int and -_EXACT_INT <= value <= _EXACT_INT


def _optional_in(value: Any, low: float, low_inclusive: bool, high: float) -> bool:
    """None, or a number in [low, high) / (low, high) (``Field(ge|gt=low, lt=high)``)."""
    if value is None:
        return True
    if not _number(value):
        return False
    return bool((value >= low if low_inclusive else value > low) and value < high)


def _plain_balance(b: Any) -> bool:
    return bool(type(b) is dict and b.keys() <= _BALANCE_KEYS and _text(b.get("asset"))
            and _text(b.get("price_key")) and _number(b.get("amount"))
            and _optional_in(b.get("loan_mmr"), 0.0, True, 1.0))


def _plain_perp(p: Any) -> bool:
    return bool(type(p) is dict and p.keys() <= _PERP_KEYS and _text(p.get("symbol"))
            and _text(p.get("price_key")) and _number(p.get("qty"))
            and _number(p.get("entry_price")) and p["entry_price"] > 0
            and _optional_in(p.get("mmr"), 0.0, False, 1.0)
            and _optional_in(p.get("cum"), 0.0, True, math.inf))


def plain_account(obj: Any) -> bool:
    """Whether a decoded line has the plain shape that ``Account.model_validate`` accepts
    unchanged (lists of balances and perps, no collateral-rate override)."""
    if type(obj) is not dict or not obj.keys() <= _ACCOUNT_KEYS or obj.get("collateral_rates") is not None:
        return False
    if not (_text(obj.get("account_id")) and _text(obj.get("venue")) and obj.get("model") in MODELS):
        return False
    balances, perps = obj.get("balances", []), obj.get("perps", [])
    return (type(balances) is list and type(perps) is list
            and all(_plain_balance(b) for b in balances) and all(_plain_perp(p) for p in perps))


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


class AccountLines:
    """Accounts of a ``--accounts`` file as columns, with each one's line number and, on
    demand, its :class:`Account` (built from the line, or the model pydantic returned)."""

    def __init__(self, builder: ColumnsBuilder, validate: Callable[[Any, int], Account]) -> None:
        self._builder = builder
        self._validate = validate
        self._sources: list[Any] = []
        self._columns: AccountColumns | None = None
        self._ids: set[str] = set()
        #: The input line of each account.
        self.lines: list[int] = []

    def __len__(self) -> int:
        return len(self.lines)

    def add(self, obj: Any, line: int, raw: bytes | None = None) -> str:
        """Check one decoded line and add it; its account id (the caller rejects duplicates).
        A line that is not plain goes to ``validate``, which raises on a bad one. With the
        line's ``raw`` JSON, a plain line keeps only those bytes (decoded again if its
        :class:`Account` is asked for), not the decoded objects."""
        b = self._builder
        self._columns = None
        if not plain_account(obj):
            acct = self._validate(obj, line)
            b.add(acct)
            self._sources.append(acct)
            self.lines.append(line)
            return acct.account_id
        model = obj["model"]
        b.start_account(obj["account_id"], obj["venue"], model)
        for bal in obj.get("balances", ()):
            b.add_balance(bal["asset"], float(bal["amount"]), bal["price_key"],
                          _optional_float(bal.get("loan_mmr")), b.venue_balance_table(model, bal["asset"]))
        for p in obj.get("perps", ()):
            mmr, cum = _optional_float(p.get("mmr")), _optional_float(p.get("cum"))
            b.add_perp(p["symbol"], float(p["qty"]), float(p["entry_price"]), p["price_key"],
                       b.perp_table(model, p["symbol"], mmr, cum))
        self._sources.append(obj if raw is None else raw)
        self.lines.append(line)
        return str(obj["account_id"])

    def account(self, i: int) -> Account:
        """Account ``i`` (in file order) as the model ``Account.model_validate`` gives."""
        source = self._sources[i]
        if isinstance(source, Account):
            return source
        return Account.model_validate(orjson.loads(source) if isinstance(source, bytes) else source)

    def columns(self) -> AccountColumns:
        """The columns of the accounts added, in file order."""
        if self._columns is None:
            self._columns = self._builder.columns()
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
