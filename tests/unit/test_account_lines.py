"""``liqmon stress`` account lines decoded straight into columns (``monitor.accounts.lines``)
against the pydantic path they replace: ``parse_account`` on each line, then
``ColumnsBuilder.build`` of the models. Good lines give equal columns and equal models; a bad
line gives the same error (file, line, field, message); a missing price the same error as
the scalar price-key check; the stress report is the same document."""

from __future__ import annotations

import copy
import json
import os
import signal
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.accounts import PRICES_USD, accounts_jsonl, synthetic_accounts
from monitor.accounts import lines as account_lines_module
from monitor.accounts.columns import AccountColumns, ColumnsBuilder
from monitor.accounts.lines import AccountLines, plain_account
from monitor.models.margin import Account
from monitor.risk_params import RiskParams
from monitor.stages import stress as stress_stage
from monitor.stages.stress import StressInputError, parse_account, stress_report
from streams.cmd import stress as stress_cmd
from streams.cmd import stress_accounts

PARAMS = RiskParams()
MODELS = ["binance-pm", "bybit-uta", "okx-mc", "hyperliquid", "ftx"]
KEYS = ["USDT", "BTC", "ETH", "USDe@binance", "XYZ", ""]
SYMBOLS = ["BTCUSDT", "ETH-PERP", "BTC-USDT-SWAP", "XYZUSDT", ""]
#: Values a mutated field may take: every JSON type, edge numbers, bounds of the fields.
ODD = [None, True, False, 0, -1, 1, 0.0, -0.0, 1.0, 0.99, -1e-9, 2**60, "", "x", "1.5", [], {}, [1], {"a": 1}]

numbers = st.one_of(st.floats(-1e7, 1e7), st.integers(-10**6, 10**6))


@st.composite
def balance(draw: st.DrawFn) -> dict[str, Any]:
    out: dict[str, Any] = {"asset": draw(st.sampled_from(["USDT", "BTC", "ETH", "USDe", "XYZ"])),
                           "amount": draw(numbers), "price_key": draw(st.sampled_from(KEYS[:5]))}
    if draw(st.booleans()):
        out["loan_mmr"] = draw(st.one_of(st.none(), st.floats(0.0, 0.999), st.just(0)))
    return out


@st.composite
def perp(draw: st.DrawFn) -> dict[str, Any]:
    out: dict[str, Any] = {"symbol": draw(st.sampled_from(SYMBOLS[:4])), "qty": draw(numbers),
                           "entry_price": draw(st.one_of(st.floats(0.01, 1e6), st.integers(1, 10**6))),
                           "price_key": draw(st.sampled_from(KEYS[:5]))}
    if draw(st.booleans()):
        out["mmr"] = draw(st.one_of(st.none(), st.floats(0.001, 0.5)))
    if draw(st.booleans()):
        out["cum"] = draw(st.one_of(st.none(), st.floats(0.0, 1e4), st.integers(0, 100)))
    return out


@st.composite
def account_doc(draw: st.DrawFn, n: int) -> dict[str, Any]:
    doc: dict[str, Any] = {"account_id": f"a{n}", "venue": "v", "model": draw(st.sampled_from(MODELS[:4])),
                           "balances": draw(st.lists(balance(), max_size=4)),
                           "perps": draw(st.lists(perp(), max_size=3))}
    if draw(st.booleans()):
        doc["collateral_rates"] = draw(st.one_of(st.none(), st.just({"BTC": {"basis": "qty", "tiers": [[0, 0.9]]}})))
    return doc


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path into a document (dict keys and list indices)."""
    out = [prefix]
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else []
    for k, v in items:
        out += _paths(v, (*prefix, k))
    return out


@st.composite
def mutated(draw: st.DrawFn, doc: dict[str, Any]) -> Any:
    """The document with one value replaced, one key removed or one unknown key added."""
    out = copy.deepcopy(doc)
    path = draw(st.sampled_from(_paths(out)))
    if not path:
        return draw(st.sampled_from(ODD))
    parent = out
    for k in path[:-1]:
        parent = parent[k]
    action = draw(st.sampled_from(["replace", "drop", "extra", "model", "symbol"]))
    if action == "drop" and isinstance(parent, dict):
        del parent[path[-1]]
    elif action == "extra" and isinstance(parent, dict):
        parent["zz"] = 1
    elif action == "model":
        out["model"] = draw(st.sampled_from([*MODELS, 1]))
    elif action == "symbol":
        out.setdefault("perps", []).append({"symbol": draw(st.sampled_from(SYMBOLS)), "qty": 1,
                                            "entry_price": draw(st.sampled_from([1, 0, -2.5, "3"])),
                                            "price_key": "BTC"})
    else:
        parent[path[-1]] = draw(st.sampled_from(ODD))
    return out


def _old_path(objs: list[Any], source: str) -> tuple[list[Account], AccountColumns] | str:
    """Today's decoding: one pydantic model per line, then the columns of the models."""
    try:
        accounts = [parse_account(obj, source, n) for n, obj in enumerate(objs, start=1)]
    except StressInputError as exc:
        return str(exc)
    return accounts, ColumnsBuilder(PARAMS).build(accounts)


