"""The lending positions that cannot be liquidatable at given prices, ruled out at once.

Stage 5 of the spiral (RISK_MODEL §7) looks at every position in its first round, one at a
time: its debt (Σ amount × price, ``math.fsum``) and its health factor (§2, HF = Σ coll ×
price × LT / Σ debt × price). A position is liquidated only when its debt is above dust and
its HF below 1. :class:`PositionScreen` computes both sums for all positions at once with
numpy and rules out the positions that pass with room to spare: debt below dust, or HF
above 1, each by more than :data:`SCREEN_MARGIN` (relative). Every term is non-negative,
so numpy's sums differ from ``math.fsum``'s by at most (legs × 2⁻⁵³) relative — for any
real position many orders of magnitude below the margin — and a position ruled out is one
the exact check passes. The rest are left to the exact check. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from monitor.models.loops.legs import LoopLegs
from monitor.models.loops.lending import Position, leg_lists
from monitor.risk_params import RiskParams

__all__ = ["SCREEN_MARGIN", "PositionScreen"]

#: Relative room by which a position must pass (debt under dust, HF over 1) to be ruled out.
SCREEN_MARGIN = 1e-9


class PositionScreen:
    """The legs of a list of positions as arrays (:class:`LoopLegs`), keyed by price key."""

    def __init__(self, legs: LoopLegs, keys: Sequence[str]) -> None:
        self.legs = legs
        #: The price key of each key index of ``legs``.
        self.keys = list(keys)

    @classmethod
    def of(cls, positions: Sequence[Position], params: RiskParams) -> PositionScreen | None:
        """The screen of ``positions``; None when a position cannot be laid out (an unknown
        e-mode, an amount that is negative or not finite): the exact check then judges all,
        and raises what it raises."""
        try:
            lists = leg_lists(positions, params)
            legs = LoopLegs(n_positions=len(positions), entry_position=lists.position, entry_key=lists.key,
                            entry_is_collateral=lists.is_collateral, entry_amount=lists.amount,
                            entry_lt=lists.lt, entry_asset=lists.asset)
        except ValueError:
            return None
        return cls(legs, list(lists.keys))

    def candidates(self, prices: Mapping[str, float], dust_usd: float) -> list[int] | None:
        """Indices, ascending, of the positions that may be liquidatable at ``prices``: every
        position but those ruled out (module docstring). None when a key has no price, or a
        price that is not finite and positive: the exact check then judges all."""
        try:
            px = np.array([prices[k] for k in self.keys], dtype=np.float64)
        except (KeyError, TypeError, ValueError):
            return None
        if px.size and not (np.isfinite(px).all() and (px > 0.0).all()):
            return None
        legs = self.legs
        value = legs.values_usd(px)
        weighted = np.bincount(legs.position, weights=value * legs.lt_ratio, minlength=legs.n_positions)
        debt = np.bincount(legs.position, weights=np.where(legs.is_collateral, 0.0, value),
                           minlength=legs.n_positions)
        # NaN fails both comparisons: such a position stays a candidate.
        ruled_out = (debt < dust_usd * (1.0 - SCREEN_MARGIN)) | (weighted > debt * (1.0 + SCREEN_MARGIN))
        return np.flatnonzero(~ruled_out).tolist()
