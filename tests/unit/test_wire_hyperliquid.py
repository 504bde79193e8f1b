"""Hyperliquid parsers: l2Book full snapshots and trades."""

from __future__ import annotations

import pytest

from monitor.events import KIND_TRADE
from monitor.ingest.orderbook import ACTION_SNAPSHOT, RULE_SNAPSHOTS
from monitor.ingest.wire import WireError, normalize, parse_book

T0 = 1_760_130_000_000


def test_l2_book_snapshot() -> None:
    raw = {"channel": "l2Book", "data": {"coin": "BTC", "time": T0, "levels": [
        [{"px": "100000", "sz": "1.5", "n": 3}], [{"px": "100001", "sz": "0.5", "n": 1}]]}}
    (f,) = parse_book("hyperliquid", "l2Book", raw, T0, {}, 60_000) or []
    assert (f.rule, f.action, f.base, f.quote) == (RULE_SNAPSHOTS, ACTION_SNAPSHOT, "BTC", "USDC")
    assert f.bids == ((100000.0, 1.5),) and f.asks == ((100001.0, 0.5),)
    with pytest.raises(WireError):
        parse_book("hyperliquid", "l2Book", {"channel": "l2Book", "data": {**raw["data"], "levels": [[]]}},
                   T0, {}, 60_000)


def test_trades_side() -> None:
    raw = {"channel": "trades", "data": [
        {"coin": "SOL", "side": "A", "px": "180.5", "sz": "2", "hash": "0x0", "time": T0, "tid": 1,
         "users": ["0xa", "0xb"]},
        {"coin": "SOL", "side": "B", "px": "180.6", "sz": "1", "hash": "0x0", "time": T0, "tid": 2,
         "users": ["0xa", "0xb"]}]}
    evs = normalize("hyperliquid", "trades", raw, T0, {}, 60_000)
    assert [(e.kind, e.f3) for e in evs] == [(KIND_TRADE, -1.0), (KIND_TRADE, 1.0)]
