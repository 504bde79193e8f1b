"""The records between liqmon's processes that the monitor's own types do not cover.

Per topic: ``market.batches`` carries :class:`monitor.ingest.batch.Batch` and ``Control``
records; ``alerts.cascade`` :class:`monitor.alerts.Alert`; ``risk.snapshots``
:class:`monitor.snapshots.RiskSnapshot`; ``deadletters`` ``DeadLetter``. Here:

- ``risk.signals``: :func:`decode_risk_record` tells its three kinds of record apart —
  a stage-1 :class:`monitor.signals.SignalRecord`, a forwarded position or account
  (:class:`InputRecord`, a replay's :class:`SyncMarker` inside one), a command
  (:class:`CommandRecord`, validated by :mod:`streams.app.commands`);
- ``control.acks``: the acks below, and the command replies.

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

from dataclasses import dataclass
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from monitor.signals import SignalRecord, signal_record_from_obj

__all__ = [
    "Ack",
    "AckCollector",
    "CommandRecord",
    "GlobalAck",
    "InputKind",
    "InputRecord",
    "LoadedAck",
    "MarketAck",
    "SyncMarker",
    "decode_ack",
    "decode_risk_record",
    "encode_ack",
]

InputKind = Literal["position", "account"]
INPUT_VERSION = 1


@dataclass(frozen=True, slots=True)
class SyncMarker:
    """A replay's marker on one positions/accounts partition: everything before it is sent.

    The global stage acknowledges the run (:class:`LoadedAck`) once all ``of`` markers are in.
    """

    run: str
    partition: int
    of: int

    def raw(self) -> dict[str, Any]:
        """The marker as written to the positions/accounts topic."""
        return {"ctl": "sync", "run": self.run, "partition": self.partition, "of": self.of}

    @classmethod
    def from_raw(cls, raw: dict[str, Any]) -> SyncMarker:
        """Read a marker (raises ValueError naming what is wrong)."""
        run, partition, of = raw.get("run"), raw.get("partition", 0), raw.get("of", 1)
        if not isinstance(run, str) or not isinstance(partition, int) or not isinstance(of, int) or of < 1:
            raise ValueError("a sync marker needs a string run, an integer partition and of >= 1")
        return cls(run, partition, of)


@dataclass(frozen=True, slots=True)
class InputRecord:
    """A position or account forwarded to ``risk.signals`` with its source (partition, offset).

    ``src`` is ``None`` for a record written by hand: it is always applied.
    """

    kind: InputKind
    raw: dict[str, Any]
    src: tuple[int, int] | None

    def encode(self) -> bytes:
        obj: dict[str, Any] = {"v": INPUT_VERSION, "input": self.kind, "raw": self.raw}
        if self.src is not None:
            obj["src"] = list(self.src)
        return orjson.dumps(obj)

    @property
    def sync(self) -> SyncMarker | None:
        """The replay's sync marker this record carries, if it is one."""
        return SyncMarker.from_raw(self.raw) if "ctl" in self.raw else None

    @classmethod
    def from_obj(cls, obj: dict[str, Any]) -> InputRecord:
        """Read a decoded record (raises ValueError naming what is wrong)."""
        kind, raw, src = obj.get("input"), obj.get("raw"), obj.get("src")
        if kind not in ("position", "account"):
            raise ValueError(f"input must be position or account, not {kind!r}")
        if not isinstance(raw, dict):
            raise ValueError("input record needs a JSON object")
        if isinstance(src, list) and len(src) == 2 and type(src[0]) is int and type(src[1]) is int:
            return cls(kind, raw, (src[0], src[1]))
        return cls(kind, raw, None)


@dataclass(frozen=True, slots=True)
class CommandRecord:
    """A command to the global stage (validated, and answered, by :mod:`streams.app.commands`)."""

    obj: dict[str, Any]


def decode_risk_record(value: bytes) -> SignalRecord | InputRecord | CommandRecord:
    """One ``risk.signals`` record, typed (raises ValueError with a reason on anything else)."""
    obj = orjson.loads(value)
    if isinstance(obj, dict) and "input" in obj:
        return InputRecord.from_obj(obj)
    if isinstance(obj, dict) and "command" in obj:
        return CommandRecord(obj)
    return signal_record_from_obj(obj)


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
