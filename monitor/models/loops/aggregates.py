"""Loop positions summed per (primary collateral asset, protocol): notional, ladder, illusion.

RISK_MODEL §2: the liquidatable notional at today's prices, the liquidation ladder (positions
and collateral newly liquidatable at each adverse move of their driving key) and the
collateral illusion ratio (gross collateral / real equity) of each group.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from monitor.models.loops.legs import FloatArray

__all__ = ["group_aggregates"]


def group_aggregates(
    *,
    assets: Sequence[str],
    protocols: Sequence[str],
    primary_asset: npt.NDArray[np.int32],
    protocol: npt.NDArray[np.int8],
    collateral_usd: FloatArray,
    debt_usd: FloatArray,
    move_ratio: FloatArray,
    liquidatable: npt.NDArray[np.bool_],
    steps: npt.NDArray[np.float64],
) -> list[dict[str, Any]]:
    """One row per non-empty (asset, protocol) group, ladder cumulative over ``steps`` (%)."""
    n_proto = len(protocols)
    group = primary_asset.astype(np.int64) * n_proto + protocol
    n_groups = len(assets) * n_proto
    coll, debt = collateral_usd, debt_usd
    step_bin = np.searchsorted(steps / 100.0, move_ratio, side="right")
    count = np.bincount(group, minlength=n_groups)
    gross = np.bincount(group, weights=coll, minlength=n_groups)
    dsum = np.bincount(group, weights=debt, minlength=n_groups)
    liq = liquidatable
    liq_n = np.bincount(group[liq], minlength=n_groups)
    liq_c = np.bincount(group[liq], weights=coll[liq], minlength=n_groups)
    liq_d = np.bincount(group[liq], weights=debt[liq], minlength=n_groups)
    nb = steps.shape[0]
    lad = (~liq) & (step_bin < nb)
    cell = group[lad] * nb + step_bin[lad]
    lad_n = np.bincount(cell, minlength=n_groups * nb).reshape(n_groups, nb).cumsum(axis=1)
    lad_c = (
        np.bincount(cell, weights=coll[lad], minlength=n_groups * nb)
        .reshape(n_groups, nb)
        .cumsum(axis=1)
    )
    out: list[dict[str, Any]] = []
    for g in np.flatnonzero(count):
        equity = float(gross[g] - dsum[g])
        out.append(
            {
                "asset": assets[int(g) // n_proto],
                "protocol": protocols[int(g) % n_proto],
                "positions": int(count[g]),
                "liquidatable_count": int(liq_n[g]),
                "liquidatable_collateral_usd": float(liq_c[g]),
                "liquidatable_debt_usd": float(liq_d[g]),
                "gross_collateral_usd": float(gross[g]),
                "debt_usd": float(dsum[g]),
                "real_equity_usd": equity,
                "collateral_illusion_ratio": float(gross[g]) / equity if equity > 0 else None,
                "ladder": [
                    {
                        "move_pct": float(steps[j]),
                        "additional_count": int(lad_n[g, j]),
                        "additional_collateral_usd": float(lad_c[g, j]),
                    }
                    for j in range(nb)
                ],
            }
        )
    return out
