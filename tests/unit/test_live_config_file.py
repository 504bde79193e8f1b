"""One config file for ``liqmon live`` and the worker it starts: the worker reads the engine
part (same ``config_hash`` as the live process), the ``[live]`` table is the live process's,
and a typo in the engine part still fails in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.cluster import LATENCY_CONFIG
from streams.cmd.live import load_configs
from streams.feeds.config import split_config
from streams.settings import ConfigFileError, load_engine_config

LIVE = '\n[live.venues."binance-spot"]\nstreams = ["usdeusdt@bookTicker"]\n[live.overload]\nshed_backlog_frames = 64\n'


def test_the_worker_reads_the_engine_part_of_a_live_config(tmp_path: Path) -> None:
    path = tmp_path / "live.toml"
    path.write_text(LATENCY_CONFIG + LIVE)
    engine, live = split_config(path.read_text())
    assert load_engine_config(path).config_hash == engine.config_hash
    assert live.overload.shed_backlog_frames == 64


def test_a_typo_in_the_engine_part_still_fails(tmp_path: Path) -> None:
    path = tmp_path / "live.toml"
    path.write_text("[peg]\nclear_duration_msec = 0\n" + LIVE)
    with pytest.raises(ConfigFileError, match="invalid config"):
        load_engine_config(path)


def test_every_refused_value_is_named_in_the_one_line(tmp_path: Path) -> None:
    path = tmp_path / "engine.toml"
    path.write_text("[peg]\nclear_duration_ms = -1\nfoo = 2\n[spiral_run]\nthreads = 0\n")
    with pytest.raises(ConfigFileError) as caught:
        load_engine_config(path)
    assert str(caught.value) == (
        f"invalid config {path}: peg.clear_duration_ms: Input should be greater than or equal to 0; "
        "peg.foo: Extra inputs are not permitted; spiral_run.threads: Input should be greater than or equal to 1")


@pytest.mark.parametrize(("text", "where"), [
    ("[spiral_run]\ntolerance_ratio = inf\n", "spiral_run.tolerance_ratio"),
    ("[[peg.bands]]\nseverity = \"info\"\nthreshold_bps = inf\nmin_duration_ms = 0\n", "peg.bands.0.threshold_bps"),
    # the [live] table's values are placed as the file spells them (before: no "live.")
    ("[live.margin_tables]\ntimeout_s = nan\n", "live.margin_tables.timeout_s"),
])
def test_toml_s_inf_and_nan_are_refused(tmp_path: Path, text: str, where: str) -> None:
    path = tmp_path / "live.toml"
    path.write_text(text)
    with pytest.raises(ConfigFileError, match=rf"invalid config .*: {where}: Input should be a finite number"):
        load_configs(path)
