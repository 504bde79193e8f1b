"""Risk engine end to end through Kafka: loops, unified accounts and a venue-local USDe depeg.

A population of Aave loops (USDe collateral priced with the USDT key, as Aave did) and
Binance unified accounts (USDe priced on Binance's own book, or on the index) meets a
USDe depeg on binance-spot only. Expected: ``unified_liquidation`` for the accounts
priced on that venue, none for the others, no loop liquidation, and the inline run
equal to the Kafka run byte for byte.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from replay.capture import write_capture
from tests.depeg_frames import usde_depeg_frames

pytestmark = [pytest.mark.broker, pytest.mark.timeout(420)]

T0 = 1_760_130_000_000  # 10 Oct 2025 21:00 UTC


def liqmon(*args: str, timeout: float = 360) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIQMON_")}
    env["LIQMON_PARTITIONS"] = "4"
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args],
        capture_output=True, text=True, timeout=timeout, env=env, check=False,
    )


def _frames() -> list[tuple[int, str, str, dict[str, Any]]]:
    # binance-spot USDe: 1.0, then 0.65 from minute 20 to 45, then back
    frames = usde_depeg_frames(T0, 60, range(20, 45))
    for minute in range(60):
        frames.append((T0 + minute * 60_000 + 2, "binance-spot", "price",
                       {"base": "BTC", "quote": "USDT", "price": 116_000.0 - 50 * minute}))
    return sorted(frames, key=lambda f: f[0])


def _accounts() -> list[dict[str, Any]]:
    out = []
    for i in range(6):
        key = "USDe@binance" if i % 2 == 0 else "USDe"
        out.append({
            "account_id": f"acct-{i}", "venue": "binance", "model": "binance-pm",
            "balances": [
                {"asset": "USDe", "amount": 1_000_000.0 + 10_000 * i, "price_key": key},
                {"asset": "USDT", "amount": -700_000.0, "price_key": "USDT"},
            ],
        })
    # no price key given: a Binance USDe balance before 14 Oct 2025 values at USDe@binance
    out.append({
        "account_id": "acct-default-key", "venue": "binance", "model": "binance-pm",
        "balances": [{"asset": "USDe", "amount": 1_000_000.0},
                     {"asset": "USDT", "amount": -700_000.0, "price_key": "USDT"}],
    })
    return out


def _positions() -> list[dict[str, Any]]:
    out = []
    for i in range(20):
        collateral = 368_928.0 + 1_000 * i
        out.append({
            "position_id": f"loop-{i}", "protocol": "aave-v3", "e_mode": "usde-stablecoin",
            "collateral": [{"asset": "USDe", "amount": collateral, "liquidation_threshold": 0.93,
                            "price_key": "USDT"}],
            "debt": [{"asset": "USDT", "amount": collateral * 0.72, "price_key": "USDT"}],
        })
    return out


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return path


def test_depeg_liquidates_venue_priced_accounts_not_usdt_priced_loops(tmp_path: Path) -> None:
    capture = tmp_path / "depeg.jsonl"
    write_capture(capture, _frames())
    positions = _write_jsonl(tmp_path / "positions.jsonl", _positions())
    accounts = _write_jsonl(tmp_path / "accounts.jsonl", _accounts())
    common = ["--capture", str(capture), "--positions", str(positions),
              "--accounts", str(accounts), "--quiet"]
    inline = liqmon("replay", *common, "--out", str(tmp_path / "inline"), "--inline")
    assert inline.returncode == 0, inline.stderr
    kafka = liqmon("replay", *common, "--out", str(tmp_path / "kafka"), "--metrics-port", "0")
    assert kafka.returncode == 0, kafka.stderr + (tmp_path / "kafka" / "worker.log").read_text()
    inline_bytes = (tmp_path / "inline" / "alerts.jsonl").read_bytes()
    kafka_bytes = (tmp_path / "kafka" / "alerts.jsonl").read_bytes()
    assert inline_bytes == kafka_bytes
    # the global stage's risk snapshots (the report's loop, account, forced-sell and spiral
    # panels) reach the replayer through Kafka exactly as inline
    inline_snaps = (tmp_path / "inline" / "snapshots.jsonl").read_bytes()
    assert inline_snaps == (tmp_path / "kafka" / "snapshots.jsonl").read_bytes()
    snaps = [orjson.loads(line) for line in inline_snaps.splitlines()]
    assert len(snaps) >= 20 and snaps[-1]["accounts_by_status"].get("liquidation", 0) == 0  # back at 1.0
    assert max(s["accounts_by_status"].get("liquidation", 0) for s in snaps) == 4
    assert max(s["forced_sell_usd_by_asset"].get("USDe", 0.0) for s in snaps) > 0
    assert sum(snaps[0]["hf_bands"].values()) == 20

    alerts = [orjson.loads(line) for line in inline_bytes.splitlines()]
    liquidated = sorted(a["evidence"]["account_id"] for a in alerts
                        if a["kind"] == "unified_liquidation")
    assert liquidated == ["acct-0", "acct-2", "acct-4", "acct-default-key"]
    for a in alerts:
        if a["kind"] == "unified_liquidation":
            assert a["venue"] == "binance"
            assert a["evidence"]["forced_sells"], "the forced-sell list is the evidence"
            assert a["ts_ms"] >= T0 + 20 * 60_000
    cascade = [a for a in alerts if a["kind"] == "cascade_stage"]
    assert cascade and max(a["stage"] for a in cascade) >= 7
    for a in cascade:  # loops priced with the USDT key never reach stage 5
        assert 5 not in a["evidence"]["active_stages"]
    assert any(a["kind"] == "venue_local_depeg" for a in alerts)
