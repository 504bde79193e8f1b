"""The accounts bench's population: built straight into columns, it is the book that
``liqmon stress`` builds from the same accounts written as JSON lines, and the scalar
evaluation agrees with it (so the bench times the maths the reference defines)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest

from benchmarks.accounts import (
    PRICES_USD,
    TICK_KEY,
    AccountsFromColumns,
    accounts_jsonl,
    bench_account_shard,
    bench_global_stage,
    bench_stress,
    synthetic_accounts,
)
from monitor.accounts.book import AccountBook
from monitor.accounts.columns import ColumnsBuilder
from monitor.models.margin import STATUSES, Account, evaluate_account
from monitor.risk_params import RiskParams


def test_synthetic_columns_are_the_columns_of_their_accounts() -> None:
    params = RiskParams()
    columns = synthetic_accounts(500, seed=3, params=params)
    accounts = [Account.model_validate_json(line) for line in accounts_jsonl(columns).splitlines()]
    direct = AccountBook(columns, PRICES_USD, params)
    built = AccountBook(ColumnsBuilder(params).build(accounts), PRICES_USD, params)
    assert direct.holders(TICK_KEY).shape[0] == 100
    seen: set[int] = set()
    for price in (0.97, 0.93, 0.9, 0.86):
        direct.move({TICK_KEY: price})
        built.move({TICK_KEY: price})
        a, b = direct.figures(), built.figures()
        seen.update(a.status[direct.holders(TICK_KEY)].tolist())
        for name in ("adjusted_equity_usd", "maintenance_margin_usd", "gross_notional_usd", "status"):
            assert np.array_equal(getattr(a, name), getattr(b, name)), name
        prices = {**PRICES_USD, TICK_KEY: price}
        for i in range(0, 500, 25):
            res = evaluate_account(accounts[i], prices, params, with_forced_sells=False)
            assert (res.adjusted_equity_usd, res.maintenance_margin_usd, res.status) == (
                a.adjusted_equity_usd[i], a.maintenance_margin_usd[i], STATUSES[a.status[i]])
    assert seen == {0, 1, 2, 3}  # the tick's walk passes every line


def test_accounts_come_back_from_the_clustered_book() -> None:
    """The bench's spirals take accounts from the book's clustered columns: account i is
    the account written as line i."""
    params = RiskParams()
    columns = synthetic_accounts(200, seed=5, params=params)
    lines = accounts_jsonl(columns).splitlines()
    book = AccountBook(columns, PRICES_USD, params)
    assert not np.array_equal(book.order, np.arange(200))  # the book did reorder them
    account_of = AccountsFromColumns(book.columns, book.rows_of(np.arange(200)))
    assert [account_of(i) for i in range(200)] == [Account.model_validate_json(x) for x in lines]


def test_the_global_stage_bench_walks_its_accounts_through_the_lines() -> None:
    """``bench_global_stage`` loads account records into the streaming global stage, which
    alerts on the walk, runs the spirals on its live state and checkpoints without its book."""
    out = bench_global_stage(2_000)
    assert out["accounts"] == 2_000 and out["ticks"] == 120
    assert out["first_evaluation_alerts"] > 0 and out["alerts"] > 0
    assert 0 < out["ticks_without_alerts"] < out["ticks"]
    assert out["checkpoint_mb"] > 0 and 0 < out["bytes_per_account"] < 100_000


def test_one_account_shard_holds_its_share_and_alerts_on_it() -> None:
    """``bench_account_shard``: shard 0 of 4 keeps about a quarter of the records and its
    accounts alert on the same walk; its alerts are a part of the whole stage's."""
    whole, shard = bench_global_stage(2_000), bench_account_shard(2_000, 4)
    assert shard["shards"] == 4 and 350 < shard["accounts_held"] < 650
    assert 0 < shard["first_evaluation_alerts"] < whole["first_evaluation_alerts"]
    assert 0 < shard["alerts"] < whole["alerts"] and shard["checkpoint_mb"] < whole["checkpoint_mb"]
    assert "rss_bytes" not in shard and shard["rss_bytes_per_account_held"] >= 0


def test_the_stress_bench_times_the_command_against_three_parses(tmp_path: Path) -> None:
    """``bench_stress`` writes the accounts, runs ``liqmon stress`` on them and reports it
    against each way of parsing the file, every ratio from the figures beside it."""
    out = bench_stress(3000, tmp_path)
    assert out["accounts"] == 3000
    report = orjson.loads((tmp_path / "stress.json").read_bytes())
    assert len(report["accounts"]) == 3000
    assert report["shocks_pct"] == {TICK_KEY: -35.0}
    for floor, ratio in (("orjson_parse_s", "stress_over_parse"),
                         ("orjson_load_collector_paused_s", "stress_over_load_collector_paused"),
                         ("orjson_load_plain_s", "stress_over_load_plain")):
        assert out[floor] > 0
        assert out[ratio] == pytest.approx(out["stress_s"] / out[floor], rel=0.2, abs=0.1)
