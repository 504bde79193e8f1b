"""Core of ``liqmon stress``: validate decoded inputs, evaluate positions and accounts at
shocked prices, aggregate, and run the spiral estimate (RISK_MODEL.md §2, §3, §7).

Pure: takes already-decoded JSON values; file reading lives in ``streams.cmd.stress``.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, cast

import numpy as np
from pydantic import ValidationError

from monitor.accounts.attribution import AssetSlots
from monitor.accounts.book import AccountBook, AccountFigures
from monitor.accounts.columns import MODELS, AccountColumns, ColumnsBuilder
from monitor.accounts.lines import AccountLines
from monitor.accounts.vector_engine import EngineResult, book_layout, layout_fits, liquidate_layout
from monitor.accounts.vector_margin import LIQUIDATION, status_counts
from monitor.limits import MAX_INPUT_NUMBER, MIN_INPUT_PRICE, SHOCK_RANGE, shock_move_allowed, within_input_bound
from monitor.models.loops.lending import (
    LoopBook,
    Position,
    checked_position,
    close_factor_ratio,
    collateral_usd,
    debt_usd,
    driving_price_key,
    health_factor,
    liquidation_bonus_ratio,
    liquidation_drop_pct,
)
from monitor.models.margin import STATUSES, VENUE_RATIO_NAMES, Account, liquidate_account
from monitor.risk_params import ASSUMED_DEFAULTS, RiskParams
from monitor.stages.spiral import BookAccounts, apply_shocks, run_spiral, run_spiral_on_book

__all__ = [
    "ROWS_PER_CHUNK",
    "StressInputError",
    "StressReport",
    "check_price_keys",
    "parse_account",
    "parse_books",
    "parse_position",
    "parse_prices",
    "parse_shock",
    "stress_report",
]


class StressInputError(ValueError):
    """An input problem, located by source file, line (0 = whole file) and field."""

    def __init__(self, source: str, line: int, field: str, message: str) -> None:
        self.source = source
        self.line = line
        self.field = field
        self.message = message
        where = f"{source}:{line}" if line else source
        super().__init__(f"{where}: {field}: {message}" if field else f"{where}: {message}")


def _loc(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _from_validation(exc: ValidationError, source: str, line: int) -> StressInputError:
    err = exc.errors()[0]
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    return StressInputError(source, line, _loc(err["loc"]) or "(line)", msg)


def parse_position(obj: Any, source: str, line: int, params: RiskParams) -> Position:
    """Validate one position line (strict schema, finite non-negative amounts, known e-mode)."""
    if not isinstance(obj, dict):
        raise StressInputError(source, line, "(line)", "expected a JSON object")
    try:
        return checked_position(obj, params.aave_v3)
    except ValidationError as exc:
        raise _from_validation(exc, source, line) from None


def parse_account(obj: Any, source: str, line: int) -> Account:
    """Validate one account line (strict schema, finite numbers)."""
    if not isinstance(obj, dict):
        raise StressInputError(source, line, "(line)", "expected a JSON object")
    try:
        return Account.model_validate(obj)
    except ValidationError as exc:
        raise _from_validation(exc, source, line) from None


#: What a price of the prices or books file must be.
_PRICE_RANGE = f"price must be a number from {MIN_INPUT_PRICE:.0e} to {MAX_INPUT_NUMBER:.0e}"
#: What a book level's quantity must be.
_QTY_RANGE = f"qty must be a number > 0 and at most {MAX_INPUT_NUMBER:.0e}"


def parse_prices(obj: Any, source: str) -> dict[str, float]:
    """Validate {"PRICE_KEY": price_usd}: numbers within [:data:`~monitor.limits.MIN_INPUT_PRICE`,
    :data:`~monitor.limits.MAX_INPUT_NUMBER`]."""
    if not isinstance(obj, dict):
        raise StressInputError(source, 0, "(file)", "expected a JSON object of prices")
    out: dict[str, float] = {}
    for key, value in obj.items():
        if not within_input_bound(value, low=MIN_INPUT_PRICE):
            raise StressInputError(source, 0, key, _PRICE_RANGE)
        out[key] = float(value)
    return out


def parse_books(obj: Any, source: str) -> dict[str, list[list[float]]]:
    """Validate {"PRICE_KEY": [[price, qty], ...]} bids: prices as :func:`parse_prices` takes
    them, quantities > 0 and at most :data:`~monitor.limits.MAX_INPUT_NUMBER`."""
    if not isinstance(obj, dict):
        raise StressInputError(source, 0, "(file)", "expected a JSON object of bid ladders")
    out: dict[str, list[list[float]]] = {}
    for key, levels in obj.items():
        if not isinstance(levels, list):
            raise StressInputError(source, 0, key, "expected a list of [price, qty]")
        rows: list[list[float]] = []
        for i, lvl in enumerate(levels):
            if not (isinstance(lvl, list) and len(lvl) == 2):
                raise StressInputError(source, 0, f"{key}[{i}]", "expected [price, qty]")
            if not within_input_bound(lvl[0], low=MIN_INPUT_PRICE):
                raise StressInputError(source, 0, f"{key}[{i}]", _PRICE_RANGE)
            if not (within_input_bound(lvl[1]) and lvl[1] > 0):
                raise StressInputError(source, 0, f"{key}[{i}]", _QTY_RANGE)
            rows.append([float(lvl[0]), float(lvl[1])])
        out[key] = rows
    return out


def parse_shock(text: str) -> tuple[str, float]:
    """``KEY=-35%`` (or ``KEY=-0.35``) → (key, −0.35)."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise StressInputError("--shock", 0, text, "expected KEY=PCT, e.g. USDe@binance=-35%")
    raw = raw.strip()
    try:
        value = float(raw[:-1]) / 100.0 if raw.endswith("%") else float(raw)
    except ValueError:
        raise StressInputError("--shock", 0, key, f"not a number: {raw!r}") from None
    if not shock_move_allowed(value):
        raise StressInputError("--shock", 0, key, SHOCK_RANGE)
    return key, value


