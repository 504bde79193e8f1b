"""When the standard-shock spirals need to run again (RISK_MODEL.md §7).

A spiral is a function of its inputs: the prices, the bid ladders, the positions and the
accounts. The gate keeps the inputs of the last run and lets the next run through only
when they moved beyond a tolerance: a price by more than ``tolerance_ratio`` of itself
(|p_now / p_last − 1| > tolerance), a ladder's bid depth Σ price × qty likewise, a price
key or a ladder appearing or going, or any position or account added, changed or removed.
Otherwise the last results stand, and the decision says why (``SpiralDecision``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["SpiralDecision", "SpiralGate", "SpiralInputs"]

#: Reasons listed in a decision at most (the count says how many there were).
_REASONS_SHOWN = 5


def _depth_usd(levels: Sequence[Sequence[float]]) -> float:
    """Bid depth of a ladder: Σ price × qty over its levels (RISK_MODEL §7), USD."""
    return math.fsum(float(px) * float(qty) for px, qty in levels)


@dataclass(frozen=True)
class SpiralInputs:
    """What a spiral run reads, as the gate compares it: prices, each ladder's bid depth
    (USD), and the positions and accounts (shallow copies: their models are immutable)."""

    prices: dict[str, float]
    depth_usd: dict[str, float]
    positions: dict[str, object]
    accounts: dict[str, object]

    @classmethod
    def of(cls, prices: Mapping[str, float], ladders: Mapping[str, Sequence[Sequence[float]]],
           positions: Mapping[str, object], accounts: Mapping[str, object]) -> SpiralInputs:
        """The inputs as they are now."""
        return cls(dict(prices), {k: _depth_usd(v) for k, v in ladders.items()}, dict(positions), dict(accounts))


def _move_ratio(last: float, now: float) -> float:
    """now / last − 1, the relative move (0 when equal; infinite from 0 to anything else)."""
    if last == now:
        return 0.0
    return now / last - 1.0 if last != 0.0 else math.inf


def _moved(kind: str, last: Mapping[str, float], now: Mapping[str, float], tolerance_ratio: float) -> list[str]:
    """Keys of one kind that appeared, went, or moved by more than the tolerance."""
    out = [f"{kind} {k} new" for k in sorted(now.keys() - last.keys())]
    out += [f"{kind} {k} gone" for k in sorted(last.keys() - now.keys())]
    for k in sorted(now.keys() & last.keys()):
        move = _move_ratio(last[k], now[k])
        if abs(move) > tolerance_ratio:  # NaN never passes: a NaN input is not a move to act on
            out.append(f"{kind} {k} {move * 100.0:+.3g}%" if math.isfinite(move) else f"{kind} {k} from 0")
    return out


@dataclass(frozen=True)
class SpiralDecision:
    """Whether the spirals run (``rerun``), why (the inputs that moved beyond the tolerance,
    at most five listed, ``moved`` of them in all), and the event time of the run whose
    results stand (``last_run_ms``; None before the first run)."""

    rerun: bool
    reasons: tuple[str, ...]
    moved: int
    tolerance_ratio: float
    last_run_ms: int | None

    def as_dict(self) -> dict[str, object]:
        """The decision as a JSON object."""
        return {"rerun": self.rerun, "reasons": list(self.reasons), "moved_inputs": self.moved,
                "tolerance_ratio": self.tolerance_ratio, "last_run_ms": self.last_run_ms}


class SpiralGate:
    """The inputs of the last run and the decision of the latest check."""

    def __init__(self, tolerance_ratio: float) -> None:
        if not tolerance_ratio >= 0.0:
            raise ValueError("tolerance_ratio must be >= 0")
        self.tolerance_ratio = tolerance_ratio
        self._last: SpiralInputs | None = None
        self._last_ms: int | None = None
        self.decision: SpiralDecision | None = None

    def check(self, now: SpiralInputs) -> SpiralDecision:
        """Whether inputs ``now`` need a new run, against those of the last run."""
        last, tol = self._last, self.tolerance_ratio
        if last is None:
            reasons = ["first run"]
        else:
            reasons = [*_moved("price", last.prices, now.prices, tol),
                       *_moved("ladder", last.depth_usd, now.depth_usd, tol)]
            if now.positions != last.positions:
                reasons.append("positions changed")
            if now.accounts != last.accounts:
                reasons.append("accounts changed")
        shown = tuple(reasons[:_REASONS_SHOWN])
        self.decision = SpiralDecision(bool(reasons), shown, len(reasons), tol, self._last_ms)
        return self.decision

    def ran(self, inputs: SpiralInputs, ts_ms: int) -> None:
        """The spirals ran on ``inputs`` at event time ``ts_ms``."""
        self._last, self._last_ms = inputs, ts_ms
