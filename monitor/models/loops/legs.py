"""The legs of a loop book: one row per collateral or debt leg, and what they are worth.

The flat arrays behind :class:`monitor.models.loops.lending.LoopBook`: per leg its position, price key,
side, amount, liquidation threshold and asset; per position its collateral and debt in USD
and its health factor at given prices (RISK_MODEL §2).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["AnyIntArray", "FloatArray", "IntArray", "LoopLegs"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
AnyIntArray = npt.NDArray[np.integer[Any]]


class LoopLegs:
    """Validated legs of ``n_positions`` lending positions (collateral and debt, flat)."""

    def __init__(
        self,
        *,
        n_positions: int,
        entry_position: Sequence[int] | AnyIntArray,
        entry_key: Sequence[int] | AnyIntArray,
        entry_is_collateral: Sequence[bool] | npt.NDArray[np.bool_],
        entry_amount: Sequence[float] | FloatArray,
        entry_lt: Sequence[float] | FloatArray,
        entry_asset: Sequence[int] | AnyIntArray,
    ) -> None:
        n = n_positions
        self.n_positions = n
        self.position = np.asarray(entry_position, dtype=np.int32)
        self.key = np.asarray(entry_key, dtype=np.int32)
        self.is_collateral = np.asarray(entry_is_collateral, dtype=np.bool_)
        self.amount = np.asarray(entry_amount, dtype=np.float64)
        #: Liquidation threshold of collateral legs; 0 on debt legs.
        self.lt_ratio = np.where(self.is_collateral, np.asarray(entry_lt, dtype=np.float64), 0.0)
        self.asset = np.asarray(entry_asset, dtype=np.int32)
        m = self.position.shape[0]
        for arr in (self.key, self.is_collateral, self.amount, self.lt_ratio, self.asset):
            if arr.shape != (m,):
                raise ValueError("entry arrays must have equal length")
        if m and (self.position.min() < 0 or self.position.max() >= n):
            raise ValueError("entry_position out of range")
        if np.any(self.amount < 0) or not np.all(np.isfinite(self.amount)):
            raise ValueError("amounts must be finite and non-negative")

    def __len__(self) -> int:
        return int(self.position.shape[0])

    def values_usd(self, prices: FloatArray) -> FloatArray:
        """Per leg: amount × price of its key."""
        return self.amount * prices[self.key]

    def position_values(self, prices: FloatArray) -> tuple[FloatArray, FloatArray]:
        """(collateral_usd, debt_usd) per position at ``prices`` (one per key)."""
        val = self.values_usd(prices)
        coll = np.bincount(self.position, weights=np.where(self.is_collateral, val, 0.0),
                           minlength=self.n_positions)
        debt = np.bincount(self.position, weights=np.where(self.is_collateral, 0.0, val),
                           minlength=self.n_positions)
        return coll.astype(np.float64), debt.astype(np.float64)

    def health_factors(self, prices: FloatArray) -> FloatArray:
        """Per position: HF = Σ coll×price×LT / Σ debt×price (RISK_MODEL §2)."""
        val = self.values_usd(prices)
        weighted = np.bincount(self.position,
                               weights=np.where(self.is_collateral, val * self.lt_ratio, 0.0),
                               minlength=self.n_positions)
        _, debt = self.position_values(prices)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(debt > 0, weighted / np.where(debt > 0, debt, 1.0), np.inf).astype(np.float64)

    def primary_asset(self, prices: FloatArray) -> npt.NDArray[np.int32]:
        """Per position: the asset of its largest collateral leg (by value at ``prices``)."""
        m = len(self)
        e_score = np.where(self.is_collateral, self.values_usd(prices), -1.0)
        e_order = np.lexsort((-e_score, self.position))
        e_first = np.ones(m, dtype=np.bool_)
        e_first[1:] = self.position[e_order][1:] != self.position[e_order][:-1]
        asset = np.zeros(self.n_positions, dtype=np.int32)
        asset[self.position[e_order[e_first]]] = self.asset[e_order[e_first]]
        return asset

    def remapped_collateral_keys(
        self, remap: IntArray, assets: Sequence[int] | None = None
    ) -> IntArray:
        """Leg keys with collateral legs (of ``assets``, default all) moved by ``remap``."""
        e_key = self.key.astype(np.int64)
        sel = self.is_collateral.copy()
        if assets is not None:
            sel &= np.isin(self.asset, assets)
        return np.where(sel, remap[e_key], e_key)
