"""Synthetic 10 Oct scenario: calibration, determinism, presets, output contracts."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from monitor.models.loops.lending import Position
from monitor.models.margin import Account
from replay.calibration import calibrate, format_table, scan_capture
from replay.capture import CaptureLine, iter_capture
from replay.scenario import DEFAULT_SEED, PRESETS, ScenarioResult, generate
from replay.scenario.cache import cache_key, generate_cached, generator_version
from replay.scenario.config import ScenarioKnobs, knobs_for
from replay.scenario.day.market import ALTS

SHORT = {"duration_s": 1800}  # 20:00-20:30: the shock has not started yet


@pytest.fixture(scope="module")
def oct10(tmp_path_factory: pytest.TempPathFactory) -> ScenarioResult:
    return generate("oct10", DEFAULT_SEED, tmp_path_factory.mktemp("oct10"))


@pytest.mark.slow
def test_default_seed_passes_every_calibration_row(oct10: ScenarioResult) -> None:
    rows = calibrate(oct10)
    table = format_table(rows)
    assert len(rows) == 15
    failed = [r.figure for r in rows if not r.passed]
    assert not failed, table
    assert f"{len(rows)}/{len(rows)} within tolerance" in table


@pytest.mark.slow
def test_full_run_size(oct10: ScenarioResult) -> None:
    """Frame counts and venues; generation time is measured by `liqmon bench --only generation`."""
    assert 300_000 <= oct10.frames <= 2_000_000
    expected_venues = {"binance-spot", "binance-usdm", "bybit-linear", "bybit-spot", "okx",
                       "hyperliquid", "curve", "uniswap-v3", "chainlink", "binance-rate"}
    assert set(oct10.frames_by_venue) == expected_venues


@pytest.mark.slow
def test_capture_is_ordered_and_native(oct10: ScenarioResult) -> None:
    last = -1
    channels: dict[tuple[str, str], Any] = {}
    for line in iter_capture(oct10.capture_path):
        assert isinstance(line, CaptureLine)
        assert line.ts_ms >= last
        last = line.ts_ms
        key = (line.venue, line.channel.split(".")[0] if line.venue.startswith("bybit")
               else line.channel)
        channels.setdefault(key, line.raw)
    force = channels[("binance-usdm", "!forceOrder@arr")]
    assert force["e"] == "forceOrder" and {"s", "S", "q", "p", "ap", "X", "T"} <= force["o"].keys()
    mark = channels[("binance-usdm", "btcusdt@markPrice@1s")]
    assert mark["e"] == "markPriceUpdate" and {"p", "i", "r", "T"} <= mark.keys()
    diff = channels[("binance-spot", "usdeusdt@depth@100ms")]
    assert {"e", "E", "s", "U", "u", "b", "a"} <= diff.keys()
    fut = channels[("binance-usdm", "btcusdt@depth@100ms")]
    assert {"pu", "T"} <= fut.keys()
    assert channels[("bybit-linear", "allLiquidation")]["data"][0]["S"] in ("Buy", "Sell")
    assert channels[("bybit-linear", "orderbook")]["type"] == "snapshot"
    assert channels[("okx", "books")]["data"][0]["prevSeqId"] == -1
    assert channels[("okx", "liquidation-orders")]["data"][0]["details"][0]["posSide"]
    assert set(channels[("hyperliquid", "l2Book")]["data"]) == {"coin", "levels", "time"}
    assert channels[("hyperliquid", "trades")]["data"][0]["users"]
    assert channels[("chainlink", "price")] == {"base": "USDT", "quote": "USD", "price": 1.0}
    assert channels[("curve", "price")]["base"] == "USDe"


@pytest.mark.slow
def test_binance_depth_diffs_are_contiguous(oct10: ScenarioResult) -> None:
    last_u: dict[tuple[str, str], int] = {}
    snapshot_id: dict[tuple[str, str], int] = {}
    checked = 0
    for line in iter_capture(oct10.capture_path):
        assert isinstance(line, CaptureLine)
        if not line.venue.startswith("binance"):
            continue
        key = (line.venue, line.channel.split("@")[0])
        if line.channel.endswith("@depthSnapshot"):
            last_u[key] = line.raw["lastUpdateId"]
            snapshot_id[key] = line.raw["lastUpdateId"]
        elif line.channel.endswith("@depth@100ms"):
            raw = line.raw
            if key in snapshot_id:  # first event after the REST snapshot
                sid = snapshot_id.pop(key)
                if "pu" in raw:  # USD-M: U <= lastUpdateId <= u
                    assert raw["U"] <= sid <= raw["u"]
                else:  # spot: U <= lastUpdateId + 1 <= u
                    assert raw["U"] <= sid + 1 <= raw["u"]
            else:
                assert raw["U"] == last_u[key] + 1
                if "pu" in raw:
                    assert raw["pu"] == last_u[key]
            last_u[key] = raw["u"]
            checked += 1
    assert checked > 10_000


@pytest.mark.slow
def test_populations_written(oct10: ScenarioResult) -> None:
    positions = [orjson.loads(x) for x in oct10.positions_path.read_bytes().splitlines()]
    accounts = [orjson.loads(x) for x in oct10.accounts_path.read_bytes().splitlines()]
    loops = [p for p in positions if p["collateral"][0]["asset"] == "USDe"]
    assert loops and {p["collateral"][0]["price_key"] for p in loops} == {"USDT"}
    assert {"position_id", "protocol", "collateral", "debt", "liquidation_bonus", "e_mode"} <= (
        loops[0].keys())
    assert all(p["e_mode"] == "usde-stablecoin" for p in loops)
    # The monitor's own models accept both files as written.
    assert len([Position.model_validate(p) for p in positions]) == len(positions)
    assert len([Account.model_validate(a) for a in accounts]) == len(accounts)
    usde_keys = {b["price_key"] for a in accounts for b in a["balances"] if b["asset"] == "USDe"}
    assert usde_keys == {"USDe@binance"}
    assert {a["model"] for a in accounts} == {"binance-pm"}
    mm = next(a for a in accounts if a["account_id"].startswith("bn-mm-"))
    assert {"USDe", "wBETH", "BNSOL"} <= {b["asset"] for b in mm["balances"]}
    whale = next(a for a in accounts if a["account_id"].startswith("bn-whale-"))
    assert whale["perps"] and whale["perps"][0]["price_key"].endswith("@binance-usdm")


def test_same_seed_is_byte_identical(tmp_path: Path) -> None:
    a = generate("oct10", 7, tmp_path / "a", SHORT)
    b = generate("oct10", 7, tmp_path / "b", SHORT)
    for name in ("capture.jsonl.gz", "positions.jsonl", "accounts.jsonl",
                 "liquidations.jsonl", "scenario.json"):
        assert (a.out_dir / name).read_bytes() == (b.out_dir / name).read_bytes(), name
    c = generate("oct10", 8, tmp_path / "c", SHORT)
    assert (c.out_dir / "capture.jsonl.gz").read_bytes() != (
        a.out_dir / "capture.jsonl.gz").read_bytes()
    with gzip.open(a.capture_path) as fh:  # gzip header carries mtime 0
        assert fh.read(1)
    assert a.capture_path.read_bytes()[4:8] == b"\x00\x00\x00\x00"


def test_calm_day_stays_calm(tmp_path: Path) -> None:
    result = generate("calm", DEFAULT_SEED, tmp_path / "calm")
    stats = scan_capture(result.capture_path)
    usde = stats.mids[("binance-spot", "USDEUSDT")]
    assert len(usde) > 1000
    assert max(abs(v - 1) for _, v in usde) <= 0.0020
    for (venue, sym), series in stats.mids.items():
        values = [v for _, v in series]
        high = values[0]
        worst = 0.0
        for v in values:
            high = max(high, v)
            worst = max(worst, 1 - v / high)
        assert worst <= 0.05, (venue, sym, worst)
    liqs = result.liquidations_path.read_bytes().splitlines()
    assert not any(orjson.loads(x)["venue"] == "binance" for x in liqs)


def test_presets_change_pricing_keys(tmp_path: Path) -> None:
    fix = generate("oct10-post-fix-index", 3, tmp_path / "fix", SHORT)
    accounts = [orjson.loads(x) for x in fix.accounts_path.read_bytes().splitlines()]
    keys = {b["asset"]: b["price_key"] for a in accounts for b in a["balances"]}
    assert keys["USDe"] == "rate:USDE/USD" and keys["wBETH"] == "rate:WBETH/ETH*ETH"
    mtm = generate("oct10-aave-mtm", 3, tmp_path / "mtm", SHORT)
    positions = [orjson.loads(x) for x in mtm.positions_path.read_bytes().splitlines()]
    assert "USDe@binance" in {p["collateral"][0]["price_key"] for p in positions}


def test_knobs_are_validated() -> None:
    assert set(PRESETS) == {"oct10", "oct10-post-fix-index", "oct10-aave-mtm", "calm"}
    with pytest.raises(ValueError, match="unknown scenario"):
        knobs_for("oct11")
    with pytest.raises(ValueError, match="duration_sec"):
        knobs_for("oct10", {"duration_sec": 10})


@pytest.mark.parametrize(("knob", "value", "reason"), [
    ("n_alts", -3, "greater than or equal to 3"),
    ("n_alts", 2, "greater than or equal to 3"),  # market makers hold three alts each
    ("n_alts", 35, "less than or equal to 34"),
    ("n_binance_whales", -1, "greater than or equal to 0"),
    ("book_interval_s", 0, "greater than 0"),
    ("duration_s", 0, "greater than 0"),
    ("usde_impact_depth_usd", 0.0, "greater than 0"),
    ("usde_impact_depth_usd", float("inf"), "finite number"),
    ("engine_usde_usd_per_s", float("nan"), "finite number"),
])
def test_a_knob_out_of_its_range_is_refused(knob: str, value: float, reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        knobs_for("oct10", {knob: value})


def test_the_alt_count_spans_what_the_generator_can_make(tmp_path: Path) -> None:
    field = ScenarioKnobs.model_fields["n_alts"]
    bounds = {type(m).__name__: m for m in field.metadata}
    assert bounds["Le"].le == len(ALTS)
    for n_alts in (bounds["Ge"].ge, len(ALTS)):  # both ends generate (the market makers draw three)
        result = generate("oct10", DEFAULT_SEED, tmp_path / str(n_alts), {"n_alts": n_alts, "duration_s": 600})
        assert result.frames > 0


def test_cache_reuses_a_scenario_keyed_by_name_seed_knobs_and_generator(tmp_path: Path) -> None:
    first, hit = generate_cached("oct10", 7, tmp_path / "cache", SHORT)
    assert not hit and first.out_dir.parent == tmp_path / "cache"
    again, hit = generate_cached("oct10", 7, tmp_path / "cache", SHORT)
    assert hit and again.out_dir == first.out_dir
    assert (again.frames, again.frames_by_venue, again.knobs) == (first.frames, first.frames_by_venue, first.knobs)
    plain = generate("oct10", 7, tmp_path / "plain", SHORT)
    for name in ("capture.jsonl.gz", "positions.jsonl", "accounts.jsonl", "liquidations.jsonl", "scenario.json"):
        assert (again.out_dir / name).read_bytes() == (plain.out_dir / name).read_bytes(), name
    assert cache_key("oct10", 7, knobs_for("oct10", SHORT)) in again.out_dir.name
    assert cache_key("oct10", 8, knobs_for("oct10", SHORT)) != cache_key("oct10", 7, knobs_for("oct10", SHORT))
    other, hit = generate_cached("oct10", 7, tmp_path / "cache", {"duration_s": 1200})
    assert not hit and other.out_dir != first.out_dir
    assert not first.out_dir.exists()  # the older entry of the same preset and seed is replaced
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [other.out_dir.name]
    assert len(generator_version()) == 12


#: sha256 of the files of ``generate("oct10", 7, SHORT)``: speed work on the generator must
#: not move a byte (the capture is compared decompressed: its zlib level is not the content).
GOLDEN_SHORT_SEED_7 = {
    "capture.jsonl": "458265e7c95574b2d1ae17cdfc476fa14de76691ed31a725a26f8455a28332ab",
    "positions.jsonl": "919b22a47a8c5dece98a5a74b7e0d7f4493762f0b1d3f87b6ec80612e75d3d7e",
    "accounts.jsonl": "1467fdc0d6d1c5ba761b4fd1be726c3b270f5b4ebd164cafa5e1c61f54cbd3e7",
    "liquidations.jsonl": "78a5f6db7f2e6203a4ab453e190201fcdd8f2ac94db1e528e40956f197ed357b",
    "scenario.json": "db9ee348b1d0cff146f27bcf68d33efa24d9b8da69243ae54368340651866d60",
}


def _digests(result: ScenarioResult) -> dict[str, str]:
    with gzip.open(result.capture_path) as fh:
        digests = {"capture.jsonl": hashlib.sha256(fh.read()).hexdigest()}
    for name in ("positions.jsonl", "accounts.jsonl", "liquidations.jsonl", "scenario.json"):
        digests[name] = hashlib.sha256((result.out_dir / name).read_bytes()).hexdigest()
    return digests


def test_generated_bytes_match_the_golden_digests(tmp_path: Path) -> None:
    assert _digests(generate("oct10", 7, tmp_path / "g", SHORT)) == GOLDEN_SHORT_SEED_7


def test_generation_without_a_child_process_gives_the_same_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where fork is unavailable the exogenous streams are framed inline, byte for byte alike."""
    monkeypatch.setattr("replay.scenario.day.feed.can_fork", lambda: False)
    monkeypatch.setattr("replay.capture.can_fork", lambda: False)
    assert _digests(generate("oct10", 7, tmp_path / "g", SHORT)) == GOLDEN_SHORT_SEED_7


