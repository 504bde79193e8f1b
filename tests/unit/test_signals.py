"""Watermark reorder buffer: any interleaving of partitions releases the same order."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.protocol import SignalRecord
from monitor.signals import PartitionClock, ReorderBuffer


def _streams(seed: int) -> dict[int, list[SignalRecord]]:
    rng = random.Random(seed)
    out: dict[int, list[SignalRecord]] = {}
    for p in range(3):
        clock = PartitionClock()
        recs = []
        for _ in range(20):
            ts = rng.randint(0, 10_000)
            sig = [clock.stamp(ts, f"A{p}", "price", {"key": f"A{p}", "price": 1.0})]
            clock.advance(ts)
            recs.append(SignalRecord(p, clock.watermark_ms, sig))
        recs.append(SignalRecord(p, clock.watermark_ms, [], end="run"))
        out[p] = recs
    return out


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 1000), st.integers(0, 1000))
def test_release_order_is_independent_of_interleaving(data_seed: int, mix_seed: int) -> None:
    streams = _streams(data_seed)
    orders = []
    for seed in (0, mix_seed):
        buf = ReorderBuffer(3)
        cursors = {p: 0 for p in streams}
        rng = random.Random(seed)
        released = []
        while any(cursors[p] < len(streams[p]) for p in streams):
            p = rng.choice([q for q in streams if cursors[q] < len(streams[q])])
            buf.push(streams[p][cursors[p]])
            cursors[p] += 1
            released.extend(buf.release(flush=buf.run_ended("run")))
        orders.append(released)
        assert len(released) == 60
    assert orders[0] == orders[1]
    keys = [(s[0], s[1], s[2]) for s in orders[0]]
    assert keys == sorted(keys)


def test_clock_clamps_to_watermark() -> None:
    clock = PartitionClock()
    clock.advance(1000)
    assert clock.stamp(500, "X", "price", {})[0] == 1000


def test_a_redelivered_run_interleaved_with_the_next_finishes_both() -> None:
    """After a restart without a commit, run 1's end markers come again, interleaved with
    run 2's records: each run is finished (acknowledged) once all partitions end *it*."""
    from monitor.config import EngineConfig
    from monitor.stages.global_risk.risk import GlobalRisk

    risk = GlobalRisk(EngineConfig(), 2)
    clocks = {p: PartitionClock() for p in (0, 1)}

    def rec(p: int, ts: int, end: str | None = None) -> SignalRecord:
        sig = [] if end else [clocks[p].stamp(ts, "BTC", "price", {"key": "BTC", "price": 100_000.0 + ts})]
        clocks[p].advance(ts)
        return SignalRecord(p, clocks[p].watermark_ms, sig, end=end)

    finished = []
    for r in (
        rec(0, 1_000), rec(1, 1_000), rec(0, 2_000, end="run-1"), rec(1, 2_000, end="run-1"),
        # the same run read again by a worker that restarted, run 2 already behind it on p0
        rec(0, 2_000, end="run-1"), rec(0, 3_000), rec(0, 4_000, end="run-2"),
        rec(1, 2_000, end="run-1"), rec(1, 3_500), rec(1, 4_000, end="run-2"),
    ):
        risk.push(r)
        if risk.finished_run is not None:
            finished.append(risk.finished_run)
    assert finished == ["run-1", "run-1", "run-2"]
    assert len(risk.buffer) == 0 and not risk.buffer.ended


def test_a_finished_run_does_not_flush_a_run_in_progress() -> None:
    buf = ReorderBuffer(2)
    c0, c1 = PartitionClock(), PartitionClock()
    buf.push(SignalRecord(0, 5_000, [c0.stamp(5_000, "A", "price", {})], end=None))
    buf.push(SignalRecord(0, 5_000, [], end="run-2"))  # run 2 ended on p0 only
    buf.push(SignalRecord(1, 1_000, [c1.stamp(900, "B", "price", {})], end="run-1"))
    assert buf.run_ended("run-1") is False  # p0 never ended run 1 in this buffer
    assert buf.runs_in_progress
    assert [s[1] for s in buf.release()] == ["B"]  # below the low watermark (1,000) only
