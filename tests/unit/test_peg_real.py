"""The real data of 10 Oct 2025 keeps its venue-local depeg alerts (issue 19's hard constraint).

Binance's USDe/USDT book against the Uniswap v3 pool, the only other USDe source in
../shared/data/oct10: with the shipped ``replay/configs/oct10-real.toml`` (one witness is
enough, both sources declared) the venue-local depeg is raised, escalated and ended at the
same times as before the witness rules; with the default two witnesses it is undetermined.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from monitor.config import EngineConfig, load_config_text
from replay.capture import write_capture
from replay.importers import iter_file, merge_captures
from replay.replayer import replay_inline

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA = REPO_ROOT.parent / "shared" / "data" / "oct10"
REAL_CONFIG = REPO_ROOT / "replay" / "configs" / "oct10-real.toml"

pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"shared data not at {DATA}")

#: (ts_ms, severity) of every venue_local_depeg alert on the real data before issue 19:
#: high at 21:24:59, critical at 21:39:30, ended at 22:59:30 (10 Oct 2025 UTC).
OCT10_VENUE_LOCAL = [
    (1_760_131_499_000, "high"),
    (1_760_132_370_000, "critical"),
    (1_760_137_170_000, "info"),
]


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("real") / "usde.jsonl.gz"
    files = [DATA / "usde_usdt_binance_1m.csv", DATA / "usde_usdt_uniswap_v3_blocks.csv"]
    write_capture(out, merge_captures(iter_file(path) for path in files))
    return out


def venue_local(capture: Path, config: EngineConfig) -> list[tuple[int, str, str | None]]:
    result = asyncio.run(replay_inline(capture, config))
    return [
        (a.ts_ms, a.severity, a.venue)
        for a in result.alerts
        if a.kind == "venue_local_depeg"
    ]


def test_shipped_config_keeps_the_october_venue_local_alerts(capture: Path) -> None:
    config = load_config_text(REAL_CONFIG.read_text())
    got = venue_local(capture, config)
    assert got == [(ts, sev, "binance-spot") for ts, sev in OCT10_VENUE_LOCAL]


def test_one_witness_is_undetermined_under_the_default_config(capture: Path) -> None:
    assert venue_local(capture, EngineConfig()) == []
