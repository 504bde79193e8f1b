"""Spiral estimate (RISK_MODEL.md §7): shock → liquidations → forced sells walked down the
current bid ladders → new prices → repeat until nothing new is liquidated."""

from __future__ import annotations

import functools
import math
import queue
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict

from monitor.accounts.book import AccountBook
from monitor.accounts.changed import ChangedAccounts
from monitor.accounts.columns import FloatArray, IntArray
from monitor.accounts.vector_engine import EngineResult, book_layout, layout_fits, liquidate_layout
from monitor.accounts.vector_margin import LIQUIDATION, ModelLines
from monitor.models.loops.lending import (
    Position,
    close_factor_ratio,
    health_factor,
    liquidation_bonus_ratio,
)
from monitor.models.loops.screen import PositionScreen
from monitor.models.margin import Account, ForcedSell, evaluate_account, liquidate_account
from monitor.risk_params import RiskParams

__all__ = [
    "STAGE_ONCHAIN",
    "STAGE_UNIFIED",
    "BidBook",
    "BookAccounts",
    "PositionLayout",
    "SpiralResult",
    "apply_shocks",
    "route_book_key",
    "run_spiral",
    "run_spiral_on_book",
    "run_spirals_on_book",
    "walk_bids",
]

STAGE_ONCHAIN = 5
STAGE_UNIFIED = 7
_DUST_USD = 1e-6

BidBook = Sequence[Sequence[float]]
"""Bids as [[price, qty], ...]; any order (sorted best first internally)."""


class SpiralResult(BaseModel):
    """Outcome of one spiral run (all notionals in USD at the price of the round)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rounds: int
    converged: bool
    liquidated_usd_by_stage: dict[str, float]
    liquidated_usd_by_venue: dict[str, float]
    debt_repaid_usd: float
    positions_liquidated: list[str]
    accounts_liquidated: list[str]
    sold_qty_by_book: dict[str, float]
    final_prices: dict[str, float]
    price_change_pct: dict[str, float]
    books_exhausted: list[str]
    unfilled_qty_by_book: dict[str, float]
    unrouted_sells_usd: dict[str, float]


@functools.cache
def _default_params() -> RiskParams:
    return RiskParams()


def apply_shocks(prices: Mapping[str, float], shocks: Mapping[str, float]) -> dict[str, float]:
    """Shocked prices: price_k × (1 + move_k) (RISK_MODEL §7)."""
    out = dict(prices)
    for key, move in shocks.items():
        if key not in out:
            raise KeyError(f"shock on unknown price key {key!r}")
        if not move > -1.0:
            raise ValueError(f"shock on {key!r} must be greater than -100%")
        out[key] = out[key] * (1.0 + move)
    return out


def route_book_key(asset: str, price_key: str, books: Mapping[str, object]) -> str | None:
    """Book a sale goes to: the price key's book, else the asset index, else ASSET@venue."""
    if price_key in books:
        return price_key
    if asset in books:
        return asset
    venues = sorted(k for k in books if k.startswith(asset + "@"))
    return venues[0] if venues else None


def walk_bids(levels: list[list[float]], qty: float) -> tuple[float, float, float | None]:
    """Sell ``qty`` into best-first bids (consumed in place): (filled, unfilled, last price)."""
    filled = 0.0
    last: float | None = None
    for level in levels:
        if qty - filled <= 0:
            break
        if level[1] <= 0:
            continue
        take = min(level[1], qty - filled)
        level[1] -= take
        filled += take
        last = level[0]
    return filled, max(0.0, qty - filled), last


