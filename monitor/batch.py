"""The wire unit for market data: a small batch of one asset's events (DESIGN "Throughput").

One Kafka record carries the events of one asset, across venues, in arrival order, over
a few hundred milliseconds of event time. Batching per *asset* (not per venue/symbol)
keeps the exact cross-venue order that the venue-local depeg rule depends on, and puts
all of one asset's state in one partition. The encoding is row-oriented JSON of plain
numbers, which orjson decodes at several million numbers per second::

    {"v": 1, "asset": "USDe",
     "src": [["binance-spot", "USDEUSDT", "USDT"], ["uniswap-v3", "USDe/USDT", "USDT"]],
     "e": [[kind, src_index, ts_ms, recv_ts_ms, f1, f2, f3, f4], ...]}

A control record ``{"v": 1, "ctl": "end", "run": "<id>", "partition": p}`` marks the end
of a replay on one partition (the worker acknowledges it once everything before it is
processed). :class:`Batcher` is the deterministic grouping used by the replayer and the
live feeds alike, so the Kafka path and the inline path see the same batches.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from monitor.events import ROW_LENGTHS, MarketEvent

__all__ = ["WIRE_VERSION", "Batch", "BatchError", "Batcher", "Control", "decode_record"]

WIRE_VERSION = 1


class BatchError(ValueError):
    """A record on a market topic that is not a valid batch (dead-lettered by the worker)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(slots=True)
class Batch:
    """Events of one asset in arrival order; ``sources`` is the (venue, symbol, quote) table."""

    asset: str
    sources: list[tuple[str, str, str]] = field(default_factory=list)
    rows: list[list[float]] = field(default_factory=list)
    _src_index: dict[tuple[str, str, str], int] = field(default_factory=dict, repr=False)

    def add(self, ev: MarketEvent) -> None:
        key = (ev.venue, ev.symbol, ev.quote)
        idx = self._src_index.get(key)
        if idx is None:
            idx = len(self.sources)
            self._src_index[key] = idx
            self.sources.append(key)
        row: list[float] = [ev.kind, idx, ev.ts_ms, ev.recv_ts_ms, ev.f1, ev.f2, ev.f3, ev.f4]
        if ev.bands:
            row.extend(ev.bands)
        self.rows.append(row)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def first_ts_ms(self) -> int:
        return int(self.rows[0][2])

    @property
    def last_ts_ms(self) -> int:
        return int(self.rows[-1][2])

    def encode(self) -> bytes:
        return orjson.dumps(
            {"v": WIRE_VERSION, "asset": self.asset, "src": self.sources, "e": self.rows}
        )

    def events(self) -> Iterator[MarketEvent]:
        """The batch's events as MarketEvent records (tests, tooling; the engine reads rows)."""
        for row in self.rows:
            kind, idx, ts, rts, f1, f2, f3, f4 = row[:8]
            venue, symbol, quote = self.sources[int(idx)]
            yield MarketEvent(
                int(kind), venue, symbol, self.asset, quote, int(ts), int(rts), f1, f2, f3, f4,
                tuple(row[8:]),
            )


@dataclass(frozen=True, slots=True)
class Control:
    """A control record: ``end`` of a run on one partition."""

    ctl: str
    run: str
    partition: int

    def encode(self) -> bytes:
        return orjson.dumps(
            {"v": WIRE_VERSION, "ctl": self.ctl, "run": self.run, "partition": self.partition}
        )


def _check_rows(rows: Any, n_sources: int) -> list[list[float]]:
    if not isinstance(rows, list):
        raise BatchError("invalid_batch", "'e' must be a list")
    for row in rows:
        if not isinstance(row, list) or len(row) < 8:
            raise BatchError("invalid_batch", "each event row must be a list of at least 8 numbers")
        kind, idx = row[0], row[1]
        expected = ROW_LENGTHS.get(kind) if isinstance(kind, int) else None
        if expected is None or len(row) != expected:
            raise BatchError("invalid_batch", f"unknown kind or wrong row length in {row!r:.80}")
        if not isinstance(idx, int) or not 0 <= idx < n_sources:
            raise BatchError("invalid_batch", f"source index out of range in {row!r:.80}")
        for x in row:
            if isinstance(x, bool) or not isinstance(x, (int, float)):
                raise BatchError("invalid_batch", f"non-numeric value in {row!r:.80}")
    return rows


def decode_record(value: bytes) -> Batch | Control:
    """Decode and validate one market-topic record."""
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise BatchError("invalid_json", str(exc)) from None
    if not isinstance(obj, dict) or obj.get("v") != WIRE_VERSION:
        raise BatchError("invalid_batch", "not a liqmon batch record (missing or unknown 'v')")
    if "ctl" in obj:
        ctl, run, part = obj.get("ctl"), obj.get("run"), obj.get("partition")
        if not isinstance(ctl, str) or not isinstance(run, str) or not isinstance(part, int):
            raise BatchError("invalid_batch", "control record needs ctl, run, partition")
        return Control(ctl, run, part)
    asset, src = obj.get("asset"), obj.get("src")
    if not isinstance(asset, str) or not isinstance(src, list):
        raise BatchError("invalid_batch", "batch needs 'asset' and 'src'")
    sources: list[tuple[str, str, str]] = []
    for s in src:
        if not (isinstance(s, list) and len(s) == 3 and all(isinstance(x, str) for x in s)):
            raise BatchError("invalid_batch", "each source must be [venue, symbol, quote]")
        sources.append((s[0], s[1], s[2]))
    rows = _check_rows(obj.get("e"), len(sources))
    return Batch(asset=asset, sources=sources, rows=rows)


class Batcher:
    """Groups events per asset; a batch closes on size or event-time span.

    ``add`` returns the batches it closed (at most one). ``flush`` closes everything,
    in first-event order, which keeps the output a pure function of the input order.
    """

    def __init__(self, max_events: int, max_span_ms: int) -> None:
        self.max_events = max_events
        self.max_span_ms = max_span_ms
        self._open: dict[str, Batch] = {}

    def add(self, ev: MarketEvent) -> list[Batch]:
        closed: list[Batch] = []
        batch = self._open.get(ev.base)
        if batch is not None and ev.ts_ms - batch.first_ts_ms > self.max_span_ms:
            closed.append(self._open.pop(ev.base))
            batch = None
        if batch is None:
            batch = Batch(asset=ev.base)
            self._open[ev.base] = batch
        batch.add(ev)
        if len(batch) >= self.max_events:
            closed.append(self._open.pop(ev.base))
        return closed

    def flush(self) -> list[Batch]:
        out = list(self._open.values())
        self._open.clear()
        return out

    def __len__(self) -> int:
        return sum(len(b) for b in self._open.values())
