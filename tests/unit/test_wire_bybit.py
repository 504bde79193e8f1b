"""Bybit v5 parsers: orderbook snapshot/delta, allLiquidation side and notional, publicTrade."""

from __future__ import annotations

import pytest

from monitor.events import KIND_LIQUIDATION, KIND_TRADE
from monitor.ingest.orderbook import ACTION_DELTA, ACTION_SNAPSHOT, RULE_BYBIT
from monitor.ingest.wire import WireError, normalize, parse_book

T0 = 1_760_130_000_000


def test_orderbook_snapshot_and_delta() -> None:
    snap = {"topic": "orderbook.50.BTCUSDT", "type": "snapshot", "ts": T0,
            "data": {"s": "BTCUSDT", "b": [["17440.00", "40.833"]], "a": [["17440.50", "78.815"]],
                     "u": 1, "seq": 22520573250}, "cts": T0 - 2}
    (f,) = parse_book("bybit-linear", "orderbook.50.BTCUSDT", snap, T0, {}, 60_000) or []
    assert (f.rule, f.action, f.last_id, f.symbol) == (RULE_BYBIT, ACTION_SNAPSHOT, 1, "BTCUSDT")
    delta = {**snap, "type": "delta", "data": {**snap["data"], "u": 2, "b": [], "a": [["17440.50", "0"]]}}
    (g,) = parse_book("bybit-linear", "orderbook.50.BTCUSDT", delta, T0, {}, 60_000) or []
    assert (g.action, g.last_id, g.asks) == (ACTION_DELTA, 2, ((17440.5, 0.0),))
    with pytest.raises(WireError):
        parse_book("bybit-linear", "orderbook.50.BTCUSDT", {**snap, "type": "partial"}, T0, {}, 60_000)


@pytest.mark.parametrize(("side", "long_liq"), [("Buy", 1.0), ("Sell", -1.0)])
def test_all_liquidation(side: str, long_liq: float) -> None:
    raw = {"topic": "allLiquidation.ROSEUSDT", "type": "snapshot", "ts": T0,
           "data": [{"T": T0 - 10, "s": "ROSEUSDT", "S": side, "v": "20000", "p": "0.04499"}]}
    (ev,) = normalize("bybit-linear", "allLiquidation.ROSEUSDT", raw, T0, {}, 60_000)
    assert (ev.kind, ev.base, ev.f1, ev.f2, ev.f3) == (KIND_LIQUIDATION, "ROSE", 0.04499, 20000.0, long_liq)
    assert ev.f4 == pytest.approx(899.8)


def test_public_trade_taker_side() -> None:
    raw = {"topic": "publicTrade.BTCUSDT", "type": "snapshot", "ts": T0,
           "data": [{"T": T0, "s": "BTCUSDT", "S": "Sell", "v": "0.5", "p": "100000", "L": "MinusTick",
                     "i": "x", "BT": False}]}
    (ev,) = normalize("bybit-linear", "publicTrade.BTCUSDT", raw, T0, {}, 60_000)
    assert (ev.kind, ev.f1, ev.f2, ev.f3) == (KIND_TRADE, 100000.0, 0.5, -1.0)
