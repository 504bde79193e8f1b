"""``liqmon stress`` command: argument handling, exit codes, one-line errors."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from monitor.stages import stress as stress_report_module
from streams.cmd import stress as stress_cmd

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "stress"
ROOT = Path(__file__).resolve().parents[2]


def _args(*extra: str, positions: Path | None = None, accounts: Path | None = None,
          prices: Path | None = None) -> list[str]:
    return [
        "--positions", str(positions or FIX / "positions.jsonl"),
        "--accounts", str(accounts or FIX / "accounts.jsonl"),
        "--prices", str(prices or FIX / "prices.json"),
        *extra,
    ]


def test_main_prints_one_json_document(capsys: pytest.CaptureFixture[str]) -> None:
    rc = stress_cmd.main(_args("--shock", "USDe@binance=-35%", "--books", str(FIX / "books.json")))
    out = capsys.readouterr()
    assert rc == 0
    doc = json.loads(out.out)
    assert set(doc) >= {"positions", "accounts", "aggregates", "spiral"}
    assert out.err == ""


def test_sub_command_registration() -> None:
    parser = argparse.ArgumentParser(prog="liqmon")
    sub = parser.add_subparsers(dest="command")
    stress_cmd.add_parser(sub)
    ns = parser.parse_args(["stress", *_args("--shock", "ETH=-10%")])
    assert ns.func is stress_cmd.run
    assert ns.shock == ["ETH=-10%"]


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("kind", "content", "expected"),
    [
        ("positions", '{"position_id": "x", "protocol": "aave-v3", "collateral": [], "zz": 1}\n',
         "P.jsonl:1: zz: unknown key"),
        ("positions", '\n{"position_id": "x", "protocol": "aave-v3", "collateral": '
         '[{"asset": "ETH", "amount": -1, "liquidation_threshold": 0.8, "price_key": "ETH"}]}\n',
         "P.jsonl:2: collateral[0].amount:"),
        ("positions", '{"position_id": "x", "protocol": "aave-v3", "collateral": '
         '[{"asset": "ETH", "amount": NaN, "liquidation_threshold": 0.8, "price_key": "ETH"}]}\n',
         "P.jsonl:1: invalid JSON"),
        ("positions", '{"position_id": "x", "protocol": "aave-v3", "collateral": '
         '[{"asset": "X", "amount": 1, "liquidation_threshold": 0.8, "price_key": "NOPE"}]}\n',
         "P.jsonl:1: collateral[0].price_key: no price for 'NOPE'"),
        ("accounts", '{"account_id": "a", "venue": "v", "model": "ftx", "balances": []}\n',
         "A.jsonl:1: model:"),
        ("prices", '{"ETH": Infinity}', "PRICES.json: invalid JSON"),
        ("prices", '{"ETH": -4}', "PRICES.json: ETH: price must be"),
        # Past the input bound (1e18): a traceback (an int past a float's range), a report of
        # nulls (1e300), or a crash mid-liquidation (a forced sell of 1e308 × price) before
        ("prices", '{"ETH": 1' + "0" * 400 + "}", "PRICES.json: ETH: price must be a number from 1e-18 to 1e+18"),
        ("prices", '{"ETH": 1e300}', "PRICES.json: ETH: price must be a number from 1e-18 to 1e+18"),
        # a settlement asset at 1e-301: a PnL settled in it overflowed to a null shortfall
        ("prices", '{"ETH": 1e-301}', "PRICES.json: ETH: price must be a number from 1e-18 to 1e+18"),
        ("books", '{"ETH": [[4000, 1' + "0" * 400 + "]]}", "BOOKS.json: ETH[0]: qty must be a number > 0 "
         "and at most 1e+18"),
        ("books", '{"ETH": [[4000, 0]]}', "BOOKS.json: ETH[0]: qty must be a number > 0 and at most 1e+18"),
        ("books", '{"ETH": [[4000, true]]}', "BOOKS.json: ETH[0]: qty must be a number > 0 and at most 1e+18"),
        ("books", '{"ETH": [[1e-20, 1]]}', "BOOKS.json: ETH[0]: price must be a number from 1e-18 to 1e+18"),
        ("accounts", '{"account_id": "a", "venue": "v", "model": "binance-pm", "balances": [], "perps": '
         '[{"symbol": "ETHUSDT", "qty": 1e308, "entry_price": 4000, "price_key": "ETH"}]}\n',
         "A.jsonl:1: perps[0].qty: Input should be less than or equal to 1000000000000000000"),
        ("accounts", '{"account_id": "a", "venue": "v", "model": "binance-pm", "balances": '
         '[{"asset": "ETH", "amount": -2e18, "price_key": "ETH"}]}\n', "A.jsonl:1: balances[0].amount:"),
        ("positions", '{"position_id": "x", "protocol": "aave-v3", "collateral": '
         '[{"asset": "ETH", "amount": 1e300, "liquidation_threshold": 0.8, "price_key": "ETH"}]}\n',
         "P.jsonl:1: collateral[0].amount: Input should be less than or equal to 1000000000000000000"),
    ],
)
def test_input_errors_exit_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str, content: str, expected: str
) -> None:
    names = {"positions": "P.jsonl", "accounts": "A.jsonl", "prices": "PRICES.json", "books": "BOOKS.json"}
    path = _write(tmp_path, names[kind], content)
    args = _args("--books", str(path)) if kind == "books" else _args(**{kind: path})
    rc = stress_cmd.main(args)
    err = capsys.readouterr().err
    assert rc == 2
    assert expected in err
    assert err.count("\n") == 1
    assert "Traceback" not in err


@pytest.mark.parametrize(("kind", "content", "expected"), [
    ("accounts", b'{"account_id": "a", "venue": "v", "model": "binance-pm"}\n{"account_id": "\xff"}\n',
     "A.jsonl:2: invalid JSON"),
    ("positions", b"\xfe\xff\n", "P.jsonl:1: invalid JSON"),
    ("prices", b'{"ETH": 1\xff}', "PRICES.json: not UTF-8 text"),
])
def test_bytes_that_are_not_utf8_exit_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str, content: bytes, expected: str
) -> None:
    names = {"positions": "P.jsonl", "accounts": "A.jsonl", "prices": "PRICES.json"}
    path = tmp_path / names[kind]
    path.write_bytes(content)
    rc = stress_cmd.main(_args(**{kind: path}))
    err = capsys.readouterr().err
    assert rc == 2 and expected in err and err.count("\n") == 1 and "Traceback" not in err


def test_a_line_separator_inside_a_string_is_not_a_line_break(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """U+2028 and U+0085 may stand unescaped in a JSON string: the line goes on."""
    path = tmp_path / "A.jsonl"
    path.write_bytes('{"account_id": "a\u2028b\x85c", "venue": "v", "model": "binance-pm"}\n'.encode())
    assert stress_cmd.main(_args(accounts=path)) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [a["account_id"] for a in doc["accounts"]] == ["a\u2028b\x85c"]


@pytest.mark.parametrize("shock", ["ETH=1e306", "ETH=+1e9%", "ETH=-100%", "ETH=-99.99999%", "ETH=nan"])
def test_a_shock_past_its_bounds_exits_2_with_one_line(shock: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A shock of 1e306 was a traceback (the shocked price infinite); moves are bounded at
    +1e8 % (a price × 1,000,001 stays far from overflow) and −99.9999 % (far from zero)."""
    assert stress_cmd.main(_args("--shock", shock)) == 2
    err = capsys.readouterr().err
    assert err == "liqmon stress: error: --shock: ETH: move must be from -99.9999% to +1e+08%\n"


