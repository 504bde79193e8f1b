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
from typing import Any, Final, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from monitor.stages.global_risk.risk import GlobalRisk
from monitor.stages.spiral import SpiralResult

__all__ = [
    "COMMAND_VERSION",
    "CUSTOM_SHOCK",
    "INVALID_COMMAND",
    "MAX_REPLY_BYTES",
    "CommandError",
    "SpiralRequest",
    "decode_command",
    "encode_reply",
    "encode_request",
    "error_reply",
    "run_spiral_command",
    "spiral_reply",
]

COMMAND_VERSION: Final = 1
#: Name of a requested (non-standard) shock in a reply.
CUSTOM_SHOCK = "custom"
#: Dead-letter reason of a command that cannot be run.
INVALID_COMMAND = "invalid_command"
#: A reply larger than this is replaced by an error reply (Kafka's default record limit is 1 MB).
MAX_REPLY_BYTES = 900_000


class CommandError(ValueError):
    """A command that cannot be run: the reason, and its request id when it has one."""

    def __init__(self, detail: str, request_id: str | None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.request_id = request_id


class SpiralRequest(BaseModel):
    """``{"v": 1, "command": "spiral", "request_id", "shocks"?}``."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    v: Literal[1]
    command: Literal["spiral"]
    request_id: str = Field(min_length=1, max_length=200)
    #: price key → move ratio (−0.35 = −35 %); None = the configured standard shocks
    shocks: dict[str, float] | None = None

    @field_validator("shocks")
    @classmethod
    def _moves(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("shocks must name at least one price key (or be null)")
        for key, move in value.items():
            if not key:
                raise ValueError("empty price key")
            if not math.isfinite(move) or move <= -1.0:
                raise ValueError(f"move of {key!r} must be finite and above -100%")
        return value


def encode_request(request: SpiralRequest) -> bytes:
    return orjson.dumps(request.model_dump(exclude_none=True))


def decode_command(obj: Mapping[str, Any]) -> SpiralRequest:
    """Validate a command record (raises :class:`CommandError` naming the field)."""
    rid = obj.get("request_id")
    request_id = rid if isinstance(rid, str) and 0 < len(rid) <= 200 else None
    try:
        return SpiralRequest.model_validate(obj)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(part) for part in err["loc"]) or "record"
        raise CommandError(f"{where}: {err['msg']}", request_id) from None


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
) -> dict[str, Any]:
    """``{"request_id", "command", "ok": true, "state_ts_ms", "results": {shock: …}, "skipped"}``.

    ``state_ts_ms`` is the event time of the live state the spiral ran on; ``skipped`` names
    the standard shocks left out and the price keys they lack.
    """
    return {
        "request_id": request.request_id,
        "command": request.command,
        "ok": True,
        "config_hash": risk.config_hash,
        "state_ts_ms": risk.now_ms,
        "positions": len(risk.positions),
        "accounts": len(risk.accounts),
        "price_keys": len(risk.prices),
        "results": {
            name: _result_body(moves, result, risk.prices) for name, (moves, result) in results.items()
        },
        "skipped": {name: list(keys) for name, keys in skipped.items()},
    }


def error_reply(request_id: str, error: str) -> dict[str, Any]:
    return {"request_id": request_id, "ok": False, "error": error}


def encode_reply(reply: Mapping[str, Any]) -> bytes:
    """JSON bytes of a reply; an oversize one becomes an error reply."""
    raw = orjson.dumps(reply)
    if len(raw) > MAX_REPLY_BYTES:
        error = f"reply of {len(raw):,} bytes exceeds {MAX_REPLY_BYTES:,}; ask for one shock"
        raw = orjson.dumps(error_reply(str(reply.get("request_id", "")), error))
    return raw


def run_spiral_command(risk: GlobalRisk, request: SpiralRequest) -> dict[str, Any]:
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
            reply["spiral_run"] = decision.as_dict()
        return reply
    missing = sorted(k for k in request.shocks if k not in risk.prices)
    if missing:
        raise CommandError(
            f"shocks: no live price for {', '.join(missing)} on the worker", request.request_id
        )
    result = risk.spiral(request.shocks)
    return spiral_reply(request, risk, {CUSTOM_SHOCK: (request.shocks, result)}, {})
