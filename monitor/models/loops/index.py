"""Loop positions indexed by the price of their driving key at which HF crosses 1.

Each position's margin Σ_k coef_k × price_k (coef = amount×LT for collateral, −amount for
debt) is linear in prices. Writing it as coef_d × p_d + rest, the position is liquidatable
when p_d < −rest/coef_d (coef_d > 0) or p_d > −rest/coef_d (coef_d < 0), RISK_MODEL §2.
Thresholds are kept in sorted numpy arrays per key, so a tick on a driving key costs
O(log n + k). A tick on a key that is a secondary leg of some positions (e.g. the USDC debt
of an ETH loop) re-indexes those positions: O(m log m) for m such positions.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from monitor.models.loops.legs import FloatArray, IntArray, LoopLegs

__all__ = ["DrivingKeyIndex", "KeyThresholds"]

_EMPTY_I: IntArray = np.empty(0, dtype=np.int64)


class KeyThresholds(NamedTuple):
    """The positions driven by one key, by the price at which they cross HF = 1."""

    thr: FloatArray  # sorted thresholds
    pos: IntArray  # position index for each threshold


class DrivingKeyIndex:
    """Per position its driving key and threshold price; which positions are liquidatable.

    ``prices`` is the book's price array (one per key), shared: the book writes a tick into
    it, then calls :meth:`move`.
    """

    def __init__(self, legs: LoopLegs, prices: FloatArray, n_keys: int) -> None:
        self._px = prices
        n, nk = legs.n_positions, n_keys
        e_coef = np.where(legs.is_collateral, legs.amount * legs.lt_ratio, -legs.amount)
        # combine legs with the same (position, key)
        comp = legs.position.astype(np.int64) * nk + legs.key
        uniq, inv = np.unique(comp, return_inverse=True)
        coef = np.bincount(inv, weights=e_coef, minlength=uniq.shape[0])
        c_pos = (uniq // nk).astype(np.int64)
        c_key = (uniq % nk).astype(np.int64)
        # driving key: largest collateral value; debt-only positions: largest debt value
        val = legs.values_usd(prices)
        coll_val = np.bincount(inv, weights=np.where(legs.is_collateral, val, 0.0), minlength=uniq.size)
        debt_val = np.bincount(inv, weights=np.where(legs.is_collateral, 0.0, val), minlength=uniq.size)
        score = np.where(coll_val > 0, coll_val, -1.0 / (1.0 + debt_val))
        # sort candidates by (position, score desc) and keep the first row of each position
        order = np.lexsort((-score, c_pos))
        first = np.ones(order.shape[0], dtype=np.bool_)
        first[1:] = c_pos[order][1:] != c_pos[order][:-1]
        rows = order[first]
        #: Per position: its driving key (−1 without one) and that key's coefficient.
        self.drive = np.full(n, -1, dtype=np.int32)
        self.coef = np.zeros(n, dtype=np.float64)
        self.drive[c_pos[rows]] = c_key[rows]
        self.coef[c_pos[rows]] = coef[rows]
        is_drive = np.zeros(uniq.shape[0], dtype=np.bool_)
        is_drive[rows] = True
        sec = ~is_drive
        self._rest = np.bincount(
            c_pos[sec], weights=coef[sec] * prices[c_key[sec]], minlength=n
        ).astype(np.float64)
        # secondary legs grouped by key, for re-indexing on their ticks
        s_order = np.argsort(c_key[sec], kind="stable")
        self._s_pos = c_pos[sec][s_order]
        self._s_coef = coef[sec][s_order]
        self._s_ptr = np.searchsorted(c_key[sec][s_order], np.arange(nk + 1))
        #: Per position: the driving-key price at which HF = 1 (NaN without a driving coefficient).
        self.threshold = np.full(n, np.nan, dtype=np.float64)
        nz = self.coef != 0.0
        self.threshold[nz] = -self._rest[nz] / self.coef[nz]
        #: Per position: liquidatable at the current prices.
        self.liquidatable = self._state(np.arange(n, dtype=np.int64))
        self._below: dict[int, KeyThresholds] = {}
        self._above: dict[int, KeyThresholds] = {}
        self._index_keys(range(nk))

    def _state(self, idx: IntArray) -> npt.NDArray[np.bool_]:
        cd = self.coef[idx]
        p = self._px[np.maximum(self.drive[idx], 0)]
        thr = self.threshold[idx]
        return np.where(cd > 0, p < thr, np.where(cd < 0, p > thr, self._rest[idx] < 0))

    def _index_keys(self, keys: Iterable[int]) -> None:
        for k in keys:
            for store, sign in ((self._below, 1), (self._above, -1)):
                sel = np.flatnonzero((self.drive == k) & (np.sign(self.coef) == sign))
                if sel.size == 0:
                    store.pop(k, None)
                    continue
                o = np.argsort(self.threshold[sel], kind="stable")
                store[k] = KeyThresholds(self.threshold[sel][o], sel[o].astype(np.int64))

    def falling(self, key: int) -> KeyThresholds | None:
        """Positions driven by ``key`` that a fall of its price makes liquidatable."""
        return self._below.get(key)

    def move(self, k: int, old: float, price: float) -> tuple[IntArray, IntArray]:
        """Key ``k`` moved from ``old`` to ``price`` (already in the prices): (newly, recovered)."""
        newly: list[npt.NDArray[np.int64]] = []
        back: list[npt.NDArray[np.int64]] = []
        below = self._below.get(k)
        if below is not None and price != old:
            lo, hi = sorted((price, old))
            a = int(np.searchsorted(below.thr, lo, side="right"))
            b = int(np.searchsorted(below.thr, hi, side="right"))
            (newly if price < old else back).append(below.pos[a:b])
        above = self._above.get(k)
        if above is not None and price != old:
            lo, hi = sorted((price, old))
            a = int(np.searchsorted(above.thr, lo, side="left"))
            b = int(np.searchsorted(above.thr, hi, side="left"))
            (newly if price > old else back).append(above.pos[a:b])
        for arr in newly:
            self.liquidatable[arr] = True
        for arr in back:
            self.liquidatable[arr] = False
        s0, s1 = int(self._s_ptr[k]), int(self._s_ptr[k + 1])
        if s1 > s0 and price != old:
            sp = self._s_pos[s0:s1]
            np.add.at(self._rest, sp, self._s_coef[s0:s1] * (price - old))
            aff = np.unique(sp)
            nz = aff[self.coef[aff] != 0.0]
            self.threshold[nz] = -self._rest[nz] / self.coef[nz]
            before = self.liquidatable[aff].copy()
            after = self._state(aff)
            self.liquidatable[aff] = after
            newly.append(aff[after & ~before])
            back.append(aff[before & ~after])
            self._index_keys(int(d) for d in np.unique(self.drive[aff]) if d >= 0)
        cat_new = np.concatenate(newly) if newly else _EMPTY_I
        cat_back = np.concatenate(back) if back else _EMPTY_I
        return cat_new, cat_back

    def required_move_ratio(self) -> FloatArray:
        """Per position: adverse move of its driving key that makes it liquidatable.

        0 when already liquidatable, +inf when no move of the driving key does.
        """
        p = self._px[np.maximum(self.drive, 0)]
        with np.errstate(divide="ignore", invalid="ignore"):
            down = np.where(self.threshold > 0, 1.0 - self.threshold / p, np.inf)
            up = np.where(self.threshold > 0, self.threshold / p - 1.0, 0.0)
        move = np.where(self.coef > 0, down, np.where(self.coef < 0, up, np.inf))
        move = np.where(self.coef > 0, np.where(move < 1.0, move, np.inf), move)
        return np.where(self.liquidatable, 0.0, np.maximum(move, 0.0))
