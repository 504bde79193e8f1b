"""Stage-1 signal records merged while the market agent has a backlog (streams.app.faust_app.PendingSignals).

Merging a partition's consecutive records must not change what the global stage does:
it orders signals by event time below the minimum watermark, whatever records they came in.
"""

from __future__ import annotations

import random
from typing import Any

from monitor.config import EngineConfig
from monitor.protocol import SignalRecord
from monitor.stages.global_risk.risk import GlobalRisk
from streams.app.faust_app import PendingSignals

T0 = 1_760_130_000_000
PARTITIONS = 4


def test_pending_signals_merge_per_partition_and_say_when_to_send() -> None:
    pending = PendingSignals(max_age_s=0.05, max_signals=3, max_records=4)
    assert not pending.due(100.0) and pending.drain() == []
    pending.add(1, T0 + 10, [[T0 + 5, "USDe", 1, "price", {"key": "USDe@binance", "price": 1.0}]], 100.0)
    pending.add(0, T0 + 7, [], 100.01)
    pending.add(1, T0 + 20, [[T0 + 15, "USDe", 2, "price", {"key": "USDe@binance", "price": 0.99}]], 100.02)
    assert not pending.due(100.04)
    assert pending.due(100.06)  # the oldest pending signal waited max_age_s
    records = pending.drain()
    assert [(r.partition, r.watermark_ms, [s[2] for s in r.signals]) for r in records] == [
        (1, T0 + 20, [1, 2]), (0, T0 + 7, []),
    ]
    assert pending.drain() == [] and not pending.due(1e9)
    for seq in range(3):
        pending.add(2, T0 + seq, [[T0 + seq, "BTC", seq, "price", {"key": "BTC", "price": 1.0}]], 200.0)
    assert pending.due(200.0) and pending.full  # max_signals (the agent sends them, even inside a pack)
    pending.drain()
    assert not pending.full
    for _ in range(3):
        pending.count_record()
    assert not pending.due(200.0)
    pending.count_record()
    assert pending.due(200.0)  # max_records processed since the last send
    pending.drain()
    assert not pending.due(200.0)
    # a revoked partition's signals are forgotten, the others' kept
    pending.add(1, T0 + 30, [[T0 + 30, "USDe", 3, "price", {"key": "USDe@binance", "price": 1.0}]], 300.0)
    pending.add(2, T0 + 31, [[T0 + 31, "BTC", 9, "price", {"key": "BTC", "price": 1.0}]], 300.0)
    pending.discard(1)
    assert [(r.partition, [s[2] for s in r.signals]) for r in pending.drain()] == [(2, [9])]


def accounts(risk: GlobalRisk) -> None:
    for i in range(6):
        risk.upsert_account({
            "account_id": f"a{i}", "venue": "binance", "model": "binance-pm",
            "balances": [{"asset": "USDe", "amount": 1_000_000.0, "price_key": "USDe@binance"},
                         {"asset": "USDT", "amount": -(500_000.0 + 60_000.0 * i), "price_key": "USDT"}],
        })


def stage1_records(seed: int) -> list[SignalRecord]:
    """Per-partition records as stage 1 writes them: signal times never below the watermark."""
    rng = random.Random(seed)
    wm = dict.fromkeys(range(PARTITIONS), T0)
    seq = dict.fromkeys(range(PARTITIONS), 0)
    out: list[SignalRecord] = []
    price = 1.0
    for _ in range(400):
        p = rng.randrange(PARTITIONS)
        sigs: list[list[Any]] = []
        for _ in range(rng.randrange(3)):
            seq[p] += 1
            price = min(max(price + rng.uniform(-0.04, 0.035), 0.4), 1.02)
            ts = wm[p] + rng.randrange(0, 3_000)
            sigs.append([ts, "USDe", seq[p], "price", {"key": "USDe@binance", "price": round(price, 4)}])
        wm[p] = max([wm[p] + rng.randrange(0, 4_000)] + [s[0] for s in sigs])
        out.append(SignalRecord(p, wm[p], sigs))
    return out


def run(records: list[SignalRecord]) -> list[bytes]:
    risk = GlobalRisk(EngineConfig(), PARTITIONS)
    accounts(risk)
    alerts = [a.to_json() for rec in records for a in risk.push(rec)]
    return alerts + [a.to_json() for a in risk.flush()]


def merged(records: list[SignalRecord], seed: int) -> list[SignalRecord]:
    """The same records through PendingSignals, drained at random points."""
    rng = random.Random(seed)
    pending = PendingSignals(max_age_s=1e9, max_signals=10**9, max_records=10**9)
    out: list[SignalRecord] = []
    for rec in records:
        pending.add(rec.partition, rec.watermark_ms, list(rec.signals), 0.0)
        if rng.random() < 0.15:
            out += pending.drain()
    return out + pending.drain()


def test_merged_records_give_the_global_stage_the_same_alerts() -> None:
    for seed in range(5):
        records = stage1_records(seed)
        one_by_one = run(records)
        assert one_by_one, "the price walk should move some account"
        coalesced = merged(records, seed)
        assert len(coalesced) < len(records)
        assert run(coalesced) == one_by_one
