"""Command-line values out of range are one line naming the option and exit code 2, before
anything runs: no bench that measures nothing, no endless ``liqmon live``, no traceback,
no scenario generated from a knob the user mistyped."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import pytest

from replay.capture import dumps_line
from streams import cli
from streams.cmd.arguments import count, positive_count, positive_counts, positive_number, section_names
from streams.cmd.live import main as live_main


def _error(capsys: pytest.CaptureFixture[str], run: Callable[[list[str]], int], argv: list[str]) -> str:
    with pytest.raises(SystemExit) as stopped:
        run(argv)
    assert stopped.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    return lines[-1]


@pytest.mark.parametrize(("argv", "line"), [
    (["bench", "--only", "nothing"],
     "argument --only: unknown 'nothing'; one or more of "
     "pipeline,latency,loops,accounts,parsers,e2e,scenario,generation"),
    (["bench", "--only", "accounts,e2e,foo"], "argument --only: unknown 'foo'; one or more of"),
    (["bench", "--events", "-5"], "argument --events: must be 1 or more, not -5"),
    (["bench", "--workers", "1,0"], "argument --workers: must be 1 or more, not 0"),
    (["bench", "--workers", "1,x"], "argument --workers: not a whole number: 'x'"),
    (["bench", "--latency-seconds", "nan"], "argument --latency-seconds: must be a finite number > 0, not nan"),
    (["bench", "--e2e-rate", "0"], "argument --e2e-rate: must be a finite number > 0, not 0"),
    (["bench", "--account-shards", "-1"], "argument --account-shards: must be 0 or more, not -1"),
    (["live", "--duration", "-5"], "argument --duration: must be a finite number > 0, not -5"),
    (["live", "--duration", "inf"], "argument --duration: must be a finite number > 0, not inf"),
    (["broker", "--port", "x"], "argument --port: not a whole number: 'x'"),
    (["replay", "--scenario", "oct10", "--metrics-port", "70000"], "argument --metrics-port: not a TCP port: 70000"),
    (["replay", "--scenario", "oct10", "--seed", "-1"], "argument --seed: must be 0 or more, not -1"),
    (["replay", "--scenario", "oct10", "--idle-timeout", "-1"], "argument --idle-timeout: must be a finite number > 0"),
])
def test_a_value_out_of_range_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str],
                                                     line: str) -> None:
    assert line in _error(capsys, cli.main, argv)


def test_live_on_its_own_refuses_the_same(capsys: pytest.CaptureFixture[str]) -> None:
    assert _error(capsys, live_main, ["--duration", "0"]).endswith(
        "argument --duration: must be a finite number > 0, not 0")


def test_the_types_give_the_values() -> None:
    assert positive_number("2.5") == 2.5 and count("0") == 0 and positive_count("3") == 3
    assert positive_counts("1, 2,4") == (1, 2, 4)
    assert section_names(("a", "b"))("b,a") == ("b", "a")
    with pytest.raises(argparse.ArgumentTypeError):
        positive_number("1e999")  # inf


@pytest.mark.parametrize(("scenario", "knob", "line"), [
    ("oct10", "foo=1", "scenario 'oct10': unknown knob 'foo' (knobs: duration_s, shock, "),
    ("oct10", "n_alts=-3", "scenario 'oct10': knob n_alts: Input should be greater than or equal to 3"),
    ("oct10", "n_alts=x", "scenario 'oct10': knob n_alts: Input should be a valid integer"),
    ("stablecoin-weekend", "foo=1", "scenario 'stablecoin-weekend': unknown knob 'foo' (knobs: asset, duration_s, "),
    ("stablecoin-weekend", "noise_bps=-1", "scenario 'stablecoin-weekend': knob noise_bps: Input should be greater"),
])
def test_a_refused_knob_is_named_with_its_reason(capsys: pytest.CaptureFixture[str], tmp_path: Path, scenario: str,
                                                 knob: str, line: str) -> None:
    code = cli.main(["replay", "--scenario", scenario, "--knob", knob, "--inline", "--quiet",
                     "--out", str(tmp_path / "out"), "--scenario-cache", str(tmp_path / "cache")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"liqmon: error: {line}"), err
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


@pytest.mark.parametrize(("start", "end"), [("2025-10-11T00:00", "2025-10-10T00:00"),
                                            ("1760140800000", "1760140800000")])
def test_a_replay_window_that_is_empty_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path, start: str,
                                                  end: str) -> None:
    code = cli.main(["replay", "--capture", str(tmp_path / "never-read.jsonl"), "--inline", "--quiet",
                     "--out", str(tmp_path / "out"), "--from", start, "--to", end])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("liqmon: error: --from ") and err[0].endswith(
        "Z: the window is empty"), err


def test_a_replay_out_that_cannot_be_a_directory_is_one_line(capsys: pytest.CaptureFixture[str],
                                                             tmp_path: Path) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    for out, said in ((a_file, f"--out {a_file} is a file: outputs go to a directory"),
                      (a_file / "below", f"cannot write outputs to --out {a_file / 'below'}: Not a directory")):
        code = cli.main(["replay", "--capture", str(tmp_path / "never-read.jsonl"), "--inline", "--quiet",
                         "--out", str(out)])
        assert code == 2
        assert capsys.readouterr().err.strip().splitlines() == [f"liqmon: error: {said}"]


def test_a_scenario_cache_that_cannot_be_written_is_one_line(capsys: pytest.CaptureFixture[str],
                                                             tmp_path: Path) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    code = cli.main(["replay", "--scenario", "calm", "--inline", "--quiet", "--out", str(tmp_path / "out"),
                     "--scenario-cache", str(a_file / "cache")])
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"liqmon: error: scenario 'calm': cannot write {a_file / 'cache'}: Not a directory"]


def test_a_live_record_that_cannot_be_written_is_one_line_before_anything_starts(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # Loopback only, whatever happens: one venue, its URL on 127.0.0.1, no margin tables.
    config = tmp_path / "live.toml"
    config.write_text('[live.venues."binance-spot"]\nstreams = ["usdeusdt@bookTicker"]\n'
                      "[live.margin_tables]\nenabled = false\n")
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    code = live_main(["--config", str(config), "--ws-url", "binance-spot=ws://127.0.0.1:9", "--no-worker",
                      "--duration", "1", "--record", str(a_file / "x.jsonl.gz")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"liqmon: error: cannot write --record {a_file / 'x.jsonl.gz'}: "), err
    assert len(err) == 1, err  # no broker, worker or connection was started


@pytest.mark.parametrize("timeout", ["0", "-1", "nan", "1e999"])
def test_a_spiral_timeout_that_is_not_a_finite_positive_number_is_one_line(
        capsys: pytest.CaptureFixture[str], timeout: str) -> None:
    assert _error(capsys, cli.main, ["spiral", "--timeout", timeout]) == (
        f"liqmon spiral: error: argument --timeout: must be a finite number > 0, not {timeout}")


def test_a_replay_window_that_holds_no_frame_of_the_capture_is_one_line(capsys: pytest.CaptureFixture[str],
                                                                       tmp_path: Path) -> None:
    """A window beside the capture's span: said with the span, exit 2, no outputs (before: an
    empty report, exit 0)."""
    capture = tmp_path / "day.jsonl"
    frame = {"base": "USDe", "quote": "USDT", "price": 0.999, "depth_usd": 1e6}
    capture.write_bytes(b"".join(dumps_line(1_760_140_800_000 + 1_000 * i, "binance-spot", "price", frame) + b"\n"
                                 for i in range(3)))
    args = ["replay", "--capture", str(capture), "--inline", "--quiet", "--out", str(tmp_path / "out")]
    assert cli.main([*args, "--from", "2025-10-11T00:00:01"]) == 0  # a window holding a frame replays it
    capsys.readouterr()
    assert cli.main([*args, "--out", str(tmp_path / "none"), "--from", "2025-10-12"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "liqmon: error: no frame of day.jsonl is in the window --from 2025-10-12T00:00:00.000Z: its 3 frames span "
        "2025-10-11T00:00:00.000Z to 2025-10-11T00:00:02.000Z"]
    assert not (tmp_path / "none" / "alerts.jsonl").exists()
