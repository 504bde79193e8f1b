"""Bounds on the numbers liqmon reads, so that its maths stays finite.

Every price, size, amount and contract value read from a venue's wire, a position, an
account, a prices or books file is at most :data:`MAX_INPUT_NUMBER` in magnitude: far above
any real one (a 1e9-unit contract at 1e6; a memecoin's whole supply is below 1e16 units),
small enough that products and sums stay finite (1e18 × 1e18 × 10,000 levels, or a million
accounts of a thousand entries each, is far below the largest float, 1.8e308). A price
read from a venue or given to ``liqmon stress`` is at least :data:`MIN_INPUT_PRICE` (no
asset trades below it), so a PnL settled in an asset, divided by its price, stays finite
too. A shock multiplies a
price by ``1 + move``, the move within [:data:`MIN_SHOCK_MOVE`, :data:`MAX_SHOCK_MOVE`]
(−99.9999 % to +1e8 %), which keeps a shocked price as far from overflow and from zero.
"""

from __future__ import annotations

__all__ = [
    "MAX_INPUT_NUMBER",
    "MAX_SHOCK_MOVE",
    "MIN_INPUT_PRICE",
    "MIN_SHOCK_MOVE",
    "SHOCK_RANGE",
    "shock_move_allowed",
    "within_input_bound",
]

#: Largest magnitude of a number read as input (see the module docstring).
MAX_INPUT_NUMBER = 1e18
#: Smallest price read as input, in USD (or in its quote): a venue's on the wire, one given
#: to ``liqmon stress``.
MIN_INPUT_PRICE = 1e-18
#: Largest upward shock move, as a ratio: +1e6 = +100,000,000 % (a price × 1,000,001).
MAX_SHOCK_MOVE = 1e6
#: Largest downward shock move, as a ratio: −99.9999 % (a price × 1e-6).
MIN_SHOCK_MOVE = -0.999999


def within_input_bound(value: object, low: float = -MAX_INPUT_NUMBER) -> bool:
    """Whether ``value`` is a JSON number (int or float, not bool) within [``low``,
    :data:`MAX_INPUT_NUMBER`] (±:data:`MAX_INPUT_NUMBER` unless ``low`` says otherwise). An
    int of any size is compared exactly (no overflow); NaN and ±inf are outside."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return bool(low <= value <= MAX_INPUT_NUMBER)


#: What a shock's move must be, as an error says it.
SHOCK_RANGE = f"move must be from {MIN_SHOCK_MOVE * 100:.4f}% to +{MAX_SHOCK_MOVE * 100:.0e}%"


def shock_move_allowed(move: float) -> bool:
    """Whether a shock may move a price by ``move`` (a ratio; NaN may not)."""
    return MIN_SHOCK_MOVE <= move <= MAX_SHOCK_MOVE
