"""OKX parsers: books with seqId/prevSeqId, liquidation posSide and contract values, trades."""

from __future__ import annotations

import pytest

from monitor.events import KIND_LIQUIDATION
from monitor.ingest.orderbook import ACTION_DELTA, ACTION_SNAPSHOT, RULE_OKX
from monitor.ingest.wire import WireError, normalize, parse_book
from monitor.ingest.wire.okx import contract_qty, parse_liquidations

T0 = 1_760_130_000_000


def books(action: str, seq: int, prev: int, bids: list[list[str]]) -> dict[str, object]:
    return {"arg": {"channel": "books", "instId": "BTC-USDT-SWAP"}, "action": action,
            "data": [{"asks": [["100001", "3", "0", "2"]], "bids": bids, "ts": str(T0),
                      "checksum": 0, "seqId": seq, "prevSeqId": prev}]}


def test_books_convert_contracts_and_carry_sequence() -> None:
    (f,) = parse_book("okx", "books", books("snapshot", 10, -1, [["99999", "200", "0", "5"]]), T0, {}, 60_000) or []
    assert (f.rule, f.action, f.last_id, f.prev_id) == (RULE_OKX, ACTION_SNAPSHOT, 10, -1)
    assert (f.base, f.quote) == ("BTC", "USDT")
    assert f.bids == ((99999.0, pytest.approx(2.0)),)  # 200 contracts × 0.01 BTC
    (g,) = parse_book("okx", "books", books("update", 10, 10, []), T0, {}, 60_000) or []
    assert (g.action, g.last_id, g.prev_id, g.bids) == (ACTION_DELTA, 10, 10, ())


@pytest.mark.parametrize(
    ("pos_side", "side", "long_liq"),
    [("long", "sell", 1.0), ("short", "buy", -1.0), ("net", "sell", 1.0), ("net", "buy", -1.0)],
)
def test_liquidation_side_and_usd_notional(pos_side: str, side: str, long_liq: float) -> None:
    raw = {"arg": {"channel": "liquidation-orders", "instType": "SWAP"},
           "data": [{"instId": "ETH-USDT-SWAP", "instType": "SWAP", "instFamily": "ETH-USDT",
                     "details": [{"side": side, "posSide": pos_side, "bkPx": "4000", "sz": "30",
                                  "bkLoss": "0", "ccy": "", "ts": str(T0)}]}]}
    (ev,) = normalize("okx", "liquidation-orders", raw, T0, {}, 60_000)
    assert (ev.kind, ev.base, ev.f3) == (KIND_LIQUIDATION, "ETH", long_liq)
    assert ev.f2 == pytest.approx(3.0) and ev.f4 == pytest.approx(12_000.0)


def test_inverse_and_unknown_contracts() -> None:
    assert contract_qty("BTC-USD-SWAP", 10, 100_000.0, {"BTC-USD": (100.0, "USD")}) == pytest.approx(0.01)
    assert contract_qty("BTC-USDT", 1.5, 100_000.0, {}) == 1.5  # spot: base units
    raw = {"arg": {"channel": "liquidation-orders", "instType": "SWAP"},
           "data": [{"instId": "PEPE-USDT-SWAP", "details": [{"side": "sell", "posSide": "long",
                     "bkPx": "0.00001", "sz": "5", "ts": str(T0)}]}]}
    with pytest.raises(WireError) as err:
        normalize("okx", "liquidation-orders", raw, T0, {}, 60_000)
    assert err.value.reason == "unknown_contract_value"
    (ev,) = parse_liquidations("okx", raw, T0, {}, 60_000, contract_values={"PEPE-USDT": (1e7, "PEPE")})
    assert ev.f2 == pytest.approx(5e7)


def test_trades() -> None:
    raw = {"arg": {"channel": "trades", "instId": "BTC-USDT-SWAP"},
           "data": [{"instId": "BTC-USDT-SWAP", "tradeId": "1", "px": "100000", "sz": "3", "side": "buy",
                     "ts": str(T0), "count": "1"}]}
    (ev,) = normalize("okx", "trades", raw, T0, {}, 60_000)
    assert (ev.f1, ev.f3) == (100000.0, 1.0) and ev.f2 == pytest.approx(0.03)
