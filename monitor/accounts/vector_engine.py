"""The venues' liquidation engine (RISK_MODEL.md §3) on a batch of columnar accounts.

The array form of :func:`monitor.models.margin.liquidate_account`: the accounts of one model are
laid out as padded (accounts × slots) matrices of their balances and perps, each row in the
account's own entry order, and every step of the scalar engine's loops (collateral in sell
order × loans by MMR; perps by MM; the realised-PnL settlement) runs as one numpy step over
the rows for which the scalar loop would take it. Each row performs the scalar engine's
floating-point operations in the same order, so sells, closes and the uncovered shortfall
are equal to the scalar ones bit for bit (``tests/unit/test_columnar_engine.py``).

Not laid out here (``fits`` is False; the caller runs the scalar engine): an account with
perps but no balance of its venue's settlement asset, where the scalar engine appends one
whose collateral table may come from the account's own ``collateral_rates``.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
import numpy.typing as npt

from monitor.accounts.book import AccountBook
from monitor.accounts.columns import MODELS, AccountColumns, CollateralTable, FloatArray, IntArray, StepTable
from monitor.risk_params import ENGINE_MIN_SALE_USD, RiskParams, UnifiedVenueParams

__all__ = [
    "EngineAction",
    "EngineResult",
    "FlatActions",
    "RowLayout",
    "SlotFigures",
    "SlotGroups",
    "book_layout",
    "layout_fits",
    "liquidate_layout",
    "padded_entries",
    "slot_figures",
    "slot_groups",
    "step_mm_usd",
    "tiered_equity_usd",
]

BoolArray = npt.NDArray[np.bool_]


def tiered_equity_usd(amount: FloatArray, price: FloatArray, table: CollateralTable) -> FloatArray:
    """min(tiered collateral value, amount × price), any order (tiered collateral rate,
    RISK_MODEL §3; :func:`monitor.models.margin.asset_equity_usd`): prefix_j + (x − floor_j) × rate_j
    for x in tier j, x the USD value or the coin amount (then × price)."""
    value = amount * price
    x = amount if table.basis_qty else value
    j = np.searchsorted(table.floors[1:], x, side="left")
    tiered = table.prefix_usd[j] + (x - table.floors[j]) * table.rates[j]
    if table.basis_qty:
        tiered = tiered * price
    out: FloatArray = np.where(value <= 0, value, np.minimum(tiered, value))
    return out


def step_mm_usd(abs_qty: FloatArray, notional_usd: FloatArray, table: StepTable) -> FloatArray:
    """max(0, notional × MMR_tier − deduction_tier), any order (perp MM brackets / tiers,
    RISK_MODEL §3; ``monitor.models.margin._perp_mm``)."""
    size = abs_qty if table.basis_qty else notional_usd
    j = np.searchsorted(table.bounds, size, side="left")
    out: FloatArray = np.maximum(0.0, notional_usd * table.rates[j] - table.deductions_usd[j])
    return out


def padded_entries(rows: IntArray, start: IntArray, select: BoolArray) -> IntArray:
    """(rows × slots) entry indices of the selected entries of each row, in entry order;
    −1 pads."""
    counts = start[rows + 1] - start[rows]
    total = int(counts.sum())
    first = np.repeat(np.cumsum(counts) - counts, counts)
    entries = np.repeat(start[rows], counts) + np.arange(total) - first
    owner = np.repeat(np.arange(rows.shape[0]), counts)
    keep = select[entries]
    entries, owner = entries[keep], owner[keep]
    slot = np.arange(entries.shape[0]) - np.searchsorted(owner, owner, side="left")
    width = int(slot.max()) + 1 if slot.size else 0
    out: IntArray = np.full((rows.shape[0], width), -1, dtype=np.int64)
    out[owner, slot] = entries
    return out


def layout_fits(cols: AccountColumns, model: npt.NDArray[np.int8], balance: IntArray, perp: IntArray,
                params: RiskParams) -> BoolArray:
    """Rows the batch engine takes, of accounts laid out as padded balance and perp entries:
    no perps, or a balance of the venue's settlement asset."""
    out: BoolArray = np.all(perp < 0, axis=1)
    assets = {a: i for i, a in enumerate(cols.assets)}
    settle = np.array([assets.get(params.unified.venue(m).settlement_asset, -1) for m in MODELS], dtype=np.int64)
    has_settle = ((balance >= 0) & (cols.entry_asset[np.maximum(balance, 0)] == settle[model][:, None])).any(axis=1)
    out |= has_settle
    return out


