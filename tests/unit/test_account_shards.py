"""The global stage over account shards (``ShardedRisk``) against one global stage
(``GlobalRisk``): random accounts of every model, added, replaced and deleted between
random price moves and run ends, over 1–4 shards.

The alerts are the same byte for byte (the shards' account alerts and the aggregation's
cascade alerts together), and so are the snapshots, but for the forced-sell sums, which
are added shard by shard.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any, cast

import msgspec
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from monitor.config import EngineConfig, SpiralRunConfig
from monitor.models.cascade import AccountSet
from monitor.models.margin import Account
from monitor.protocol import Alert, DeadLetter, RecordError, RiskSnapshot, SignalRecord, encode
from monitor.stages.global_risk.risk import GlobalRisk
from monitor.stages.global_risk.sharded import ShardedRisk
from monitor.stages.global_risk.shards import (
    AccountReport,
    ShardedAccounts,
    ShardFigures,
    ShardJoin,
    ShardStep,
    ShardStepRecord,
    decode_steps,
    merge_sets,
    shard_of,
    step_records,
)
from streams.app.shard_join import take_joined
from tests.unit.test_account_book import KEYS, account, risk_params

T0 = 1_760_130_000_000
IDS = 12

factor = st.one_of(st.floats(0.98, 1.02), st.floats(0.3, 1.6), st.sampled_from([0.5, 0.9, 1.1]))
move = st.dictionaries(st.sampled_from(KEYS), factor, min_size=1, max_size=3)


@st.composite
def step(draw: st.DrawFn) -> tuple[str, Any]:
    kind = draw(st.sampled_from(["move", "move", "move", "move", "upsert", "upsert", "delete", "end", "idle"]))
    if kind == "move":
        return kind, (draw(st.integers(100, 2_500)), draw(move))
    if kind == "idle":  # the watermark moves, no price does (a quiet market)
        return kind, draw(st.integers(1, 6_000))
    if kind == "end":
        return kind, None
    n = draw(st.integers(0, IDS - 1))
    return kind, draw(account(n)) if kind == "upsert" else n


def _raw(acct: Account) -> dict[str, Any]:
    """An account record as it arrives (venue named after its model: several venues)."""
    return {**acct.model_dump(mode="json"), "venue": acct.model.split("-")[0]}


def _snapshot_dict(snap: RiskSnapshot) -> dict[str, Any]:
    out: dict[str, Any] = msgspec.to_builtins(snap)
    return {k: v for k, v in out.items() if k != "forced_sell_usd_by_asset"}


def _same_snapshots(got: list[RiskSnapshot], want: list[RiskSnapshot]) -> None:
    assert [_snapshot_dict(s) for s in got] == [_snapshot_dict(s) for s in want]
    for g, w in zip(got, want, strict=True):
        assert g.forced_sell_usd_by_asset.keys() == w.forced_sell_usd_by_asset.keys()
        for asset, usd in w.forced_sell_usd_by_asset.items():
            assert math.isclose(g.forced_sell_usd_by_asset[asset], usd, rel_tol=1e-9, abs_tol=1e-6)


@settings(max_examples=200, deadline=None)
@given(first=st.lists(st.integers(0, IDS - 1).flatmap(account), min_size=1, max_size=IDS),
       steps=st.lists(step(), min_size=1, max_size=20), params=risk_params(),
       shards=st.integers(1, 4), spiral_ms=st.sampled_from([0, 1_000, 300_000]), priced=st.booleans())
def test_sharded_stage_equals_one_global_stage(
    first: list[Account], steps: list[tuple[str, Any]], params: Any, shards: int, spiral_ms: int,
    priced: bool,
) -> None:
    """``spiral_ms``: the standard shocks' interval (0: on demand only); ``priced``: every
    key priced before the first account (the standard shocks can run from the start)."""
    config = EngineConfig(risk=params, spiral_run=SpiralRunConfig(interval_ms=spiral_ms))
    ref, sharded = GlobalRisk(config, 1, 5_000), ShardedRisk(config, 1, shards, 5_000)
    prices = {k: 1.0 if k in ("USDT", "USDC") else 100.0 for k in KEYS}
    ts, seq, runs = T0, 0, 0
    want: list[Alert] = []
    got: list[Alert] = []
    if priced:
        sigs = [[ts, k.split("@")[0], i + 1, "price", {"key": k, "price": px}]
                for i, (k, px) in enumerate(prices.items())]
        seq = len(sigs)
        assert ref.push(SignalRecord(0, ts, sigs)) == sharded.push(SignalRecord(0, ts, sigs)) == []
    for raw in [_raw(a) for a in first]:
        ref.upsert_account(raw)
        sharded.upsert_account(raw)
    for kind, what in steps:
        if kind in ("upsert", "delete"):
            raw = _raw(what) if kind == "upsert" else {"account_id": f"a{what}", "delete": True}
            ref.upsert_account(raw)
            sharded.upsert_account(raw)
            continue
        if kind == "end":
            runs += 1
            rec = SignalRecord(0, ts, [], end=f"run-{runs}")
        elif kind == "idle":
            ts += what
            rec = SignalRecord(0, ts, [])
        else:
            gap, moves = what
            ts += gap
            sigs: list[list[Any]] = []
            for key, x in sorted(moves.items()):
                prices[key] *= x
                seq += 1
                sigs.append([ts, key.split("@")[0], seq, "price", {"key": key, "price": prices[key]}])
            rec = SignalRecord(0, ts, sigs)
        want += ref.push(rec)
        got += sharded.push(rec)
        assert sharded.finished_run == ref.finished_run
    want += ref.flush()
    got += sharded.flush()
    order = lambda a: (a.ts_ms, a.alert_id)  # noqa: E731 - the outputs' order (replay/outputs.py)
    assert [encode(a) for a in sorted(got, key=order)] == [encode(a) for a in sorted(want, key=order)]
    _same_snapshots(sharded.take_snapshots(), ref.take_snapshots())
    assert sharded.accounts == len(ref.accounts)
    got_fig, want_fig = sharded.risk.figures(), ref.figures()
    assert got_fig.accounts_by_status == want_fig.accounts_by_status
    assert got_fig.shortfalls == want_fig.shortfalls
    assert got_fig.leverage_quantiles == want_fig.leverage_quantiles
    # the spirals cover every account (the aggregation's copy): the standard shocks' last
    # results, and one on demand on the state at the end
    assert sharded.risk.spiral_results == ref.spiral_results
    shock = {"USDe@binance": -0.35, "BTC": -0.2} if {"USDe@binance", "BTC"} <= ref.prices.keys() else {}
    assert sharded.risk.spiral(shock) == ref.spiral(shock)
    event(f"alerts {min(len(want), 3)}, cascade {any(a.kind.startswith('cascade') for a in want)}")


def test_an_account_keeps_its_shard() -> None:
    """CRC-32 of the id: stable across processes and runs (these are its values)."""
    assert [shard_of(f"pm-{i}", 4) for i in range(8)] == [shard_of(f"pm-{i}", 4) for i in range(8)]
    assert shard_of("bn-whale-001", 1) == 0
    counts = [0] * 4
    for i in range(4_000):
        counts[shard_of(f"pm-{i}", 4)] += 1
    assert min(counts) > 900, counts


def test_merged_sets_are_the_union_in_id_order() -> None:
    merged = merge_sets([AccountSet(3, ["a", "d", "e"]), AccountSet(0, []), AccountSet(2, ["b", "c"])])
    assert merged == AccountSet(5, ["a", "b", "c", "d", "e"])


def test_the_aggregation_refuses_an_evaluation_the_shards_did_not_report() -> None:
    reports = ShardedAccounts(2)
    figures = ShardFigures(1, ())
    with pytest.raises(ValueError, match="one report per shard"):
        reports.put([AccountReport(0, T0, False, 0.0, None, None, figures)])
    reports.put([AccountReport(s, T0, False, 0.0, None, None, figures) for s in (1, 0)])
    with pytest.raises(ValueError, match="not reported the evaluation at"):
        reports.take(T0 + 1)
    assert reports.take(T0).ts_ms == T0 and reports.accounts == 2


def test_the_join_hands_out_a_record_once_every_shard_did_it() -> None:
    """Steps arrive in any order, a restarted shard sends some again, one shard runs ahead:
    a record is ready once every shard is through it, each step counted once."""
    figures = ShardFigures(2, ())
    join = ShardJoin(2)
    join.add(decode_steps(ShardStepRecord(shard=1, through=5, steps=[ShardStep(3, alerts=2)]).encode()), 0)
    assert not join.ready(0) and join.lagging(0) == [0]
    join.add(ShardStepRecord(shard=0, through=3, steps=[ShardStep(1, (), figures), ShardStep(3, alerts=1)]), 1)
    assert join.ready(3) and not join.ready(4) and join.reports_next == 2
    # shard 1 restarted from an older checkpoint: what it already sent changes nothing
    join.add(ShardStepRecord(shard=1, through=4, steps=[ShardStep(3, alerts=2)]), 2)
    assert [s.figures for s in join.take(1)] == [figures, None]
    assert [s.alerts for s in join.take(3)] == [1, 2]
    assert join.take(3) == [ShardStep(3), ShardStep(3)], "taken once"
    with pytest.raises(RecordError, match="not one of"):
        join.add(ShardStepRecord(shard=2, through=0, steps=[]), 3)
    with pytest.raises(RecordError, match=r"Expected `int`"):
        decode_steps(b'{"shard": "x"}')


@st.composite
def steps_of_a_shard(draw: st.DrawFn) -> list[ShardStep]:
    """Steps on increasing log records, each with a random number of evaluations."""
    offsets = sorted(draw(st.sets(st.integers(0, 60), max_size=12)))
    out = []
    for offset in offsets:
        n = draw(st.integers(0, 30))
        ids = [f"acct-{i}" for i in range(draw(st.integers(0, 6)))]
        reports = tuple(
            AccountReport(0, T0 + offset * 1000 + i, draw(st.booleans()), float(i),
                          AccountSet(len(ids), ids) if draw(st.booleans()) else None, None,
                          ShardFigures(len(ids), (("USDe", float(i)),)))
            for i in range(n))
        figures = ShardFigures(n, ()) if draw(st.booleans()) else None
        out.append(ShardStep(offset, reports, figures, draw(st.integers(0, 3))))
    return out


@settings(max_examples=150, deadline=None)
@given(steps=steps_of_a_shard(), max_bytes=st.sampled_from([200, 600, 2_000, 50_000]), extra=st.integers(0, 5))
def test_steps_cut_into_records_come_out_of_the_join_whole(steps: list[ShardStep], max_bytes: int, extra: int) -> None:
    """However a shard's steps are cut into records of at most ``max_bytes`` (a lone
    evaluation may exceed it), the join gives back each step whole, once, and the records
    sent again after a restart change nothing."""
    through = (steps[-1].offset if steps else 0) + extra
    encoded = step_records(0, through, steps, max_bytes)
    assert step_records(0, through, steps, max_bytes) == encoded, "the same steps, the same records"
    records = [decode_steps(value) for value in encoded]
    for value, record in zip(encoded, records, strict=True):
        one_report = len(record.steps) == 1 and len(record.steps[0].reports) <= 1
        assert len(value) <= max_bytes or one_report
    assert [r.through for r in records] == sorted(r.through for r in records) and records[-1].through == through
    join = ShardJoin(1)
    for i, record in enumerate(records + records[: len(records) // 2]):  # half sent again
        join.add(record, i)
    by_offset = {step.offset: step for step in steps}
    for offset in range(through + 1):
        assert join.ready(offset)
        assert join.take(offset) == [by_offset.get(offset, ShardStep(offset))]


def test_a_step_whose_parts_did_not_all_arrive_is_refused() -> None:
    reports = tuple(AccountReport(0, T0 + i, False, 0.0, None, None, ShardFigures(1, ())) for i in range(40))
    records = [decode_steps(v) for v in step_records(0, 7, [ShardStep(7, reports, alerts=1)], 1_000)]
    assert len(records) > 2 and records[0].through == 6
    join = ShardJoin(1)
    join.add(records[-1], 0)
    with pytest.raises(RecordError, match="lacks parts"):
        join.take(7)


def _parts_of_a_step(shard: int) -> list[ShardStepRecord]:
    reports = tuple(AccountReport(0, T0 + i, False, 0.0, None, None, ShardFigures(1, ())) for i in range(40))
    return [decode_steps(v) for v in step_records(shard, 7, [ShardStep(7, reports, alerts=1)], 1_000)]


def test_a_worker_dead_letters_a_step_that_lacks_parts_and_goes_on() -> None:
    """The aggregation worker's join (``streams.app.shard_join``): shard 1's step on log
    record 7 arrives without its first record of parts (it did not decode and was
    dead-lettered); shard 0's arrives whole. The stage takes shard 0's step, an empty one
    for shard 1, and dead-letters the incomplete step naming the shard, where the strict
    join would fail on that record again at every restart."""
    whole, cut = _parts_of_a_step(0), _parts_of_a_step(1)
    join = ShardJoin(2)
    for at, record in enumerate([*whole, *cut[1:]]):
        join.add(record, at)
    letters: list[DeadLetter] = []

    class Pipes:
        async def dead_letter(self, dl: DeadLetter) -> None:
            letters.append(dl)

    assert join.ready(7)
    steps = asyncio.run(take_joined(cast(Any, Pipes()), join, 7))
    assert steps == [ShardStep(7, _steps_reports(whole), whole[-1].steps[-1].figures, 1), ShardStep(7)]
    assert [(d.reason, d.raw) for d in letters] == [("invalid_shard_steps", b"")]
    assert letters[0].detail.startswith("shard 1: the step on log record 7 lacks parts: has [")
    assert "[0" not in letters[0].detail


def _steps_reports(records: list[ShardStepRecord]) -> tuple[AccountReport, ...]:
    return tuple(r for record in records for step in record.steps for r in step.reports)


def _underwater(account_id: str) -> dict[str, Any]:
    """A portfolio-margin account in liquidation at BTC 100,000: 1 BTC against 99,000 USDT borrowed."""
    return {"account_id": account_id, "venue": "binance", "model": "binance-pm",
            "balances": [{"asset": "BTC", "amount": 1.0, "price_key": "BTC"},
                         {"asset": "USDT", "amount": -99_000.0, "price_key": "USDT"}]}


@pytest.mark.parametrize("shards", [0, 1, 3])
def test_an_account_loaded_into_a_quiet_market_is_evaluated_without_a_price_move(shards: int) -> None:
    """The market runs (prices released, one evaluation of the accounts there were), then an
    account arrives and no price moves again: the watermarks alone bring its evaluation, at
    the first event time the accounts' cadence allows, and its liquidation alert."""
    config = EngineConfig()
    interval_ms = config.signals.account_eval_interval_ms
    stage: GlobalRisk | ShardedRisk = ShardedRisk(config, 1, shards) if shards else GlobalRisk(config, 1)
    stage.upsert_account({"account_id": "early", "venue": "binance", "model": "binance-pm",
                          "balances": [{"asset": "USDT", "amount": 1_000.0, "price_key": "USDT"}]})
    prices = [[T0, "BTC", 1, "price", {"key": "BTC", "price": 100_000.0}],
              [T0, "USDT", 2, "price", {"key": "USDT", "price": 1.0}]]
    out = stage.push(SignalRecord(0, T0, prices)) + stage.push(SignalRecord(0, T0 + 1, []))
    assert out == []
    stage.upsert_account(_underwater("late"))
    ts = T0 + 1
    while ts < T0 + interval_ms:  # watermarks only, up to the cadence's interval
        ts += 250
        out += stage.push(SignalRecord(0, ts, []))
        if out:
            break
    out += stage.push(SignalRecord(0, ts + 1, []))
    assert [(a.kind, a.ts_ms) for a in out if a.kind.startswith("unified")] == [
        ("unified_liquidation", T0 + interval_ms)]
    risk = stage.risk if isinstance(stage, ShardedRisk) else stage
    assert risk.figures().accounts_by_status == {("binance", "normal"): 1, ("binance", "liquidation"): 1}