def check_price_keys(
    positions: Sequence[tuple[int, Position]],
    prices: Mapping[str, float],
    *,
    positions_source: str,
    prices_source: str,
) -> None:
    """Every price key of a position line must have a price (accounts: the columnar book's
    :meth:`monitor.accounts.lines.AccountLines.first_missing_price`)."""
    for line, pos in positions:
        legs: tuple[tuple[str, Sequence[Any]], ...] = (("collateral", pos.collateral), ("debt", pos.debt))
        for field, items in legs:
            for i, item in enumerate(items):
                if item.price_key not in prices:
                    raise StressInputError(
                        positions_source, line, f"{field}[{i}].price_key",
                        f"no price for {item.price_key!r} in {prices_source}",
                    )


def _clean(value: Any) -> Any:
    """JSON-safe copy: non-finite floats become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _position_row(pos: Position, prices: Mapping[str, float], params: RiskParams) -> dict[str, Any]:
    hf = health_factor(pos, prices, params)
    liquidatable = hf < 1.0
    return {
        "position_id": pos.position_id,
        "protocol": pos.protocol,
        "health_factor": hf if math.isfinite(hf) else None,
        "liquidatable": liquidatable,
        "liquidation_drop_pct": liquidation_drop_pct(pos, prices, params),
        "driving_price_key": driving_price_key(pos, prices),
        "collateral_usd": collateral_usd(pos, prices),
        "debt_usd": debt_usd(pos, prices),
        "liquidation_bonus_ratio": liquidation_bonus_ratio(pos, params),
        "close_factor_ratio": close_factor_ratio(pos, prices, params) if liquidatable else None,
    }


def _finite(values: Any) -> list[float | None]:
    """A figure column as JSON values: NaN (no figure) and infinities become null (a
    column with none of them is handed over as it is, without a step per value)."""
    numbers: list[float] = values.tolist()
    if np.isfinite(values).all():
        return cast("list[float | None]", numbers)
    return [x if math.isfinite(x) else None for x in numbers]


def _action_rows(result: EngineResult, columns: AccountColumns) -> list[list[dict[str, Any]]]:
    """Each engine row's actions as fresh ``ForcedSell`` dicts, in the order and with the
    values of :meth:`EngineResult.actions` (collateral sells in sell order, then perp
    closes), built from :meth:`EngineResult.flat_actions` for all rows at once."""
    flat = result.flat_actions()
    order = np.lexsort((flat.place, flat.k))
    entry = flat.entry[order]
    assets = [columns.assets[a] for a in columns.entry_asset[entry].tolist()]
    keys = [columns.keys[k] for k in columns.entry_key[entry].tolist()]
    actions = [
        {"asset": asset, "price_key": key, "side": "sell" if sale else "buy", "usd": usd,
         "kind": "perp" if is_perp else "collateral"}
        for asset, key, sale, usd, is_perp in zip(assets, keys, flat.sale[order].tolist(), flat.usd[order].tolist(),
                                                  flat.is_perp[order].tolist(), strict=True)
    ]
    bounds = np.searchsorted(flat.k[order], np.arange(result.rows.shape[0] + 1)).tolist()
    return [actions[bounds[r]:bounds[r + 1]] for r in range(result.rows.shape[0])]


class _AccountRows:
    """The report's account rows from the columnar book (RISK_MODEL §3): figures at the
    shocked prices, leverage change and driving asset against the unshocked ones, and the
    engine's forced sells for the accounts in liquidation only: the batch engine of
    :mod:`monitor.accounts.vector_engine` (equal to :func:`monitor.models.margin.liquidate_account`), the
    scalar one for the accounts it does not lay out. The forced sells and their sums by
    asset are settled when the rows are laid out; the rows themselves are built a slice at a
    time (:meth:`rows`), so a writer need not hold them all."""

    def __init__(self, accounts: AccountLines, prices: Mapping[str, float],
                 shocked: Mapping[str, float], params: RiskParams) -> None:
        columns = accounts.columns()
        book = AccountBook(columns, prices, params)
        #: The book, left at the shocked prices (the spiral goes on from there).
        self.book = book
        slots = AssetSlots(book)
        before, equity_before = book.figures(), slots.equity_usd(book)
        book.move({k: v for k, v in shocked.items() if v != prices.get(k)})
        self.after: AccountFigures = book.figures()
        haircut, held = slots.haircut_usd(book)
        driver = slots.driving_asset(equity_before, slots.equity_usd(book), haircut, held)
        self.driver = [columns.assets[a] if a >= 0 else None for a in driver.tolist()]
        self.ids, self.venues = columns.ids, columns.venues
        self.models = [MODELS[m] for m in columns.model.tolist()]
        self.leverage_change = _finite(self.after.effective_leverage - before.effective_leverage)
        self.accounts, self.shocked, self.params = accounts, shocked, params
        #: (forced sells, uncovered shortfall) of each account in liquidation, by account number.
        self.liquidated = self._engine()
        self._liquidated_at = list(self.liquidated)  # account numbers, ascending
        #: Σ USD of the engine's sells by asset, in account order.
        self.sells_by_asset = _sells_by_asset(self.liquidated)

    def __len__(self) -> int:
        return len(self.ids)

    def by_status(self) -> dict[str, int]:
        """Accounts by status name at the shocked prices (every status named, 0 included)."""
        counts = status_counts(self.after.status)
        return dict(zip(STATUSES, counts, strict=True))

    def _engine(self) -> dict[int, tuple[list[dict[str, Any]], float | None]]:
        """(actions, uncovered shortfall) of each account in liquidation, by account number,
        JSON-safe (non-finite figures null)."""
        book = self.book
        rows = book.rows_of(np.flatnonzero(self.after.status == LIQUIDATION))
        layout = book_layout(book, rows)  # laid out once: the fit test and the engine share it
        fits = layout_fits(book.columns, layout.model, layout.balance, layout.perp, self.params)
        out: dict[int, tuple[list[dict[str, Any]], float | None]] = {}
        for result in liquidate_layout(book.columns, layout if fits.all() else layout.take(fits), self.params):
            shortfall = result.uncovered_usd
            assert shortfall is not None  # asked for (the default)
            for row, actions, short in zip(result.rows.tolist(), _action_rows(result, book.columns),
                                           _finite(shortfall), strict=True):
                out[int(book.order[row])] = (actions, short)
        for row in rows[~fits].tolist():
            i = int(book.order[row])
            _, sells, short = liquidate_account(self.accounts.account(i), self.shocked, self.params)
            out[i] = ([s.model_dump() for s in sells], short if math.isfinite(short) else None)
        return dict(sorted(out.items()))

    def rows(self, start: int = 0, stop: int | None = None) -> list[dict[str, Any]]:
        """One row per account of ``start:stop``, in input order, with the keys and the
        JSON-safe values (non-finite figures null) of the scalar report; the engine's
        forced sells in the rows of the accounts in liquidation."""
        f, cut = self.after, slice(start, stop)
        out = [
            {"account_id": aid, "venue": venue, "model": model, "uni_mmr": ratio,
             "venue_ratio_name": VENUE_RATIO_NAMES[model], "venue_ratio": venue_ratio,
             "adjusted_equity_usd": equity, "maintenance_margin_usd": mm, "status": STATUSES[status],
             "backstop": backstop, "gross_notional_usd": gross, "effective_leverage": lev,
             "effective_leverage_change": change, "driving_asset": driver, "forced_sells": [],
             "uncovered_shortfall_usd": 0.0}
            for aid, venue, model, ratio, venue_ratio, equity, mm, status, backstop, gross, lev, change, driver
            in zip(self.ids[cut], self.venues[cut], self.models[cut], _finite(f.uni_mmr[cut]),
                   _finite(f.venue_ratio[cut]), _finite(f.adjusted_equity_usd[cut]),
                   _finite(f.maintenance_margin_usd[cut]), f.status[cut].tolist(), f.backstop[cut].tolist(),
                   _finite(f.gross_notional_usd[cut]), _finite(f.effective_leverage[cut]),
                   self.leverage_change[cut], self.driver[cut], strict=True)
        ]
        first = range(len(self))[cut].start
        at = self._liquidated_at
        for i in at[bisect.bisect_left(at, first):bisect.bisect_left(at, first + len(out))]:
            sells, short = self.liquidated[i]
            row = out[i - first]
            row["forced_sells"] = [dict(sale) for sale in sells]  # a row's own dicts
            row["uncovered_shortfall_usd"] = short
        return out


def _sells_by_asset(liquidated: Mapping[int, tuple[list[dict[str, Any]], float | None]]) -> dict[str, float]:
    """Σ USD of the sells by asset, added in account order; a non-finite sale's ``usd`` is
    made null (JSON-safe) once it is added."""
    sums: dict[str, float] = {}
    for sells, _short in liquidated.values():
        for sale in sells:
            usd = sale["usd"]
            if sale["side"] == "sell":
                sums[sale["asset"]] = sums.get(sale["asset"], 0.0) + usd
            if not math.isfinite(usd):
                sale["usd"] = None
    return sums


def account_lines(accounts: Sequence[Account] | AccountLines, params: RiskParams) -> AccountLines:
    """Accounts as :class:`AccountLines` (validated models are added as they are)."""
    if isinstance(accounts, AccountLines):
        return accounts
    lines = AccountLines(ColumnsBuilder(params), lambda acct, _line: acct)
    for n, acct in enumerate(accounts, start=1):
        lines.add(acct, n)
    return lines


#: Account rows built and handed out together by :meth:`StressReport.account_chunks`.
ROWS_PER_CHUNK = 4096


class StressReport:
    """A stress report as its document without the account rows (``"accounts": []``) and
    the rows, built a chunk at a time for a writer that streams them
    (:meth:`account_chunks`), or all at once in the document (:meth:`document`)."""

    def __init__(self, head: dict[str, Any], accounts: _AccountRows | None) -> None:
        #: The report with ``"accounts": []``: every other key, JSON-safe.
        self.head = head
        self._accounts = accounts

    @property
    def n_accounts(self) -> int:
        """Account rows in the report."""
        return len(self._accounts) if self._accounts is not None else 0

    @property
    def n_chunks(self) -> int:
        """Chunks :meth:`account_chunks` hands out in all."""
        return -(-self.n_accounts // ROWS_PER_CHUNK)

    def account_chunks(self, first: int = 0, every: int = 1) -> Iterator[list[dict[str, Any]]]:
        """The account rows in input order, :data:`ROWS_PER_CHUNK` at a time: the chunks
        ``first``, ``first + every``, … (all by default; writers in several processes take
        turns)."""
        if self._accounts is None:
            return
        step = ROWS_PER_CHUNK  # read when called: tests make chunks small
        for start in range(first * step, len(self._accounts), every * step):
            yield self._accounts.rows(start, start + step)

    def document(self) -> dict[str, Any]:
        """The whole report, the account rows in it."""
        rows = self._accounts.rows() if self._accounts is not None else []
        return {**self.head, "accounts": rows}


def stress_report(
    positions: Sequence[Position],
    accounts: Sequence[Account] | AccountLines,
    prices: Mapping[str, float],
    *,
    shocks: Mapping[str, float] | None = None,
    books: Mapping[str, Sequence[Sequence[float]]] | None = None,
    params: RiskParams | None = None,
) -> StressReport:
    """One stress report: positions and accounts at shocked prices, aggregates, spiral.
    ``accounts`` as :class:`AccountLines` must have been decoded with the same ``params``."""
    p = params or RiskParams()
    lines = account_lines(accounts, p)
    shocks = dict(shocks or {})
    shocked = apply_shocks(prices, shocks)
    pos_rows = [_position_row(pos, shocked, p) for pos in positions]
    evaluated = _AccountRows(lines, prices, shocked, p) if len(lines) else None
    by_status = evaluated.by_status() if evaluated is not None else dict.fromkeys(STATUSES, 0)
    sells_by_asset = evaluated.sells_by_asset if evaluated is not None else {}
    lending = LoopBook.from_positions(positions, shocked, p).aggregates() if positions else []
    report: dict[str, Any] = {
        "config_id": p.config_id(),
        "assumed_parameters": list(ASSUMED_DEFAULTS),
        "hyperliquid_margin_tables_source": p.unified.hyperliquid.margin_tables_source,
        "perp_tables_sources": {
            "bybit-uta": p.unified.bybit_uta.perp_tables_source,
            "okx-mc": p.unified.okx_mc.perp_tables_source,
        },
        "shocks_pct": {k: v * 100.0 for k, v in shocks.items()},
        "prices": dict(sorted(shocked.items())),
        "positions": pos_rows,
        "accounts": [],
        "aggregates": {
            "positions": len(pos_rows),
            "positions_liquidatable": sum(1 for r in pos_rows if r["liquidatable"]),
            "positions_liquidatable_debt_usd": math.fsum(
                r["debt_usd"] for r in pos_rows if r["liquidatable"]
            ),
            "lending": lending,
            "accounts": len(evaluated) if evaluated is not None else 0,
            "accounts_by_status": by_status,
            "forced_sells_usd_by_asset": dict(sorted(sells_by_asset.items())),
        },
    }
    if books is not None:
        if evaluated is None:
            spiral = run_spiral(positions, [], prices, books, shocks=shocks, params=p)
        else:
            on_book = BookAccounts(evaluated.book, lines.account)
            spiral = run_spiral_on_book(positions, on_book, prices, books, shocks=shocks, params=p)
        report["spiral"] = spiral.model_dump()
    return StressReport(_clean(report), evaluated)

