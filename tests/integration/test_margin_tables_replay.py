"""``liqmon replay`` uses the margin tables a live recording starts with (or
``--margin-tables``) for unified accounts, instead of the built-in tables (RISK_MODEL §3)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import orjson
import pytest

from replay.capture import write_capture
from streams import cli
from tests.unit.test_venue_tables import HL_META, OKX_POSITION_TIERS

pytestmark = pytest.mark.timeout(120)

T0 = 1_760_130_000_000


def _frames(with_tables: bool) -> list[tuple[int, str, str, Any]]:
    head: list[tuple[int, str, str, Any]] = [
        (T0, "liqmon", "margin_tables", {"hyperliquid": HL_META})] if with_tables else []
    prices = [(T0 + 1 + m * 60_000, "oracle", "price", {"base": "NEW", "quote": "USD", "price": 10.0})
              for m in range(5)]
    return head + prices


def _replay(tmp_path: Path, name: str, with_tables: bool, *extra: str) -> list[dict[str, Any]]:
    capture = tmp_path / f"{name}.jsonl"
    write_capture(capture, _frames(with_tables))
    accounts = tmp_path / "accounts.jsonl"
    accounts.write_text(json.dumps({
        "account_id": "hl-1", "venue": "hyperliquid", "model": "hyperliquid",
        "balances": [{"asset": "USDC", "amount": 999.0, "price_key": "USDC"}],
        "perps": [{"symbol": "NEW", "qty": 600, "entry_price": 10, "price_key": "NEW"}]}) + "\n")
    out = tmp_path / f"out-{name}"
    inline = [] if "--metrics-port" in extra else ["--inline"]
    out = out.with_name(f"{out.name}-{'kafka' if not inline else 'inline'}")
    rc = cli.main(["replay", "--capture", str(capture), "--accounts", str(accounts), *inline,
                   "--quiet", "--out", str(out), *extra])
    assert rc == 0
    return [orjson.loads(line) for line in (out / "alerts.jsonl").read_bytes().splitlines()]


def _liquidated(alerts: list[dict[str, Any]]) -> list[str]:
    return [a["evidence"]["account_id"] for a in alerts if a["kind"] == "unified_liquidation"]


def test_recorded_tables_apply_to_the_replay(tmp_path: Path) -> None:
    # recorded meta: NEW on 3x → MM 6,000 / 6 = 1,000 > equity 999
    assert _liquidated(_replay(tmp_path, "recorded", with_tables=True)) == ["hl-1"]
    # built-in: NEW has no table → 10x → MM 300, healthy
    assert _liquidated(_replay(tmp_path, "plain", with_tables=False)) == []


def test_margin_tables_flag_overrides_the_capture(tmp_path: Path) -> None:
    doc = tmp_path / "tables.json"
    doc.write_text(json.dumps({"hyperliquid": {
        "universe": [{"name": "NEW", "marginTableId": 10}], "marginTables": []}}))
    alerts = _replay(tmp_path, "flag", True, "--margin-tables", str(doc))
    assert _liquidated(alerts) == []


def test_bad_tables_file_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capture = tmp_path / "c.jsonl"
    write_capture(capture, _frames(False))
    doc = tmp_path / "tables.json"
    doc.write_text('{"okx": {"data": 1}}')
    rc = cli.main(["replay", "--capture", str(capture), "--inline", "--quiet",
                   "--out", str(tmp_path / "o"), "--margin-tables", str(doc)])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1
    assert "tables.json: okx.data: expected a JSON list" in err


@pytest.mark.broker
@pytest.mark.timeout(420)
def test_kafka_worker_applies_the_same_tables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The replay's worker gets the tables too (LIQMON_MARGIN_TABLES): same alerts, same ids."""
    for key in [k for k in os.environ if k.startswith("LIQMON_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("LIQMON_PARTITIONS", "2")
    inline = _replay(tmp_path, "both", with_tables=True)
    kafka = _replay(tmp_path, "both", True, "--metrics-port", "0")
    assert _liquidated(inline) == ["hl-1"]
    assert kafka == inline


def test_recorded_okx_position_tiers_apply_to_the_replay(tmp_path: Path) -> None:
    """A recording's OKX position tiers set the MM of an okx-mc perp in the replay: 300 BTC
    is past the recorded table's last tier (up to 200 BTC at 0.75%), while the built-in
    table puts it at 1.25% (``--margin-tables`` with an empty document keeps the built-ins)."""
    capture = tmp_path / "okx.jsonl"
    tiers = {"okx_position_tiers": [OKX_POSITION_TIERS]}
    write_capture(capture, [(T0, "liqmon", "margin_tables", tiers)] + [
        (T0 + 1 + m * 60_000, "oracle", "price", {"base": "BTC", "quote": "USD", "price": 100.0})
        for m in range(5)])
    accounts = tmp_path / "accounts.jsonl"
    # 300 BTC at 100: notional 30,000; recorded tiers MM 225 (0.75%), built-in MM 375 (1.25%)
    accounts.write_text(json.dumps({
        "account_id": "okx-1", "venue": "okx", "model": "okx-mc",
        "balances": [{"asset": "USDT", "amount": 300.0, "price_key": "USDT"}],
        "perps": [{"symbol": "BTC-USDT-SWAP", "qty": 300, "entry_price": 100,
                   "price_key": "BTC"}]}) + "\n")
    liquidated = {}
    for name, extra in (("recorded", []), ("built-in", ["--margin-tables", str(tmp_path / "none.json")])):
        (tmp_path / "none.json").write_text("{}")
        out = tmp_path / f"out-okx-{name}"
        assert cli.main(["replay", "--capture", str(capture), "--accounts", str(accounts),
                         "--inline", "--quiet", "--out", str(out), *extra]) == 0
        alerts = [orjson.loads(x) for x in (out / "alerts.jsonl").read_bytes().splitlines()]
        liquidated[name] = _liquidated(alerts)
    assert liquidated == {"recorded": [], "built-in": ["okx-1"]}
