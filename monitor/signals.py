"""Stage-1 → stage-2 signals and the watermark reorder buffer that makes stage 2 deterministic.

The per-asset engines (stage 1, one per market partition) turn market batches into small
*signals*: a price key that moved materially, a peg level change, a book's withdrawal
state, liquidation and sell flow. The single global stage (cascade, loops, unified
accounts, spiral) consumes them from the ``risk.signals`` topic. The Kafka path
interleaves partitions arbitrarily; the inline path does not. Determinism comes from
event time:

- per market partition, signal times are made non-decreasing (each signal's time is
  clamped up to the partition's watermark, the largest event time processed on it before
  the batch), and every signal record carries the partition's watermark after the batch.
  So no later signal of that partition can have a time below that watermark;
- stage 2 buffers signals and releases them in (ts_ms, asset, seq) order only while
  ts_ms < the minimum watermark over all partitions (and everything at the end of a
  run). The released sequence is then the same total order whatever the interleaving.

A signal is a list ``[ts_ms, asset, seq, kind, payload]`` with a JSON-object payload whose
fields are fixed per kind (:data:`SIGNAL_FIELDS`; one ``TypedDict`` per kind below).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict

import orjson

__all__ = [
    "SIGNAL_FIELDS",
    "SIGNAL_VERSION",
    "BookSignal",
    "DepthSignal",
    "FlowSignal",
    "LiqSignal",
    "PartitionClock",
    "PegSignal",
    "PriceSignal",
    "ReorderBuffer",
    "Signal",
    "SignalKind",
    "SignalPayload",
    "SignalRecord",
    "decode_signal_record",
    "encode_signal_record",
    "signal_record_from_obj",
]

SIGNAL_VERSION = 1

#: [ts_ms, asset, seq, kind, payload]
Signal = list[Any]

SignalKind = Literal["price", "peg", "book", "depth", "liq", "flow"]


class PriceSignal(TypedDict):
    """A price key moved materially (an index, a venue's price, a derived rate)."""

    key: str
    price: float


class PegSignal(TypedDict):
    """A venue's peg level changed (0 in band … 3 critical) at this deviation."""

    venue: str
    level: int
    dev_bps: float


class BookSignal(TypedDict):
    """A book changed withdrawal state (warm, withdrawn, restored, invalid …)."""

    venue: str
    symbol: str
    state: str
    depth_usd: float
    baseline_usd: float


class DepthSignal(TypedDict):
    """A book's cumulative bid depth (USD) in the bands below mid, for the spiral's ladders."""

    venue: str
    symbol: str
    key: str
    mid: float
    bid_usd: list[float]


class LiqSignal(TypedDict):
    """Liquidation prints of the batch, by side."""

    long_usd: float
    short_usd: float


class FlowSignal(TypedDict):
    """Net taker sell flow of the batch."""

    net_sell_usd: float


SignalPayload = PriceSignal | PegSignal | BookSignal | DepthSignal | LiqSignal | FlowSignal

#: The fields each kind of signal carries: what stage 2 reads, checked when a record is decoded.
SIGNAL_FIELDS: dict[str, frozenset[str]] = {
    kind: frozenset(payload.__annotations__)
    for kind, payload in (
        ("price", PriceSignal), ("peg", PegSignal), ("book", BookSignal),
        ("depth", DepthSignal), ("liq", LiqSignal), ("flow", FlowSignal),
    )
}


@dataclass(slots=True)
class PartitionClock:
    """Watermark and sequence counter of one market partition (stage 1)."""

    watermark_ms: int = 0
    seq: int = 0

    def stamp(self, ts_ms: int, asset: str, kind: SignalKind, payload: SignalPayload) -> Signal:
        """A signal at ``max(ts_ms, watermark)`` with the partition's next sequence number."""
        self.seq += 1
        return [ts_ms if ts_ms > self.watermark_ms else self.watermark_ms, asset, self.seq, kind, payload]

    def advance(self, ts_ms: int) -> None:
        self.watermark_ms = max(self.watermark_ms, ts_ms)


@dataclass(frozen=True, slots=True)
class SignalRecord:
    """One ``risk.signals`` record: a partition's signals after a batch and its watermark.

    ``end`` (a run id) marks the end of a replay on that partition.
    """

    partition: int
    watermark_ms: int
    signals: list[Signal]
    end: str | None = None


def encode_signal_record(rec: SignalRecord) -> bytes:
    obj: dict[str, Any] = {
        "v": SIGNAL_VERSION, "p": rec.partition, "wm": rec.watermark_ms, "s": rec.signals,
    }
    if rec.end is not None:
        obj["end"] = rec.end
    return orjson.dumps(obj)


def decode_signal_record(value: bytes) -> SignalRecord:
    """Decode one record (raises ValueError with a reason on anything malformed)."""
    return signal_record_from_obj(orjson.loads(value))


def signal_record_from_obj(obj: object) -> SignalRecord:
    """A signal record from its decoded JSON (raises ValueError with a reason)."""
    if not isinstance(obj, dict) or obj.get("v") != SIGNAL_VERSION:
        raise ValueError("not a liqmon signal record")
    part, wm, sigs = obj.get("p"), obj.get("wm"), obj.get("s")
    if not isinstance(part, int) or not isinstance(wm, int) or not isinstance(sigs, list):
        raise ValueError("signal record needs integer p, wm and a list s")
    for s in sigs:
        if not (
            isinstance(s, list) and len(s) == 5 and isinstance(s[0], int)
            and isinstance(s[1], str) and isinstance(s[2], int) and isinstance(s[3], str)
            and isinstance(s[4], dict)
        ):
            raise ValueError("each signal must be [ts_ms, asset, seq, kind, payload]")
        fields = SIGNAL_FIELDS.get(s[3])
        if fields is None:
            raise ValueError(f"unknown signal kind {s[3]!r}")
        if not fields <= s[4].keys():
            raise ValueError(f"a {s[3]} signal needs {', '.join(sorted(fields - s[4].keys()))}")
    end = obj.get("end")
    return SignalRecord(part, wm, sigs, end if isinstance(end, str) else None)


@dataclass
class ReorderBuffer:
    """Releases signals in (ts_ms, asset, seq) order below the minimum partition watermark."""

    partitions: int
    watermarks: dict[int, int] = field(default_factory=dict)
    #: Partitions that sent the end marker, per run id. Per run, because a redelivered
    #: run (records read again after a restart without a commit) can interleave its end
    #: markers with the next run's.
    ended: dict[str, set[int]] = field(default_factory=dict)
    #: Highest signal sequence number taken, per partition.
    seq_high: dict[int, int] = field(default_factory=dict)
    _heap: list[tuple[int, str, int, str, dict[str, Any]]] = field(default_factory=list)

    def push(self, rec: SignalRecord) -> None:
        """Buffer a record's signals; a signal already taken (its partition's sequence number
        at or below the highest taken) is dropped.

        A market partition's signals are numbered by its clock in processing order, and the
        clock is part of the partition's checkpoint, so a partition processed again after a
        restart sends the same signals under the same numbers: they are taken once, whoever
        sent them and however its records were merged.
        """
        high = self.seq_high.get(rec.partition, 0)
        top = high
        for ts, asset, seq, kind, payload in rec.signals:
            if seq <= high:
                continue
            top = max(top, seq)
            heapq.heappush(self._heap, (ts, asset, seq, kind, payload))
        if top > high:
            self.seq_high[rec.partition] = top
        if rec.watermark_ms > self.watermarks.get(rec.partition, -1):
            self.watermarks[rec.partition] = rec.watermark_ms
        if rec.end is not None:
            self.ended.setdefault(rec.end, set()).add(rec.partition)

    @property
    def low_watermark_ms(self) -> int | None:
        """Minimum watermark over all partitions (None until every partition reported)."""
        if len(self.watermarks) < self.partitions:
            return None
        return min(self.watermarks.values())

    def run_ended(self, run: str) -> bool:
        """Every partition sent the end marker of ``run``."""
        return len(self.ended.get(run, ())) >= self.partitions

    @property
    def runs_in_progress(self) -> bool:
        """Some run has end markers from some partitions but not all."""
        return any(len(parts) < self.partitions for parts in self.ended.values())

    def release(self, flush: bool = False) -> list[Signal]:
        """Signals now safe to process, in order (all of them when ``flush``)."""
        low = self.low_watermark_ms
        out: list[Signal] = []
        heap = self._heap
        while heap and (flush or (low is not None and heap[0][0] < low)):
            ts, asset, seq, kind, payload = heapq.heappop(heap)
            out.append([ts, asset, seq, kind, payload])
        return out

    def reset_run(self, run: str) -> None:
        """Forget the end markers of a finished run."""
        self.ended.pop(run, None)

    def __len__(self) -> int:
        return len(self._heap)