def _new_path(objs: list[Any], source: str, as_json: bool = False) -> AccountLines | str:
    """The decoder under test: each decoded line (``add``), or each line's JSON text, as the
    command reads it (``add_line``: msgspec's one-pass check, else orjson and ``add``)."""
    lines = AccountLines(ColumnsBuilder(PARAMS), lambda obj, line: parse_account(obj, source, line))
    try:
        for n, obj in enumerate(objs, start=1):
            if as_json:
                lines.add_line(orjson.dumps(obj), n)
            else:
                lines.add(obj, n)
    except StressInputError as exc:
        return str(exc)
    return lines


def _batch_path(objs: list[Any], source: str, cut: int) -> AccountLines | str:
    """The decoder under test in batches, as the command reads a file: lines before ``cut``
    one by one, then the rest together (``add_plain_lines``), or one by one again when one
    of them is not plain."""
    lines = AccountLines(ColumnsBuilder(PARAMS), lambda obj, line: parse_account(obj, source, line))
    numbered = [(n, orjson.dumps(obj)) for n, obj in enumerate(objs, start=1)]
    try:
        for n, raw in numbered[:cut]:
            lines.add_line(raw, n)
        if lines.add_plain_lines([raw for _, raw in numbered[cut:]], [n for n, _ in numbered[cut:]]) is None:
            for n, raw in numbered[cut:]:
                lines.add_line(raw, n)
    except StressInputError as exc:
        return str(exc)
    return lines


def _assert_columns_equal(a: AccountColumns, b: AccountColumns) -> None:
    for field in ("ids", "venues", "keys", "assets"):
        assert list(getattr(a, field)) == list(getattr(b, field)), field
    for field in ("model", "entry_start", "entry_key", "entry_is_perp", "entry_asset", "qty",
                  "entry_price_usd", "loan_mmr", "entry_table"):
        x, y = getattr(a, field), getattr(b, field)
        assert x.dtype == y.dtype and np.array_equal(x, y), field
    for ta, tb in zip(a.collateral_tables, b.collateral_tables, strict=True):
        assert ta.basis_qty == tb.basis_qty and np.array_equal(ta.floors, tb.floors)
        assert np.array_equal(ta.rates, tb.rates) and np.array_equal(ta.prefix_usd, tb.prefix_usd)
    for sa, sb in zip(a.step_tables, b.step_tables, strict=True):
        assert sa.basis_qty == sb.basis_qty and np.array_equal(sa.bounds, sb.bounds)
        assert np.array_equal(sa.rates, sb.rates) and np.array_equal(sa.deductions_usd, sb.deductions_usd)


@settings(max_examples=400, deadline=None)
@given(data=st.data(), n=st.integers(1, 5), bad=st.booleans(), how=st.sampled_from(["add", "add_line", "batch"]))
def test_lines_decode_as_the_pydantic_models_do(data: st.DataObject, n: int, bad: bool, how: str) -> None:
    objs: list[Any] = [data.draw(account_doc(i)) for i in range(n)]
    if bad:
        i = data.draw(st.integers(0, n - 1))
        objs[i] = data.draw(mutated(objs[i]))
    old = _old_path(objs, "A.jsonl")
    new = (_batch_path(objs, "A.jsonl", data.draw(st.integers(0, n))) if how == "batch"
           else _new_path(objs, "A.jsonl", how == "add_line"))
    if isinstance(old, str):
        assert new == old
        return
    assert not isinstance(new, str), new
    accounts, columns = old
    _assert_columns_equal(new.columns(), columns)
    assert [new.account(i) for i in range(n)] == accounts
    prices = {k: 1.0 for k in data.draw(st.lists(st.sampled_from(KEYS[:5]), unique=True))}
    expected = next((str(StressInputError("A.jsonl", line, f"{field}[{i}].price_key",
                                           f"no price for {item.price_key!r} in P.json"))
                     for line, acct in enumerate(accounts, start=1)
                     for field, items in (("balances", acct.balances), ("perps", acct.perps))
                     for i, item in enumerate(items) if item.price_key not in prices), None)
    missing = new.first_missing_price(prices)
    got = None if missing is None else str(StressInputError("A.jsonl", missing[0], missing[1],
                                                             f"no price for {missing[2]!r} in P.json"))
    assert got == expected


