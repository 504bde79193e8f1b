"""The global stage's accounts on the columnar book (``BookWatch``) against the scalar
reference (``AccountWatch``): random accounts of every model and random tier tables,
added, replaced and deleted between random price moves, some keys priced late.

No tolerance: alerts byte for byte, the leverage jump and every figure with ``==``.
"""

from __future__ import annotations

import math
import pickle
from typing import Any

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from monitor.accounts.watch import AccountWatch, ResultColumns, account_document
from monitor.config import EngineConfig
from monitor.models.cascade import ACCOUNTS_SHOWN, AccountSet
from monitor.models.margin import Account
from monitor.protocol import Alert, SignalRecord, encode
from monitor.stages.global_risk.account_book import BookWatch
from monitor.stages.global_risk.risk import GlobalRisk
from monitor.stages.spiral import run_spiral, run_spiral_on_book
from tests.unit.test_account_book import KEYS, account, risk_params, shocks

T0 = 1_760_130_000_000
IDS = 4

#: A move multiplies a key's price (small moves: within an account's slack, skipped), or sets it.
factor = st.one_of(st.floats(0.98, 1.02), st.floats(0.3, 1.6), st.sampled_from([0.5, 0.9, 1.0, 1.1]))
price = st.one_of(st.tuples(st.just("x"), factor), st.tuples(st.just("="), st.floats(0.01, 2e5)))
move = st.dictionaries(st.sampled_from(KEYS), price, min_size=1, max_size=3)


@st.composite
def step(draw: st.DrawFn) -> tuple[str, Any]:
    kind = draw(st.sampled_from(["move", "move", "move", "upsert", "upsert", "delete", "spiral", "restart"]))
    if kind == "move":
        return kind, draw(move)
    if kind == "spiral":
        return kind, draw(shocks)
    if kind == "restart":
        return kind, None
    n = draw(st.integers(0, IDS - 1))
    return kind, draw(account(n)) if kind == "upsert" else n


def _raw(acct: Account) -> dict[str, Any]:
    raw = acct.model_dump(mode="json")
    raw["venue"] = acct.model.split("-")[0]  # several venues: per-venue figures
    return raw


def _rows(columns: ResultColumns) -> list[tuple[Any, ...]]:
    lev = [None if math.isnan(x) else x for x in columns.effective_leverage.tolist()]
    venues = [columns.venue_names[c] for c in columns.venue_code.tolist()]
    return sorted(zip(venues, columns.status.tolist(), columns.adjusted_equity_usd.tolist(),
                      columns.maintenance_margin_usd.tolist(), lev, strict=True), key=repr)


def _same(book: BookWatch, ref: AccountWatch) -> None:
    assert book.stressed() == ref.stressed()
    assert book.liquidating() == ref.liquidating()
    assert book.stressed_set() == AccountSet(len(ref.stressed()), ref.stressed()[:ACCOUNTS_SHOWN])
    assert book.liquidating_set() == AccountSet(len(ref.liquidating()), ref.liquidating()[:ACCOUNTS_SHOWN])
    assert book.latches.export() == ref.latches.export()
    assert book.latches.take_changes() == ref.latches.take_changes()
    assert book.forced_sell_usd == ref.forced_sell_usd
    assert _rows(book.result_columns()) == _rows(ref.result_columns())
    for aid in ref.accounts:
        got, want = book.result(aid), ref.results.get(aid)
        if want is None:
            assert got is None
        else:
            assert got is not None
            assert got.model_dump(exclude={"forced_sells", "uncovered_shortfall_usd", "effective_leverage_change",
                                           "driving_asset"}) == want.model_dump(
                exclude={"forced_sells", "uncovered_shortfall_usd", "effective_leverage_change", "driving_asset"})


