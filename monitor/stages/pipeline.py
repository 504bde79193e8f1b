"""The two pipeline steps, written once: the inline replayer and the faust agents call them.

- Stage 1 (:func:`market_step`): one market partition's engine takes a batch and gives its
  alerts and, when it has signals or its watermark moved, the signal record to forward to
  stage 2. What a partition forwards depends only on its own state, so a worker that
  recovers the partition from its checkpoint forwards the same records.
- Stage 2 (:func:`global_step`): the global stage takes a signal record and gives its
  alerts and, once every partition has ended a run, that run's id (the caller acknowledges
  it). Risk snapshots are drained by the caller (``GlobalRisk.take_snapshots``) when it
  publishes them.

Both are pure: the state they change is the engine's and the global stage's, which the
workers checkpoint; sending, acknowledging and checkpointing belong to the callers.
"""

from __future__ import annotations

from dataclasses import dataclass

from monitor.ingest.batch import Batch
from monitor.protocol import Alert, SignalRecord
from monitor.stages.engine import BatchResult, Engine
from monitor.stages.global_risk.risk import GlobalRisk
from monitor.stages.global_risk.sharded import ShardedRisk

__all__ = ["GlobalStep", "MarketStep", "global_step", "market_step"]


@dataclass(frozen=True, slots=True)
class MarketStep:
    """What stage 1 made of one batch on one partition."""

    result: BatchResult
    #: The record for stage 2, or ``None`` when there is nothing new to tell it.
    forward: SignalRecord | None


def market_step(engine: Engine, batch: Batch, partition: int, sent_watermark_ms: int) -> MarketStep:
    """Process ``batch`` on ``partition``; forward its signals, or its watermark when it moved
    past ``sent_watermark_ms`` (the last one forwarded)."""
    result = engine.process(batch, partition)
    if result.signals or result.watermark_ms > sent_watermark_ms:
        return MarketStep(result, SignalRecord(partition, result.watermark_ms, result.signals))
    return MarketStep(result, None)


@dataclass(frozen=True, slots=True)
class GlobalStep:
    """What stage 2 made of one signal record."""

    alerts: list[Alert]
    #: The run whose end this record completed (every partition's end marker is in).
    finished_run: str | None


def global_step(risk: GlobalRisk | ShardedRisk, record: SignalRecord) -> GlobalStep:
    """Take one stage-1 record into the global stage (one, or over account shards)."""
    alerts = risk.push(record)
    return GlobalStep(alerts, risk.finished_run)
