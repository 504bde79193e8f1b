"""The global stage's loop positions: the LoopBook kept at the latest prices (RISK_MODEL §2).

Positions arrive on ``positions.loops`` (add, replace, delete); the book is rebuilt when
they change and otherwise ticked with the price keys that moved. Which positions are
liquidatable, and their collateral at today's prices, feed the cascade detector, the risk
snapshots and the metrics.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from monitor.models.loops.lending import LoopBook, Position, checked_position, health_factor
from monitor.risk_params import RiskParams

__all__ = ["HF_BANDS", "LoopWatch"]

#: Health-factor bands of the ``liqmon_loops_positions`` metric.
HF_BANDS: tuple[tuple[str, float], ...] = (
    ("<1", 1.0), ("1-1.05", 1.05), ("1.05-1.1", 1.1), ("1.1-1.25", 1.25), ("1.25-1.5", 1.5),
    (">=1.5", float("inf")),
)


class LoopWatch:
    """Loop positions by id, their book at the latest prices and the liquidatable set."""

    def __init__(self, params: RiskParams) -> None:
        self.params = params
        self.positions: dict[str, Position] = {}
        self.loop_book: LoopBook | None = None
        self._book_dirty = False
        self.loops_liquidatable: set[str] = set()
        self._loops_notional = 0.0
        self._book_ids: list[str] = []

    def upsert(self, raw: Mapping[str, Any], prices: Mapping[str, float]) -> tuple[Position | None, float]:
        """Add, replace (same id) or delete (``{"position_id", "delete": true}``) a position.

        Returns (the new position or None, debt repaid in USD by a replace or delete).
        """
        pid = str(raw["position_id"])
        old = self.positions.get(pid)
        if raw.get("delete"):
            self.positions.pop(pid, None)
            new = None
        else:
            new = self.positions[pid] = checked_position(raw, self.params.aave_v3)
        self._book_dirty = True
        repaid = 0.0
        if old is not None:
            repaid = _debt_usd(old, prices) - (_debt_usd(new, prices) if new is not None else 0.0)
        return new, repaid

    def evaluate(self, changed: set[str], prices: Mapping[str, float]) -> tuple[int, float]:
        """Rebuild or tick the book; (liquidatable positions, their collateral in USD)."""
        book = self.loop_book
        if self._book_dirty or book is None:
            priced = [
                p for _, p in sorted(self.positions.items())
                if all(k in prices for k in p.price_keys())
            ]
            self._book_ids = [p.position_id for p in priced]
            self.loop_book = book = (
                LoopBook.from_positions(priced, prices, self.params) if priced else None
            )
            self._book_dirty = len(priced) < len(self.positions)
        elif changed:
            known = set(book.keys)
            for key in sorted(changed & known):
                book.update_price(key, prices[key])
        if book is None:
            self.loops_liquidatable = set()
            return 0, 0.0
        count = book.liquidatable_count()
        notional = 0.0
        if count:
            now = set(book.liquidatable_ids())
            if now != self.loops_liquidatable:
                coll, _ = book.position_values()
                self._loops_notional = float(
                    sum(float(coll[i]) for i, pid in enumerate(self._book_ids) if pid in now)
                )
            self.loops_liquidatable = now
            notional = self._loops_notional
        else:
            self.loops_liquidatable = set()
        return count, notional

    def snapshot_figures(self) -> tuple[dict[str, int], dict[str, float], float]:
        """(positions per HF band, ladder USD by move %, liquidatable collateral USD) of the book."""
        hf_bands: dict[str, int] = {}
        ladder: dict[str, float] = {}
        at_risk_usd = 0.0
        book = self.loop_book
        if book is not None and len(book):
            if self.loops_liquidatable:  # at today's prices (the cascade keeps the value at entry)
                coll, _ = book.position_values()
                at_risk_usd = float(sum(float(coll[i]) for i, pid in enumerate(self._book_ids)
                                        if pid in self.loops_liquidatable))
            uppers = np.array([upper for _, upper in HF_BANDS])
            band_of = np.searchsorted(uppers, book.health_factors(), side="right")
            counts = np.bincount(band_of, minlength=len(HF_BANDS))
            hf_bands = {name: int(counts[i]) for i, (name, _) in enumerate(HF_BANDS)}
            for row in book.aggregates():
                for step in row["ladder"]:
                    pct = f"{step['move_pct']:g}"
                    ladder[pct] = ladder.get(pct, 0.0) + float(step["additional_collateral_usd"])
        return hf_bands, ladder, at_risk_usd

    def figures(
        self, prices: Mapping[str, float]
    ) -> tuple[list[dict[str, Any]], dict[tuple[str, str], int]]:
        """(the book's aggregates, positions per (protocol, HF band)) for the metrics."""
        loops: list[dict[str, Any]] = []
        hf_bands: dict[tuple[str, str], int] = {}
        book = self.loop_book
        if book is not None and len(book):
            loops = book.aggregates()
            for pid in self._book_ids:
                pos = self.positions.get(pid)
                if pos is None:
                    continue
                hf = health_factor(pos, prices, self.params)
                band = next(name for name, upper in HF_BANDS if hf < upper)
                k = (pos.protocol, band)
                hf_bands[k] = hf_bands.get(k, 0) + 1
        return loops, hf_bands


def _debt_usd(position: Position, prices: Mapping[str, float]) -> float:
    """Debt of a position at the latest prices (unpriced legs count as zero)."""
    return sum(d.amount * prices.get(d.price_key, 0.0) for d in position.debt)
