"""Watermark reorder buffer: any interleaving of partitions releases the same order."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.signals import PartitionClock, ReorderBuffer, SignalRecord


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
            released.extend(buf.release(flush=buf.all_ended))
        orders.append(released)
        assert len(released) == 60
    assert orders[0] == orders[1]
    keys = [(s[0], s[1], s[2]) for s in orders[0]]
    assert keys == sorted(keys)


def test_clock_clamps_to_watermark() -> None:
    clock = PartitionClock()
    clock.advance(1000)
    assert clock.stamp(500, "X", "price", {})[0] == 1000
