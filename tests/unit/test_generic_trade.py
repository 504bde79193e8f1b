"""Generic trade prints (Tardis-style CSV imports of venues without a native connector)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from monitor.config import EngineConfig
from monitor.events import KIND_TRADE
from monitor.ingest.wire import WireError, normalize
from replay.capture import write_capture
from replay.importers import iter_file
from replay.replayer import replay_inline

T0 = 1_760_130_000_000
ALIASES = EngineConfig().ingest.asset_aliases


def test_parse_trade_and_its_errors() -> None:
    raw = {"symbol": "ENA-USD", "side": "sell", "price": 0.41, "amount": 1500.0, "id": "7", "ts_ms": T0}
    (ev,) = normalize("coinbase", "trade", raw, T0 + 40, ALIASES, 60_000)
    got = (ev.kind, ev.base, ev.quote, ev.f1, ev.f2, ev.f3, ev.ts_ms)
    assert got == (KIND_TRADE, "ENA", "USD", 0.41, 1500.0, -1.0, T0)
    for bad, reason in [({**raw, "side": "up"}, "wrong_type"), ({**raw, "price": "nan"}, "non_finite"),
                        ({**raw, "amount": -1}, "negative_quantity"), ({"side": "buy"}, "missing_field")]:
        with pytest.raises(WireError) as exc:
            normalize("coinbase", "trade", bad, T0, ALIASES, 60_000)
        assert exc.value.reason == reason


@pytest.mark.parametrize(
    "name", ["coinbase_trades_2025-10-10_ENA-USD.csv.gz", "gemini_trades_2025-10-10_BTCUSD.csv.gz"]
)
def test_imported_trade_files_replay_without_dead_letters(oct10_dir: Path, tmp_path: Path, name: str) -> None:
    capture = tmp_path / "trades.jsonl.gz"
    n = write_capture(capture, iter_file(oct10_dir / name))
    result = asyncio.run(replay_inline(capture, EngineConfig()))
    assert result.stats.frames == n
    assert sum(result.stats.deadletters.values()) == 0
    assert result.stats.events == n