def test_plain_shape_is_only_what_the_model_accepts_unchanged() -> None:
    doc: dict[str, Any] = {"account_id": "a", "venue": "v", "model": "okx-mc",
           "balances": [{"asset": "BTC", "amount": 2, "price_key": "BTC", "loan_mmr": 0}], "perps": []}
    assert plain_account(doc)
    for key, value in (("amount", "2"), ("amount", True), ("amount", 2**60), ("loan_mmr", 1), ("zz", 0)):
        odd = copy.deepcopy(doc)
        odd["balances"][0][key] = value
        assert not plain_account(odd), (key, value)
    assert not plain_account({**doc, "collateral_rates": {}})
    assert plain_account({**doc, "collateral_rates": None})
    for bound in (2**53 - 1, -(2**53 - 1), float(2**53 - 1)):
        assert plain_account({**doc, "balances": [{**doc["balances"][0], "amount": bound}]}), bound
    for beyond in (2**53, 2**53 + 1, -(2**53), 1e300, float("inf"), float("nan")):
        assert not plain_account({**doc, "balances": [{**doc["balances"][0], "amount": beyond}]}), beyond



def _stress(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str], *more: str) -> tuple[int, str, str]:
    accounts = tmp_path / "A.jsonl"
    accounts.write_text(text)
    prices = tmp_path / "P.json"
    prices.write_text(json.dumps(PRICES_USD))
    rc = stress_cmd.main(["--accounts", str(accounts), "--prices", str(prices), "--shock", "USDe@binance=-35%",
                          *more])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_stress_report_on_a_generated_file_equals_the_model_path(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = accounts_jsonl(synthetic_accounts(400, seed=3)).decode()
    rc, out, err = _stress(tmp_path, text, capsys)
    assert rc == 0 and err == ""
    models = [Account.model_validate_json(line) for line in text.splitlines()]
    shocks = {"USDe@binance": -0.35}
    expected = stress_report([], models, PRICES_USD, shocks=shocks, params=PARAMS).document()
    assert json.loads(out) == json.loads(json.dumps(expected))
    assert expected["aggregates"]["accounts_by_status"]["liquidation"] > 0


@pytest.mark.parametrize(("line", "expected"), [
    ('{"account_id": "b", "venue": "v", "model": "binance-pm", "balances": [{"asset": "BTC", '
     '"amount": "x", "price_key": "BTC"}]}', "A.jsonl:3: balances[0].amount: Input should be a valid number"),
    ('{"account_id": "b", "venue": "v", "model": "binance-pm", "perps": [{"symbol": "BTCUSDT", "qty": 1, '
     '"entry_price": 0, "price_key": "BTC"}]}', "A.jsonl:3: perps[0].entry_price: Input should be greater than 0"),
    ('{"account_id": "pm-0", "venue": "v", "model": "binance-pm"}', "A.jsonl:3: account_id: duplicate id"),
    ('{"account_id": "b", "venue": "v", "model": "binance-pm", "balances": [{"asset": "X", "amount": 1, '
     '"price_key": "NOPE"}]}', "A.jsonl:3: balances[0].price_key: no price for 'NOPE'"),
    ('[1]', "A.jsonl:3: (line): expected a JSON object"),
])
def test_a_bad_line_is_one_clear_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], line: str, expected: str) -> None:
    good = accounts_jsonl(synthetic_accounts(2)).decode().splitlines()
    rc, out, err = _stress(tmp_path, "\n".join([*good, line]) + "\n", capsys)
    assert rc == 2 and out == ""
    assert err.startswith(f"liqmon stress: error: {tmp_path / expected}")


