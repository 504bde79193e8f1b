"""The columnar account book against the scalar reference (RISK_MODEL §3): random accounts of
every model, random collateral tiers (USD and coin-quantity floors), random perp tier
tables (Binance brackets, Bybit risk limits with deductions, OKX position tiers by
quantity, Hyperliquid margin tables) and random shocks.

No tolerance: the columnar maths performs the scalar operations in the scalar order (tier
prefixes summed tier by tier from 0.0, each account's terms added in its own entry order),
so every figure is compared with ``==`` (NaN standing for None).
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.accounts.attribution import AssetSlots
from monitor.accounts.book import AccountBook, AccountFigures
from monitor.accounts.columns import ColumnsBuilder
from monitor.models.loops.lending import CollateralEntry, DebtEntry, Position
from monitor.models.margin import STATUSES, Account, AccountResult, Balance, Perp, evaluate_account
from monitor.risk_params import (
    CollateralTiers,
    MarginTier,
    PerpTier,
    PerpTierTable,
    RiskParams,
)
from monitor.stages.spiral import BookAccounts, run_spiral, run_spiral_on_book, run_spirals_on_book
from monitor.stages.stress import stress_report

KEYS = ("USDT", "USDC", "BTC", "ETH", "SOL", "USDe@binance", "USDe", "XYZ")
ASSET_OF = {"USDe@binance": "USDe"}
SYMBOLS = {  # perp symbol -> price key: bracket, tier-table and margin-table lookups
    "BTCUSDT": "BTC", "ETHUSDT": "ETH", "SOLUSDT": "SOL", "BTC-USDT-SWAP": "BTC", "BTC": "BTC",
    "ETH-PERP": "ETH", "XYZUSDT": "XYZ",
}
MODELS = ("binance-pm", "bybit-uta", "okx-mc", "hyperliquid")

finite = st.floats(allow_nan=False, allow_infinity=False)


def _rising(draw: st.DrawFn, n: int, lo: float, hi: float) -> list[float]:
    return sorted(draw(st.lists(st.floats(lo, hi), min_size=n, max_size=n, unique=True)))


@st.composite
def collateral_tiers(draw: st.DrawFn) -> CollateralTiers:
    """1–4 tiers, floors from 0, rates in [0, 1], USD or coin-quantity floors."""
    n = draw(st.integers(1, 4))
    floors = [0.0, *_rising(draw, n - 1, 1.0, 5e6)]
    rates = draw(st.lists(st.floats(0.0, 1.0), min_size=n, max_size=n))
    return CollateralTiers(basis=draw(st.sampled_from(["usd", "qty"])), tiers=tuple(zip(floors, rates, strict=True)))


@st.composite
def perp_tier_table(draw: st.DrawFn, basis: str) -> PerpTierTable:
    """Rising caps and MM rates; USD tables with Bybit's continuous deductions, quantity
    tables (OKX) without."""
    n = draw(st.integers(1, 5))
    caps = _rising(draw, n, 1.0, 5e7 if basis == "usd" else 500.0)
    rates = sorted(draw(st.lists(st.floats(0.001, 0.5), min_size=n, max_size=n)))
    tiers, ded = [], 0.0
    for i, (cap, rate) in enumerate(zip(caps, rates, strict=True)):
        if i and basis == "usd":
            ded += caps[i - 1] * (rate - rates[i - 1])
        tiers.append(PerpTier(cap=cap, mmr_ratio=rate, mm_deduction_usd=ded))
    return PerpTierTable(basis=basis, tiers=tuple(tiers))


@st.composite
def margin_table(draw: st.DrawFn) -> tuple[MarginTier, ...]:
    n = draw(st.integers(1, 3))
    bounds = [0.0, *_rising(draw, n - 1, 1e3, 1e8)]
    levs = sorted(draw(st.lists(st.integers(1, 50), min_size=n, max_size=n)), reverse=True)
    return tuple(MarginTier(lower_bound_usd=b, max_leverage=float(v)) for b, v in zip(bounds, levs, strict=True))


@st.composite
def risk_params(draw: st.DrawFn) -> RiskParams:
    """The defaults, or the defaults with random venue tables for the perps drawn below."""
    p = RiskParams()
    if draw(st.booleans()):
        return p
    u = p.unified
    bybit = u.bybit_uta.model_copy(update={"perp_tables": {
        "BTCUSDT": draw(perp_tier_table("usd")), "XYZUSDT": draw(perp_tier_table("usd"))}})
    okx = u.okx_mc.model_copy(update={"perp_tables": {"BTC-USDT": draw(perp_tier_table("qty"))}})
    hl = u.hyperliquid.model_copy(update={"margin_tables": {"BTC": draw(margin_table()),
                                                            "ETH": draw(margin_table())}})
    return p.model_copy(update={"unified": u.model_copy(update={"bybit_uta": bybit, "okx_mc": okx,
                                                                "hyperliquid": hl})})


@st.composite
def balance(draw: st.DrawFn) -> Balance:
    key = draw(st.sampled_from(KEYS))
    amount = draw(st.one_of(st.just(0.0), st.floats(-2e6, 2e6), st.floats(-50.0, 50.0)))
    loan_mmr = draw(st.one_of(st.none(), st.floats(0.0, 0.5)))
    return Balance(asset=ASSET_OF.get(key, key), amount=amount, price_key=key, loan_mmr=loan_mmr)


@st.composite
def perp(draw: st.DrawFn) -> Perp:
    symbol = draw(st.sampled_from(sorted(SYMBOLS)))
    qty = draw(st.one_of(st.floats(-800.0, 800.0), st.floats(-1.0, 1.0)).filter(lambda q: q != 0))
    explicit = draw(st.booleans()) and draw(st.booleans())
    return Perp(symbol=symbol, qty=qty, entry_price=draw(st.floats(1.0, 2e5)), price_key=SYMBOLS[symbol],
                mmr=draw(st.floats(0.001, 0.3)) if explicit else None,
                cum=draw(st.one_of(st.none(), st.floats(0.0, 1e4))) if explicit else None)


@st.composite
def account(draw: st.DrawFn, n: int) -> Account:
    rates = None
    if draw(st.booleans()):
        rates = draw(st.dictionaries(st.sampled_from(["USDe", "BTC", "ETH", "XYZ"]), collateral_tiers(), max_size=2))
    return Account(account_id=f"a{n}", venue="v", model=draw(st.sampled_from(MODELS)),
                   balances=tuple(draw(st.lists(balance(), max_size=5))),
                   perps=tuple(draw(st.lists(perp(), max_size=3))), collateral_rates=rates)


@st.composite
def book_case(draw: st.DrawFn) -> tuple[list[Account], dict[str, float], RiskParams]:
    n = draw(st.integers(1, 8))
    accounts = [draw(account(i)) for i in range(n)]
    prices = {k: draw(st.floats(0.01, 2e5)) for k in KEYS}
    prices["USDT"] = prices["USDC"] = 1.0
    return accounts, prices, draw(risk_params())


shocks = st.dictionaries(st.sampled_from(KEYS), st.floats(-0.95, 2.0), min_size=1, max_size=3)


def _none(x: float) -> float | None:
    return None if math.isnan(x) else x


def _assert_equal(res: AccountResult, figs: AccountFigures, i: int) -> None:
    got: dict[str, Any] = {
        "adjusted_equity_usd": float(figs.adjusted_equity_usd[i]),
        "maintenance_margin_usd": float(figs.maintenance_margin_usd[i]),
        "gross_notional_usd": float(figs.gross_notional_usd[i]),
        "uni_mmr": _none(float(figs.uni_mmr[i])),
        "venue_ratio": _none(float(figs.venue_ratio[i])),
        "effective_leverage": _none(float(figs.effective_leverage[i])),
        "status": STATUSES[int(figs.status[i])],
        "backstop": bool(figs.backstop[i]),
    }
    want = {k: getattr(res, k) for k in got}
    assert got == want, res.account_id


@settings(max_examples=300, deadline=None)
@given(book_case(), shocks)
def test_columnar_equals_scalar_before_and_after_a_shock(
    case: tuple[list[Account], dict[str, float], RiskParams], shock: dict[str, float]
) -> None:
    accounts, prices, params = case
    book = AccountBook(ColumnsBuilder(params).build(accounts), prices, params)
    figs = book.figures()
    before = [evaluate_account(a, prices, params, with_forced_sells=False) for a in accounts]
    for i, res in enumerate(before):
        _assert_equal(res, figs, i)
    shocked = {**prices, **{k: prices[k] * (1.0 + m) for k, m in shock.items()}}
    changes = book.move({k: shocked[k] for k in shock})
    figs = book.figures()
    after = [evaluate_account(a, shocked, params, with_forced_sells=False) for a in accounts]
    for i, res in enumerate(after):
        _assert_equal(res, figs, i)
    changed = {i for i in range(len(accounts)) if before[i].status != after[i].status}
    assert set(changes.accounts.tolist()) == changed
    for i, b, a in zip(changes.accounts.tolist(), changes.before.tolist(), changes.after.tolist(), strict=True):
        assert (STATUSES[b], STATUSES[a]) == (before[i].status, after[i].status)


@settings(max_examples=100, deadline=None)
@given(book_case(), st.lists(st.floats(0.05, 3.0), min_size=2, max_size=6))
def test_a_key_stepping_re_evaluates_the_accounts_holding_it(
    case: tuple[list[Account], dict[str, float], RiskParams], steps: list[float]
) -> None:
    """One key moving in steps (the bench's tick): after each step every account equals
    the scalar evaluation at the prices of that step."""
    accounts, prices, params = case
    book = AccountBook(ColumnsBuilder(params).build(accounts), prices, params)
    key = "BTC"
    for step in steps:
        prices = {**prices, key: prices[key] * step}
        book.move({key: prices[key]})
        figs = book.figures()
        for i, a in enumerate(accounts):
            _assert_equal(evaluate_account(a, prices, params, with_forced_sells=False), figs, i)


@settings(max_examples=200, deadline=None)
@given(book_case(), shocks)
def test_equity_by_asset_and_driving_asset_equal_scalar(
    case: tuple[list[Account], dict[str, float], RiskParams], shock: dict[str, float]
) -> None:
    """Per-asset equity before and after a shock, and the driving asset (largest equity
    drop, else largest haircut), as ``evaluate_account(..., previous=...)`` has them."""
    accounts, prices, params = case
    columns = ColumnsBuilder(params).build(accounts)
    book = AccountBook(columns, prices, params)
    slots = AssetSlots(book)
    equity_before = slots.equity_usd(book)
    shocked = {**prices, **{k: prices[k] * (1.0 + m) for k, m in shock.items()}}
    book.move(shocked)
    equity_after = slots.equity_usd(book)
    haircut, held = slots.haircut_usd(book)
    driver = slots.driving_asset(equity_before, equity_after, haircut, held).tolist()
    for i, acct in enumerate(accounts):
        before = evaluate_account(acct, prices, params, with_forced_sells=False)
        after = evaluate_account(acct, shocked, params, before, with_forced_sells=False)
        mine = slots.slot_account == i
        names = [columns.assets[a] for a in slots.slot_asset[mine].tolist()]
        assert dict(zip(names, equity_before[mine].tolist(), strict=True)) == before.equity_by_asset_usd
        assert dict(zip(names, equity_after[mine].tolist(), strict=True)) == after.equity_by_asset_usd
        assert (columns.assets[driver[i]] if driver[i] >= 0 else None) == after.driving_asset


def test_lines_are_taken_as_the_venues_word_them() -> None:
    """Exactly on a line: Binance uniMMR 1.05 and OKX equity = MM liquidate, Bybit MM rate
    100% liquidates, Hyperliquid equity = MM does not ("falls below"; RISK_MODEL §3)."""
    params = RiskParams()
    accounts = [Account(account_id=m, venue="v", model=m,
                        balances=(Balance(asset="USDC" if m == "hyperliquid" else "USDT", amount=amt,
                                          price_key="USDT"),
                                  Balance(asset="USDT", amount=-1000.0, price_key="USDT", loan_mmr=0.1)))
                for m, amt in (("binance-pm", 1105.0), ("bybit-uta", 1100.0), ("okx-mc", 1100.0))]
    accounts.append(Account(account_id="hl", venue="v", model="hyperliquid",
                            balances=(Balance(asset="USDC", amount=125.0, price_key="USDT"),),
                            perps=(Perp(symbol="BTC", qty=1.0, entry_price=8_000.0, price_key="BTC",
                                        mmr=1 / 64),)))
    prices = {"USDT": 1.0, "BTC": 8_000.0}
    figs = AccountBook(ColumnsBuilder(params).build(accounts), prices, params).figures()
    assert [STATUSES[s] for s in figs.status.tolist()] == ["liquidation"] * 3 + ["margin_call"]
    assert figs.uni_mmr.tolist() == [1.05, 1.0, 1.0, 1.0]
    assert figs.venue_ratio[1] == 1.0  # Bybit's account MM rate, MM / equity


def _scalar_row(acct: Account, prices: dict[str, float], shocked: dict[str, float],
                params: RiskParams) -> dict[str, Any]:
    """The account row ``liqmon stress`` wrote before the columnar book, from the scalar
    reference (evaluate_account with forced sells, against the unshocked evaluation)."""
    res = evaluate_account(acct, shocked, params, previous=evaluate_account(acct, prices, params))
    row = {k: getattr(res, k) for k in (
        "account_id", "venue", "model", "uni_mmr", "venue_ratio_name", "venue_ratio", "adjusted_equity_usd",
        "maintenance_margin_usd", "status", "backstop", "gross_notional_usd", "effective_leverage",
        "effective_leverage_change", "driving_asset", "uncovered_shortfall_usd")}
    row["forced_sells"] = [s.model_dump() for s in res.forced_sells]
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}


@settings(max_examples=100, deadline=None)
@given(book_case(), shocks)
def test_stress_rows_equal_the_scalar_rows(
    case: tuple[list[Account], dict[str, float], RiskParams], shock: dict[str, float]
) -> None:
    """``stress_report``'s account rows and sell totals, now from the book (forced sells only
    for accounts in liquidation), equal those of the scalar evaluation."""
    accounts, prices, params = case
    report = stress_report([], accounts, prices, shocks=shock, params=params).document()
    shocked = {**prices, **{k: prices[k] * (1.0 + m) for k, m in shock.items()}}
    rows = [_scalar_row(a, prices, shocked, params) for a in accounts]
    assert report["accounts"] == rows
    sells: dict[str, float] = {}
    for row in rows:
        for s in row["forced_sells"]:
            if s["side"] == "sell":
                sells[s["asset"]] = sells.get(s["asset"], 0.0) + s["usd"]
    assert report["aggregates"]["forced_sells_usd_by_asset"] == dict(sorted(sells.items()))


def test_moves_that_change_nothing_and_bad_prices() -> None:
    """A key nobody holds or an unchanged price re-evaluates nothing; a bad price raises
    before any price moves."""
    params = RiskParams()
    accounts = [Account(account_id="a", venue="v", model="binance-pm",
                        balances=(Balance(asset="BTC", amount=1.0, price_key="BTC"),
                                  Balance(asset="USDT", amount=-80_000.0, price_key="USDT")))]
    book = AccountBook(ColumnsBuilder(params).build(accounts), {"BTC": 100_000.0, "USDT": 1.0}, params)
    assert book.move({"ETH": 1.0, "BTC": 100_000.0}).accounts.size == 0
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="finite and positive"):
            book.move({"USDT": 1.01, "BTC": bad})
        assert book.prices.tolist() == [100_000.0, 1.0]
    changes = book.move({"BTC": 85_000.0})
    assert changes.accounts.tolist() == [0]
    assert (STATUSES[changes.before[0]], STATUSES[changes.after[0]]) == ("normal", "liquidation")
    with pytest.raises(KeyError, match="no price for 'USDT'"):
        AccountBook(ColumnsBuilder(params).build(accounts), {"BTC": 1.0}, params)


@st.composite
def bid_books(draw: st.DrawFn, prices: dict[str, float]) -> dict[str, list[list[float]]]:
    """Bid ladders under some keys: 1–6 levels below the price, thin or deep."""
    out = {}
    for key in draw(st.lists(st.sampled_from(KEYS), unique=True, max_size=5)):
        steps = draw(st.lists(st.floats(0.0, 0.2), min_size=1, max_size=6))
        out[key] = [[prices[key] * (1.0 - s), draw(st.floats(0.01, 1e6))] for s in steps]
    return out


@st.composite
def loop_positions(draw: st.DrawFn, prices: dict[str, float]) -> list[Position]:
    """0–6 loops of one collateral and one debt on the keys (some with bid books, some
    not), from deep under water to healthy, on Aave v3 or Morpho."""
    out = []
    for n in range(draw(st.integers(0, 6))):
        coll_key, debt_key = draw(st.sampled_from(KEYS)), draw(st.sampled_from(("USDT", "USDC", "ETH")))
        coll_usd = draw(st.floats(1_000.0, 5e6))
        lt = draw(st.floats(0.5, 0.97))
        out.append(Position(
            position_id=f"p{n}", protocol=draw(st.sampled_from(["aave-v3", "morpho-blue"])),
            collateral=(CollateralEntry(asset=ASSET_OF.get(coll_key, coll_key), amount=coll_usd / prices[coll_key],
                                        liquidation_threshold=lt, price_key=coll_key),),
            debt=(DebtEntry(asset=debt_key, amount=coll_usd * lt * draw(st.floats(0.5, 1.3)) / prices[debt_key],
                            price_key=debt_key),),
        ))
    return out


@settings(max_examples=200, deadline=None)
@given(book_case(), shocks, st.data())
def test_spiral_on_the_book_equals_the_scalar_spiral(
    case: tuple[list[Account], dict[str, float], RiskParams], shock: dict[str, float], data: st.DataObject
) -> None:
    """``run_spiral_on_book`` gives ``run_spiral``'s result to the last digit: rounds,
    liquidated USD by stage and venue, accounts, positions, sold quantities, final prices.
    With loop positions beside the accounts, the book's run looks again only at the
    positions whose prices or amounts moved, the reference at every one, each round."""
    accounts, prices, params = case
    books = data.draw(bid_books(prices))
    positions = data.draw(loop_positions(prices))
    want = run_spiral(positions, accounts, prices, books, shocks=shock, params=params)
    book = AccountBook(ColumnsBuilder(params).build(accounts), prices, params)
    got = run_spiral_on_book(positions, BookAccounts(book, accounts.__getitem__), prices, books, shocks=shock,
                             params=params)
    assert got.model_dump() == want.model_dump()


@settings(max_examples=60, deadline=None)
@given(book_case(), shocks, shocks, st.data())
def test_spirals_one_after_another_on_one_book_equal_the_scalar_spirals(
    case: tuple[list[Account], dict[str, float], RiskParams], first: dict[str, float], second: dict[str, float],
    data: st.DataObject,
) -> None:
    """Two spirals on one book (the second starts from the book left at the first's last
    prices), accounts on several venues, ids that sort out of book order, some repeated:
    each equals ``run_spiral`` to the last digit."""
    accounts, prices, params = case
    n = len(accounts)
    ids = data.draw(st.lists(st.sampled_from(["a10", "a2", "b", "a1", "Z"]), min_size=n, max_size=n))
    venues = data.draw(st.lists(st.sampled_from(["okx", "binance", "v"]), min_size=n, max_size=n))
    accounts = [a.model_copy(update={"account_id": i, "venue": v})
                for a, i, v in zip(accounts, ids, venues, strict=True)]
    books = data.draw(bid_books(prices))
    book = AccountBook(ColumnsBuilder(params).build(accounts), prices, params)
    for shock in (first, second):
        want = run_spiral([], accounts, prices, books, shocks=shock, params=params)
        got = run_spiral_on_book([], BookAccounts(book, accounts.__getitem__), prices, books, shocks=shock,
                                 params=params)
        assert got.model_dump() == want.model_dump()


@settings(max_examples=40, deadline=None)
@given(book_case(), st.lists(shocks, min_size=1, max_size=5), st.integers(1, 4), st.data())
def test_spirals_on_threads_equal_the_scalar_spirals(
    case: tuple[list[Account], dict[str, float], RiskParams], shock_list: list[dict[str, float]], threads: int,
    data: st.DataObject,
) -> None:
    """``run_spirals_on_book`` on 1–4 threads (each on its own copy of the book, the largest
    shocks first) gives each shock's ``run_spiral`` result, in the shocks' order (the loop
    positions' index by price key made once for all of them)."""
    accounts, prices, params = case
    books = data.draw(bid_books(prices))
    positions = data.draw(loop_positions(prices))
    book = AccountBook(ColumnsBuilder(params).build(accounts), prices, params)
    got = run_spirals_on_book(positions, BookAccounts(book, accounts.__getitem__), prices, books, shock_list,
                              params=params, threads=threads)
    want = [run_spiral(positions, accounts, prices, books, shocks=shock, params=params) for shock in shock_list]
    assert [r.model_dump() for r in got] == [r.model_dump() for r in want]


def test_a_copy_of_a_book_moves_apart_from_it() -> None:
    """A copy moved to other prices leaves the book as it was; moved to the same prices, the
    two agree to the last bit (a book's figures depend on its prices only)."""
    params = RiskParams()
    accounts = [Account.model_validate({"account_id": f"a{i}", "venue": "v", "model": "binance-pm", "balances": [
        {"asset": "BTC", "amount": 1.0 + i / 10, "price_key": "BTC"},
        {"asset": "USDT", "amount": -80_000.0, "price_key": "USDT"}]}) for i in range(10)]
    prices = {"BTC": 100_000.0, "USDT": 1.0}
    book = AccountBook(ColumnsBuilder(params).build(accounts), prices, params)
    before = book.figures()
    other = book.copy()
    assert other.move({"BTC": 70_000.0}).accounts.size > 0
    assert book.figures().status.tolist() == before.status.tolist()
    assert book.figures().adjusted_equity_usd.tolist() == before.adjusted_equity_usd.tolist()
    book.move({"BTC": 70_000.0})
    assert book.figures().adjusted_equity_usd.tolist() == other.figures().adjusted_equity_usd.tolist()
    assert book.figures().status.tolist() == other.figures().status.tolist()


def test_a_loop_liquidated_round_after_round_on_a_key_no_sale_moves() -> None:
    """A loop with a high threshold under water on a key with no bid book: each round's
    liquidation leaves it under water at the same prices, so the next round must look at it
    again although none of its keys moved (4 rounds); the book's run equals the reference."""
    params = RiskParams()
    prices = {"XYZ": 1.0, "USDC": 1.0, "BTC": 100_000.0, "USDT": 1.0}
    loop = Position(position_id="p", protocol="aave-v3",
                    collateral=(CollateralEntry(asset="XYZ", amount=1e7, liquidation_threshold=0.95,
                                                price_key="XYZ"),),
                    debt=(DebtEntry(asset="USDC", amount=1e7 * 0.95 / 0.99, price_key="USDC"),))
    accounts = [Account(account_id="a", venue="v", model="binance-pm",
                        balances=(Balance(asset="BTC", amount=1.0, price_key="BTC"),
                                  Balance(asset="USDT", amount=-20_000.0, price_key="USDT")))]
    want = run_spiral([loop], accounts, prices, {}, shocks={}, params=params)
    assert want.rounds == 4 and want.positions_liquidated == ["p"]
    book = AccountBook(ColumnsBuilder(params).build(accounts), prices, params)
    got = run_spiral_on_book([loop], BookAccounts(book, accounts.__getitem__), prices, {}, shocks={}, params=params)
    assert got.model_dump() == want.model_dump()
