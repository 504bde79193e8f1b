"""Replay report: recorder downsampling and bounds, snapshot tolerance, a self-contained page."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest

from monitor.alerts import make_alert
from monitor.config import EngineConfig
from monitor.events import (
    BOOK_BANDS_BPS,
    KIND_BOOK,
    KIND_BOOK_INVALID,
    KIND_LIQUIDATION,
    KIND_PRICE,
    KIND_QUOTE,
    KIND_TRADE,
    MarketEvent,
)
from monitor.ingest.batch import Batch, decode_record
from monitor.protocol import Alert, RiskSnapshot
from replay.calibration import CalibrationRow
from replay.report.recorder import NO_DATA, ReportRecorder, write_report

T0 = 1_760_126_400_000  # 10 Oct 2025 20:00 UTC, a multiple of every bucket width used here
CFG = EngineConfig()


def ev(kind: int, venue: str, symbol: str, base: str, ts: int, f1: float, f2: float = 0.0, f3: float = 0.0,
       f4: float = 0.0, quote: str = "USDT", bands: tuple[float, ...] = ()) -> MarketEvent:
    return MarketEvent(kind, venue, symbol, base, quote, ts, ts, f1, f2, f3, f4, bands)


def batch(*events: MarketEvent) -> Batch:
    b = Batch(asset=events[0].base)
    for e in events:
        b.add(e)
    return b


def usde_quotes(n_s: int, step_ms: int = 1_000) -> list[Batch]:
    """One quote per second on two venues: price of event i is 1 - i/1e6 (binance), 1 + i/1e6 (bybit)."""
    out = []
    for i in range(n_s):
        t = T0 + i * step_ms
        p1, p2 = 1 - i / 1e6, 1 + i / 1e6
        out.append(batch(ev(KIND_QUOTE, "binance-spot", "USDEUSDT", "USDe", t, p1, p1, 1, 1),
                         ev(KIND_QUOTE, "bybit-spot", "USDEUSDT", "USDe", t, p2, p2, 1, 1)))
    return out


def series(rec: ReportRecorder, *key: str) -> tuple[list[int], list[float]]:
    t, v = rec.series(key)
    return t.tolist(), v.tolist()


def test_last_value_per_ten_second_bucket() -> None:
    rec = ReportRecorder(CFG)
    for b in usde_quotes(95):
        rec.on_batch(b)
    t, v = series(rec, "price", "USDe", "binance-spot")
    assert t == [T0 + k * 10_000 for k in range(10)]
    # last event of bucket k is i = 10k + 9 (the last bucket holds i = 90..94)
    assert v == pytest.approx([1 - min(10 * k + 9, 94) / 1e6 for k in range(10)])
    _, v2 = series(rec, "price", "USDe", "bybit-spot")
    assert v2[-1] == pytest.approx(1 + 94 / 1e6)
    assert rec.events == 190 and rec.batches == 95


@pytest.mark.parametrize("chunk", [1, 7, 1_000_000])
def test_chunking_does_not_change_the_series(chunk: int) -> None:
    ref = ReportRecorder(CFG, chunk_events=64)
    rec = ReportRecorder(CFG, chunk_events=chunk)
    for b in usde_quotes(300):
        ref.on_batch(b)
        rec.on_batch(b)
        assert rec.pending_events() < max(chunk, 2)
    for key in ref.series_keys():
        a, b_ = ref.series(key), rec.series(key)
        assert a[0].tolist() == b_[0].tolist() and a[1].tolist() == b_[1].tolist()


def test_decoded_batches_give_the_same_series() -> None:
    rows_rec, cols_rec = ReportRecorder(CFG), ReportRecorder(CFG)
    for b in usde_quotes(50):
        rows_rec.on_batch(b)
        decoded = decode_record(b.encode())
        assert isinstance(decoded, Batch)
        cols_rec.on_batch(decoded)
    assert rows_rec.series_keys() == cols_rec.series_keys()
    for key in rows_rec.series_keys():
        assert rows_rec.series(key)[1].tolist() == cols_rec.series(key)[1].tolist()


def test_memory_is_bounded_over_a_long_replay() -> None:
    rec = ReportRecorder(CFG, max_buckets=100, chunk_events=500)
    hours = 30
    n = hours * 360  # one batch per 10 s
    for i in range(n):
        ts = T0 + i * 10_000
        rec.on_batch(batch(
            ev(KIND_QUOTE, "binance-spot", "USDEUSDT", "USDe", ts, 1.0 - i * 1e-7, 1.0 - i * 1e-7, 1, 1),
            ev(KIND_LIQUIDATION, "binance-usdm", "BTCUSDT", "BTC", ts, 100_000.0, 0.01, 1, 0),
        ))
    assert rec.max_series_points() <= 100
    assert rec.pending_events() <= 500
    # the width doubled from 10 s until the 30 h span fits in 100 buckets
    span_ms = (n - 1) * 10_000
    assert rec.bucket_ms == 10_000 * 2 ** math.ceil(math.log2(span_ms / 10_000 / 99 + 1e-12))
    t, v = series(rec, "price", "USDe", "binance-spot")
    assert len(t) > 50  # not coarser than needed
    assert t[0] == T0 // rec.bucket_ms * rec.bucket_ms and t[-1] <= T0 + (n - 1) * 10_000 < t[-1] + rec.bucket_ms
    assert v[-1] == pytest.approx(1.0 - (n - 1) * 1e-7)  # the last value survives re-bucketing
    assert np.all(np.diff(t) > 0)
    # sums survive re-bucketing exactly: n prints of 1,000 USD each
    _, liq = series(rec, "liq", "binance-usdm")
    assert sum(liq) == pytest.approx(n * 1_000.0)


def test_series_count_is_capped() -> None:
    rec = ReportRecorder(CFG, max_series=3)
    for k in range(6):
        rec.on_batch(batch(ev(KIND_QUOTE, f"venue{k}", "USDEUSDT", "USDe", T0, 1.0, 1.0, 1, 1)))
    assert len(rec.series_keys()) == 3 and rec.series_dropped == 3


def test_alt_index_excludes_majors_stables_and_lsts() -> None:
    rec = ReportRecorder(CFG)
    for i in range(60):
        ts = T0 + i * 1_000
        doge = 0.2 if i < 30 else 0.1  # halves at 30 s
        rec.on_batch(batch(ev(KIND_QUOTE, "binance-spot", "DOGEUSDT", "DOGE", ts, doge, doge, 1, 1)))
        rec.on_batch(batch(ev(KIND_QUOTE, "binance-spot", "SOLUSDT", "SOL", ts, 200.0, 200.0, 1, 1)))
        for asset in ("ETH", "wBETH", "BNSOL", "USDC"):
            px = 1.0 / (i + 1)
            rec.on_batch(batch(ev(KIND_QUOTE, "binance-spot", f"{asset}USDT", asset, ts, px, px, 1, 1)))
    t, v = series(rec, "alt_index")
    assert t == [T0, T0 + 10_000, T0 + 20_000, T0 + 30_000, T0 + 40_000, T0 + 50_000]
    assert v == pytest.approx([100, 100, 100, 75, 75, 75])
    assert not any(k[0] == "price" and k[1] in ("ETH", "wBETH", "BNSOL", "USDC") for k in rec.series_keys())


def test_trades_price_only_sources_that_never_quote() -> None:
    rec = ReportRecorder(CFG)
    rec.on_batch(batch(ev(KIND_TRADE, "gemini", "BTCUSD", "BTC", T0, 110_000.0, 0.5, -1, quote="USD"),
                       ev(KIND_QUOTE, "binance-spot", "BTCUSDT", "BTC", T0, 111_000.0, 111_002.0, 1, 1),
                       ev(KIND_TRADE, "binance-spot", "BTCUSDT", "BTC", T0 + 1, 99.0, 1.0, -1)))
    assert series(rec, "price", "BTC", "gemini")[1] == [110_000.0]
    assert series(rec, "price", "BTC", "binance-spot")[1] == [111_001.0]


def test_generic_price_uses_the_quote_price() -> None:
    cfg = EngineConfig.model_validate({"ingest": {"quote_prices_usd": {"USDT": 0.5, "USD": 1.0}}})
    rec = ReportRecorder(cfg)
    rec.on_batch(batch(ev(KIND_PRICE, "curve", "USDe/USDT", "USDe", T0, 2.0, 1e6)))
    rec.on_batch(batch(ev(KIND_PRICE, "mystery", "USDe/XYZ", "USDe", T0, 2.0, 1e6, quote="XYZ")))
    assert series(rec, "price", "USDe", "curve")[1] == [1.0]
    assert series(rec, "price", "USDe", "mystery")[1] == []  # unknown quote currency: no USD price


def test_bid_depth_within_the_withdrawal_band_and_gaps() -> None:
    rec = ReportRecorder(CFG)
    col = BOOK_BANDS_BPS.index(CFG.liquidity.withdrawal_band_bps)
    bids = tuple(float(10 ** (k + 3)) for k in range(len(BOOK_BANDS_BPS)))
    bands = bids + tuple(2 * x for x in bids)
    rec.on_batch(batch(ev(KIND_BOOK, "binance-usdm", "BTCUSDT", "BTC", T0, 99.0, 101.0, 100.0, 200.0, bands=bands)))
    rec.on_batch(batch(ev(KIND_BOOK_INVALID, "binance-usdm", "BTCUSDT", "BTC", T0 + 10_000, 5.0, 9.0)))
    t, v = series(rec, "depth", "BTC", "binance-usdm", "BTCUSDT")
    assert t == [T0, T0 + 10_000]
    assert v[0] == bids[col] and math.isnan(v[1])


def test_liquidations_sum_per_minute_by_venue() -> None:
    rec = ReportRecorder(CFG)
    rec.on_batch(batch(ev(KIND_LIQUIDATION, "binance-usdm", "ETHUSDT", "ETH", T0 + 1_000, 4_000.0, 2.0, 1, 0.0),
                       ev(KIND_LIQUIDATION, "binance-usdm", "ETHUSDT", "ETH", T0 + 59_000, 4_000.0, 1.0, 1, 3_900.0),
                       ev(KIND_LIQUIDATION, "binance-usdm", "ETHUSDT", "ETH", T0 + 61_000, 4_000.0, 1.0, -1, 0.0)))
    assert rec.sum_bucket_ms == 60_000
    assert series(rec, "liq", "binance-usdm") == ([T0, T0 + 60_000], [8_000.0 + 3_900.0, 4_000.0])


def test_snapshots_are_recorded_tolerantly() -> None:
    rec = ReportRecorder(CFG)
    rec.on_snapshot({"ts_ms": T0, "kind": "loops", "hf_bands": {"<1": 2, "1-1.05": 5},
                     "ladder": {"5": 1e6, "10": 3e6}})
    rec.on_snapshot({"ts_ms": T0 + 10_000, "kind": "loops",
                     "hf_bands": {"aave-v3": {"1-1.05": 1}, "binance": {"1-1.05": 2, ">=1.5": 7}},
                     "ladder": {"5": 9e6, "10": 1e7, "bad": "x"}})
    rec.on_snapshot({"ts_ms": T0 + 20_000, "kind": "loops", "ladder": {"5": 1.0}})
    rec.on_snapshot({"ts_ms": T0, "kind": "accounts", "status_counts": {"normal": 10, "liquidation": 1}})
    rec.on_snapshot({"ts_ms": T0, "kind": "cascade", "stage": 4, "active": [1, 2, 4]})
    rec.on_snapshot({"ts_ms": T0, "kind": "weather", "sunny": True})
    rec.on_snapshot({"kind": "loops", "hf_bands": {"<1": 1}})
    rec.on_snapshot({"ts_ms": T0, "kind": "accounts", "status_counts": "many"})
    assert rec.snapshots == 5 and rec.snapshots_ignored == 3
    assert series(rec, "hf", "<1") == ([T0, T0 + 10_000], [2.0, 0.0])  # absent later = 0
    assert series(rec, "hf", "1-1.05")[1] == [5.0, 3.0]  # nested groups summed
    assert series(rec, "accounts", "liquidation")[1] == [1.0]
    assert series(rec, "stage")[1] == [4.0]
    assert rec.ladder_first is not None and rec.ladder_first[1] == ((5.0, 1e6), (10.0, 3e6))
    assert rec.ladder_peak is not None and rec.ladder_peak[0] == T0 + 10_000
    assert rec.ladder_last is not None and rec.ladder_last[0] == T0 + 20_000


def alert(kind: str, ts: int, stage: int | None = None, message: str = "m") -> Alert:
    return make_alert(kind=kind, ts_ms=ts, severity="high", venue="binance-spot", asset="USDe", message=message,
                      evidence={}, config_hash=CFG.config_hash, identity=f"{kind}{ts}", stage=stage)


def test_alerts_and_stage_changes_are_bounded() -> None:
    rec = ReportRecorder(CFG, max_alerts=3)
    for i in range(5):
        rec.on_alert(alert("cascade_stage", T0 + i, stage=i))
    assert len(rec.alerts) == 3 and rec.alerts_dropped == 2
    assert rec.stage_changes == [(T0, 0), (T0 + 1, 1), (T0 + 2, 2)]
    assert rec.alert_counts[("cascade_stage", "high")] == 5


# ---------------------------------------------------------------------------- the page

_NETWORK_REF = re.compile(r"""<(?:script|link|img|iframe|source|embed|object)\b[^>]*\b(?:src|href|data)\s*=\s*["']?"""
                          r"""\s*(?:https?:)?//""", re.IGNORECASE)


