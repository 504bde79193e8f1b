"""Stage 3 (loop unwind) from loop positions repaying debt (RISK_MODEL §6)."""

from __future__ import annotations

from typing import Any

from monitor.config import EngineConfig
from monitor.stages.global_risk.risk import GlobalRisk


def loop(debt_usdt: float) -> dict[str, Any]:
    return {
        "position_id": "loop-1", "protocol": "aave-v3",
        "collateral": [{"asset": "USDe", "amount": 10_000_000.0, "liquidation_threshold": 0.93,
                        "price_key": "USDT"}],
        "debt": [{"asset": "USDT", "amount": debt_usdt, "price_key": "USDT"}],
    }


def test_debt_repaid_on_updates_activates_stage_3() -> None:
    risk = GlobalRisk(EngineConfig(), partitions=1)
    risk.upsert_position(loop(8_000_000.0))
    assert not risk.cascade.conditions.get(3)
    risk.upsert_position(loop(7_500_000.0))  # $0.5M repaid: below the $1M default
    assert not risk.cascade.conditions.get(3)
    risk.upsert_position(loop(6_000_000.0))  # $2M within the window
    assert risk.cascade.conditions.get(3)
    assert risk.cascade.evidence[3]["loop_debt_repaid_usd"] >= 1_000_000.0


def test_closing_a_position_counts_as_repaid_and_new_debt_does_not() -> None:
    risk = GlobalRisk(EngineConfig(), partitions=1)
    risk.upsert_position(loop(1_000_000.0))
    risk.upsert_position(loop(3_000_000.0))  # levering up is not an unwind
    assert not risk.cascade.conditions.get(3)
    risk.upsert_position({"position_id": "loop-1", "delete": True})
    assert risk.cascade.conditions.get(3)
