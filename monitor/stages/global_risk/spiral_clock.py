"""The spiral estimate on the global stage's live state (RISK_MODEL §7).

The depth ladders it sells into come from stage 1's ``depth`` signals; the configured
standard shocks run on an event-time timer (``spiral_run.interval_ms``) when their inputs
moved beyond ``spiral_run.tolerance_ratio`` since the last run
(:class:`monitor.stages.global_risk.spiral_gate.SpiralGate`), and any shock on demand (the
``spiral`` command). The estimate itself is :func:`monitor.stages.spiral.run_spiral_on_book`
on the columnar book of the priced accounts (the result of
:func:`monitor.stages.spiral.run_spiral`, to the last digit).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from monitor.models.loops.lending import Position
from monitor.protocol import DepthSignal
from monitor.risk_params import RiskParams
from monitor.stages.global_risk.spiral_gate import SpiralGate, SpiralInputs
from monitor.stages.spiral import (
    BookAccounts,
    PositionLayout,
    SpiralResult,
    run_spiral,
    run_spiral_on_book,
    run_spirals_on_book,
)

__all__ = ["SpiralClock"]


class SpiralClock:
    """Depth ladders by price key, the event-time timer and the latest standard-shock results."""

    #: The priced positions' layout of the last run, kept for the next while they stay the
    #: same objects (derived: not checkpointed, rebuilt on the first run after a restore).
    layout: PositionLayout | None = None

    def __init__(self, params: RiskParams, interval_ms: int, tolerance_ratio: float, threads: int = 1) -> None:
        self.params = params
        self.interval_ms = interval_ms
        #: Threads the standard shocks run on (``spiral_run.threads``; same results for any).
        self.threads = threads
        self.gate = SpiralGate(tolerance_ratio)
        self.ladders: dict[str, list[list[float]]] = {}
        self.spiral_results: dict[str, SpiralResult] = {}
        #: The shocks of the last run and their results (returned again while the gate holds).
        self.last_run: dict[str, SpiralResult] = {}
        self.next_spiral_ms: int | None = None

    def __getstate__(self) -> dict[str, object]:
        """The checkpointed state: everything but the derived position layout."""
        state = dict(self.__dict__)
        state.pop("layout", None)
        return state

    def on_depth(self, p: DepthSignal) -> None:
        """A book's cumulative bid depth at 10…500 bps below mid, as (price, quantity) levels."""
        mid = float(p["mid"])
        levels: list[list[float]] = []
        prev = 0.0
        for bps, cum in zip(
            (10, 50, 100, 200, 500), (float(x) for x in p["bid_usd"]), strict=False
        ):
            px = mid * (1.0 - bps / 10_000.0)
            if cum > prev and px > 0:
                levels.append([px, (cum - prev) / px])
                prev = cum
        self.ladders[str(p["key"])] = levels

    def due(self, ts: int) -> bool:
        """Whether event time ``ts`` reaches the timer (the first call only arms it)."""
        interval = self.interval_ms
        if self.next_spiral_ms is None:
            self.next_spiral_ms = (ts // interval + 1) * interval
            return False
        if ts >= self.next_spiral_ms:
            self.next_spiral_ms = (ts // interval + 1) * interval
            return True
        return False

    def spiral(
        self, positions: Mapping[str, Position], accounts: BookAccounts | None,
        prices: Mapping[str, float], shocks: Mapping[str, float],
    ) -> SpiralResult:
        """Spiral estimate on the live state for one shock: the priced positions, and the
        priced accounts on their book (``None``: no account is priced)."""
        priced_positions = self._priced(positions, prices)
        if accounts is None:
            return run_spiral(priced_positions, [], prices, self.ladders, shocks=dict(shocks), params=self.params)
        return run_spiral_on_book(
            priced_positions, accounts, prices, self.ladders, shocks=dict(shocks), params=self.params
        )

    @staticmethod
    def _priced(positions: Mapping[str, Position], prices: Mapping[str, float]) -> list[Position]:
        """The positions whose price keys are all known, in id order."""
        keys = set(prices)
        return [p for _, p in sorted(positions.items()) if p.price_keys() <= keys]

    def run_standard_shocks(
        self, positions: Mapping[str, Position], accounts: Mapping[str, object],
        on_book: Callable[[], BookAccounts | None], prices: Mapping[str, float], now_ms: int,
    ) -> dict[str, SpiralResult]:
        """The configured standard shocks whose price keys are known (others are skipped),
        when the inputs moved beyond the tolerance since the last run; else that run's
        results (``gate.decision`` says which, and why). ``on_book`` gives the priced
        accounts on their book, asked for only when the spirals run."""
        inputs = SpiralInputs.of(prices, self.ladders, positions, accounts)
        if not self.gate.check(inputs).rerun:
            return dict(self.last_run)
        known = [shock for shock in self.params.spiral.standard_shocks if all(k in prices for k in shock.moves)]
        book = on_book()
        if book is None:
            results = [self.spiral(positions, None, prices, shock.moves) for shock in known]
        else:
            priced = self._priced(positions, prices)
            if self.layout is None or not self.layout.lays_out(priced):
                self.layout = PositionLayout.of(priced, self.params)
            results = run_spirals_on_book(priced, book, prices, self.ladders,
                                          [dict(shock.moves) for shock in known], params=self.params,
                                          threads=self.threads, layout=self.layout)
        ran = {shock.name: result for shock, result in zip(known, results, strict=True)}
        self.spiral_results.update(ran)
        self.gate.ran(inputs, now_ms)
        self.last_run = ran
        return dict(ran)

    def liquidated_usd(self) -> dict[str, float]:
        """Notional liquidated (all stages) of the latest run of each standard shock, USD."""
        return {
            name: sum(r.liquidated_usd_by_stage.values()) for name, r in self.spiral_results.items()
        }
