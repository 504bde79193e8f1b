"""The two pipeline steps the inline replayer and the workers share (monitor.stages.pipeline)."""

from __future__ import annotations

from monitor.config import EngineConfig
from monitor.events import KIND_QUOTE, MarketEvent
from monitor.ingest.batch import Batch
from monitor.protocol import SignalRecord
from monitor.stages.engine import Engine
from monitor.stages.global_risk.risk import GlobalRisk
from monitor.stages.pipeline import global_step, market_step

T0 = 1_760_130_000_000
SEC = 1_000


def quotes(start_ms: int, prices: list[float]) -> Batch:
    batch = Batch("USDe")
    for i, px in enumerate(prices):
        ts = start_ms + i * SEC
        batch.add(MarketEvent(KIND_QUOTE, "binance-spot", "USDEUSDT", "USDe", "USDT", ts, ts, px, px, 1e5, 1e5))
    return batch


def test_a_partition_forwards_signals_or_a_moved_watermark_and_nothing_else() -> None:
    engine = Engine(EngineConfig())
    first = market_step(engine, quotes(T0, [1.0, 0.999]), 2, -1)
    assert first.forward is not None and first.forward.partition == 2
    assert first.forward.watermark_ms == first.result.watermark_ms == T0 + SEC
    # The same watermark and no signals: nothing to tell stage 2.
    same = market_step(engine, Batch("USDe"), 2, first.forward.watermark_ms)
    assert same.forward is None
    later = market_step(engine, quotes(T0 + 60 * SEC, [0.999]), 2, first.forward.watermark_ms)
    assert later.forward is not None and later.forward.watermark_ms == T0 + 60 * SEC


def test_the_global_step_names_the_run_every_partition_ended() -> None:
    risk = GlobalRisk(EngineConfig(), 2)
    assert global_step(risk, SignalRecord(0, T0, [], end="run-1")).finished_run is None
    step = global_step(risk, SignalRecord(1, T0, [], end="run-1"))
    assert step.finished_run == "run-1"
    assert global_step(risk, SignalRecord(1, T0 + SEC, [])).finished_run is None