def full_recorder() -> ReportRecorder:
    rec = ReportRecorder(CFG)
    for b in usde_quotes(120, step_ms=30_000):
        rec.on_batch(b)
    rec.on_batch(batch(ev(KIND_QUOTE, "binance-spot", "BTCUSDT", "BTC", T0, 110_000.0, 110_010.0, 1, 1),
                       ev(KIND_LIQUIDATION, "bybit-linear", "BTCUSDT", "BTC", T0 + 5, 110_000.0, 1.0, 1, 0.0)))
    rec.on_alert(alert("cascade_stage", T0 + 60_000, stage=2,
                       message="</script><script>window.pwned=1</script> & <b>"))
    rec.on_snapshot({"ts_ms": T0, "kind": "accounts", "status_counts": {"normal": 3}})
    rec.set_calibration([CalibrationRow("BTC low", "102,000-105,000", "range", "103,000", True),
                         CalibrationRow("USDe <low>", "0.65", "0.64-0.67", "0.80", False)])
    return rec


def test_page_is_self_contained_and_escaped(tmp_path: Path) -> None:
    path = tmp_path / "report.html"
    write_report(full_recorder(), path, title="t <1>", config_hash="abc123", summary={"events": 5})
    text = path.read_text(encoding="utf-8")
    assert _NETWORK_REF.search(text) is None
    assert "<script src" not in text.lower() and "<link" not in text.lower()
    assert "default-src 'none'" in text  # the page's CSP forbids every fetch
    assert "window.pwned" in text and "<script>window.pwned" not in text  # message kept, not executable
    assert "Plotly.newPlot" in text and len(text) > 1_000_000  # plotly.js is inlined
    assert "t &lt;1&gt;" in text and "abc123" in text
    assert 'class="fail">FAIL' in text and "USDe &lt;low&gt;" in text and "1/2 within tolerance" in text


