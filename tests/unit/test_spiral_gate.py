"""The spiral gate (RISK_MODEL §7): a run of the standard shocks only when the inputs moved
beyond the tolerance since the last run, and the decision says so."""

from __future__ import annotations

import orjson
import pytest

from monitor.protocol import decode_command, encode
from monitor.stages.global_risk.spiral_gate import SpiralGate, SpiralInputs
from streams.app.commands import run_spiral_command
from tests.unit.test_commands import live_risk, request

LADDER = [[100.0, 2.0], [99.0, 3.0]]


def inputs(btc: float = 100.0, ladder: list[list[float]] | None = None, accounts: int = 1) -> SpiralInputs:
    return SpiralInputs.of({"BTC": btc, "USDT": 1.0}, {"BTC": ladder or LADDER}, {},
                           {f"a{i}": ("account", i) for i in range(accounts)})


def test_moves_within_the_tolerance_keep_the_last_run() -> None:
    gate = SpiralGate(0.01)
    first = gate.check(inputs())
    assert first.rerun and first.reasons == ("first run",) and first.last_run_ms is None
    gate.ran(inputs(), 5)
    # 0.5% on the price, the depth 0.3%: within 1%
    same = gate.check(inputs(btc=100.5, ladder=[[100.0, 2.0], [99.0, 3.015]]))
    assert not same.rerun and same.reasons == () and same.last_run_ms == 5
    assert same.as_dict() == {"rerun": False, "reasons": [], "moved_inputs": 0, "tolerance_ratio": 0.01,
                              "last_run_ms": 5}
    # measured from the last run, not the last check: small steps add up
    assert gate.check(inputs(btc=101.1)).reasons == ("price BTC +1.1%",)


@pytest.mark.parametrize(("now", "reason"), [
    (inputs(btc=98.0), "price BTC -2%"),
    (inputs(ladder=[[100.0, 1.0]]), "ladder BTC -79.9%"),  # depth 497 → 100 USD
    (inputs(accounts=2), "accounts changed"),
    (SpiralInputs.of({"BTC": 100.0}, {"BTC": LADDER}, {}, {"a0": ("account", 0)}), "price USDT gone"),
    (SpiralInputs.of({"BTC": 100.0, "USDT": 1.0}, {}, {}, {"a0": ("account", 0)}), "ladder BTC gone"),
])
def test_a_move_beyond_the_tolerance_runs_again_and_says_why(now: SpiralInputs, reason: str) -> None:
    gate = SpiralGate(0.01)
    gate.ran(inputs(), 5)
    decision = gate.check(now)
    assert decision.rerun and decision.reasons == (reason,) and decision.moved == 1


def test_tolerance_zero_skips_only_unchanged_inputs() -> None:
    gate = SpiralGate(0.0)
    gate.ran(inputs(), 5)
    assert not gate.check(inputs()).rerun
    assert gate.check(inputs(btc=100.0000001)).rerun
    with pytest.raises(ValueError, match="tolerance_ratio"):
        SpiralGate(-0.1)


def test_the_worker_reuses_its_last_spirals_and_the_reply_says_so() -> None:
    risk = live_risk()
    first = orjson.loads(encode(run_spiral_command(risk, decode_command(request()))))
    assert first["spiral_run"]["rerun"] and first["spiral_run"]["reasons"] == ["first run"]
    again = orjson.loads(encode(run_spiral_command(risk, decode_command(request()))))
    assert again["spiral_run"] == {"rerun": False, "reasons": [], "moved_inputs": 0, "tolerance_ratio": 0.001,
                                   "last_run_ms": first["state_ts_ms"]}
    assert again["results"] == first["results"]
    risk.prices["BTC"] *= 0.98
    moved = orjson.loads(encode(run_spiral_command(risk, decode_command(request()))))
    assert moved["spiral_run"]["rerun"] and moved["spiral_run"]["reasons"] == ["price BTC -2%"]
