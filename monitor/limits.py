"""Bounds on the numbers liqmon reads, so that its maths stays finite.

Every price, size, amount and contract value read from a venue's wire, a position, an
account, a prices or books file is at most :data:`MAX_INPUT_NUMBER` in magnitude: far above
any real one (a 1e9-unit contract at 1e6; a memecoin's whole supply is below 1e16 units),
small enough that products and sums stay finite (1e18 × 1e18 × 10,000 levels, or a million
accounts of a thousand entries each, is far below the largest float, 1.8e308). A shock
multiplies a price by at most ``1 + MAX_SHOCK_MOVE``, which keeps a shocked price as far
from overflow.
"""

from __future__ import annotations

__all__ = ["MAX_INPUT_NUMBER", "MAX_SHOCK_MOVE", "within_input_bound"]

#: Largest magnitude of a number read as input (see the module docstring).
MAX_INPUT_NUMBER = 1e18
#: Largest upward shock move, as a ratio: +1e6 = +100,000,000 % (a price × 1,000,001).
MAX_SHOCK_MOVE = 1e6


def within_input_bound(value: object, *, positive: bool = False) -> bool:
    """Whether ``value`` is a JSON number (int or float, not bool) within
    ±:data:`MAX_INPUT_NUMBER` (within (0, :data:`MAX_INPUT_NUMBER`] when ``positive``). An int
    of any size is compared exactly (no overflow); NaN and ±inf are outside."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    low_ok = value > 0 if positive else value >= -MAX_INPUT_NUMBER
    return bool(low_ok and value <= MAX_INPUT_NUMBER)
