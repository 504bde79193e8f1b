"""Ingest: received frames → validated events → batches, or dead letters with a reason.

Shared by the replayer and the live feeds, so both validate and batch identically.
Pure: the caller supplies frames (with their receive time) and sends the outputs.
"""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from monitor.batch import Batch, Batcher
from monitor.config import EngineConfig
from monitor.wire import WireError, normalize
from monitor.wire._common import MAX_TS_MS, MIN_TS_MS

__all__ = ["DeadLetter", "Ingest", "IngestStats"]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record that failed validation: reason label, detail, and the raw bytes."""

    reason: str
    detail: str
    raw: bytes
    venue: str | None = None
    channel: str | None = None
    ts_ms: int | None = None
    line_no: int | None = None

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "reason": self.reason,
                "detail": self.detail,
                "venue": self.venue,
                "channel": self.channel,
                "ts_ms": self.ts_ms,
                "line": self.line_no,
                "raw_b64": base64.b64encode(self.raw).decode("ascii"),
            }
        )


@dataclass(slots=True)
class IngestStats:
    frames: int = 0
    events: int = 0
    events_by_source: Counter[str] = field(default_factory=Counter)
    deadletters: Counter[str] = field(default_factory=Counter)


#: An ingest output: a batch for one partition, a batch for every partition
#: (quote-currency prices, ``broadcast=True``), or a dead letter.
@dataclass(frozen=True, slots=True)
class Routed:
    batch: Batch
    broadcast: bool


class Ingest:
    """Validates frames and groups their events into batches (deterministically)."""

    def __init__(self, config: EngineConfig) -> None:
        cfg = config.ingest
        self.max_frame_bytes = cfg.max_frame_bytes
        self.max_future_skew_ms = cfg.max_future_skew_ms
        self.max_jump_ms = cfg.max_watermark_jump_ms
        self.aliases = cfg.asset_aliases
        self.quote_assets = frozenset(cfg.quote_prices_usd)
        self.batcher = Batcher(cfg.batch_max_events, cfg.batch_max_span_ms)
        self.watermark_ms: int | None = None
        self.stats = IngestStats()

    def _dead(self, reason: str, detail: str, raw: bytes, **where: Any) -> DeadLetter:
        self.stats.deadletters[reason] += 1
        return DeadLetter(reason, detail, raw, **where)

    def reject(self, reason: str, detail: str, raw: bytes, line_no: int | None = None) -> DeadLetter:
        """Dead-letter a line that failed before it became a frame (bad JSON, bad envelope)."""
        self.stats.frames += 1
        return self._dead(reason, detail, raw, line_no=line_no)

    def feed(
        self,
        venue: str,
        channel: str,
        raw: Any,
        recv_ts_ms: int,
        raw_bytes: bytes,
        line_no: int | None = None,
    ) -> Iterator[Routed | DeadLetter]:
        """Validate one frame; yield the batches it closed and/or its dead letter."""
        self.stats.frames += 1
        where = {"venue": venue, "channel": channel, "ts_ms": recv_ts_ms, "line_no": line_no}
        if len(raw_bytes) > self.max_frame_bytes:
            yield self._dead(
                "oversize", f"frame of {len(raw_bytes)} bytes > {self.max_frame_bytes}",
                raw_bytes[: self.max_frame_bytes], **where)
            return
        if not MIN_TS_MS <= recv_ts_ms <= MAX_TS_MS:
            yield self._dead("timestamp_out_of_range", f"receive time {recv_ts_ms}", raw_bytes, **where)
            return
        wm = self.watermark_ms
        if wm is not None and recv_ts_ms - wm > self.max_jump_ms:
            yield self._dead(
                "timestamp_future",
                f"receive time jumps {(recv_ts_ms - wm) / 1000:.0f} s past the stream",
                raw_bytes, **where)
            return
        try:
            events = normalize(venue, channel, raw, recv_ts_ms, self.aliases, self.max_future_skew_ms)
        except WireError as exc:
            yield self._dead(exc.reason, exc.detail, raw_bytes, **where)
            return
        if wm is None or recv_ts_ms > wm:
            self.watermark_ms = recv_ts_ms
        for ev in events:
            self.stats.events += 1
            self.stats.events_by_source[ev.venue] += 1
            if ev.base in self.quote_assets:
                # A quote currency's price converts every asset: a barrier for all batches.
                for batch in self.batcher.flush():
                    yield Routed(batch, broadcast=False)
                single = Batch(asset=ev.base)
                single.add(ev)
                yield Routed(single, broadcast=True)
                continue
            for batch in self.batcher.add(ev):
                yield Routed(batch, broadcast=False)

    def finish(self) -> Iterator[Routed]:
        """Close every open batch."""
        for batch in self.batcher.flush():
            yield Routed(batch, broadcast=False)