def _liquidate_position(
    pos: Position, prices: Mapping[str, float], params: RiskParams
) -> tuple[Position, float, list[tuple[str, str, float, float]]]:
    """One liquidation call: (position after, debt repaid USD, [(asset, key, qty, usd)] seized)."""
    debt_total = math.fsum(d.amount * prices[d.price_key] for d in pos.debt)
    coll_total = math.fsum(c.amount * prices[c.price_key] for c in pos.collateral)
    bonus = liquidation_bonus_ratio(pos, params)
    cf = close_factor_ratio(pos, prices, params)
    seize_usd = min(cf * debt_total * (1.0 + bonus), coll_total)
    repay_usd = seize_usd / (1.0 + bonus)
    new_debt = []
    left = repay_usd
    for d in sorted(pos.debt, key=lambda d: -d.amount * prices[d.price_key]):
        usd = d.amount * prices[d.price_key]
        take = min(left, usd)
        left -= take
        amount = max(0.0, d.amount - take / prices[d.price_key])
        new_debt.append(d.model_copy(update={"amount": amount}))
    seized: list[tuple[str, str, float, float]] = []
    new_coll = []
    left = seize_usd
    for c in sorted(pos.collateral, key=lambda c: -c.amount * prices[c.price_key]):
        usd = c.amount * prices[c.price_key]
        take = min(left, usd)
        left -= take
        qty = min(c.amount, take / prices[c.price_key])
        if qty > 0:
            seized.append((c.asset, c.price_key, qty, take))
        new_coll.append(c.model_copy(update={"amount": max(0.0, c.amount - qty)}))
    after = pos.model_copy(update={"collateral": tuple(new_coll), "debt": tuple(new_debt)})
    return after, repay_usd, seized