class EngineAction(NamedTuple):
    """One action of the engine, the fields of :class:`monitor.models.margin.ForcedSell` in its
    order (a plain tuple: the batch builds many)."""

    asset: str
    price_key: str
    side: Literal["sell", "buy"]
    usd: float
    kind: Literal["collateral", "perp"]


class FlatActions(NamedTuple):
    """Actions of many rows as arrays: row k, the action's place among the row's actions,
    its entry, USD, whether it closes a perp, whether it sells (collateral, a long perp)."""

    k: IntArray
    place: IntArray
    entry: IntArray
    usd: FloatArray
    is_perp: BoolArray
    sale: BoolArray


@dataclass(frozen=True)
class EngineResult:
    """The engine on some book rows of one model. Matrices are (rows × slots): ``balance``
    and ``perp`` hold entry indices (−1 pads) in entry order. ``coll_order`` lists balance
    slots in sell order (−1 after the last); ``sold_usd`` is per balance slot,
    ``close_frac`` per perp slot. ``perp_qty``: the perp quantities the engine started
    from; ``balance_after``, ``perp_qty_after``: balances and quantities after it.
    ``uncovered_usd``: each row's shortfall at the end (None: not asked for)."""

    rows: IntArray
    balance: IntArray
    perp: IntArray
    coll_order: IntArray
    sold_usd: FloatArray
    close_frac: FloatArray
    balance_after: FloatArray
    perp_qty: FloatArray
    perp_qty_after: FloatArray
    perp_usd: FloatArray
    uncovered_usd: FloatArray | None

    def acted(self) -> BoolArray:
        """Rows with at least one action (a collateral sale or a perp close)."""
        out: BoolArray = np.logical_or((self.sold_usd > 0).any(axis=1), (self.close_frac > 0).any(axis=1))
        return out

    def flat_actions(self) -> FlatActions:
        """Every row's actions as arrays, in the order of :meth:`actions` once sorted by
        (row, place)."""
        n = self.rows.shape[0]
        width = self.coll_order.shape[1]
        parts: list[tuple[IntArray, IntArray, IntArray, FloatArray, BoolArray, BoolArray]] = []
        for pos in range(width):
            c = self.coll_order[:, pos]
            cs = np.maximum(c, 0)
            sold = self.sold_usd[np.arange(n), cs]
            k = np.flatnonzero((c >= 0) & (sold > 0))
            no = np.zeros(k.shape[0], dtype=np.bool_)
            parts.append((k, np.full(k.shape[0], pos), self.balance[k, cs[k]], sold[k], no, ~no))
        for i in range(self.perp.shape[1]):
            k = np.flatnonzero((self.perp[:, i] >= 0) & (self.close_frac[:, i] > 0))
            parts.append((k, np.full(k.shape[0], width + i), self.perp[k, i], self.perp_usd[k, i],
                          np.ones(k.shape[0], dtype=np.bool_), self.perp_qty[k, i] > 0))
        if not parts:
            empty, no = np.empty(0, dtype=np.int64), np.empty(0, dtype=np.bool_)
            return FlatActions(empty, empty, empty, np.empty(0), no, no)
        return FlatActions(*(np.concatenate([q[j] for q in parts]) for j in range(6)))

    def actions(self, k: int, columns: AccountColumns) -> list[EngineAction]:
        """Row k's actions as the scalar engine lists them: collateral sells in sell order,
        then perp closes in perp order (USD at the evaluation price)."""
        def name(e: int) -> tuple[str, str]:
            return columns.assets[columns.entry_asset[e]], columns.keys[columns.entry_key[e]]

        out: list[EngineAction] = []
        for c in self.coll_order[k].tolist():
            if c >= 0 and self.sold_usd[k, c] > 0:
                asset, key = name(int(self.balance[k, c]))
                out.append(EngineAction(asset, key, "sell", float(self.sold_usd[k, c]), "collateral"))
        for i, e in enumerate(self.perp[k].tolist()):
            if e >= 0 and self.close_frac[k, i] > 0:
                asset, key = name(e)
                side: Literal["sell", "buy"] = "sell" if self.perp_qty[k, i] > 0 else "buy"
                out.append(EngineAction(asset, key, side, float(self.perp_usd[k, i]), "perp"))
        return out


