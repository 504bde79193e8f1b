"""The ``liqmon`` entry point: ``liqmon stress`` starts from its own module, without the
rest of the command line; every other command goes to ``streams.cli``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.accounts import PRICES_USD, accounts_jsonl, synthetic_accounts
from streams import entry

#: Modules the stress command must not pay for at start.
HEAVY = ("streams.cli", "streams.settings", "pydantic_settings", "aiokafka", "asyncio", "rich", "faust",
         "replay.margin_tables", "replay.capture")


def test_stress_runs_without_the_rest_of_the_command_line(tmp_path: Path) -> None:
    accounts, prices = tmp_path / "A.jsonl", tmp_path / "P.json"
    accounts.write_bytes(accounts_jsonl(synthetic_accounts(50, seed=2)))
    prices.write_text(json.dumps(PRICES_USD))
    script = (
        "import sys\nfrom streams.entry import main\n"
        f"code = main(['stress', '--accounts', {str(accounts)!r}, '--prices', {str(prices)!r}, "
        "'--shock', 'USDe@binance=-35%'])\n"
        f"loaded = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print(code, loaded, file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    assert done.stderr.strip().splitlines()[-1] == "0 []", done.stderr
    report = json.loads(done.stdout)
    assert report["aggregates"]["accounts"] == 50


def test_stress_help_and_errors_are_the_sub_command_s(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_help:
        entry.main(["stress", "--help"])
    assert exit_help.value.code == 0
    assert capsys.readouterr().out.startswith("usage: liqmon stress ")
    missing = tmp_path / "none.json"
    assert entry.main(["stress", "--prices", str(missing)]) == 2
    assert capsys.readouterr().err.startswith(f"liqmon stress: error: {missing}")


def test_other_commands_go_to_the_full_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_help:
        entry.main(["replay", "--help"])
    assert exit_help.value.code == 0
    assert capsys.readouterr().out.startswith("usage: liqmon replay ")
    with pytest.raises(SystemExit) as exit_bad:
        entry.main(["no-such-command"])
    assert exit_bad.value.code == 2


def _stress_command(tmp_path: Path, n_accounts: int) -> list[str]:
    accounts, prices = tmp_path / "A.jsonl", tmp_path / "P.json"
    accounts.write_bytes(accounts_jsonl(synthetic_accounts(n_accounts, seed=2)))
    prices.write_text(json.dumps(PRICES_USD))
    return [sys.executable, "-m", "streams.entry", "stress", "--accounts", str(accounts), "--prices", str(prices),
            "--shock", "USDe@binance=-35%"]


def test_a_full_disk_under_standard_output_is_one_line_and_exit_1(tmp_path: Path) -> None:
    """The report onto a full disk (``> /dev/full``): before, a traceback."""
    with open("/dev/full", "wb") as full:
        done = subprocess.run(_stress_command(tmp_path, 50), check=False, stdout=full, stderr=subprocess.PIPE,
                              text=True,
                              timeout=120)
    assert done.returncode == 1
    assert done.stderr == "liqmon: error: cannot write its output: No space left on device\n"


def test_a_reader_that_leaves_ends_the_command_quietly(tmp_path: Path) -> None:
    """``liqmon stress … | head -c 100``: the command ends, exit 1, nothing on stderr (before:
    a BrokenPipeError traceback)."""
    proc = subprocess.Popen(_stress_command(tmp_path, 3_000), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    assert len(proc.stdout.read(100)) == 100  # the report is megabytes: far past the pipe's buffer
    proc.stdout.close()
    assert proc.wait(timeout=120) == 1
    assert proc.stderr.read() == b""
    proc.stderr.close()


def test_bench_json_onto_a_full_disk_names_the_file() -> None:
    """``liqmon bench --json F`` onto a full disk: the line names F (before: "its output")."""
    done = subprocess.run([sys.executable, "-m", "streams.entry", "bench", "--only", "accounts", "--accounts", "300",
                           "--stress-accounts", "300", "--json", "/dev/full"], check=False,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=300)
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == "liqmon: error: cannot write /dev/full: No space left on device"
