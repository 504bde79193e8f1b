"""The terminal story of a replay: headline facts with their times, a timeline by minute and kind."""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console

from monitor.alerts import make_alert
from monitor.protocol import Alert, RiskSnapshot
from replay.story import build_story, plural, print_story, timeline

T0 = 1_760_130_000_000  # 2025-10-10 21:00:00 UTC


def alert(kind: str, ts_ms: int, severity: Any = "high", venue: str | None = "binance",
          asset: str | None = "USDe", stage: int | None = None, **evidence: Any) -> Alert:
    return make_alert(kind=kind, ts_ms=ts_ms, severity=severity, venue=venue, asset=asset,
                      message=f"{kind} at {ts_ms}", evidence=evidence, config_hash="h",
                      identity=f"{ts_ms}|{evidence.get('account_id', '')}", stage=stage)


def day() -> list[Alert]:
    alerts = [
        alert("cascade_stage", T0 + 5_000, stage=2, venue=None, asset=None),
        alert("venue_local_depeg", T0 + 10_000, venue="binance-spot", resolved=True),
        alert("venue_local_depeg", T0 + 20_000, venue="binance-spot", venue_price_usd=0.93,
              venue_deviation_bps=-700.0, resolved=False),
        alert("cascade_stage", T0 + 30_000, stage=6, venue=None, asset=None),
        alert("cascade_stage", T0 + 200_000, stage=4, venue=None, asset=None),
        alert("liquidity_withdrawal", T0 + 40_000, venue="okx", asset="BTC", state="withdrawn", symbol="BTC-USDT",
              band_bps=200, bid_depth_usd=9e6, baseline_usd=140e6, depth_of_baseline_ratio=0.07, depth_lost_usd=131e6),
        alert("liquidity_withdrawal", T0 + 50_000, venue="binance-usdm", asset="BTC", state="withdrawn",
              symbol="BTCUSDT", band_bps=200, bid_depth_usd=3.7e6, baseline_usd=324e6,
              depth_of_baseline_ratio=0.01, depth_lost_usd=320e6),
        alert("margin_call", T0 + 60_000, account_id="a9"),
    ]
    alerts += [alert("unified_liquidation", T0 + 60_000 + i, severity="critical", account_id=f"a{i}") for i in range(3)]
    alerts += [alert("unified_liquidation", T0 + 125_000, severity="critical", account_id="a7")]
    return sorted(alerts, key=lambda a: (a.ts_ms, a.alert_id))


def test_plural() -> None:
    assert plural(1, "account") == "1 account"
    assert plural(0, "account") == "0 accounts"
    assert plural(1400, "unified account") == "1,400 unified accounts"
    assert plural(2, "loop position") == "2 loop positions"


def test_headline_names_each_fact_with_its_time() -> None:
    snaps = [RiskSnapshot(ts_ms=T0 + 60_000, hf_bands={"<1": 0, ">=1.5": 5}),
             RiskSnapshot(ts_ms=T0 + 120_000, hf_bands={"<1": 2, ">=1.5": 3}, loops_liquidatable=2,
                          loops_liquidatable_usd=2.5e6, forced_sell_usd_by_asset={"USDe": 3e6, "wBETH": 1e6},
                          spiral_usd_by_shock={"usde": 9e6})]
    facts = {f.label: f for f in build_story(day(), snaps).facts}
    depeg = facts["first venue-local depeg"]
    assert depeg.ts_ms == T0 + 20_000 and "binance-spot" in depeg.text and "-700 bps" in depeg.text
    assert facts["peak cascade stage"].ts_ms == T0 + 30_000 and "stage 6" in facts["peak cascade stage"].text
    liq = facts["accounts liquidated"]
    assert liq.ts_ms == T0 + 60_000 and "4 unified accounts" in liq.text and "1 account had" in liq.text
    loops = facts["loops at risk"]
    assert loops.ts_ms == T0 + 120_000 and "2 of 5 loop positions" in loops.text and "$2.5M" in loops.text
    worst = facts["worst book withdrawal"]
    assert worst.ts_ms == T0 + 50_000 and "binance-usdm BTCUSDT" in worst.text and "$3.7M" in worst.text
    assert "$4.0M" in facts["forced sells"].text and "$9.0M" in facts["largest spiral estimate"].text


def test_headline_says_when_nothing_happened() -> None:
    facts = build_story([], []).facts
    assert [f.ts_ms for f in facts] == [None] * 5
    assert "no loop positions were loaded" in facts[3].text


def test_timeline_groups_by_minute_and_kind() -> None:
    rows = timeline(day())
    liq = [r for r in rows if r.kind == "unified_liquidation"]
    assert [(r.minute_ms, r.count) for r in liq] == [(T0 + 60_000, 3), (T0 + 120_000, 1)]
    assert liq[0].what == "USDe/binance ×3" and liq[1].what == "unified_liquidation at 1760130125000"
    assert [r.minute_ms for r in rows] == sorted(r.minute_ms for r in rows)
    assert {r.severity for r in liq} == {"critical"}


def test_printed_story_starts_with_the_headline_and_verbose_prints_every_alert() -> None:
    alerts = day()
    out = io.StringIO()
    print_story(Console(file=out, width=160, color_system=None), build_story(alerts), alerts, verbose=False)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("liqmon: what happened (12 alerts)")
    assert "first venue-local depeg" in lines[1] and "21:00:20" in lines[1]
    assert "peak cascade stage" in lines[2] and "worst book withdrawal" in lines[5]
    assert "every alert" not in out.getvalue()
    loud = io.StringIO()
    print_story(Console(file=loud, width=160, color_system=None), build_story(alerts), alerts, verbose=True)
    assert "every alert (12)" in loud.getvalue()
    assert loud.getvalue().count("unified_liquidation at") == out.getvalue().count("unified_liquidation at") + 4
