"""Risk snapshots of the global stage: when they are taken, what they hold, their codec."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from monitor.config import EngineConfig
from monitor.models.loops.lending import LoopBook, Position, health_factor
from monitor.protocol import RiskSnapshot, SignalRecord
from monitor.snapshots import SnapshotClock
from monitor.stages.global_risk.loop_watch import HF_BANDS
from monitor.stages.global_risk.risk import GlobalRisk
from replay.outputs import write_snapshots

T0 = 1_760_130_000_000
CONFIG = EngineConfig()


def account(aid: str, usde: float) -> dict[str, Any]:
    return {
        "account_id": aid, "venue": "binance", "model": "binance-pm",
        "balances": [{"asset": "USDe", "amount": usde, "price_key": "USDe@binance"},
                     {"asset": "USDT", "amount": -700_000.0, "price_key": "USDT"}],
    }


def loop(pid: str, debt_usd: float) -> dict[str, Any]:
    return {"position_id": pid, "protocol": "aave-v3",
            "collateral": [{"asset": "USDe", "amount": 1_000_000.0, "liquidation_threshold": 0.93,
                            "price_key": "USDe@binance"}],
            "debt": [{"asset": "USDT", "amount": debt_usd, "price_key": "USDT"}]}


def run_prices(risk: GlobalRisk, prices: list[float], step_ms: int = 20_000) -> list[RiskSnapshot]:
    for i, usde in enumerate(prices, 1):
        ts = T0 + i * step_ms
        risk.push(SignalRecord(0, ts, [[ts, "USDe", i, "price", {"key": "USDe@binance", "price": usde}]]))
    risk.flush()
    return risk.take_snapshots()


def test_clock_is_due_once_per_interval_boundary() -> None:
    clock = SnapshotClock(60_000)
    ticks = [0, 10_000, 59_999, 60_000, 61_000, 185_000, 186_000]
    assert [clock.due(t) for t in ticks] == [True, False, False, True, False, True, False]
    with pytest.raises(ValueError):
        SnapshotClock(0)


def test_no_snapshots_without_positions_or_accounts() -> None:
    assert run_prices(GlobalRisk(CONFIG, partitions=1), [1.0, 0.9, 0.8]) == []


def test_snapshots_follow_event_time_and_hold_the_report_figures() -> None:
    risk = GlobalRisk(CONFIG, partitions=1)
    for i, debt in enumerate((700_000.0, 850_000.0, 900_000.0)):
        risk.upsert_position(loop(f"p{i}", debt))
    risk.upsert_account(account("safe", 3_000_000.0))
    risk.upsert_account(account("thin", 1_100_000.0))
    snaps = run_prices(risk, [1.0, 1.0, 1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.5])
    # one per minute of event time (20 s steps over 3 minutes) and one at the end of the run
    assert [s.ts_ms for s in snaps] == [T0 + 20_000, T0 + 60_000, T0 + 120_000, T0 + 180_000, T0 + 180_000]
    first, last = snaps[0], snaps[-1]
    assert set(first.hf_bands) == {name for name, _ in HF_BANDS}
    assert sum(first.hf_bands.values()) == 3 and first.hf_bands["<1"] == 0
    assert last.hf_bands["<1"] == 3 and last.loops_liquidatable == 3
    assert last.loops_liquidatable_usd == pytest.approx(3 * 500_000.0)
    assert first.accounts_by_status == {"normal": 2}
    assert last.accounts_by_status.get("liquidation", 0) >= 1
    assert last.forced_sell_usd_by_asset.get("USDe", 0.0) > 0
    assert first.ladder_usd and sum(first.ladder_usd.values()) > 0


def test_snapshot_bytes_round_trip() -> None:
    risk = GlobalRisk(CONFIG, partitions=1)
    risk.upsert_account(account("thin", 800_000.0))
    snaps = run_prices(risk, [1.0, 0.6])
    assert snaps
    for snap in snaps:
        assert RiskSnapshot.decode(snap.encode()) == snap
        assert RiskSnapshot.decode(snap.encode()).encode() == snap.encode()


def test_vectorised_health_factors_equal_the_per_position_formula() -> None:
    positions = [Position.model_validate(loop(f"p{i}", debt)) for i, debt in
                 enumerate((0.0, 500_000.0, 899_999.0, 930_000.0, 1_200_000.0))]
    prices = {"USDe@binance": 0.97, "USDT": 1.0}
    book = LoopBook.from_positions(positions, prices)
    expected = [health_factor(p, prices) for p in positions]
    assert book.health_factors().tolist() == pytest.approx(expected)


def test_snapshot_file_keeps_order_and_writes_a_repeated_snapshot_once(tmp_path: Path) -> None:
    a, b = RiskSnapshot(ts_ms=T0, stage=1), RiskSnapshot(ts_ms=T0 + 60_000, stage=2)
    changed = RiskSnapshot(ts_ms=T0 + 60_000, stage=3)  # the end of a run at the same event time
    assert write_snapshots(tmp_path / "s.jsonl", [a, b, b, changed, b]) == 3
    lines = (tmp_path / "s.jsonl").read_bytes().splitlines()
    assert [RiskSnapshot.decode(x) for x in lines] == [a, b, changed]
