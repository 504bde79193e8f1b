"""Synthetic, seeded, agent-based replay of 10 Oct 2025 20:00 → 11 Oct 02:00 UTC.

(The ``stablecoin-weekend`` scenario, a market-wide depeg calibrated to March 2023, is a
separate, simpler generator: :mod:`replay.scenario.weekend.scenario`.)

``generate(name, seed, out_dir, knobs)`` writes, under ``out_dir``:

- ``capture.jsonl.gz`` — frames in the venues' own wire formats (see
  :mod:`replay.scenario.day.sim` for the agents and :mod:`replay.scenario.day.wire` for shapes);
- ``positions.jsonl`` — Aave loop positions and loans;
- ``accounts.jsonl`` — Binance portfolio-margin accounts;
- ``liquidations.jsonl`` — every liquidation the simulated engines performed (Binance
  collateral sales, perp liquidations on every venue, Aave liquidations): the ground truth
  behind the venue streams, which are sampled (Binance 1/s/symbol) lower bounds;
- ``scenario.json`` — name, seed, knobs and frame counts.

Same name, seed and knobs → byte-identical files (no wall clock, all randomness from the
seed, gzip mtime 0).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel

from replay.calibration import CalibrationRow, calibrate
from replay.capture import write_chunks
from replay.gcpause import gc_paused
from replay.scenario.config import PRESETS, T0_MS, ScenarioKnobs, knobs_for
from replay.scenario.day.sim import Simulation
from replay.scenario.weekend.calibration import calibrate_weekend
from replay.scenario.weekend.scenario import WeekendKnobs, write_weekend

__all__ = [
    "DEFAULT_SEED",
    "PRESETS",
    "SCENARIOS",
    "ScenarioKnobs",
    "ScenarioResult",
    "calibrate_scenario",
    "generate",
]

#: The market-wide depeg of a fiat-backed stablecoin (issue 19), beside the October presets.
WEEKEND = "stablecoin-weekend"
#: Every scenario name ``generate`` accepts.
SCENARIOS: tuple[str, ...] = (*PRESETS, WEEKEND)

#: The seed the calibration table is checked with (``liqmon replay --scenario oct10``).
DEFAULT_SEED = 1


@dataclass(frozen=True)
class ScenarioResult:
    """Where a generated scenario was written and what it contains."""

    name: str
    seed: int
    out_dir: Path
    knobs: BaseModel
    frames: int
    frames_by_venue: dict[str, int] = field(default_factory=dict)
    generation_s: float = 0.0

    @property
    def capture_path(self) -> Path:
        return self.out_dir / "capture.jsonl.gz"

    @property
    def positions_path(self) -> Path:
        return self.out_dir / "positions.jsonl"

    @property
    def accounts_path(self) -> Path:
        return self.out_dir / "accounts.jsonl"

    @property
    def liquidations_path(self) -> Path:
        return self.out_dir / "liquidations.jsonl"

    @property
    def config_path(self) -> Path | None:
        """The engine config the scenario needs (e.g. its peg asset), if it wrote one."""
        path = self.out_dir / "engine.toml"
        return path if path.exists() else None


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("wb") as fh:
        for row in rows:
            fh.write(orjson.dumps(row, option=orjson.OPT_SERIALIZE_NUMPY))
            fh.write(b"\n")


def generate(
    name: str, seed: int, out_dir: Path, knobs: dict[str, Any] | None = None
) -> ScenarioResult:
    """Run preset ``name`` with ``seed`` (knob overrides optional) and write out_dir."""
    started = time.perf_counter()
    if name == WEEKEND:
        weekend = WeekendKnobs(**(knobs or {}))
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        total, by_venue = write_weekend(out_dir, seed, weekend)
        return ScenarioResult(
            name=name, seed=seed, out_dir=out_dir, knobs=weekend, frames=total,
            frames_by_venue=by_venue, generation_s=time.perf_counter() - started,
        )
    cfg = knobs_for(name, knobs)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    counts: Counter[str] = Counter()

    def chunks(sim: Simulation) -> Iterator[bytes]:
        # Each second is serialised at once (its frames are still in the CPU's caches) and
        # handed on in chunks of about a megabyte.
        parts: list[bytes] = []
        size = 0
        for lines, venues in sim.run():
            counts.update(venues)
            parts.append(lines)
            size += len(lines)
            if size >= 1 << 20:
                yield b"".join(parts)
                parts, size = [], 0
        yield b"".join(parts)

    with gc_paused():  # generation allocates millions of frames and no cycles
        sim = Simulation(cfg, seed)
        write_chunks(out_dir / "capture.jsonl.gz", chunks(sim), in_child=True)
    total = sum(counts.values())
    sim.flush_queues(T0_MS + sim.n * 1000)
    _write_jsonl(out_dir / "positions.jsonl", sim.positions())
    _write_jsonl(out_dir / "accounts.jsonl", sim.accounts())
    _write_jsonl(out_dir / "liquidations.jsonl", sim.liquidations)
    meta = {
        "name": name, "seed": seed, "knobs": cfg.model_dump(), "frames": total,
        "frames_by_venue": dict(sorted(counts.items())), "start_ms": T0_MS,
        "end_ms": T0_MS + sim.n * 1000,
    }
    (out_dir / "scenario.json").write_bytes(orjson.dumps(meta, option=orjson.OPT_INDENT_2))
    return ScenarioResult(
        name=name, seed=seed, out_dir=out_dir, knobs=cfg, frames=total,
        frames_by_venue=dict(sorted(counts.items())),
        generation_s=time.perf_counter() - started,
    )


def calibrate_scenario(result: ScenarioResult) -> tuple[str, list[CalibrationRow]]:
    """(what the figures are, calibration rows) of a generated scenario."""
    if result.name == WEEKEND:
        asset = str(getattr(result.knobs, "asset", "USDC"))
        return "the March 2023 USDC depeg", calibrate_weekend(result.out_dir, asset)
    return "10 October 2025", calibrate(result)