def test_no_data_charts_say_so(tmp_path: Path) -> None:
    path = tmp_path / "report.html"
    write_report(ReportRecorder(CFG), path, title="empty", config_hash="h", summary={})
    text = path.read_text(encoding="utf-8")
    charts = re.findall(r'data-chart="([a-z-]+)"', text)
    assert charts == ["peg-usde", "macro", "loops", "ladder", "accounts", "forced", "spiral", "depth", "liquidations",
                      "cascade"]
    assert text.count(NO_DATA) >= len(charts)
    assert 'class="chart"' not in text and 'draw("chart-' not in text
    assert "calibration" not in charts  # not a synthetic run: no table at all


def test_charts_with_data_have_fixed_ids(tmp_path: Path) -> None:
    path = tmp_path / "report.html"
    write_report(full_recorder(), path, title="t", config_hash="h", summary={})
    text = path.read_text(encoding="utf-8")
    ids = re.findall(r'<div id="(chart-[a-z-]+)" class="chart">', text)
    assert ids == ["chart-peg-usde", "chart-macro", "chart-accounts", "chart-liquidations", "chart-cascade"]
    assert re.findall(r'draw\("(chart-[a-z-]+)"', text) == ids
    assert re.findall(r'data-chart="([a-z-]+)"', text) == ["loops", "ladder", "forced", "spiral", "depth"]
    assert '"uid"' not in text


