"""The replayer: capture file → ingest (validate, batch) → Kafka or the inline engine.

Both paths consume exactly the same routed output of :class:`monitor.ingest.frames.Ingest`
(same batches, same order per asset), so ``--inline`` gives exactly the alerts the Kafka
path gives. The feed alerts Ingest raises itself (``book_gap``, ``feed_stale``) join the
engine's alerts on both paths, as they do live. Speed: ``None`` = as fast as possible,
``N`` = N× real time on receive time.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from monitor.config import EngineConfig, error_place
from monitor.ingest.batch import Batch
from monitor.ingest.frames import Ingest, IngestOutput
from monitor.protocol import Alert, DeadLetter, RiskSnapshot
from monitor.stages.engine import Engine
from monitor.stages.global_risk.risk import GlobalRisk
from monitor.stages.global_risk.sharded import ShardedRisk
from monitor.stages.pipeline import global_step, market_step
from replay.gcpause import gc_paused
from replay.ingest_process import IngestProcess
from replay.routing import ReplayStats, route_capture

__all__ = [
    "InputFileError",
    "Pacer",
    "ProgressFn",
    "ReplayStats",
    "load_jsonl",
    "partition_for",
    "replay_inline",
    "route_capture",
]

#: Called with (event_time_ms, frames, alerts_so_far) about once per 0.25 s of wall time.
ProgressFn = Callable[[int, int, int], None]


class InputFileError(ValueError):
    """A positions/accounts file line that is not a JSON object (names file and line)."""


def load_jsonl(path: Path, check: Callable[[dict[str, Any]], object] | None = None) -> list[dict[str, Any]]:
    """Records of a JSON-lines file (positions or accounts); blank lines are skipped.

    With ``check`` (raising pydantic's ``ValidationError`` on a record the stages would
    refuse, e.g. a model's ``model_validate``), every line is validated up front, so a bad
    record is one clear error naming the file, line and field (both replay paths), not a
    failure mid-replay.
    """
    out: list[dict[str, Any]] = []
    with path.open("rb") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise InputFileError(f"{path}:{n}: not JSON ({exc})") from None
            if not isinstance(obj, dict):
                raise InputFileError(f"{path}:{n}: each line must be a JSON object")
            try:
                if check is not None:
                    check(obj)
            except ValidationError as exc:
                err = exc.errors()[0]
                raise InputFileError(f"{path}:{n}: {error_place(err) or 'record'}: {err['msg']}") from None
            out.append(obj)
    return out


def partition_for(asset: str, partitions: int) -> int:
    """Partition of an asset's batches: crc32 of the asset name (stable across processes)."""
    return zlib.crc32(asset.encode()) % partitions


class Pacer:
    """Holds a replay to ``speed``× real time on the frames' receive time."""

    def __init__(self, speed: float | None) -> None:
        self.speed = speed
        self._origin_ts: int | None = None
        self._origin_wall = 0.0

    def delay_s(self, ts_ms: int) -> float:
        """Seconds :meth:`wait` would sleep before ``ts_ms`` (0: none; full speed, the first
        frame, or behind real time)."""
        if self.speed is None or self._origin_ts is None:
            return 0.0
        due = self._origin_wall + (ts_ms - self._origin_ts) / 1000.0 / self.speed
        delay = due - time.monotonic()
        return delay if delay > 0.0005 else 0.0

    async def wait(self, ts_ms: int) -> None:
        if self.speed is None:
            return
        if self._origin_ts is None:
            self._origin_ts = ts_ms
            self._origin_wall = time.monotonic()
            return
        delay = self.delay_s(ts_ms)
        if delay > 0.0:
            await asyncio.sleep(delay)


@dataclass
class InlineResult:
    alerts: list[Alert]
    stats: ReplayStats
    snapshots: list[RiskSnapshot] = field(default_factory=list)


async def _paced(
    items: Iterator[tuple[int, IngestOutput]], pacer: Pacer
) -> AsyncIterator[tuple[int, IngestOutput]]:
    for ts, item in items:
        await pacer.wait(ts)
        yield ts, item


class _InlineStages:
    """Stage 1 over ``partitions`` engines and stage 2 behind them, wired as the workers are."""

    def __init__(
        self,
        config: EngineConfig,
        partitions: int,
        on_alert: Callable[[Alert], None] | None,
        on_snapshot: Callable[[RiskSnapshot], None] | None,
        account_shards: int = 0,
    ) -> None:
        # One engine per market partition, as in the workers: a partition's state is its own
        # (a worker checkpoints and recovers it alone).
        self.engines = [Engine(config) for _ in range(partitions)]
        self.risk: GlobalRisk | ShardedRisk = (
            ShardedRisk(config, partitions, account_shards) if account_shards else GlobalRisk(config, partitions))
        self.partitions = partitions
        self.sent_watermark: dict[int, int] = {}
        self.alerts: list[Alert] = []
        self.snapshots: list[RiskSnapshot] = []
        self._on_alert = on_alert
        self._on_snapshot = on_snapshot

    def load(self, positions: list[dict[str, Any]] | None, accounts: list[dict[str, Any]] | None) -> None:
        for raw in positions or ():
            self.risk.upsert_position(raw)
        for raw in accounts or ():
            self.risk.upsert_account(raw)

    def emit(self, alerts: Iterable[Alert]) -> None:
        for alert in alerts:
            self.alerts.append(alert)
            if self._on_alert is not None:
                self._on_alert(alert)

    def take_snapshots(self) -> None:
        for snap in self.risk.take_snapshots():
            self.snapshots.append(snap)
            if self._on_snapshot is not None:
                self._on_snapshot(snap)

    def process(self, batch: Batch, broadcast: bool) -> None:
        """Exactly what the workers do: a broadcast record reaches every partition; a
        partition forwards its signals, or its watermark when that moved."""
        parts = range(self.partitions) if broadcast else (partition_for(batch.asset, self.partitions),)
        produced: list[Alert] = []
        for part in parts:
            step = market_step(self.engines[part], batch, part, self.sent_watermark.get(part, -1))
            produced.extend(step.result.alerts)
            if step.forward is not None:
                self.sent_watermark[part] = step.forward.watermark_ms
                produced.extend(global_step(self.risk, step.forward).alerts)
        self.emit(produced)
        self.take_snapshots()

    def finish(self) -> None:
        self.emit(self.risk.flush())
        self.take_snapshots()


async def _inline_loop(
    items: Iterator[tuple[int, IngestOutput]],
    speed: float | None,
    stages: _InlineStages,
    stats: ReplayStats,
    on_batch: Callable[[Batch], None] | None,
    progress: ProgressFn | None,
    frames: Callable[[], int],
) -> None:
    """Route every capture item through the stages (paced at ``speed``) until the end or
    an interrupt (then ``stats.interrupted``)."""
    next_progress = time.monotonic()
    try:
        async for ts, item in _paced(items, Pacer(speed)):
            if isinstance(item, DeadLetter):
                continue
            if isinstance(item, Alert):
                stages.emit((item,))
                continue
            stats.batches += 1
            if on_batch is not None:
                on_batch(item.batch)
            stages.process(item.batch, item.broadcast)
            if progress is not None and time.monotonic() >= next_progress:
                next_progress = time.monotonic() + 0.25
                progress(ts, frames(), len(stages.alerts))
    except (KeyboardInterrupt, asyncio.CancelledError):
        stats.interrupted = True


async def replay_inline(
    path: Path,
    config: EngineConfig,
    speed: float | None = None,
    from_ms: int | None = None,
    to_ms: int | None = None,
    progress: ProgressFn | None = None,
    on_alert: Callable[[Alert], None] | None = None,
    on_batch: Callable[[Batch], None] | None = None,
    partitions: int = 8,
    positions: list[dict[str, Any]] | None = None,
    accounts: list[dict[str, Any]] | None = None,
    on_snapshot: Callable[[RiskSnapshot], None] | None = None,
    account_shards: int = 0,
    ingest_process: bool = True,
    on_idle: Callable[[], bool] | None = None,
) -> InlineResult:
    """Replay a capture through the engine without a broker.

    The stages run in this process; the capture is routed beside them in a child process
    (:class:`replay.ingest_process.IngestProcess`, two cores at work), or here with
    ``ingest_process=False``. Either way they see the same items in the same order.

    Stage 1 runs as if split over ``partitions`` market partitions (same watermarks and
    signal clocks as the workers), stage 2 consumes its signals through the same reorder
    buffer (over ``account_shards`` account shards when > 0, as the workers split them),
    so the alerts equal the Kafka path's byte for byte. ``on_idle``: called while the
    stages wait for the child's next items (:meth:`IngestProcess.items`).
    """
    # At full speed the replay is a batch job: the cyclic collector's passes over the
    # engines' heap cost it about a quarter of its time (replay/gcpause.py).
    with gc_paused() if speed is None else nullcontext():
        stages = _InlineStages(config, partitions, on_alert, on_snapshot, account_shards)
        stages.load(positions, accounts)
        stats = ReplayStats()
        started = time.monotonic()
        if ingest_process:
            with IngestProcess(path, config, from_ms, to_ms, gc_pause=speed is None) as child:
                await _inline_loop(child.items(on_idle), speed, stages, stats, on_batch, progress,
                                   lambda: child.stats.frames)
            ingest_stats = child.stats
            stats.take_span(child.span)
        else:
            ingest = Ingest(config)
            await _inline_loop(route_capture(path, ingest, from_ms, to_ms, stats), speed, stages, stats,
                               on_batch, progress, lambda: ingest.stats.frames)
            ingest_stats = ingest.stats
        stages.finish()
        stats.absorb(ingest_stats)
        stats.wall_s = time.monotonic() - started
    return InlineResult(alerts=stages.alerts, stats=stats, snapshots=stages.snapshots)
