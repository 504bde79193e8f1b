"""Cascade detector: escalation, out-of-order stages, de-escalation after the hold."""

from __future__ import annotations

from monitor.config import CascadeConfig
from monitor.models.cascade import AccountSet, CascadeDetector
from monitor.protocol import Alert

T0 = 1_760_000_000_000


def test_october_order_alt_crash_before_depeg_is_reported_out_of_order() -> None:
    det = CascadeDetector(CascadeConfig(hold_ms=60_000), "h")
    out: list[Alert] = []
    det.on_index_price(T0, "BTC", 100.0)
    det.on_index_price(T0, "SUI", 4.0)
    det.step(T0, out)
    assert out == []
    det.on_index_price(T0 + 60_000, "BTC", 93.0)  # −7% within 60 min: stage 1
    det.step(T0 + 60_000, out)
    assert out[-1].stage == 1 and out[-1].severity == "warning"
    det.on_index_price(T0 + 120_000, "SUI", 1.0)  # −75%: stages 2 and 9
    det.step(T0 + 120_000, out)
    assert out[-1].stage == 9
    assert out[-1].evidence["out_of_order_stages"] == [9]
    det.on_peg_level(T0 + 180_000, "USDe", "binance-spot", 4, -3500.0)
    det.step(T0 + 180_000, out)
    assert out[-1].stage == 9  # highest unchanged: no new alert
    assert len(out) == 2


def test_deescalation_after_hold() -> None:
    det = CascadeDetector(CascadeConfig(hold_ms=60_000), "h")
    out: list[Alert] = []
    det.on_accounts(T0, AccountSet(1, ["a"]), AccountSet(1, ["a"]), 0.0)
    det.step(T0, out)
    assert out[-1].stage == 7 and out[-1].severity == "critical"
    det.on_accounts(T0 + 10_000, AccountSet(0, []), AccountSet(0, []), 0.0)
    det.step(T0 + 30_000, out)
    assert len(out) == 1
    det.step(T0 + 80_000, out)
    assert out[-1].stage == 0 and out[-1].severity == "info"


def test_stage_four_names_the_configured_peg_asset() -> None:
    for assets, name in ((("USDC",), "USDC depeg"), (("USDe", "PYUSD"), "USDe/PYUSD depeg")):
        det = CascadeDetector(CascadeConfig(hold_ms=60_000), "h", peg_assets=assets)
        out: list[Alert] = []
        det.on_peg_level(T0, assets[0], "coinbase", 4, -1300.0)
        det.step(T0, out)
        assert out[-1].stage == 4
        assert f"stage 4 ({name})" in out[-1].message
        assert out[-1].evidence["stages"]["4"]["name"] == name
