"""The batch liquidation engine on the columnar book (``monitor.accounts.vector_engine``) against
the scalar reference :func:`monitor.models.margin.liquidate_account` (RISK_MODEL §3): random
accounts of every model (binance-pm, bybit-uta, okx-mc, hyperliquid), random tiers and
shocks. No tolerance: each row performs the scalar operations in the scalar order, so the
actions, the uncovered shortfall and the balances and perps left are compared with ``==``.
Accounts the batch does not lay out (perps without a settlement-asset balance) are the
scalar engine's; the test checks that split too."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings

from benchmarks.accounts import PRICES_USD, AccountsFromColumns, synthetic_accounts
from monitor.accounts.book import AccountBook
from monitor.accounts.columns import ColumnsBuilder
from monitor.accounts.vector_engine import book_layout, layout_fits, liquidate_layout
from monitor.models.margin import Account, ForcedSell, liquidate_account
from monitor.risk_params import ENGINE_MIN_SALE_USD, RiskParams
from tests.unit.test_account_book import book_case, shocks


def _check(accounts: list[Account], prices: dict[str, float], params: RiskParams) -> int:
    """Every fitting account through both engines; the number compared."""
    book = AccountBook(ColumnsBuilder(params).build(accounts), prices, params)
    rows = np.arange(len(accounts), dtype=np.int64)
    layout = book_layout(book, rows)
    fits = layout_fits(book.columns, layout.model, layout.balance, layout.perp, params)
    for row, ok in zip(rows.tolist(), fits.tolist(), strict=True):
        acct = accounts[int(book.order[row])]
        venue = params.unified.venue(acct.model)
        has_settle = any(b.asset == venue.settlement_asset for b in acct.balances)
        assert ok == (not acct.perps or has_settle), acct.account_id
    compared = 0
    for result in liquidate_layout(book.columns, layout.take(fits), params):
        shortfall = result.uncovered_usd
        assert shortfall is not None
        for k, row in enumerate(result.rows.tolist()):
            acct = accounts[int(book.order[row])]
            after, actions, short = liquidate_account(acct, prices, params)
            assert [ForcedSell(**a._asdict()) for a in result.actions(k, book.columns)] == actions, acct.account_id
            assert float(shortfall[k]) == short, acct.account_id
            balances = [float(x) for x, e in zip(result.balance_after[k], result.balance[k], strict=True) if e >= 0]
            assert balances == [b.amount for b in after.balances], acct.account_id
            perps = [float(q) for q, e, f in zip(result.perp_qty_after[k], result.perp[k], result.close_frac[k],
                                                 strict=True) if e >= 0 and f < 1.0]
            assert perps == [p.qty for p in after.perps], acct.account_id
            compared += 1
    return compared


@settings(max_examples=400, deadline=None)
@given(book_case(), shocks)
def test_batch_engine_equals_the_scalar_engine(
    case: tuple[list[Account], dict[str, float], RiskParams], shock: dict[str, float]
) -> None:
    accounts, prices, params = case
    shocked = {k: v * (1.0 + shock.get(k, 0.0)) for k, v in prices.items()}
    _check(accounts, shocked, params)


def test_engine_sells_collateral_closes_perps_and_settles() -> None:
    """A fixed case through every branch: loans repaid from collateral, perps closed, a
    realised loss settled from collateral (so the comparison above is not vacuous)."""
    params = RiskParams()
    accounts = [
        Account.model_validate({"account_id": f"a{m}", "venue": "v", "model": m, "balances": [
            {"asset": "BTC", "amount": 1.0, "price_key": "BTC"},
            {"asset": "USDT", "amount": -90_000.0, "price_key": "USDT"},
            {"asset": "USDC", "amount": -1_000.0, "price_key": "USDC"}],
            "perps": [{"symbol": "ETHUSDT", "qty": 20.0, "entry_price": 4_000.0, "price_key": "ETH"}]})
        for m in ("binance-pm", "bybit-uta", "okx-mc", "hyperliquid")]
    prices = {"BTC": 100_000.0, "USDT": 1.0, "USDC": 1.0, "ETH": 3_000.0}
    assert _check(accounts, prices, params) == 4
    book = AccountBook(ColumnsBuilder(params).build(accounts), prices, params)
    results = liquidate_layout(book.columns, book_layout(book, np.arange(4, dtype=np.int64)), params)
    kinds = {a.kind for r in results for k in range(r.rows.shape[0]) for a in r.actions(k, book.columns)}
    assert kinds == {"collateral", "perp"}


def test_a_holding_whose_value_underflows_is_not_sold() -> None:
    """5e-324 BTC at 0.5 is worth 0.0: neither engine sells it (the scalar one used to divide
    by that value for its rate)."""
    params = RiskParams()
    accounts = [Account.model_validate({"account_id": "a", "venue": "v", "model": "binance-pm", "balances": [
        {"asset": "BTC", "amount": 5e-324, "price_key": "BTC"},
        {"asset": "USDT", "amount": -10.0, "price_key": "USDT"}]})]
    prices = {"BTC": 0.5, "USDT": 1.0}
    assert _check(accounts, prices, params) == 1
    _, actions, short = liquidate_account(accounts[0], prices, params)
    assert actions == [] and short > 0


def test_the_engine_takes_no_step_of_rounding_size() -> None:
    """The target reached to the last bit leaves 1e-12 USD "to sell" and 1e-12 of MM "to
    free" (RISK_MODEL §3): the engine makes no sale and no close of ENGINE_MIN_SALE_USD or
    less, on a first pass or on a second at the same prices — in both engines (a spiral
    counted such steps as rounds of their own)."""
    params = RiskParams()
    columns = synthetic_accounts(3_000, seed=1, params=params)
    docs = AccountsFromColumns(columns)
    accounts = [docs(i) for i in range(columns.n_accounts)]
    for moves in ({"USDe@binance": 0.8}, {"BTC": 0.8, "ETH": 0.8, "SOL": 0.75}):
        prices = {**PRICES_USD, **{k: PRICES_USD[k] * m for k, m in moves.items()}}
        after = []
        for acct in accounts:
            left, actions, _ = liquidate_account(acct, prices, params)
            _, again, _ = liquidate_account(left, prices, params)
            assert all(a.usd > ENGINE_MIN_SALE_USD for a in [*actions, *again]), acct.account_id
            if actions:
                after.append(left)
        assert len(after) > 300
        assert _check(accounts, prices, params) == len(accounts)
        assert _check(after, prices, params) == len(after)