def _same_spiral(book: BookWatch, ref: AccountWatch, prices: dict[str, float], shock: dict[str, float],
                 params: Any) -> None:
    """A spiral on the watch's book (which it moves) equals the scalar spiral of the priced
    accounts; the watch's next evaluation starts from the prices of the day again."""
    shock = {k: v for k, v in shock.items() if k in prices}
    ladders = {k: [[px * (1.0 - 0.01 * i), 1e4 / px] for i in range(1, 4)] for k, px in prices.items()}
    priced = [a for _, a in sorted(ref.accounts.items()) if a.price_keys() <= prices.keys()]
    want = run_spiral([], priced, prices, ladders, shocks=shock, params=params)
    on_book = book.on_book(prices)
    got = (run_spiral([], [], prices, ladders, shocks=shock, params=params) if on_book is None
           else run_spiral_on_book([], on_book, prices, ladders, shocks=shock, params=params))
    assert got.model_dump() == want.model_dump()
    event(f"spiral liquidates {bool(want.accounts_liquidated)}")


@settings(max_examples=300, deadline=None)
@given(first=st.lists(st.integers(0, IDS - 1).flatmap(account), min_size=1, max_size=IDS),
       steps=st.lists(step(), min_size=1, max_size=16), params=risk_params(),
       priced=st.sets(st.sampled_from(KEYS)), side_min=st.sampled_from([0, 2, 1_000, 1_000]))
def test_book_watch_equals_the_scalar_watch(
    first: list[Account], steps: list[tuple[str, Any]], params: Any, priced: set[str], side_min: int
) -> None:
    """``side_min`` 0: every change rebuilds the main book; 1,000: changes stay in the side
    book until a spiral merges them."""
    config = EngineConfig(risk=params)
    book, ref = BookWatch(config, side_min=side_min), AccountWatch(config)
    prices = {k: 1.0 if k in ("USDT", "USDC") else 100.0 for k in priced}
    changed: set[str] = set()
    for ts, (kind, what) in enumerate([("upsert", a) for a in first] + steps):
        if kind == "upsert":
            for watch in (book, ref):
                watch.upsert(_raw(what), T0 + ts)
            changed |= what.price_keys()
            continue
        if kind == "delete":
            for watch in (book, ref):
                watch.upsert({"account_id": f"a{what}", "delete": True}, T0 + ts)
            continue
        if kind == "spiral":
            _same_spiral(book, ref, prices, what, params)
            continue
        if kind == "restart":  # from its checkpoint (the book is rebuilt, not pickled)
            blob = pickle.dumps(book)
            assert b"AccountBook" not in blob
            book = pickle.loads(blob)
            continue
        for key, (how, x) in what.items():
            prices[key] = prices.get(key, 100.0) * x if how == "x" else x
        changed |= set(what)
        out_book: list[Alert] = []
        out_ref: list[Alert] = []
        got = book.evaluate(T0 + ts, changed, prices, out_book)
        want = ref.evaluate(T0 + ts, changed, prices, out_ref)
        changed = set()
        assert got == want
        event(f"alerts {min(len(out_ref), 3)}")
        event(f"side book {book.side is not None}")
        event(f"liquidating {bool(ref.liquidating())}, jump {want[1] > 0}")
        assert [encode(a) for a in out_book] == [encode(a) for a in out_ref]
        _same(book, ref)


def test_a_restored_latch_of_an_account_waiting_for_prices_holds_once_it_is_priced() -> None:
    config = EngineConfig()
    watch = BookWatch(config)
    raw = {"account_id": "a1", "venue": "binance", "model": "binance-pm",
           "balances": [{"asset": "USDe", "amount": 1e6, "price_key": "USDe@binance"},
                        {"asset": "USDT", "amount": -930_000.0, "price_key": "USDT"}]}
    watch.upsert(raw, T0)
    watch.restore_alert_latches({"a1": 3})
    out: list[Alert] = []
    watch.evaluate(T0, {"USDT"}, {"USDT": 1.0}, out)  # USDe@binance not priced: waits
    assert watch.result("a1") is None
    watch.evaluate(T0 + 1, {"USDe@binance"}, {"USDT": 1.0, "USDe@binance": 0.6}, out)
    assert watch.liquidating() == ["a1"], "evaluated once priced"
    assert out == [], "latched before the restart: no second alert"