def test_risk_snapshots_fill_every_global_stage_panel(tmp_path: Path) -> None:
    rec = ReportRecorder(CFG)
    for i, (n_liq, sold) in enumerate(((0, {}), (2, {"USDe": 1e6}), (3, {"USDe": 4e6, "wBETH": 2e6}))):
        rec.on_risk_snapshot(RiskSnapshot(
            ts_ms=T0 + i * 60_000, hf_bands={"<1": n_liq, ">=1.5": 5 - n_liq}, ladder_usd={"5": 1e6 * (i + 1)},
            accounts_by_status={"normal": 10 - n_liq, "liquidation": n_liq}, forced_sell_usd_by_asset=sold,
            spiral_usd_by_shock={"usde-depeg-5pct": 2e6 * i}))
    assert rec.snapshots == 3
    assert series(rec, "forced", "USDe") == ([T0 + 60_000, T0 + 120_000], [1e6, 4e6])
    assert series(rec, "spiral", "usde-depeg-5pct")[1] == [0.0, 2e6, 4e6]
    assert series(rec, "accounts", "liquidation")[1] == [0.0, 2.0, 3.0]
    assert rec.ladder_peak is not None and rec.ladder_peak[0] == T0 + 120_000
    path = tmp_path / "report.html"
    write_report(rec, path, title="t", config_hash="h", summary={})
    ids = re.findall(r'<div id="chart-([a-z-]+)" class="chart">', path.read_text(encoding="utf-8"))
    assert {"loops", "ladder", "accounts", "forced", "spiral"} <= set(ids)


