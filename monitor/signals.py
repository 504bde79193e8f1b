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

A signal is a tuple ``(ts_ms, asset, seq, kind, payload)`` with a JSON-object payload whose
fields are fixed per kind (:data:`monitor.protocol.SIGNAL_FIELDS`; one ``TypedDict`` per
kind); the records carrying them are :class:`monitor.protocol.SignalRecord`.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Any

from monitor.protocol import Signal, SignalKind, SignalPayload, SignalRecord

__all__ = ["PartitionClock", "ReorderBuffer"]


@dataclass(slots=True)
class PartitionClock:
    """Watermark and sequence counter of one market partition (stage 1)."""

    watermark_ms: int = 0
    seq: int = 0

    def stamp(self, ts_ms: int, asset: str, kind: SignalKind, payload: SignalPayload) -> Signal:
        """A signal at ``max(ts_ms, watermark)`` with the partition's next sequence number."""
        self.seq += 1
        return (ts_ms if ts_ms > self.watermark_ms else self.watermark_ms, asset, self.seq, kind, payload)

    def advance(self, ts_ms: int) -> None:
        self.watermark_ms = max(self.watermark_ms, ts_ms)


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
            out.append(heapq.heappop(heap))
        return out

    def schedule(self, ts_ms: int, kind: str, seq: int) -> None:
        """A signal of the reader's own (no market partition sends it, its asset is empty),
        released in order with the others once every watermark passed ``ts_ms``."""
        heapq.heappush(self._heap, (ts_ms, "", seq, kind, {}))

    def reset_run(self, run: str) -> None:
        """Forget the end markers of a finished run."""
        self.ended.pop(run, None)

    def __len__(self) -> int:
        return len(self._heap)
