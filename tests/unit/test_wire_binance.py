"""Binance parsers: markPrice, forceOrder, depth diffs and REST snapshots (documented shapes)."""

from __future__ import annotations

from typing import Any

import pytest

from monitor.events import KIND_LIQUIDATION, KIND_PRICE
from monitor.ingest.orderbook import ACTION_DELTA, ACTION_SNAPSHOT, RULE_BINANCE_SPOT, RULE_BINANCE_USDM
from monitor.ingest.wire import WireError, is_book_channel, normalize, parse_book

T0 = 1_760_130_000_000
ALIASES = {"USDE": "USDe"}


def norm(venue: str, channel: str, raw: Any) -> list[Any]:
    return normalize(venue, channel, raw, T0 + 5, ALIASES, 60_000)


def test_mark_price_single_and_all_market() -> None:
    one = {"e": "markPriceUpdate", "E": T0, "s": "BTCUSDT", "p": "104000.5", "i": "104010",
           "P": "104001", "r": "0.0001", "T": T0 + 3_600_000}
    (ev,) = norm("binance-usdm", "btcusdt@markPrice@1s", {"stream": "btcusdt@markPrice@1s", "data": one})
    assert (ev.kind, ev.venue, ev.base, ev.quote, ev.f1, ev.ts_ms) == (
        KIND_PRICE, "binance-usdm", "BTC", "USDT", 104000.5, T0)
    arr = [one, {**one, "s": "ETHUSDT", "p": "3900"}]
    evs = norm("binance-usdm", "!markPrice@arr@1s", {"stream": "!markPrice@arr@1s", "data": arr})
    assert [(e.base, e.f1) for e in evs] == [("BTC", 104000.5), ("ETH", 3900.0)]


@pytest.mark.parametrize(("side", "long_liq"), [("SELL", 1.0), ("BUY", -1.0)])
def test_force_order_side_and_notional(side: str, long_liq: float) -> None:
    raw = {"e": "forceOrder", "E": T0, "o": {"s": "SOLUSDT", "S": side, "o": "LIMIT", "f": "IOC",
           "q": "10", "p": "180.0", "ap": "181.5", "X": "FILLED", "l": "4", "z": "8", "T": T0}}
    (ev,) = norm("binance-usdm", "!forceOrder@arr", {"stream": "!forceOrder@arr", "data": raw})
    assert ev.kind == KIND_LIQUIDATION
    assert (ev.f1, ev.f2, ev.f3, ev.f4) == (181.5, 8.0, long_liq, 181.5 * 8.0)


def test_force_order_unfilled_uses_order_quantity_and_price() -> None:
    raw = {"e": "forceOrder", "E": T0, "o": {"s": "SOLUSDT", "S": "SELL", "q": "10", "p": "180",
           "ap": "0", "z": "0", "T": T0}}
    (ev,) = norm("binance-usdm", "solusdt@forceOrder", raw)
    assert (ev.f1, ev.f2, ev.f4) == (180.0, 10.0, 1800.0)
    with pytest.raises(WireError) as err:
        norm("binance-usdm", "solusdt@forceOrder", {**raw, "o": {**raw["o"], "S": "sell"}})
    assert err.value.reason == "wrong_value"


def test_depth_diff_spot_and_futures() -> None:
    spot = {"e": "depthUpdate", "E": T0, "s": "BTCUSDT", "U": 157, "u": 160,
            "b": [["0.0024", "10"]], "a": [["0.0026", "0"]]}
    assert is_book_channel("binance-spot", "btcusdt@depth@100ms")
    assert not is_book_channel("binance-spot", "btcusdt@bookTicker")
    (f,) = parse_book("binance-spot", "btcusdt@depth@100ms", {"stream": "x", "data": spot}, T0, ALIASES, 60_000) or []
    assert (f.rule, f.action, f.first_id, f.last_id, f.prev_id) == (RULE_BINANCE_SPOT, ACTION_DELTA, 157, 160, -1)
    assert f.bids == ((0.0024, 10.0),) and f.asks == ((0.0026, 0.0),)
    fut = {**spot, "T": T0, "pu": 149}
    (g,) = parse_book("binance-usdm", "btcusdt@depth@100ms", fut, T0, ALIASES, 60_000) or []
    assert (g.rule, g.prev_id) == (RULE_BINANCE_USDM, 149)
    with pytest.raises(WireError):
        parse_book("binance-usdm", "btcusdt@depth", spot, T0, ALIASES, 60_000)  # futures need pu


def test_depth_snapshot_names_symbol_from_channel() -> None:
    raw = {"lastUpdateId": 1027024, "bids": [["4.00000000", "431.00000000"]], "asks": [["4.00000200", "12.0"]]}
    (f,) = parse_book("binance-spot", "usdeusdt@depthSnapshot", raw, T0, ALIASES, 60_000) or []
    assert (f.symbol, f.base, f.quote, f.action, f.last_id, f.ts_ms) == (
        "USDEUSDT", "USDe", "USDT", ACTION_SNAPSHOT, 1027024, T0)
    with pytest.raises(WireError) as err:
        parse_book("binance-spot", "usdeusdt@depthSnapshot", {"bids": [], "asks": []}, T0, ALIASES, 60_000)
    assert err.value.reason == "missing_field"