class _SpiralRun:
    """The state of one spiral (§7): prices, bid ladders, positions and accounts as they go."""

    def __init__(
        self,
        positions: Sequence[Position],
        accounts: Sequence[Account],
        prices: Mapping[str, float],
        books: Mapping[str, BidBook],
        shocks: Mapping[str, float],
        p: RiskParams,
    ) -> None:
        self.p = p
        self.start = dict(prices)
        px = apply_shocks(prices, shocks)
        for key, book in books.items():
            px.setdefault(key, max((lvl[0] for lvl in book), default=0.0))
        for venue in (p.unified.binance_pm, p.unified.bybit_uta, p.unified.okx_mc, p.unified.hyperliquid.venue):
            px.setdefault(venue.settlement_asset, 1.0)
        self.px = px
        # a shocked key's whole ladder moves with it: the shock is the new level of the market
        self.levels = {
            k: sorted(
                ([float(a) * (1.0 + shocks.get(k, 0.0)), float(b)] for a, b in book),
                key=lambda lv: -lv[0],
            )
            for k, book in books.items()
        }
        self.pos_state = list(positions)
        self.acct_state = list(accounts)
        self.by_stage = {str(STAGE_ONCHAIN): 0.0, str(STAGE_UNIFIED): 0.0}
        self.by_venue: dict[str, float] = {}
        self.repaid_total = 0.0
        self.liq_pos: set[str] = set()
        self.liq_acct: set[str] = set()
        self.sold: dict[str, float] = {}
        self.unfilled: dict[str, float] = {}
        self.unrouted: dict[str, float] = {}
        self.to_sell: dict[str, float] = {}

    def _queue(self, asset: str, key: str, qty: float, usd: float) -> None:
        book_key = route_book_key(asset, key, self.levels)
        if book_key is None:
            self.unrouted[key] = self.unrouted.get(key, 0.0) + usd
            return
        # books are quoted in units of the asset, whatever key valued the collateral
        self.to_sell[book_key] = self.to_sell.get(book_key, 0.0) + qty

    def positions_to_check(self) -> Iterable[int]:
        """The positions stage 5 looks at this round, in order: every one (the reference)."""
        return range(len(self.pos_state))

    def position_changed(self, i: int) -> None:
        """Stage 5 has just liquidated position ``i`` (the reference keeps no note of it)."""

    def liquidate_positions(self) -> int:
        """Stage 5: liquidators repay and seize; the seized collateral is queued for sale."""
        p, px, events = self.p, self.px, 0
        for i in self.positions_to_check():
            pos = self.pos_state[i]
            debt = math.fsum(d.amount * px[d.price_key] for d in pos.debt)
            if debt <= _DUST_USD or health_factor(pos, px, p) >= 1.0:
                continue
            after, repaid, seized = _liquidate_position(pos, px, p)
            if not seized:
                continue
            events += 1
            self.pos_state[i] = after
            self.position_changed(i)
            self.liq_pos.add(pos.position_id)
            self.repaid_total += repaid
            for asset, key, qty, usd in seized:
                self.by_stage[str(STAGE_ONCHAIN)] += usd
                self.by_venue[pos.protocol] = self.by_venue.get(pos.protocol, 0.0) + usd
                self._queue(asset, key, qty * p.spiral.liquidator_sell_ratio, usd * p.spiral.liquidator_sell_ratio)
        return events

    def liquidate_accounts(self) -> int:
        """Stage 7: the venues' engines liquidate unified accounts; their sells are queued."""
        p, px, events = self.p, self.px, 0
        for i, acct in enumerate(self.acct_state):
            if evaluate_account(acct, px, p).status != "liquidation":
                continue
            after = self.liquidate(acct)
            if after is not None:
                self.acct_state[i] = after
                events += 1
        return events

    def liquidate(self, acct: Account) -> Account | None:
        """One account through its venue's engine (``liquidate_account``): its sells are
        queued and counted; the account after the engine, None when the engine did nothing."""
        after_acct, actions, _ = liquidate_account(acct, self.px, self.p)
        if not actions:
            return None
        self.queue_actions(acct.account_id, acct.venue, actions)
        return after_acct

    def queue_actions(self, account_id: str, venue: str, actions: Sequence[ForcedSell]) -> None:
        """An account's engine actions counted by stage and venue; its sells queued."""
        px = self.px
        self.liq_acct.add(account_id)
        for act in actions:
            self.by_stage[str(STAGE_UNIFIED)] += act.usd
            self.by_venue[venue] = self.by_venue.get(venue, 0.0) + act.usd
            if act.side == "sell":
                qty = act.usd / px[act.price_key]
                asset = act.asset if act.kind == "collateral" else act.price_key
                self._queue(asset, act.price_key, qty, act.usd)

    def sell_queued(self) -> None:
        """Walk each book's bids with what was queued; its key takes the best remaining bid."""
        levels, px = self.levels, self.px
        for key, qty in self.to_sell.items():
            filled, rest, _ = walk_bids(levels[key], qty)
            self.sold[key] = self.sold.get(key, 0.0) + filled
            if rest > 0:
                self.unfilled[key] = self.unfilled.get(key, 0.0) + rest
            remaining = [lv[0] for lv in levels[key] if lv[1] > 0]
            new_px = remaining[0] if remaining else levels[key][-1][0] if levels[key] else px[key]
            px[key] = min(px[key], new_px)

    def accounts_liquidated(self) -> list[str]:
        """Ids of the accounts liquidated, sorted."""
        return sorted(self.liq_acct)

    def result(self, rounds: int, converged: bool) -> SpiralResult:
        px, start = self.px, self.start
        exhausted = sorted(k for k, lv in self.levels.items() if lv and all(x[1] <= 0 for x in lv))
        change = {k: (px[k] / start[k] - 1.0) * 100.0 for k in sorted(start) if start[k] > 0}
        return SpiralResult(
            rounds=rounds,
            converged=converged,
            liquidated_usd_by_stage=self.by_stage,
            liquidated_usd_by_venue=dict(sorted(self.by_venue.items())),
            debt_repaid_usd=self.repaid_total,
            positions_liquidated=sorted(self.liq_pos),
            accounts_liquidated=self.accounts_liquidated(),
            sold_qty_by_book=dict(sorted(self.sold.items())),
            final_prices={k: px[k] for k in sorted(px)},
            price_change_pct=change,
            books_exhausted=exhausted,
            unfilled_qty_by_book=dict(sorted(self.unfilled.items())),
            unrouted_sells_usd=dict(sorted(self.unrouted.items())),
        )


def run_spiral(
    positions: Sequence[Position],
    accounts: Sequence[Account],
    prices: Mapping[str, float],
    books: Mapping[str, BidBook],
    *,
    shocks: Mapping[str, float] | None = None,
    params: RiskParams | None = None,
) -> SpiralResult:
    """Iterate liquidations and forced sells against the bid ladders until nothing new (§7).

    On-chain positions (stage 5): liquidators repay close-factor × debt, seize collateral with
    the bonus and sell it. Unified accounts (stage 7): the engine's forced sells. Sales hit
    the book of the collateral's price key, else of its asset index, else ``ASSET@venue``;
    a book's key takes the best remaining bid (never rises). Buys (short closes) are not
    walked; a key without a book keeps its price and the sale is reported as unrouted.
    A shocked key's bid ladder is scaled by the same move before the first round.
    """
    p = params or _default_params()
    return _rounds(_SpiralRun(positions, accounts, prices, books, shocks or {}, p))


