"""Acknowledgements on ``control.acks``: typed records, one codec, one collector.

A worker acknowledges a replay run (its ``run`` id) three ways:

- :class:`MarketAck`: a market partition processed everything before the run's end marker;
  it counts what that partition emitted since its previous ack;
- :class:`GlobalAck`: the global stage saw every partition's end marker and its alerts and
  snapshots of the run are durable;
- :class:`LoadedAck`: the global stage holds the run's positions and accounts.

The replayer and the benchmarks wait on them with :class:`AckCollector`. The same topic
also carries the replies to commands (:mod:`streams.app.commands`); the collector skips any
record that is not an ack of its run.
"""

from __future__ import annotations

from typing import Annotated, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

__all__ = ["Ack", "AckCollector", "GlobalAck", "LoadedAck", "MarketAck", "decode_ack", "encode_ack"]


class _AckBase(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    run: str
    config_hash: str
    #: Alerts the acknowledging stage emitted for the run (a collector waits to read them all).
    alerts: int = Field(ge=0)


class MarketAck(_AckBase):
    """A market partition reached the run's end marker."""

    stage: Literal["market"] = "market"
    partition: int = Field(ge=0)
    deadletters: int = Field(ge=0)
    events: int = Field(ge=0)
    #: Wall-clock seconds of the partition's first record of the run (benchmarks' span).
    first_wall_s: float | None = None
    ack_wall_s: float


class GlobalAck(_AckBase):
    """The global stage finished the run."""

    stage: Literal["global"] = "global"
    snapshots: int = Field(ge=0)
    ack_wall_s: float


class LoadedAck(_AckBase):
    """The global stage holds the run's positions and accounts."""

    stage: Literal["loaded"] = "loaded"
    positions: int = Field(ge=0)
    accounts: int = Field(ge=0)


Ack = Annotated[MarketAck | GlobalAck | LoadedAck, Field(discriminator="stage")]
_ACK: TypeAdapter[MarketAck | GlobalAck | LoadedAck] = TypeAdapter(Ack)


def encode_ack(ack: MarketAck | GlobalAck | LoadedAck) -> bytes:
    """The record's value on ``control.acks``."""
    return orjson.dumps(ack.model_dump())


def decode_ack(value: bytes) -> MarketAck | GlobalAck | LoadedAck | None:
    """The ack in a record, or ``None`` for anything else on the topic (a command reply)."""
    try:
        return _ACK.validate_json(value)
    except ValidationError:
        return None


class AckCollector:
    """The acks of one run, as they arrive: by partition, the global stage's, loaded."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.market: dict[int, MarketAck] = {}
        self.global_acks: list[GlobalAck] = []
        self.loaded: LoadedAck | None = None

    def take(self, value: bytes) -> None:
        """Keep the record if it is an ack of this run; a re-sent ack replaces its partition's."""
        ack = decode_ack(value)
        if ack is None or ack.run != self.run_id:
            return
        if isinstance(ack, MarketAck):
            self.market[ack.partition] = ack
        elif isinstance(ack, GlobalAck):
            self.global_acks.append(ack)
        else:
            self.loaded = ack

    def ended(self, n_parts: int, *, global_stage: bool = True) -> bool:
        """Every market partition acknowledged the end (and the global stage, if asked)."""
        return len(self.market) >= n_parts and (bool(self.global_acks) or not global_stage)

    def announced_alerts(self) -> int:
        """Alerts the acks say were emitted: the collector's reader waits until it has them."""
        return sum(a.alerts for a in self.market.values()) + sum(a.alerts for a in self.global_acks)

    def announced_snapshots(self) -> int:
        return sum(a.snapshots for a in self.global_acks)

    def in_order(self) -> list[MarketAck]:
        """The market acks by partition."""
        return [self.market[p] for p in sorted(self.market)]

    def count(self) -> int:
        """How many acks arrived (progress for an idle clock)."""
        return len(self.market) + len(self.global_acks)