@dataclass(frozen=True)
class RowLayout:
    """Some accounts as the engine starts from them: padded (rows × slots) matrices of
    their balances and perps in entry order (``balance``/``perp``: entry indices, −1 pads)
    with each slot's amount or quantity, price, and its term of the account's equity
    (balances) or MM (perps); each row's adjusted equity and MM. Pads hold amount 0,
    price 1 and terms 0. ``rows`` are the caller's numbers of the accounts."""

    rows: IntArray
    model: npt.NDArray[np.int8]
    balance: IntArray
    perp: IntArray
    bal: FloatArray
    px: FloatArray
    eq_term: FloatArray
    p_qty: FloatArray
    p_px: FloatArray
    p_mm: FloatArray
    equity: FloatArray
    mm: FloatArray

    def take(self, select: IntArray | BoolArray) -> RowLayout:
        """The layout of some of its rows (an index or a mask)."""
        at = np.flatnonzero(select) if select.dtype == np.bool_ else select
        return RowLayout(**{f.name: np.take(getattr(self, f.name), at, axis=0) for f in dataclasses.fields(self)})


def book_layout(book: AccountBook, rows: IntArray) -> RowLayout:
    """Book rows as the engine starts from them, at the book's prices and figures."""
    cols = book.columns
    balance = padded_entries(rows, cols.entry_start, ~cols.entry_is_perp)
    perp = padded_entries(rows, cols.entry_start, cols.entry_is_perp)
    b_valid, p_valid = balance >= 0, perp >= 0
    bal_e, perp_e = np.maximum(balance, 0), np.maximum(perp, 0)
    return RowLayout(
        rows=rows, model=cols.model[rows], balance=balance, perp=perp,
        bal=np.where(b_valid, cols.qty[bal_e], 0.0), px=np.where(b_valid, book.prices[cols.entry_key[bal_e]], 1.0),
        eq_term=np.where(b_valid, book.parts[0][bal_e], 0.0),
        p_qty=np.where(p_valid, cols.qty[perp_e], 0.0),
        p_px=np.where(p_valid, book.prices[cols.entry_key[perp_e]], 1.0),
        p_mm=np.where(p_valid, book.parts[1][perp_e], 0.0),
        equity=book.totals[0][rows], mm=book.totals[1][rows],
    )