def _ticker(ts_ms: int, venue: str, channel: str, bid: str, ask: str) -> bytes:
    return orjson.dumps({"ts_ms": ts_ms, "venue": venue, "channel": channel,
                         "raw": {"s": "BTCUSDT", "b": bid, "a": ask}})


def test_calibration_scan_reads_every_line_of_its_channels_however_spelled(tmp_path: Path) -> None:
    """Lines of other channels are skipped unparsed; a scanned channel spelled with \\u
    escapes is still read, and a bad line among them is passed over as before."""
    escaped = (b'{"ts_ms":2,"venue":"binance-spot","channel":"btcusdt@book\\u0054icker",'
               b'"raw":{"s":"BTCUSDT","b":"104","a":"106"}}')
    pool = b'{"ts_ms":5,"venue":"curve","channel":"pr\\u0069ce","raw":{"price":0.998}}'
    lines = [
        _ticker(1, "binance-spot", "btcusdt@bookTicker", "100", "102"),
        escaped,
        orjson.dumps({"ts_ms": 3, "venue": "binance-usdm", "channel": "btcusdt@markPrice@1s",
                      "raw": {"s": "BTCUSDT", "p": "1"}}),
        b'{"ts_ms": 4, "venue": "binance-spot", "channel": "x@bookTicker"',  # cut short: a BadLine
        pool,
        orjson.dumps({"ts_ms": 6, "venue": "binance-usdm", "channel": "btcusdt@depthSnapshot",
                      "raw": {"bids": [["100", "2"], ["90", "1"]], "asks": [["101", "1"]]}}),
        orjson.dumps({"ts_ms": 7, "venue": "binance-usdm", "channel": "btcusdt@depth@100ms",
                      "raw": {"b": [["99", "1"], ["90", "0"]], "a": []}}),
        _ticker(8, "binance-usdm", "btcusdt@bookTicker", "100", "101"),
    ]
    path = tmp_path / "capture.jsonl.gz"
    path.write_bytes(gzip.compress(b"\n".join(lines) + b"\n"))
    stats = scan_capture(path)
    assert stats.mids[("binance-spot", "BTCUSDT")] == [(1, 101.0), (2, 105.0)]
    assert stats.mids[("binance-usdm", "BTCUSDT")] == [(8, 100.5)]
    assert stats.pools == {"curve": [(5, 0.998)]}
    assert stats.btc_perp_bids5_usd == [(6, 200.0), (7, 299.0)]
    assert stats.frames == 6  # the mark price skipped, the bad line not a frame
    kept = [line.line_no for line in iter_capture(path, spelling=(b"depth",))]
    assert kept == [2, 5, 6, 7]  # the \u-escaped lines may spell it; numbered as in the file