def test_dead_rows_are_dropped_once_past_the_share() -> None:
    """Accounts replaced or deleted leave dead rows: a side book with one is rebuilt at the
    next evaluation, and the main book is merged once its dead rows and the side together
    are more than ``side_min`` (here 2): the parts then hold only live accounts."""
    watch = BookWatch(EngineConfig(), side_min=2, side_share=0.0)
    prices = {"USDT": 1.0, "USDe@binance": 1.0}

    def raw(i: int, loan: float = -500_000.0) -> dict[str, Any]:
        return {"account_id": f"a{i}", "venue": "binance", "model": "binance-pm",
                "balances": [{"asset": "USDe", "amount": 1e6, "price_key": "USDe@binance"},
                             {"asset": "USDT", "amount": loan, "price_key": "USDT"}]}

    for i in range(5):
        watch.upsert(raw(i), T0)
    out: list[Alert] = []
    watch.evaluate(T0, set(prices), prices, out)
    assert watch.main is not None and (len(watch.main), watch.main.dead) == (5, 0) and watch.side is None
    watch.upsert(raw(1, -600_000.0), T0)  # replaced: dead in the main book, live on the side
    watch.evaluate(T0 + 1, {"USDT"}, prices, out)
    assert (watch.main.dead, watch.side is not None and len(watch.side)) == (1, 1)
    watch.upsert({"account_id": "a1", "delete": True}, T0)  # gone from the side too
    watch.evaluate(T0 + 2, {"USDT"}, prices, out)
    assert watch.main.dead == 1 and watch.side is None, "the side rebuilt without its dead row"
    watch.upsert({"account_id": "a2", "delete": True}, T0)  # two dead rows: not more than side_min
    watch.evaluate(T0 + 3, {"USDT"}, prices, out)
    assert (len(watch.main), watch.main.dead) == (5, 2)
    watch.upsert({"account_id": "a3", "delete": True}, T0)  # three: merged
    watch.evaluate(T0 + 4, {"USDT"}, prices, out)
    assert watch.main is not None and (watch.main.ids, watch.main.dead) == (["a0", "a4"], 0)


def test_the_global_stage_holds_a_hundred_thousand_accounts() -> None:
    """One price key held by 100,000 accounts moving through the lines: every account that
    crosses is alerted once, and the stage's figures count them."""
    risk = GlobalRisk(EngineConfig(), partitions=1)
    loans = np.linspace(-700_000.0, -960_000.0, 100_000)
    for i, loan in enumerate(loans.tolist()):
        risk.upsert_account({"account_id": f"pm-{i:06d}", "venue": "binance", "model": "binance-pm",
                             "balances": [{"asset": "USDe", "amount": 1e6, "price_key": "USDe@binance"},
                                          {"asset": "USDT", "amount": loan, "price_key": "USDT"}]})
    alerts: list[Alert] = []
    for seq, usde in enumerate([1.0, 0.97, 0.9, 0.8], start=1):
        ts = T0 + seq * 60_000
        sig = [ts, "USDe", seq, "price", {"key": "USDe@binance", "price": usde}]
        alerts += risk.push(SignalRecord(0, ts, [sig])) + risk.flush()
    liquidations = {a.evidence["account_id"] for a in alerts if a.kind == "unified_liquidation"}
    statuses = risk.snapshot().accounts_by_status
    assert sum(statuses.values()) == 100_000
    assert len(liquidations) == statuses["liquidation"] > 0


@pytest.mark.parametrize(("fields", "place"), [
    ({"balances": 5}, ("balances",)), ({"balances": None}, ("balances",)), ({"balances": {"x": 1}}, ("balances",)),
    ({"perps": 3}, ("perps",)), ({"balances": ["x"]}, ("balances", 0)),
])
def test_an_account_whose_lists_are_not_lists_is_refused_by_name(fields: dict[str, Any], place: tuple[Any, ...]
                                                                  ) -> None:
    """The record's default price keys are filled in before the model checks it: balances
    that were not a list were iterated first (a TypeError, or a dict's keys taken for
    balances); now the model refuses them, naming the field."""
    raw = {"account_id": "a", "venue": "binance", "model": "binance-pm", **fields}
    with pytest.raises(ValidationError) as err:
        account_document(raw, T0, EngineConfig())
    assert err.value.errors()[0]["loc"] == place