class _Batch:
    """One model's rows under its venue's engine (§3), as padded matrices."""

    def __init__(self, cols: AccountColumns, layout: RowLayout, venue: UnifiedVenueParams) -> None:
        self.cols, self.rows, self.venue, self.target = cols, layout.rows, venue, venue.target_ratio
        self.balance, self.perp = layout.balance, layout.perp
        self.r = np.arange(layout.rows.shape[0])[:, None]
        bal_e, perp_e = np.maximum(self.balance, 0), np.maximum(self.perp, 0)
        self.b_valid, self.p_valid = self.balance >= 0, self.perp >= 0
        self.bal, self.px = np.array(layout.bal, order="C"), layout.px
        self.asset = np.where(self.b_valid, cols.entry_asset[bal_e], -1)
        self.mmr = np.where(self.b_valid, cols.loan_mmr[bal_e], 0.0)
        self.equity, self.mm = layout.equity.copy(), layout.mm.copy()
        self.sold = np.zeros_like(self.bal)
        self.settle = cols.assets.index(venue.settlement_asset) if venue.settlement_asset in cols.assets else -2
        self._order_collateral(layout.eq_term)
        self.p_qty, self.p_px, self.p_mm = layout.p_qty, layout.p_px, layout.p_mm
        self.p_entry = np.where(self.p_valid, cols.entry_price_usd[perp_e], 0.0)

    def _order_collateral(self, equity_usd: FloatArray) -> None:
        """Collateral in the venue's sell order, else largest USD value first, then entry
        order; its rate equity / value (the scalar ``coll_idx`` and ``rate``)."""
        names = self.cols.assets
        rank_of = {a: i for i, a in enumerate(self.venue.sell_order)}
        asset_rank = np.array([rank_of.get(a, len(rank_of)) for a in names] or [0], dtype=np.int64)
        value = self.bal * self.px
        coll = (self.bal > 0) & self.b_valid & (value > 0)
        if not self.venue.sells_collateral:
            coll &= self.asset == self.settle
        rank = np.where(coll, asset_rank[np.maximum(self.asset, 0)], np.iinfo(np.int64).max)
        slots = np.broadcast_to(np.arange(self.bal.shape[1]), self.bal.shape)
        order = np.lexsort((slots, -value, rank), axis=-1) if self.bal.size else slots.astype(np.int64)
        width = int(coll.sum(axis=1).max()) if coll.size else 0
        order = order[:, :width]
        self.coll_order = np.where(np.take_along_axis(coll, order, axis=1), order, -1)
        with np.errstate(divide="ignore", invalid="ignore"):
            self.rate = np.where(coll, equity_usd / value, 0.0)

    def repay(self, liab: IntArray, until_target: bool) -> None:
        """Collateral sold into the liabilities in order (RISK_MODEL §3): each USD adds
        (1 − rate) of equity and frees loan_mmr × T of MM; with ``until_target`` a row stops
        at equity ≥ T × MM and sells no more than (T × MM − equity) / gain per step. Each
        step computes only the rows it moves (flat slot indices row × width + slot)."""
        t, width = self.target, self.bal.shape[1]
        base = np.arange(self.bal.shape[0]) * width
        bal, sold = self.bal.reshape(-1), self.sold.reshape(-1)  # views: written through
        px, rate, mmr, asset = (m.reshape(-1) for m in (self.px, self.rate, self.mmr, self.asset))
        equity, mm = self.equity, self.mm
        active = np.ones(base.shape[0], dtype=np.bool_)
        for ci in range(self.coll_order.shape[1]):
            c = self.coll_order[:, ci]
            for li in range(liab.shape[1]):
                j = liab[:, li]
                step = (c >= 0) & (j >= 0) & active
                if until_target:
                    done = step & (equity >= t * mm)
                    active &= ~done
                    step &= ~done
                k = np.flatnonzero(step & (c != j))
                fc, fj = base[k] + c[k], base[k] + j[k]
                bc, bj, pc, pj = bal[fc], bal[fj], px[fc], px[fj]
                s = np.minimum(bc * pc, -bj * pj)
                rt, mmr_j = rate[fc], mmr[fj]
                ok = ~((bc <= 0) | (bj >= 0))
                if until_target:
                    gain = (1.0 - rt) + t * mmr_j
                    ok &= gain > 0
                    with np.errstate(divide="ignore", invalid="ignore"):
                        s = np.minimum(s, (t * mm[k] - equity[k]) / gain)
                ok &= s > ENGINE_MIN_SALE_USD  # rounding, not a sale (the scalar's test)
                k, fc, fj, s, rt, mmr_j = k[ok], fc[ok], fj[ok], s[ok], rt[ok], mmr_j[ok]
                bal[fc] = bc[ok] - s / pc[ok]
                bal[fj] = bj[ok] + s / pj[ok]
                equity[k] = equity[k] + s * (1.0 - rt)
                mm[k] = mm[k] - s * mmr_j
                other = asset[fc] != asset[fj]
                sold[fc[other]] = sold[fc[other]] + s[other]

    def loans(self) -> IntArray:
        """Loan slots by MMR, highest first, then entry order (the scalar ``loans``)."""
        loan = (self.bal < 0) & self.b_valid
        slots = np.broadcast_to(np.arange(self.bal.shape[1]), self.bal.shape)
        key = np.where(loan, -self.mmr, np.inf)
        order = np.lexsort((slots, key), axis=-1) if self.bal.size else slots.astype(np.int64)
        width = int(loan.sum(axis=1).max()) if loan.size else 0
        order = order[:, :width]
        out: IntArray = np.where(np.take_along_axis(loan, order, axis=1), order, -1)
        return out

    def close_fractions(self) -> FloatArray:
        """Still below T: perps closed largest MM first by the MM left to free (§3)."""
        r, t, equity = self.r[:, 0], self.target, self.equity
        need = np.where(equity < t * self.mm, self.mm - np.maximum(equity, 0.0) / t, 0.0)
        slots = np.broadcast_to(np.arange(self.p_mm.shape[1]), self.p_mm.shape)
        order = np.lexsort((slots, np.where(self.p_valid, -self.p_mm, np.inf)), axis=-1) \
            if self.p_mm.size else slots.astype(np.int64)
        frac = np.zeros_like(self.p_mm)
        for k in range(order.shape[1]):
            i = order[:, k]
            pm = self.p_mm[r, i]
            step = self.p_valid[r, i] & ~(need <= ENGINE_MIN_SALE_USD) & ~(pm <= 0)  # the scalar's test
            with np.errstate(divide="ignore", invalid="ignore"):
                f = np.where(equity <= 0, 1.0, np.minimum(1.0, need / pm))
            frac[r, i] = np.where(step, f, 0.0)
            need = np.where(step, need - f * pm, need)
            self.mm = np.where(step, self.mm - f * pm, self.mm)
        return frac

    def settle_pnl(self, frac: FloatArray) -> None:
        """Realised PnL Σ frac × qty × (px − entry) in perp order to the settlement
        balance; a debt there is repaid by selling collateral (§3)."""
        realised = np.zeros(self.rows.shape[0])
        for k in range(frac.shape[1]):
            f = frac[:, k]
            pnl = f * self.p_qty[:, k] * (self.p_px[:, k] - self.p_entry[:, k])
            realised = np.where(f > 0, realised + pnl, realised)
        moved = realised != 0.0
        if not moved.any():
            return
        is_settle = self.b_valid & (self.asset == self.settle)
        j = np.where(is_settle.any(axis=1), np.argmax(is_settle, axis=1), -1)
        r, js = self.r[:, 0], np.maximum(j, 0)
        moved &= j >= 0  # rows without one are not laid out here (``layout_fits``)
        self.bal[r, js] = np.where(moved, self.bal[r, js] + realised / self.px[r, js], self.bal[r, js])
        debt = moved & (self.bal[r, js] < 0)
        self.repay(np.where(debt, j, -1)[:, None], until_target=False)

    def qty_after(self, frac: FloatArray) -> FloatArray:
        """Perp quantities after the engine (0.0 in the slots closed whole and the pads)."""
        qty = np.where(frac > 0, self.p_qty * (1.0 - frac), self.p_qty)
        return np.where(self.p_valid & (frac < 1.0), qty, 0.0)

    def uncovered_usd(self, qty_after: FloatArray, frac: FloatArray) -> FloatArray:
        """The shortfall at the engine's end: −equity when negative (bad debt), else
        max(0, T × MM − equity), with the account's figures re-evaluated on the balances
        and perps left (``monitor.models.margin._figures``, §3)."""
        kept = self.p_valid & (frac < 1.0)
        left = slot_figures(self.cols, self.balance, self.bal, self.px, np.where(kept, self.perp, -1), qty_after,
                            self.p_px)
        equity, mm = left.equity, left.mm
        short: FloatArray = np.where(equity < 0, -equity, np.maximum(0.0, self.target * mm - equity))
        return short


