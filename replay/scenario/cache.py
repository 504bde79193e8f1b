"""A cache of generated scenarios: the same name, seed, knobs and generator give the same files.

Generation is a pure function of (name, seed, knobs) and the generator's code, so its
output can be reused: ``generate_cached`` keys a directory by those four (the generator
version is a hash of the source files that shape the bytes) and generates only on a miss.
A scenario is written to a temporary directory and renamed into place, so an interrupted
generation never leaves a half-written entry that looks complete.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import tempfile
from pathlib import Path
from typing import Any

import orjson

from replay.scenario import WEEKEND, ScenarioResult, generate
from replay.scenario.config import ScenarioKnobs, knobs_for

__all__ = ["cache_key", "generate_cached", "generator_version"]

_PACKAGE = Path(__file__).resolve().parent
#: Source files whose change can change a generated scenario's bytes.
_SOURCES = (*sorted(p for p in _PACKAGE.rglob("*.py") if p.name != "cache.py"), _PACKAGE.parent / "capture.py")


def generator_version() -> str:
    """12 hex digits of sha256 over the generator's source files (any edit makes a new key)."""
    digest = hashlib.sha256()
    for path in _SOURCES:
        name = path.relative_to(_PACKAGE.parent).as_posix()
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def cache_key(name: str, seed: int, knobs: ScenarioKnobs) -> str:
    """16 hex digits naming one generated scenario: preset, seed, effective knobs, generator."""
    blob = orjson.dumps({"name": name, "seed": seed, "knobs": knobs.model_dump(),
                         "generator": generator_version()}, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(blob).hexdigest()[:16]


def _load(out_dir: Path) -> ScenarioResult | None:
    """The result of a complete cache entry (its ``scenario.json``), else None."""
    try:
        meta = orjson.loads((out_dir / "scenario.json").read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    files = ("capture.jsonl.gz", "positions.jsonl", "accounts.jsonl", "liquidations.jsonl")
    if not all((out_dir / name).is_file() for name in files):
        return None
    return ScenarioResult(name=meta["name"], seed=meta["seed"], out_dir=out_dir,
                          knobs=ScenarioKnobs(**meta["knobs"]), frames=meta["frames"],
                          frames_by_venue=meta["frames_by_venue"])


def generate_cached(
    name: str, seed: int, cache_dir: Path, knobs: dict[str, Any] | None = None
) -> tuple[ScenarioResult, bool]:
    """(the scenario, True if it came from the cache); generates into the cache on a miss.

    Entries of the same preset and seed under another key (older knobs or generator) are
    removed when a new one is written. The ``stablecoin-weekend`` scenario (its own, small
    generator) is generated every time, into the cache folder.
    """
    if name == WEEKEND:
        return generate(name, seed, Path(cache_dir) / f"{name}-s{seed}", knobs), False
    cfg = knobs_for(name, knobs)
    prefix = f"{name}-s{seed}-"
    target = Path(cache_dir) / (prefix + cache_key(name, seed, cfg))
    cached = _load(target)
    if cached is not None:
        return cached, True
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".partial-", dir=target.parent))
    try:
        result = generate(name, seed, tmp, knobs)
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for old in target.parent.glob(prefix + "*"):
        if old != target and old.is_dir() and len(old.name) == len(target.name):
            shutil.rmtree(old, ignore_errors=True)
    return dataclasses.replace(result, out_dir=target), False