@pytest.mark.parametrize("shock", ["ETH=-99.9999%", "ETH=+1e8%"])
def test_a_shock_at_its_bounds_runs(shock: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert stress_cmd.main(_args("--shock", shock, "--books", str(FIX / "books.json"))) == 0
    assert json.loads(capsys.readouterr().out)["accounts"]


def test_shock_on_unknown_key_and_missing_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert stress_cmd.main(_args("--shock", "DOGE=-50%")) == 2
    assert "DOGE" in capsys.readouterr().err
    assert stress_cmd.main(_args(prices=Path("/nonexistent/prices.json"))) == 2
    assert "cannot read" in capsys.readouterr().err


def test_subprocess_module_entry_point() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "streams.cmd.stress", *_args("--shock", "ETH=-10%")],
        cwd=ROOT, capture_output=True, text=True, check=False, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["shocks_pct"] == {"ETH": pytest.approx(-10.0)}
    bad = subprocess.run(
        [sys.executable, "-m", "streams.cmd.stress", "--prices", str(FIX / "prices.json"),
         "--shock", "ETH"],
        cwd=ROOT, capture_output=True, text=True, check=False, timeout=120,
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0


@pytest.mark.parametrize("rows_per_chunk", [1, 2, 4096])
def test_streamed_report_is_the_documents_indented_dump(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes], monkeypatch: pytest.MonkeyPatch,
    rows_per_chunk: int,
) -> None:
    """The account rows are written a chunk at a time; the bytes are orjson's indented dump
    of the whole document, whatever the chunk size: ids with a newline, quotes and
    non-ASCII, accounts in liquidation (forced sells) among them, and the spiral after."""
    accounts = tmp_path / "A.jsonl"
    lines = (FIX / "accounts.jsonl").read_text().splitlines()
    odd = json.loads(lines[0]) | {"account_id": 'a\n  "accounts": []\u00e9'}
    accounts.write_text("\n".join([*lines, json.dumps(odd), lines[1].replace('"pm-borrower"', '"b2"')]) + "\n")
    monkeypatch.setattr(stress_report_module, "ROWS_PER_CHUNK", rows_per_chunk)
    assert stress_cmd.main(_args("--shock", "USDe@binance=-35%", "--books", str(FIX / "books.json"),
                                 accounts=accounts)) == 0
    out = capsysbinary.readouterr().out
    doc = orjson.loads(out)
    assert out == orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n"
    assert [a["account_id"] for a in doc["accounts"]][3:] == [odd["account_id"], "b2"]
    assert any(a["forced_sells"] for a in doc["accounts"]) and "spiral" in doc
    assert doc["aggregates"]["accounts"] == 5


def test_streamed_report_without_accounts(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    rc = stress_cmd.main(["--positions", str(FIX / "positions.jsonl"), "--prices", str(FIX / "prices.json")])
    out = capsysbinary.readouterr().out
    assert rc == 0 and out == orjson.dumps(orjson.loads(out), option=orjson.OPT_INDENT_2) + b"\n"
    assert b'"accounts": []' in out


@pytest.mark.parametrize(("jobs", "message"), [
    ("0", "argument --jobs: must be 1 or more, not 0"),
    ("-2", "argument --jobs: must be 1 or more, not -2"),
    ("two", "argument --jobs: not a whole number: 'two'"),
])
def test_jobs_that_is_not_a_count_of_processes_exits_2_with_one_line(
        capsys: pytest.CaptureFixture[str], jobs: str, message: str) -> None:
    with pytest.raises(SystemExit) as exit_:
        stress_cmd.main(_args("--jobs", jobs))
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"liqmon stress: error: {message}"
