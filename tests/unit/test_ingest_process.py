"""Ingest in a child process (``replay.ingest_process``): the inline replay gives the same
alerts, snapshots and counts as with ingest in its own process; the child's errors reach
the parent as they would have been raised in it; a child that dies is a clear error, and
leaving early stops the child."""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import replay.report.recorder as recorder_module
from monitor.config import EngineConfig, load_config_text
from monitor.ingest.batch import Batch
from monitor.ingest.frames import Ingest, Routed
from monitor.protocol import DeadLetter
from replay.capture import CaptureError
from replay.ingest_process import CHUNK_ITEMS, IngestProcess, IngestProcessError
from replay.replayer import InlineResult, replay_inline
from replay.report.recorder import ReportRecorder
from replay.routing import route_capture
from replay.scenario import ScenarioResult, generate


@pytest.fixture(scope="module")
def weekend(tmp_path_factory: pytest.TempPathFactory) -> ScenarioResult:
    return generate("stablecoin-weekend", 1, tmp_path_factory.mktemp("weekend"))


@pytest.fixture(scope="module")
def with_bad_lines(weekend: ScenarioResult, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The weekend's capture, plain, with lines that fail validation here and there."""
    lines = gzip.decompress(weekend.capture_path.read_bytes()).splitlines(keepends=True)
    bad = [b"not json\n", b'{"ts_ms": 1, "venue": "kraken", "channel": "ticker"}\n', b"[1, 2]\n"]
    for n, line in zip((10, 20_000, 40_000), bad, strict=True):
        lines.insert(n, line)
    out = tmp_path_factory.mktemp("bad") / "capture.jsonl"
    out.write_bytes(b"".join(lines))
    return out


def _config(weekend: ScenarioResult) -> EngineConfig:
    assert weekend.config_path is not None
    return load_config_text(weekend.config_path.read_text())


def _replay(path: Path, config: EngineConfig, *, child: bool, **kw: object) -> InlineResult:
    return asyncio.run(replay_inline(path, config, ingest_process=child, **kw))  # type: ignore[arg-type]


def _counts(result: InlineResult) -> dict[str, object]:
    return {k: v for k, v in dataclasses.asdict(result.stats).items() if k != "wall_s"}


@pytest.mark.parametrize("window", [{}, {"from_ms": 1_678_550_000_000, "to_ms": 1_678_650_000_000}])
def test_the_child_gives_what_routing_here_gives(
        weekend: ScenarioResult, with_bad_lines: Path, window: dict[str, int]) -> None:
    config = _config(weekend)
    batches: dict[bool, list[object]] = {True: [], False: []}
    runs = {child: _replay(with_bad_lines, config, child=child, on_batch=batches[child].append, **window)
            for child in (True, False)}
    here, there = runs[False], runs[True]
    assert here.alerts, "the weekend raises alerts"
    assert there.alerts == here.alerts
    assert there.snapshots == here.snapshots
    assert batches[True] == batches[False]
    assert _counts(there) == _counts(here)
    assert here.stats.deadletters.total() == 3  # bad lines are counted, in the window or not


def test_a_file_that_is_not_a_capture_raises_the_same_error(tmp_path: Path) -> None:
    path = tmp_path / "image.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8)
    errors = []
    for child in (True, False):
        with pytest.raises(CaptureError) as caught:
            _replay(path, EngineConfig(), child=child)
        errors.append(str(caught.value))
    assert errors[0] == errors[1]


def test_a_missing_capture_raises_the_same_error(tmp_path: Path) -> None:
    errors = []
    for child in (True, False):
        with pytest.raises(Exception) as caught:  # the same type either way
            _replay(tmp_path / "none.jsonl.gz", EngineConfig(), child=child)
        errors.append((type(caught.value), str(caught.value)))
    assert errors[0] == errors[1]


def test_a_child_that_dies_is_a_clear_error(weekend: ScenarioResult) -> None:
    with IngestProcess(weekend.capture_path, _config(weekend)) as child:
        items = child.items()
        next(items)  # the child is at work, held back by the pipe
        os.kill(child.pid, signal.SIGKILL)
        with pytest.raises(IngestProcessError, match="exit code -9"):
            for _ in items:
                pass
        assert not child.done


def test_leaving_early_stops_the_child(weekend: ScenarioResult) -> None:
    with IngestProcess(weekend.capture_path, _config(weekend)) as child:
        next(child.items())
        assert child.alive()
    assert not child.alive()
    assert not child.done


def test_the_counts_are_those_of_the_items_taken(weekend: ScenarioResult) -> None:
    """The child's counts move on only once every item of a message was taken: a replay
    interrupted in the middle of one reports the frames its stages were given, not more."""
    with IngestProcess(weekend.capture_path, _config(weekend)) as child:
        items = child.items()
        taken = 0
        while child.stats.frames == 0:
            next(items)
            taken += 1
        assert taken >= 2 and taken % CHUNK_ITEMS == 1  # counted on taking the next message's first item
        counted = child.stats.frames
        for _ in range(CHUNK_ITEMS - 1):
            next(items)
        assert child.stats.frames == counted
        rest = sum(1 for _ in items)
        assert child.done and child.stats.frames > counted
    here = Ingest(_config(weekend))
    routed = [item for _, item in route_capture(weekend.capture_path, here) if not isinstance(item, DeadLetter)]
    assert taken + CHUNK_ITEMS - 1 + rest == len(routed) and child.stats == here.stats


def test_a_replay_from_a_script_on_stdin(weekend: ScenarioResult) -> None:
    """The child is a fresh interpreter that imports only liqmon's modules, never the
    caller's main module: a script read from stdin (no file to import) replays too."""
    script = (
        "import asyncio, sys\n"
        "from pathlib import Path\n"
        "from monitor.config import load_config_text\n"
        "from replay.replayer import replay_inline\n"
        f"config = load_config_text(Path({str(weekend.config_path)!r}).read_text())\n"
        f"result = asyncio.run(replay_inline(Path({str(weekend.capture_path)!r}), config))\n"
        "print(len(result.alerts), result.stats.frames)\n"
    )
    done = subprocess.run([sys.executable, "-"], input=script, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    here = _replay(weekend.capture_path, _config(weekend), child=False)
    assert done.stdout.split() == [str(len(here.alerts)), str(here.stats.frames)]


def _series(rec: ReportRecorder) -> dict[object, tuple[list[int], list[float]]]:
    return {key: (rec.series(key)[0].tolist(), rec.series(key)[1].tolist()) for key in rec.series_keys()}


def test_work_done_while_the_caller_waits_changes_no_item_and_no_series(
        weekend: ScenarioResult, monkeypatch: pytest.MonkeyPatch) -> None:
    """A caller that takes items faster than the child routes them waits: ``on_idle`` runs
    then, here the report's pending chunk (any chunk, down to one event). The items are
    those of routing here, and the series those of a report recorded in order."""
    config = _config(weekend)
    monkeypatch.setattr(recorder_module, "IDLE_CHUNK_EVENTS", 1)
    ref, rec = ReportRecorder(config), ReportRecorder(config)
    want = [(ts, item) for ts, item in route_capture(weekend.capture_path, Ingest(config))
            if not isinstance(item, DeadLetter)]
    for _, item in want:
        if isinstance(item, Routed):
            ref.on_batch(item.batch)
    calls: list[bool] = []

    def idle() -> bool:
        calls.append(rec.idle())
        return calls[-1]

    got = []
    with IngestProcess(weekend.capture_path, config) as child:
        for ts, item in child.items(idle):
            got.append((ts, item))
            if isinstance(item, Routed):
                rec.on_batch(item.batch)
    assert got == want
    assert True in calls, "the caller waited with a chunk pending at least once"
    assert _series(rec) == _series(ref)


def test_a_report_cut_into_chunks_anywhere_has_the_same_series(weekend: ScenarioResult) -> None:
    config = _config(weekend)
    batches: list[Batch] = []
    _replay(weekend.capture_path, config, child=False, on_batch=batches.append)
    ref = ReportRecorder(config)
    for b in batches:
        ref.on_batch(b)
    cuts = random.Random(7)
    for _ in range(3):
        rec = ReportRecorder(config)
        for b in batches:
            rec.on_batch(b)
            if cuts.random() < 0.05:
                rec.flush()
        assert _series(rec) == _series(ref)