def test_summary_cards_are_scalars_and_calibration_is_one_table(tmp_path: Path) -> None:
    summary = {"events": 5, "calibration": [{"figure": "BTC low", "passed": True}], "calibration_passed": True,
               "scenario": {"name": "oct10", "seed": 1, "generation_s": 41.5}, "listed": [1, 2]}
    write_report(full_recorder(), tmp_path / "r.html", title="t", config_hash="h", summary=summary)
    text = (tmp_path / "r.html").read_text(encoding="utf-8")
    cards = re.findall(r"<div><dt>([^<]+)</dt>", text)
    assert cards == ["config hash", "events", "calibration passed"]
    assert "{&#x27;figure&#x27;" not in text and "&#x27;passed&#x27;" not in text  # no Python repr anywhere
    assert text.count('class="calib"') == 1 and "generation" not in text


def test_same_input_same_bytes(tmp_path: Path) -> None:
    summary = {"events": 5, "alerts_by_kind_severity": {"peg_deviation:high": 1}, "wall_s": 1.5}
    write_report(full_recorder(), tmp_path / "a.html", title="t", config_hash="h", summary=summary)
    write_report(full_recorder(), tmp_path / "b.html", title="t", config_hash="h", summary={**summary, "wall_s": 9.9})
    a, b = (tmp_path / "a.html").read_bytes(), (tmp_path / "b.html").read_bytes()
    assert a == b  # wall-clock figures are not part of the page
    assert b"peg_deviation:high" in a


def test_time_axes_span_the_pending_chunk(tmp_path: Path) -> None:
    rec = ReportRecorder(CFG)  # the default chunk holds all these events unprocessed
    for b in usde_quotes(120, step_ms=30_000):
        rec.on_batch(b)
    rec.on_alert(alert("peg_deviation", T0 + 1_800_000))
    assert rec.pending_events() > 0
    write_report(rec, tmp_path / "r.html", title="t", config_hash="h", summary={})
    ranges = set(re.findall(r'"range":\["([0-9T:-]+)","([0-9T:-]+)"\]', (tmp_path / "r.html").read_text()))
    assert ranges == {("2025-10-10T20:00:00", "2025-10-10T20:59:30")}