@dataclass(frozen=True)
class BookAccounts:
    """Unified accounts held in a columnar book, with a way to get one as an
    :class:`Account` (for the liquidation engine) by its number in the book."""

    book: AccountBook
    account: Callable[[int], Account]


def _sequential_sum(start: float, values: FloatArray) -> float:
    """start + v_0 + v_1 + … added left to right, as a Python loop adds them."""
    return float(np.add.accumulate(np.concatenate([[start], values]))[-1])


class _RoundActions:
    """One round's engine actions of many accounts as arrays, counted and queued in
    (account, place) order — the order :meth:`_SpiralRun.queue_actions` takes them in one
    by one — with each total summed left to right (RISK_MODEL §7). Venues are codes into
    ``venues``."""

    def __init__(self, venues: Sequence[str]) -> None:
        self._parts: list[tuple[IntArray, IntArray, FloatArray, npt.NDArray[np.bool_], IntArray, IntArray]] = []
        self.pairs: dict[tuple[str, str], int] = {}
        self.venues = venues
        self.ids: list[str] = []

    def pair(self, asset: str, key: str) -> int:
        """Id of a (queued asset, price key) pair."""
        return self.pairs.setdefault((asset, key), len(self.pairs))

    def add(self, account: IntArray, place: IntArray, usd: FloatArray, sell: npt.NDArray[np.bool_],
            pair: IntArray, venue: IntArray) -> None:
        """Actions (account number, place among its actions, USD, is a sale, pair id, venue code)."""
        self._parts.append((account, place, usd, sell, pair, venue))

    def add_scalar(self, i: int, account_id: str, venue: int, actions: Sequence[ForcedSell]) -> None:
        """One account's actions from the scalar engine (``venue``: its venue's code)."""
        self.ids.append(account_id)
        n = len(actions)
        self.add(np.full(n, i, dtype=np.int64), np.arange(n, dtype=np.int64),
                 np.array([a.usd for a in actions], dtype=np.float64),
                 np.array([a.side == "sell" for a in actions], dtype=np.bool_),
                 np.array([self.pair(a.asset if a.kind == "collateral" else a.price_key, a.price_key)
                           for a in actions], dtype=np.int64), np.full(n, venue, dtype=np.int64))

    def queue(self, run: _SpiralRun) -> None:
        """Stage and venue totals, scalar accounts liquidated, sells queued on their bid books."""
        run.liq_acct.update(self.ids)
        if not self._parts:
            return
        account, place, usd, sell, pair, venue = (np.concatenate([q[j] for q in self._parts]) for j in range(6))
        if account.size == 0:
            return
        # (account, place) pairs are distinct: one sort of a combined key orders them
        order = np.argsort(account * (int(place.max()) + 1) + place)
        usd, sell, pair, venue = usd[order], sell[order], pair[order], venue[order]
        stage = str(STAGE_UNIFIED)
        run.by_stage[stage] = _sequential_sum(run.by_stage[stage], usd)
        for code in np.flatnonzero(np.bincount(venue)).tolist():  # few codes: no sort
            name = self.venues[code]
            run.by_venue[name] = _sequential_sum(run.by_venue.get(name, 0.0), usd[venue == code])
        names = list(self.pairs)
        key_px = np.array([run.px[k] for _, k in names], dtype=np.float64)
        routes = [route_book_key(a, k, run.levels) for a, k in names]
        usd, pair = usd[sell], pair[sell]
        qty = usd / key_px[pair]
        # each pair's bin: its book (routed), else its price key (unrouted); a mask per bin
        routed = sorted({r for r in routes if r is not None})
        unrouted = sorted({names[j][1] for j, r in enumerate(routes) if r is None})
        index = {b: i for i, b in enumerate([*(("book", r) for r in routed), *(("key", k) for k in unrouted)])}
        bin_of = np.array([index[("book", r) if r is not None else ("key", names[j][1])]
                           for j, r in enumerate(routes)], dtype=np.int64)[pair]
        for b, target in enumerate(routed):
            mine = bin_of == b
            if mine.any():
                run.to_sell[target] = _sequential_sum(run.to_sell.get(target, 0.0), qty[mine])
        for b, key in enumerate(unrouted, start=len(routed)):
            mine = bin_of == b
            if mine.any():
                run.unrouted[key] = _sequential_sum(run.unrouted.get(key, 0.0), usd[mine])


