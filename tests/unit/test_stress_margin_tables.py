"""``liqmon stress --margin-tables``: a committed JSON document or a recorded capture."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from replay.capture import write_capture
from streams.cmd import stress as stress_cmd
from tests.unit.test_venue_tables import HL_META, OKX_DISCOUNT

ACCOUNT = {"account_id": "h1", "venue": "hyperliquid", "model": "hyperliquid",
           "balances": [{"asset": "USDC", "amount": 1_000, "price_key": "USDC"}],
           "perps": [{"symbol": "NEW", "qty": 600, "entry_price": 10, "price_key": "NEW"}]}


def _run(tmp_path: Path, tables: Path | None, capsys: pytest.CaptureFixture[str]
         ) -> tuple[int, Any, str]:
    accounts = tmp_path / "A.jsonl"
    accounts.write_text(json.dumps(ACCOUNT) + "\n")
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"USDC": 1.0, "NEW": 10.0}))
    extra = ["--margin-tables", str(tables)] if tables else []
    rc = stress_cmd.main(["--accounts", str(accounts), "--prices", str(prices), *extra])
    out = capsys.readouterr()
    return rc, json.loads(out.out) if rc == 0 else None, out.err


def test_built_in_tables_by_default(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, doc, _ = _run(tmp_path, None, capsys)
    assert rc == 0
    # NEW has no built-in table: one tier at the default 10x → MM 6,000 × 5% = 300
    assert doc["accounts"][0]["maintenance_margin_usd"] == pytest.approx(300)
    assert "2026-12-04" in doc["hyperliquid_margin_tables_source"]


def test_json_document(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tables = tmp_path / "tables.json"
    tables.write_text(json.dumps({"hyperliquid": HL_META}))
    rc, doc, _ = _run(tmp_path, tables, capsys)
    assert rc == 0
    # NEW is on flat table 3 (3x): MM = 6,000 / 6 = 1,000 = equity: not liquidated (strict)
    assert doc["accounts"][0]["maintenance_margin_usd"] == pytest.approx(1_000)
    digest = hashlib.sha256(tables.read_bytes()).hexdigest()[:12]
    assert doc["hyperliquid_margin_tables_source"] == f"margin tables document sha256:{digest}"


def test_recorded_capture(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capture = tmp_path / "rec.jsonl.gz"
    later = {"universe": [{"name": "NEW", "marginTableId": 40}], "marginTables": []}
    write_capture(capture, [
        (1_000, "liqmon", "session", {"book_throttle_ms": 250}),
        (1_000, "liqmon", "margin_tables", {"okx": OKX_DISCOUNT}),
        (1_001, "liqmon", "margin_tables", {"hyperliquid": HL_META}),
        (1_002, "hyperliquid", "l2Book", {"channel": "l2Book", "data": {}}),
        # past the session's head: not the session's tables
        (1_003, "liqmon", "margin_tables", {"hyperliquid": later}),
    ])
    rc, doc, _ = _run(tmp_path, capture, capsys)
    assert rc == 0
    assert doc["accounts"][0]["maintenance_margin_usd"] == pytest.approx(1_000)
    assert doc["hyperliquid_margin_tables_source"] == (
        "margin_tables frame recorded at ts_ms 1001 (line 3)")


@pytest.mark.parametrize(("name", "content", "expected"), [
    ("t.json", '{"hyperliquid": {"universe": [{"name": "X", "marginTableId": 99}]}}',
     "t.json: meta.universe[0]: margin table 99 is not in marginTables"),
    ("t.json", '{"binance": {}}', "t.json: binance: unknown venue"),
    ("t.json", "{nope", "t.json:1: invalid JSON"),
    ("t.jsonl", '{"ts_ms": 1, "venue": "okx", "channel": "books", "raw": {}}\n',
     "t.jsonl: no margin_tables frame at the start of this capture"),
    ("t.jsonl", '{"ts_ms": 1, "venue": "liqmon", "channel": "margin_tables", '
     '"raw": {"okx": {"data": 5}}}\n', "t.jsonl:1: raw: okx.data: expected a JSON list"),
])
def test_bad_tables_exit_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, content: str, expected: str
) -> None:
    path = tmp_path / name
    path.write_text(content)
    rc, _, err = _run(tmp_path, path, capsys)
    assert rc == stress_cmd.EXIT_INPUT_ERROR
    assert err.count("\n") == 1
    assert expected in err