def _slots_by_table(cols: AccountColumns, entries: IntArray) -> list[tuple[int, IntArray]]:
    """The filled slots of a padded entry matrix (flat indices) grouped by entry table."""
    flat = np.flatnonzero(entries.reshape(-1) >= 0)
    table = cols.entry_table[entries.reshape(-1)[flat]]
    if table.size == 0:
        return []
    if table.min() == table.max():
        return [(int(table[0]), flat)]
    small = int(table.max()) <= np.iinfo(np.int16).max  # a radix sort for 16-bit keys
    order = np.argsort(table.astype(np.int16) if small else table, kind="stable")
    table, flat = table[order], flat[order]
    cuts = [0, *(np.flatnonzero(np.diff(table)) + 1).tolist(), int(table.shape[0])]
    return [(int(table[lo]), flat[lo:hi]) for lo, hi in itertools.pairwise(cuts)]


SlotGroups = tuple[list[tuple[int, IntArray]], list[tuple[int, IntArray]]]
"""The filled balance slots and perp slots of padded matrices, grouped by entry table."""


def slot_groups(cols: AccountColumns, balance: IntArray, perp: IntArray) -> SlotGroups:
    """(table, flat slot indices) of the balance matrix and of the perp matrix."""
    return _slots_by_table(cols, balance), _slots_by_table(cols, perp)


class SlotFigures(NamedTuple):
    """Each balance slot's equity term, each perp slot's MM, each row's adjusted equity
    and MM (USD)."""

    eq_term: FloatArray
    p_mm: FloatArray
    equity: FloatArray
    mm: FloatArray


