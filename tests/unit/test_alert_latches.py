"""Account alert latches: exported when they change, restored after a restart (no re-alert)."""

from __future__ import annotations

from typing import Any

from monitor.config import EngineConfig
from monitor.protocol import Alert, SignalRecord
from monitor.stages.global_risk.risk import GlobalRisk

T0 = 1_760_130_000_000
CONFIG = EngineConfig()


def account(aid: str, usde: float = 1_000_000.0) -> dict[str, Any]:
    return {
        "account_id": aid, "venue": "binance", "model": "binance-pm",
        "balances": [{"asset": "USDe", "amount": usde, "price_key": "USDe@binance"},
                     {"asset": "USDT", "amount": -700_000.0, "price_key": "USDT"}],
    }


class Feed:
    """Price signals for one market partition, one event time after another."""

    def __init__(self) -> None:
        self.ts_ms = T0
        self.seq = 0

    def price(self, risk: GlobalRisk, usde: float) -> list[Alert]:
        self.ts_ms += 60_000
        self.seq += 1
        sig = [self.ts_ms, "USDe", self.seq, "price", {"key": "USDe@binance", "price": usde}]
        return risk.push(SignalRecord(0, self.ts_ms, [sig])) + risk.flush()


def account_alerts(alerts: list[Alert]) -> list[tuple[str, str]]:
    return [(a.kind, a.evidence["account_id"]) for a in alerts
            if a.kind in {"margin_call", "unified_liquidation"}]


def rebuilt(table: dict[str, Any]) -> GlobalRisk:
    """A restarted global stage: accounts, then latches, from the table's contents."""
    risk = GlobalRisk(CONFIG, partitions=1)
    for key, raw in sorted(table.items()):
        if key.startswith("account:"):
            risk.upsert_account(raw)
    risk.restore_alert_latches({k.removeprefix("latch:"): v for k, v in table.items()
                                if k.startswith("latch:")})
    return risk


def test_restored_latches_stop_a_second_alert_after_restart() -> None:
    risk = GlobalRisk(CONFIG, partitions=1)
    table: dict[str, Any] = {}
    for aid in ("a1", "a2"):
        risk.upsert_account(account(aid))
        table[f"account:{aid}"] = account(aid)
    assert risk.take_latch_changes() == {}, "loading accounts latches nothing"
    feed = Feed()
    assert account_alerts(feed.price(risk, 1.0)) == []
    first = account_alerts(feed.price(risk, 0.65))
    assert sorted(first) == [("unified_liquidation", "a1"), ("unified_liquidation", "a2")]
    changes = risk.take_latch_changes()
    assert changes == {"a1": 3, "a2": 3}
    assert risk.take_latch_changes() == {}, "changes are handed out once"
    assert risk.alert_latches() == {"a1": 3, "a2": 3}
    table.update({f"latch:{aid}": rank for aid, rank in changes.items()})

    # the same state after a restart: no second alert for the same status
    restarted = rebuilt(table)
    assert restarted.take_latch_changes() == {}
    feed_after = Feed()
    feed_after.ts_ms = feed.ts_ms
    assert account_alerts(feed_after.price(restarted, 0.64)) == []
    # without the latches, the restarted stage alerts both accounts again
    forgetful = rebuilt({k: v for k, v in table.items() if k.startswith("account:")})
    assert len(account_alerts(Feed().price(forgetful, 0.64))) == 2


def test_latches_are_released_on_recovery_and_on_account_updates() -> None:
    risk = GlobalRisk(CONFIG, partitions=1)
    risk.upsert_account(account("a1"))
    risk.upsert_account(account("a2"))
    feed = Feed()
    feed.price(risk, 0.65)
    assert risk.take_latch_changes() == {"a1": 3, "a2": 3}
    risk.upsert_account(account("a2", usde=2_000_000.0))  # a new snapshot re-arms its alerts
    risk.upsert_account({"account_id": "a3", "delete": True})  # never latched: nothing to release
    assert risk.take_latch_changes() == {"a2": None}
    feed.price(risk, 1.0)  # back to normal: a1 is re-armed too
    assert risk.take_latch_changes() == {"a1": None}
    assert risk.alert_latches() == {}
    again = account_alerts(feed.price(risk, 0.65))
    assert sorted(again) == [("unified_liquidation", "a1")]


def test_restore_ignores_unknown_accounts_and_ranks() -> None:
    risk = GlobalRisk(CONFIG, partitions=1)
    risk.upsert_account(account("a1"))
    risk.restore_alert_latches({"a1": 2, "gone": 3})
    assert risk.alert_latches() == {"a1": 2}
    risk.restore_alert_latches({"a1": 7})
    assert risk.alert_latches() == {"a1": 2}
    # latched at margin call (2): a liquidation (3) is an escalation and still alerts
    assert account_alerts(Feed().price(risk, 0.65)) == [("unified_liquidation", "a1")]
