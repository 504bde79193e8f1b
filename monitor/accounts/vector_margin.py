"""Vectorised unified-account maths (RISK_MODEL.md §3) on numpy arrays.

Each function is the array form of a scalar function of :mod:`monitor.models.margin` and performs
the same floating-point operations in the same order, so its results are equal to the
scalar ones bit for bit (the property tests in ``tests/unit/test_account_book.py`` hold them
equal). Tier lookups take entries sorted by a price-independent size (coin amount, |qty|):
a USD size is that times one price, so it is sorted too, and the tier bounds split the
sorted run into slices with one binary search per bound.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from monitor.accounts.columns import MODELS, CollateralTable, FloatArray, StepTable
from monitor.models.margin import STATUSES
from monitor.risk_params import RiskParams

__all__ = [
    "LIQUIDATION",
    "ModelLines",
    "collateral_equity_usd",
    "perp_mm_usd",
    "status_codes",
    "status_counts",
    "tier_slices",
]

# Status codes of ``AccountBook.status``: the index into monitor.models.margin.STATUSES.
LIQUIDATION = 3


def status_counts(status: npt.NDArray[np.int8]) -> list[int]:
    """The number of accounts with each status code, one count per status of
    ``STATUSES`` (0 included), in their order."""
    counts: list[int] = np.bincount(status, minlength=len(STATUSES)).tolist()
    return counts


def tier_slices(sorted_size: FloatArray, bounds: FloatArray) -> list[tuple[int, int, int]]:
    """(tier j, lo, hi): the sizes in (bounds[j−1], bounds[j]] of an ascending run (the
    tier lookup of :func:`monitor.models.margin.bracket_for_notional` and ``perp_tier``)."""
    cuts = np.searchsorted(sorted_size, bounds, side="right").tolist()
    edges = [0, *cuts, int(sorted_size.shape[0])]
    return [(j, edges[j], edges[j + 1]) for j in range(len(edges) - 1) if edges[j + 1] > edges[j]]


def collateral_equity_usd(amount: FloatArray, price: float, table: CollateralTable) -> FloatArray:
    """min(tiered collateral value, amount × price) of positive balances sorted by amount
    (Binance uniMMR ``equity_asset``, tiered collateral rate, RISK_MODEL §3;
    :func:`monitor.models.margin.asset_equity_usd`): tiered = prefix_j + (x − floor_j) × rate_j for
    x in tier j, x the USD value (Binance) or the coin amount (Bybit, OKX; then × price)."""
    value = amount * price
    x = amount if table.basis_qty else value
    tiered = np.empty_like(x)
    for j, lo, hi in tier_slices(x, table.floors[1:]):
        tiered[lo:hi] = table.prefix_usd[j] + (x[lo:hi] - table.floors[j]) * table.rates[j]
    if table.basis_qty:
        tiered = tiered * price
    out: FloatArray = np.where(value <= 0, value, np.minimum(tiered, value))
    return out


def perp_mm_usd(abs_qty: FloatArray, notional_usd: FloatArray, table: StepTable) -> FloatArray:
    """max(0, notional × MMR_tier − deduction_tier) of perps sorted by |qty| (Binance
    brackets MM = notional × MMR − cum, Hyperliquid margin tiers, Bybit risk limits with
    ``mmDeduction``, OKX position tiers by coin quantity: RISK_MODEL §3,
    :func:`monitor.models.margin.perp_maintenance_margin_usd` / ``tiered_perp_mm_usd``)."""
    size = abs_qty if table.basis_qty else notional_usd
    mm = np.empty_like(notional_usd)
    for j, lo, hi in tier_slices(size, table.bounds):
        mm[lo:hi] = notional_usd[lo:hi] * table.rates[j] - table.deductions_usd[j]
    out: FloatArray = np.maximum(0.0, mm)
    return out


@dataclass(frozen=True)
class ModelLines:
    """Each model's status lines as arrays indexed by model code (RISK_MODEL §3; the venue
    sources are cited at each line in :mod:`monitor.risk_params`), each an *at-or-below*
    bound: the line itself where the venue's lines are inclusive (Binance uniMMR ≤ 1.05,
    Bybit MM rate ≥ 100%, OKX equity ≤ MM), else the largest float below it (Hyperliquid
    liquidates when equity "falls below" MM), so ``ratio <= bound`` is the scalar test."""

    margin_call: FloatArray
    reduce_only: FloatArray
    liquidation: FloatArray
    backstop_ratio: float

    @classmethod
    def from_params(cls, params: RiskParams) -> ModelLines:
        """The lines of binance-pm, bybit-uta, okx-mc and hyperliquid, in ``MODELS`` order."""
        venues = [params.unified.venue(m) for m in MODELS]

        def bounds(lines: list[float]) -> FloatArray:
            return np.array([line if v.lines_inclusive else np.nextafter(line, -np.inf)
                             for line, v in zip(lines, venues, strict=True)], dtype=np.float64)

        return cls(
            margin_call=bounds([v.margin_call_ratio for v in venues]),
            reduce_only=bounds([v.reduce_only_ratio for v in venues]),
            liquidation=bounds([v.liquidation_ratio for v in venues]),
            backstop_ratio=params.unified.hyperliquid.backstop_equity_of_mm_ratio,
        )


def status_codes(
    ratio: FloatArray, equity_usd: FloatArray, model: npt.NDArray[np.int8], lines: ModelLines,
    single_model: int | None = None,
) -> npt.NDArray[np.int8]:
    """Status codes from equity/MM and the model's lines (:func:`monitor.models.margin.account_status`,
    RISK_MODEL §3): the number of lines the ratio is at or below (margin call ≥ reduce-only
    ≥ liquidation, so a ratio at the liquidation line is at the others too: the count is the
    worst status); liquidation whenever adjusted equity < 0. ``ratio`` is NaN where MM is 0
    (no line applies). ``single_model``: every account has that model (no gathers)."""
    at: tuple[FloatArray | np.float64, ...]
    if single_model is not None:
        at = (lines.margin_call[single_model], lines.reduce_only[single_model], lines.liquidation[single_model])
    else:
        at = (lines.margin_call[model], lines.reduce_only[model], lines.liquidation[model])
    status = (ratio <= at[0]).astype(np.int8)
    status += ratio <= at[1]
    status += ratio <= at[2]
    out: npt.NDArray[np.int8] = np.where(equity_usd < 0, np.int8(LIQUIDATION), status)
    return out
