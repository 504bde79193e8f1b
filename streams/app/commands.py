"""Commands to the global risk stage of a running worker, and their replies.

A command is a JSON record on ``risk.signals`` partition 0, the global agent's input, so
the worker that owns the global stage answers it on its live state, in order with the
signals before it::

    {"v": 1, "command": "spiral", "request_id": "9f2c…", "shocks": {"USDe@binance": -0.35}}

``shocks`` absent or null runs the configured standard shocks (RISK_MODEL §7) whose price
keys have a live price and updates ``liqmon_spiral_liquidated_usd{shock}``; a map of price
key → move (``-0.35`` = −35 %) runs that one shock, reported as ``custom`` and kept out
of the gauges (their label set is the configured shocks). The reply goes to
``control.acks`` with key = request id (see :func:`spiral_reply`). A record with a
``command`` key that does not validate, or asks for a price key the worker has no price
for, is dead-lettered with reason ``invalid_command`` and, when it carries a request id,
answered with ``"ok": false`` and the reason.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from monitor.protocol import CommandError, CommandReply, SpiralRequest, encode
from monitor.stages.global_risk.risk import GlobalRisk
from monitor.stages.spiral import SpiralResult

__all__ = [
    "CUSTOM_SHOCK",
    "INVALID_COMMAND",
    "MAX_REPLY_BYTES",
    "encode_reply",
    "error_reply",
    "run_spiral_command",
    "spiral_reply",
]

#: Name of a requested (non-standard) shock in a reply.
CUSTOM_SHOCK = "custom"
#: Dead-letter reason of a command that cannot be run.
INVALID_COMMAND = "invalid_command"
#: A reply larger than this is replaced by an error reply (Kafka's default record limit is 1 MB).
MAX_REPLY_BYTES = 900_000


def _result_body(
    moves: Mapping[str, float], result: SpiralResult, live_prices: Mapping[str, float]
) -> dict[str, Any]:
    """A spiral result for a reply: totals first; prices only for the keys that moved."""
    body = result.model_dump()
    body["final_prices"] = {
        k: v for k, v in result.final_prices.items() if live_prices.get(k) != v
    }
    body["price_change_pct"] = {k: v for k, v in result.price_change_pct.items() if v != 0.0}
    return {
        "moves": dict(moves),
        "liquidated_usd": math.fsum(result.liquidated_usd_by_stage.values()),
        **body,
    }


def spiral_reply(
    request: SpiralRequest,
    risk: GlobalRisk,
    results: Mapping[str, tuple[Mapping[str, float], SpiralResult]],
    skipped: Mapping[str, list[str]],
) -> CommandReply:
    """``{"request_id", "command", "ok": true, "state_ts_ms", "results": {shock: …}, "skipped"}``.

    ``state_ts_ms`` is the event time of the live state the spiral ran on; ``skipped`` names
    the standard shocks left out and the price keys they lack; ``accounts_left_out`` (with
    account shards and ``spiral_run.copy_sharded_accounts`` false only) the unified
    accounts the spiral did not cover, which live on the shards (``accounts`` counts those
    it covered).
    """
    return CommandReply(
        request_id=request.request_id,
        command="spiral",
        ok=True,
        config_hash=risk.config_hash,
        state_ts_ms=risk.now_ms,
        positions=len(risk.positions),
        accounts=len(risk.accounts),
        price_keys=len(risk.prices),
        results={name: _result_body(moves, result, risk.prices) for name, (moves, result) in results.items()},
        skipped={name: list(keys) for name, keys in skipped.items()},
        accounts_left_out=risk.accounts_left_out_of_spirals,
    )


def error_reply(request_id: str, error: str) -> CommandReply:
    return CommandReply(request_id=request_id, ok=False, error=error)


def encode_reply(reply: CommandReply) -> bytes:
    """The reply's bytes; an oversize one becomes an error reply."""
    raw = encode(reply)
    if len(raw) > MAX_REPLY_BYTES:
        error = f"reply of {len(raw):,} bytes exceeds {MAX_REPLY_BYTES:,}; ask for one shock"
        raw = encode(error_reply(reply.request_id, error))
    return raw


def run_spiral_command(risk: GlobalRisk, request: SpiralRequest) -> CommandReply:
    """Run a spiral request on the live state and build its reply (no I/O).

    Standard shocks update ``risk.spiral_results`` (the gauges' source); a custom shock does
    not. Raises :class:`CommandError` when a custom shock names a key without a price.
    """
    if request.shocks is None:
        ran = risk.run_standard_shocks()
        specs = {s.name: s.moves for s in risk.params.spiral.standard_shocks}
        results = {name: (specs[name], result) for name, result in ran.items()}
        skipped = {
            name: sorted(k for k in moves if k not in risk.prices)
            for name, moves in specs.items() if name not in ran
        }
        reply = spiral_reply(request, risk, results, skipped)
        decision = risk.spiral_gate.decision
        if decision is not None:
            reply.spiral_run = decision.as_dict()
        return reply
    missing = sorted(k for k in request.shocks if k not in risk.prices)
    if missing:
        raise CommandError(
            f"shocks: no live price for {', '.join(missing)} on the worker", request.request_id
        )
    result = risk.spiral(request.shocks)
    return spiral_reply(request, risk, {CUSTOM_SHOCK: (request.shocks, result)}, {})
