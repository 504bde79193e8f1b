"""Losing the global partition in a rebalance: its gauges go and its state is dropped.

The faust app is built (no broker, nothing started) and its rebalance signals are sent
the way faust sends them. Whoever gets the partition next loads its checkpoint
(tests/unit/test_checkpoint.py).
"""

from __future__ import annotations

from pathlib import Path

from faust.types import TP
from prometheus_client import CollectorRegistry

from monitor.config import EngineConfig
from monitor.metrics import Metrics
from monitor.protocol import SignalRecord
from monitor.stages.global_risk.risk import GlobalRisk
from streams.app.faust_app import create_app, set_risk_metrics
from streams.settings import Settings

T0 = 1_760_130_000_000
GLOBAL = TP("risk.signals", 0)
MARKET = TP("market.batches", 1)
GLOBAL_GAUGES = (
    "liqmon_loops_liquidatable_usd", "liqmon_loops_ladder_usd", "liqmon_loops_collateral_illusion_ratio",
    "liqmon_loops_positions", "liqmon_unified_accounts", "liqmon_unified_effective_leverage",
    "liqmon_unified_shortfall_usd", "liqmon_cascade_stage_active", "liqmon_spiral_liquidated_usd",
)


def load(risk: GlobalRisk) -> None:
    for i in range(2):
        risk.upsert_account({
            "account_id": f"a{i}", "venue": "binance", "model": "binance-pm",
            "balances": [{"asset": "USDe", "amount": 1_000_000.0, "price_key": "USDe@binance"},
                         {"asset": "USDT", "amount": -700_000.0, "price_key": "USDT"}],
        })
    risk.upsert_account({  # healthy: it has an effective leverage
        "account_id": "a2", "venue": "binance", "model": "binance-pm",
        "balances": [{"asset": "USDe", "amount": 1_000_000.0, "price_key": "USDT"},
                     {"asset": "USDT", "amount": -100_000.0, "price_key": "USDT"}],
    })
    risk.upsert_position({
        "position_id": "p1", "protocol": "aave-v3",
        "collateral": [{"asset": "USDe", "amount": 100_000.0, "liquidation_threshold": 0.9,
                        "price_key": "USDe@binance"}],
        "debt": [{"asset": "USDT", "amount": 50_000.0, "price_key": "USDT"}],
    })
    sig = [T0, "USDe", 1, "price", {"key": "USDe@binance", "price": 0.65}]
    risk.push(SignalRecord(0, T0 + 1, [sig]))
    risk.flush()
    risk.run_standard_shocks()


def samples(registry: CollectorRegistry, names: tuple[str, ...]) -> dict[str, int]:
    """Number of exported samples per metric family."""
    return {m.name: len(m.samples) for m in registry.collect() if m.name in names}


async def test_revoking_the_global_partition_clears_its_gauges_and_drops_the_state(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    app = create_app(Settings(app_id="test-rebalance", partitions=2, data_dir=tmp_path),
                     EngineConfig(), "127.0.0.1:9", metrics)
    runtime = app.liqmon_global
    risk = runtime.risk
    load(risk)
    set_risk_metrics(metrics, risk)
    liquidating = {"venue": "binance", "status": "liquidation"}
    assert registry.get_sample_value("liqmon_unified_accounts", liquidating) == 2
    assert registry.get_sample_value("liqmon_spiral_liquidated_usd",
                                     {"shock": "usde-binance-local-depeg"})
    before = samples(registry, GLOBAL_GAUGES)
    assert all(before.get(name) for name in GLOBAL_GAUGES), sorted(before.items())
    stage = registry.get_sample_value("liqmon_cascade_stage")
    assert stage is not None and stage > 0

    # a market partition moving does not touch the global figures
    await app.on_partitions_revoked.send({MARKET})
    await app.on_partitions_assigned.send({GLOBAL})
    assert samples(registry, GLOBAL_GAUGES) == before
    assert runtime.risk is risk

    # the global partition revoked: nothing of it is exported any more, and the state goes
    # (the next owner, this worker included, goes on from the checkpoint)
    await app.on_partitions_revoked.send({GLOBAL, MARKET})
    assert all(n == 0 for n in samples(registry, GLOBAL_GAUGES).values())
    assert registry.get_sample_value("liqmon_unified_accounts", liquidating) is None
    assert registry.get_sample_value("liqmon_cascade_stage") == 0
    assert registry.get_sample_value("liqmon_books_withdrawn_ratio") == 0
    assert runtime.state is None
    fresh = runtime.risk  # no checkpoint was written: an empty stage
    assert fresh is not risk
    assert not fresh.accounts and not fresh.positions and not fresh.spiral_results


def test_a_series_whose_key_disappears_is_removed_not_left_at_its_last_value() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    risk = GlobalRisk(EngineConfig(), 1)
    load(risk)
    set_risk_metrics(metrics, risk)
    liquidating = {"venue": "binance", "status": "liquidation"}
    assert registry.get_sample_value("liqmon_unified_accounts", liquidating) == 2
    # USDe recovers: nobody is in liquidation any more
    sig = [T0 + 10, "USDe", 2, "price", {"key": "USDe@binance", "price": 1.0}]
    risk.push(SignalRecord(0, T0 + 20, [sig]))
    risk.flush()
    set_risk_metrics(metrics, risk)
    assert registry.get_sample_value("liqmon_unified_accounts", liquidating) is None
    statuses = {s.labels["status"] for m in registry.collect() if m.name == "liqmon_unified_accounts"
                for s in m.samples}
    assert statuses and "liquidation" not in statuses
    # removing one account: its series are gone from the next export, others stay
    for i in range(3):
        risk.upsert_account({"account_id": f"a{i}", "delete": True})
    set_risk_metrics(metrics, risk)
    assert samples(registry, ("liqmon_unified_accounts",)).get("liqmon_unified_accounts", 0) == 0