def slot_figures(cols: AccountColumns, balance: IntArray, bal: FloatArray, px: FloatArray,
                 perp: IntArray, p_qty: FloatArray, p_px: FloatArray,
                 groups: SlotGroups | None = None) -> SlotFigures:
    """Figures of padded accounts (``balance``/``perp`` entry indices, −1 slots skipped) at
    amounts ``bal``, quantities ``p_qty`` and prices ``px``/``p_px`` (RISK_MODEL §3, the
    terms of ``monitor.models.margin._figures``): collateral min(tiered, value); a loan its value
    and MM loan × loan MMR; a perp its PnL qty × (px − entry) and bracket MM. Each sum runs
    from 0.0 over the balances then the perps in entry order, as the scalar maths adds.
    ``groups``: :func:`slot_groups` of the same matrices, when the caller keeps them."""
    b_groups, p_groups = groups or slot_groups(cols, balance, perp)
    b_valid, p_valid = balance >= 0, perp >= 0
    bal_e, perp_e = np.maximum(balance, 0), np.maximum(perp, 0)
    eq_b = np.zeros(bal.shape)
    for table, at in b_groups:
        eq_b.reshape(-1)[at] = tiered_equity_usd(bal.reshape(-1)[at], px.reshape(-1)[at], cols.collateral_tables[table])
    notional = np.abs(p_qty) * p_px
    mm_p = np.zeros(p_qty.shape)
    for table, at in p_groups:
        mm_p.reshape(-1)[at] = step_mm_usd(np.abs(p_qty.reshape(-1)[at]), notional.reshape(-1)[at],
                                            cols.step_tables[table])
    # a term per slot, 0.0 in the slots that add nothing: the running sums start at 0.0 and
    # are never −0.0, so adding 0.0 leaves them as they are (the scalar maths skips those)
    mm_b = np.where(b_valid & ~(bal > 0), (-bal * px) * cols.loan_mmr[bal_e], 0.0)
    eq_p = np.where(p_valid, p_qty * (p_px - cols.entry_price_usd[perp_e]), 0.0)
    equity, mm = np.zeros(balance.shape[0]), np.zeros(balance.shape[0])
    for eq_terms, mm_terms in ((eq_b, mm_b), (eq_p, mm_p)):
        for k in range(eq_terms.shape[1]):
            equity += eq_terms[:, k]
            mm += mm_terms[:, k]
    return SlotFigures(eq_b, mm_p, equity, mm)


def _run(cols: AccountColumns, layout: RowLayout, venue: UnifiedVenueParams, shortfall: bool) -> EngineResult:
    """The scalar engine's steps on one model's rows (RISK_MODEL §3)."""
    batch = _Batch(cols, layout, venue)
    with np.errstate(over="ignore", invalid="ignore"):
        batch.repay(batch.loans(), until_target=True)
        frac = batch.close_fractions()
        batch.settle_pnl(frac)
        qty_after = batch.qty_after(frac)
        short = batch.uncovered_usd(qty_after, frac) if shortfall else None
        perp_usd = frac * np.abs(batch.p_qty) * batch.p_px
    return EngineResult(rows=layout.rows, balance=batch.balance, perp=batch.perp, coll_order=batch.coll_order,
                        sold_usd=batch.sold, close_frac=frac, balance_after=batch.bal, perp_qty=batch.p_qty,
                        perp_qty_after=qty_after, perp_usd=perp_usd, uncovered_usd=short)


def liquidate_layout(cols: AccountColumns, layout: RowLayout, params: RiskParams, *,
                     shortfall: bool = True) -> list[EngineResult]:
    """The liquidation engine (:func:`monitor.models.margin.liquidate_account`, RISK_MODEL §3) on
    accounts laid out from ``cols``, one result per model present. Their rows must pass
    :func:`layout_fits`. ``shortfall``: also each row's uncovered shortfall (one more
    evaluation of every row; a spiral does not use it)."""
    out: list[EngineResult] = []
    for code, model in enumerate(MODELS):
        mine = layout.model == code
        if mine.all():
            return [_run(cols, layout, params.unified.venue(model), shortfall)] if mine.size else []
        if mine.any():
            out.append(_run(cols, layout.take(mine), params.unified.venue(model), shortfall))
    return out