def _count_forks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The children ``liqmon stress`` forks from now on ("read", "write"), in order."""
    forked: list[str] = []

    class Reader(stress_accounts.Forked):  # type: ignore[type-arg]
        def __init__(self, *args: Any, what: str) -> None:
            forked.append("read")
            super().__init__(*args, what=what)

    class Writer(stress_cmd.ForkedStream):
        def __init__(self, *args: Any, what: str) -> None:
            forked.append("write")
            super().__init__(*args, what=what)

    monkeypatch.setattr(stress_accounts, "Forked", Reader)
    monkeypatch.setattr(stress_cmd, "ForkedStream", Writer)
    return forked


def test_the_report_is_the_same_bytes_in_any_number_of_parts(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    text = accounts_jsonl(synthetic_accounts(600, seed=11)).decode()
    forked = _count_forks(monkeypatch)
    outs = []
    for parts in (1, 2, 3):
        _in_parts(monkeypatch, parts, 100)
        rc, out, err = _stress(tmp_path, text, capsys)
        assert rc == 0 and err == ""
        outs.append(out)
    assert forked == ["read", "write", "read", "read", "write", "write"]  # children: none, one, two
    assert outs[1] == outs[0] and outs[2] == outs[0]
    assert json.loads(outs[0])["aggregates"]["accounts_by_status"]["liquidation"] > 0


@pytest.mark.parametrize(("jobs", "children"), [(1, []), (2, ["read", "write"]), (4, ["read"] * 3 + ["write"] * 3)])
def test_jobs_sets_the_number_of_processes_whatever_the_cores(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        jobs: int, children: list[str]) -> None:
    text = accounts_jsonl(synthetic_accounts(600, seed=11)).decode()
    _in_parts(monkeypatch, 1, 100)
    rc, expected, _ = _stress(tmp_path, text, capsys)
    assert rc == 0
    _in_parts(monkeypatch, 3, 100)
    forked = _count_forks(monkeypatch)
    rc, out, err = _stress(tmp_path, text, capsys, "--jobs", str(jobs))
    assert (rc, err) == (0, "") and out == expected
    assert forked == children


@pytest.mark.parametrize("stage", ["read", "write"])
def test_a_part_whose_process_is_killed_is_one_clear_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, stage: str) -> None:
    """A child killed (the kernel's out-of-memory killer, say) reading lines or writing rows:
    exit code 1 and one line naming the signal, not a traceback nor a report that looks whole."""
    parent = os.getpid()

    def killed_in_a_child(original: Any) -> Any:
        def run(*args: Any) -> Any:
            if os.getpid() != parent:
                os.kill(os.getpid(), signal.SIGKILL)
            return original(*args)
        return run

    if stage == "read":
        monkeypatch.setattr(stress_accounts, "_read_child_part", killed_in_a_child(stress_accounts._read_child_part))
    else:
        monkeypatch.setattr(stress_cmd, "_chunk_texts", killed_in_a_child(stress_cmd._chunk_texts))
    _in_parts(monkeypatch, 2, 100)
    rc, out, err = _stress(tmp_path, accounts_jsonl(synthetic_accounts(400, seed=3)).decode(), capsys)
    assert rc == stress_cmd.EXIT_FAILED
    what = (f"reading lines 201-400 of {tmp_path / 'A.jsonl'} ended without a result" if stage == "read"
            else "writing account rows (part 2 of 2) ended without its end")
    assert err == f"liqmon stress: error: the process {what} (killed by signal {int(signal.SIGKILL)})\n"
    if stage == "write":  # the rows before the lost part, and no more: not a whole document
        assert out.startswith("{")
        with pytest.raises(json.JSONDecodeError):
            json.loads(out)


def _numbered_file(n: int) -> list[str]:
    return accounts_jsonl(synthetic_accounts(n, seed=5)).decode().splitlines()


def _in_parts(monkeypatch: pytest.MonkeyPatch, parts: int, lines_per_part: int) -> None:
    """``liqmon stress`` reads its accounts file and writes its account rows in ``parts``
    processes (forked children), the rows in chunks of 64."""
    monkeypatch.setattr(stress_accounts, "PART_LINES", lines_per_part)
    monkeypatch.setattr(stress_accounts, "cores", lambda: parts)
    monkeypatch.setattr(stress_cmd, "PART_ROWS", lines_per_part)
    monkeypatch.setattr(stress_cmd, "cores", lambda: parts)
    monkeypatch.setattr(stress_stage, "ROWS_PER_CHUNK", 64)


@pytest.mark.parametrize("parts", [1, 3])
@pytest.mark.parametrize(("edits", "expected"), [
    ({6: "dup:2"}, "A.jsonl:6: account_id: duplicate id"),  # of a line in an earlier batch
    ({7: "dup:6"}, "A.jsonl:7: account_id: duplicate id"),  # within one batch
    ({6: "dup:2", 7: "{"}, "A.jsonl:6: account_id: duplicate id"),  # before a bad line of its batch
    ({6: "{", 7: "dup:2"}, "A.jsonl:6: invalid JSON"),
    ({5: "override", 8: "dup:5"}, "A.jsonl:8: account_id: duplicate id"),  # a batch read line by line
    # In three parts (lines 1-4, 5-8, 9-12): ids repeated across parts, before or after a
    # part's own bad line or its own repeated id, in a part read in bulk or line by line.
    ({10: "dup:2"}, "A.jsonl:10: account_id: duplicate id"),
    ({9: "dup:2", 10: "{"}, "A.jsonl:9: account_id: duplicate id"),
    ({9: "{", 10: "dup:2"}, "A.jsonl:9: invalid JSON"),
    ({6: "dup:1", 7: "dup:5"}, "A.jsonl:6: account_id: duplicate id"),
    ({7: "dup:5", 8: "dup:1"}, "A.jsonl:7: account_id: duplicate id"),
    ({9: "override", 11: "dup:3"}, "A.jsonl:11: account_id: duplicate id"),
    ({2: "{", 11: "dup:1"}, "A.jsonl:2: invalid JSON"),
    ({12: "dup:9", 11: "[1]"}, "A.jsonl:11: (line): expected a JSON object"),
])
def test_the_first_bad_line_of_the_file_is_the_error_whatever_the_batches(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        edits: dict[int, str], expected: str, parts: int) -> None:
    monkeypatch.setattr(account_lines_module, "BATCH_LINES", 4)
    _in_parts(monkeypatch, parts, 4)
    lines = _numbered_file(12)
    for n, edit in edits.items():
        if edit.startswith("dup:"):
            doc = orjson.loads(lines[n - 1])
            doc["account_id"] = orjson.loads(lines[int(edit[4:]) - 1])["account_id"]
            lines[n - 1] = orjson.dumps(doc).decode()
        elif edit == "override":
            doc = orjson.loads(lines[n - 1])
            doc["collateral_rates"] = {"BTC": {"basis": "usd", "tiers": [[0, 0.5]]}}
            lines[n - 1] = orjson.dumps(doc).decode()
        else:
            lines[n - 1] = edit
    rc, out, err = _stress(tmp_path, "\n".join(lines) + "\n", capsys)
    assert rc == 2 and out == ""
    assert err.startswith(f"liqmon stress: error: {tmp_path / expected}"), err


@pytest.mark.parametrize("parts", [1, 2, 3])
def test_a_file_read_in_batches_some_not_plain_gives_the_model_paths_report(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, parts: int) -> None:
    """Blank lines, CRLF ends and accounts with their own collateral rates among plain
    ones: batches read in bulk and batches read line by line, in one process or in parts
    on forked children, give the report of the models."""
    monkeypatch.setattr(account_lines_module, "BATCH_LINES", 16)
    _in_parts(monkeypatch, parts, 50)
    lines = _numbered_file(300)
    for n in range(0, 300, 37):
        doc = orjson.loads(lines[n])
        doc["collateral_rates"] = {"USDe": {"basis": "usd", "tiers": [[0, 0.8], [1000, 0.3]]}}
        lines[n] = orjson.dumps(doc).decode()
    text = "\r\n".join(line + ("\n" if i % 50 == 7 else "") for i, line in enumerate(lines)) + "\n"
    rc, out, err = _stress(tmp_path, text, capsys)
    assert rc == 0 and err == ""
    models = [Account.model_validate_json(line) for line in lines]
    expected = stress_report([], models, PRICES_USD, shocks={"USDe@binance": -0.35}, params=PARAMS).document()
    assert json.loads(out) == json.loads(json.dumps(expected))
    assert sum(1 for row in expected["accounts"] if row["status"] == "liquidation") > 0
