"""The re-evaluation skip of unified accounts never hides a status change (RISK_MODEL §3)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.models.margin import Account, evaluate_account
from monitor.risk_params import RiskParams
from monitor.stages.global_risk.risk import price_key_units, status_slack_usd

PARAMS = RiskParams()
KEYS = ("USDe@binance", "BTC", "ETH", "BNSOL@binance")


def account(usde: float, btc: float, loan_usdt: float, eth_perp: float) -> Account:
    return Account.model_validate({
        "account_id": "a", "venue": "binance", "model": "binance-pm",
        "balances": [
            {"asset": "USDe", "amount": usde, "price_key": "USDe@binance"},
            {"asset": "BTC", "amount": btc, "price_key": "BTC"},
            {"asset": "USDT", "amount": -loan_usdt, "price_key": "USDT"},
        ],
        "perps": [{"symbol": "ETHUSDT", "qty": eth_perp, "entry_price": 4000.0, "price_key": "ETH"}],
    })


@settings(max_examples=300, deadline=None)
@given(
    st.floats(0, 5e6), st.floats(0, 30), st.floats(0, 6e6), st.floats(-500, 500),
    st.lists(st.floats(-0.6, 0.6), min_size=4, max_size=4),
)
def test_moves_below_the_slack_keep_the_status(
    usde: float, btc: float, loan: float, perp: float, moves: list[float]
) -> None:
    acct = account(usde, btc, loan, perp)
    before = {"USDe@binance": 1.0, "BTC": 110_000.0, "ETH": 4_000.0, "BNSOL@binance": 200.0, "USDT": 1.0}
    r0 = evaluate_account(acct, before, PARAMS, with_forced_sells=False)
    slack = status_slack_usd(r0.adjusted_equity_usd, r0.maintenance_margin_usd, PARAMS.unified.venue("binance-pm"))
    units = price_key_units(acct)
    after = dict(before)
    for key, m in zip(KEYS, moves, strict=True):
        after[key] = before[key] * (1 + m)
    moved = sum(u * abs(after[k] - before[k]) for k, u in units.items())
    r1 = evaluate_account(acct, after, PARAMS, with_forced_sells=False)
    if moved < slack:
        assert r1.status == r0.status
    # The bound is a bound: equity and MM each moved by at most the move.
    assert abs(r1.adjusted_equity_usd - r0.adjusted_equity_usd) <= moved + 1e-6 * (1 + moved)
    assert abs(r1.maintenance_margin_usd - r0.maintenance_margin_usd) <= moved + 1e-6 * (1 + moved)