def position_holders(positions: Sequence[Position]) -> dict[str, list[int]]:
    """The positions (by index) valued on each price key, collateral or debt."""
    out: dict[str, list[int]] = {}
    for i, pos in enumerate(positions):
        for key in pos.price_keys():
            out.setdefault(key, []).append(i)
    return out


@dataclass(frozen=True)
class PositionLayout:
    """What every spiral over the same positions shares: :func:`position_holders` and the
    :class:`monitor.models.loops.screen.PositionScreen` (both depend on the positions and
    the parameters only, never on prices)."""

    positions: tuple[Position, ...]
    holders: dict[str, list[int]]
    screen: PositionScreen | None

    @classmethod
    def of(cls, positions: Sequence[Position], params: RiskParams) -> PositionLayout:
        """The layout of ``positions``, in their order."""
        return cls(tuple(positions), position_holders(positions),
                   PositionScreen.of(positions, params) if positions else None)

    def lays_out(self, positions: Sequence[Position]) -> bool:
        """Whether this is the layout of ``positions``: the same objects in the same order
        (positions are immutable models; an upsert replaces the object). The parameters
        are the caller's to keep the same."""
        mine = self.positions
        return len(mine) == len(positions) and all(a is b for a, b in zip(mine, positions, strict=True))


class _BookSpiralRun(_SpiralRun):
    """A spiral whose stage 7 runs on a columnar book. An account the engine has not touched
    is evaluated there (only those holding a moved key are re-evaluated). The engine is the
    batch engine of :mod:`monitor.accounts.vector_engine` (equal to ``liquidate_account``); an
    account it has changed keeps its balances and perp quantities beside the book
    (:class:`monitor.accounts.changed.ChangedAccounts`) and is re-evaluated there each
    round. Accounts the batch engine does not lay out go through the scalar engine and are
    evaluated by ``evaluate_account`` from then on. Actions are queued in account order, as
    :func:`run_spiral` queues them, so every sum runs in the same order.

    Stage 5 looks again, after its first round, only at the positions it liquidated in the
    last round and those holding a key the last sales moved: any other has the prices and
    the amounts it had when it was found healthy (or too small to liquidate), so it still is.
    In the first round a :class:`monitor.models.loops.screen.PositionScreen` rules out at
    once the positions that pass the check with room to spare.
    """

    #: Positions stage 5 looks at next round (None: all, in the first).
    recheck: set[int] | None
    _holders: Mapping[str, Sequence[int]] | None
    _screen: PositionScreen | None

    def positions_to_check(self) -> Iterable[int]:
        """In the first round every position the screen leaves, then those noted in the last
        (and a new note begins)."""
        look, self.recheck = self.recheck, set()
        if look is not None:
            return sorted(look)
        found = self._screen.candidates(self.px, _DUST_USD) if self._screen is not None else None
        return range(len(self.pos_state)) if found is None else found

    def position_changed(self, i: int) -> None:
        """Noted: looked at again next round."""
        assert self.recheck is not None  # set by positions_to_check
        self.recheck.add(i)

    def sell_queued(self) -> None:
        """:meth:`_SpiralRun.sell_queued`; the holders of each key it moved are looked at again."""
        px = self.px
        before = [(key, px[key]) for key in self.to_sell]
        super().sell_queued()
        moved = [key for key, was in before if px[key] != was]
        if moved and self.pos_state:
            if self._holders is None:
                self._holders = position_holders(self.pos_state)
            assert self.recheck is not None
            for key in moved:
                self.recheck.update(self._holders.get(key, ()))

    def __init__(self, positions: Sequence[Position], accounts: BookAccounts, prices: Mapping[str, float],
                 books: Mapping[str, BidBook], shocks: Mapping[str, float], p: RiskParams,
                 holders: Mapping[str, Sequence[int]] | None = None, screen: PositionScreen | None = None) -> None:
        super().__init__(positions, (), prices, books, shocks, p)
        self.accounts = accounts
        self.recheck = None
        self._holders = holders
        self._screen = screen if screen is not None or not positions else PositionScreen.of(positions, p)
        self.changed: dict[int, Account] = {}
        book = accounts.book
        self.edited = ChangedAccounts(book.columns, ModelLines.from_params(p))
        #: Book rows the batch engine has acted on.
        self.acted = np.zeros(book.columns.n_accounts, dtype=np.bool_)

    def _queue_results(self, results: list[EngineResult], out: _RoundActions, *, new: bool) -> int:
        """Results of the batch engine on book rows: actions added to ``out``, the rows that
        acted kept in ``edited`` (``new``: not there yet); the number of rows that acted."""
        book = self.accounts.book
        cols, (_, venue_code) = book.columns, book.venue_codes
        names = [*cols.assets, *cols.keys]
        events = 0
        for result in results:
            acted = result.acted()
            rows = result.rows[acted]
            events += int(rows.shape[0])
            self.acted[rows] = True
            fa = result.flat_actions()
            key = cols.entry_key[fa.entry]
            code = np.where(fa.is_perp, len(cols.assets) + key, cols.entry_asset[fa.entry]).astype(np.int64)
            code = code * len(cols.keys) + key
            uniq = np.flatnonzero(np.bincount(code, minlength=1))  # few codes: no sort
            pair_of = np.zeros(int(uniq[-1]) + 1 if uniq.size else 1, dtype=np.int64)
            pair_of[uniq] = [out.pair(names[u // len(cols.keys)], cols.keys[u % len(cols.keys)])
                             for u in uniq.tolist()]
            row = result.rows[fa.k]
            out.add(book.order[row], fa.place, fa.usd, fa.sale, pair_of[code], venue_code[row])
            if new:
                self.edited.add(rows, result.balance[acted], result.perp[acted], result.balance_after[acted],
                                result.perp_qty_after[acted])
            else:
                self.edited.update(rows, result.balance_after[acted], result.perp_qty_after[acted])
        return events

    def liquidate_accounts(self) -> int:
        """Stage 7 on the book: the accounts in liquidation at the round's prices."""
        book, px, p = self.accounts.book, self.px, self.p
        book.move({k: px[k] for k in book.columns.keys})
        rows = book.rows_in_status(LIQUIDATION)  # in row order: actions are queued by account
        skip = self.edited.member
        skip[book.rows_of(np.array(sorted(self.changed), dtype=np.int64))] = True  # the scalar engine's
        rows = rows[~skip[rows]]
        main = book_layout(book, rows)
        fits = layout_fits(book.columns, main.model, main.balance, main.perp, p)
        actions = _RoundActions(book.venue_codes[0])
        layout, status = self.edited.evaluate(book.prices)  # before this round's rows join it
        again_rows = layout.take(status == LIQUIDATION)
        events = self._queue_results(liquidate_layout(book.columns, again_rows, p, shortfall=False), actions,
                                     new=False)
        main = main if fits.all() else main.take(fits)
        events += self._queue_results(liquidate_layout(book.columns, main, p, shortfall=False), actions, new=True)
        again = [i for i, acct in self.changed.items()
                 if evaluate_account(acct, px, p, with_forced_sells=False).status == "liquidation"]
        for i in sorted({*again, *(int(book.order[r]) for r in rows[~fits].tolist())}):
            acct = self.changed[i] if i in self.changed else self.accounts.account(i)
            after, sells, _ = liquidate_account(acct, px, p)
            if sells:
                row = int(book.rows_of(np.array([i]))[0])
                actions.add_scalar(i, acct.account_id, int(book.venue_codes[1][row]), sells)
                self.changed[i] = after
                events += 1
        actions.queue(self)
        return events

    def accounts_liquidated(self) -> list[str]:
        """Ids of the accounts liquidated, sorted: the batch engine's from the book's id
        order, the scalar engine's merged in."""
        book = self.accounts.book
        by_id, unique = book.rows_by_id
        out = list(map(book.columns.ids.__getitem__, by_id[self.acted[by_id]].tolist()))
        out = out if unique else list(dict.fromkeys(out))  # an id once, as in a set
        return sorted({*out, *self.liq_acct}) if self.liq_acct else out


def run_spiral_on_book(
    positions: Sequence[Position],
    accounts: BookAccounts,
    prices: Mapping[str, float],
    books: Mapping[str, BidBook],
    *,
    shocks: Mapping[str, float] | None = None,
    params: RiskParams | None = None,
    holders: Mapping[str, Sequence[int]] | None = None,
    screen: PositionScreen | None = None,
) -> SpiralResult:
    """:func:`run_spiral` with the unified accounts of a columnar book (RISK_MODEL §7): the
    same result; each round re-evaluates only the accounts holding a key that moved and
    runs the engine only on the accounts in liquidation, and looks again only at the
    positions whose prices or amounts moved. The book is left at the last round's prices;
    its accounts are not changed (the engine's results live in the run). ``holders``:
    :func:`position_holders` of ``positions``, and ``screen``: their
    :class:`monitor.models.loops.screen.PositionScreen`, when several runs share them."""
    p = params or _default_params()
    return _rounds(_BookSpiralRun(positions, accounts, prices, books, shocks or {}, p, holders, screen))


def run_spirals_on_book(
    positions: Sequence[Position],
    accounts: BookAccounts,
    prices: Mapping[str, float],
    books: Mapping[str, BidBook],
    shocks: Sequence[Mapping[str, float]],
    *,
    params: RiskParams | None = None,
    threads: int = 1,
    layout: PositionLayout | None = None,
) -> list[SpiralResult]:
    """:func:`run_spiral_on_book` for each of several shocks, in their order, on up to
    ``threads`` threads. Each thread runs on a book of its own (the given one, or a
    :meth:`AccountBook.copy` of it): a book's figures depend on its prices only, so the
    results are those of one run after the other, whatever the thread count. numpy's loops
    release the interpreter lock, so two cores run two spirals at once. ``layout``: the
    positions' :class:`PositionLayout`, when the caller keeps one between runs."""
    n = min(threads, len(shocks))
    if layout is None or not layout.lays_out(positions):
        layout = PositionLayout.of(positions, params or _default_params())
    holders, screen = layout.holders, layout.screen
    if n <= 1:
        return [run_spiral_on_book(positions, accounts, prices, books, shocks=s, params=params, holders=holders,
                                   screen=screen)
                for s in shocks]
    free: queue.SimpleQueue[BookAccounts] = queue.SimpleQueue()
    free.put(accounts)
    for _ in range(n - 1):
        free.put(BookAccounts(accounts.book.copy(), accounts.account))

    def one(shock: Mapping[str, float]) -> SpiralResult:
        mine = free.get()
        try:
            return run_spiral_on_book(positions, mine, prices, books, shocks=shock, params=params, holders=holders,
                                      screen=screen)
        finally:
            free.put(mine)

    # the largest shocks first (longest-processing-time first: the threads end together)
    order = sorted(range(len(shocks)), key=lambda i: -sum(abs(m) for m in shocks[i].values()))
    with ThreadPoolExecutor(max_workers=n, thread_name_prefix="liqmon-spiral") as pool:
        done = dict(zip(order, pool.map(one, [shocks[i] for i in order]), strict=True))
    return [done[i] for i in range(len(shocks))]


def _rounds(run: _SpiralRun) -> SpiralResult:
    """Rounds of liquidations and sells until one liquidates nothing (§7)."""
    rounds = 0
    for _ in range(run.p.spiral.max_rounds):
        run.to_sell.clear()
        events = run.liquidate_positions()
        events += run.liquidate_accounts()
        if events == 0:
            return run.result(rounds, converged=True)
        rounds += 1
        run.sell_queued()
    return run.result(rounds, converged=False)
