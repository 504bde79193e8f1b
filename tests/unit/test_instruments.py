"""Instrument model per venue: every kind on every venue, the three reported mis-parses,
the ``instruments`` capture frame, and dated futures on their own price keys.

Frame shapes follow FEEDS.md and the venues' documentation; the reported symbols come
from issue 16 (frames Binance, Bybit and OKX really sent).
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from monitor.config import EngineConfig
from monitor.events import KIND_LIQUIDATION, KIND_PRICE, KIND_TRADE
from monitor.ingest.frames import INSTRUMENTS_CHANNEL, Ingest, Routed
from monitor.ingest.wire import WireError, normalize, parse_book
from monitor.ingest.wire.instruments import (
    KIND_FUTURE,
    KIND_PERPETUAL,
    KIND_SPOT,
    Instrument,
    fallback_instrument,
    instruments_raw,
    parse_instruments,
    resolve,
)
from monitor.protocol import DeadLetter
from monitor.stages.engine import Engine

T0 = 1_760_130_000_000  # 2025-10-10 21:00 UTC
T21 = 1_624_000_000_000  # 2021-06-18, before the June 2021 quarterly delivery
JUN25_2021_08H = 1_624_608_000_000  # 2021-06-25 08:00 UTC


# -- the three reported mis-parses ------------------------------------------------------


def _usdm(channel: str, data: Any) -> list[Any]:
    return normalize("binance-usdm", channel, {"stream": channel, "data": data}, T21 + 5, {}, 60_000)


def test_binance_delivery_contract_is_a_dated_future_in_every_channel() -> None:
    sym = "BTCUSDT_210625"
    trade = {"e": "aggTrade", "E": T21, "s": sym, "a": 1, "p": "35000.1", "q": "0.5",
             "f": 1, "l": 1, "T": T21, "m": True}
    mark = {"e": "markPriceUpdate", "E": T21, "s": sym, "p": "35010", "i": "35000", "P": "35005",
            "r": "", "T": 0}
    liq = {"e": "forceOrder", "E": T21, "o": {"s": sym, "S": "SELL", "o": "LIMIT", "f": "IOC", "q": "2",
           "p": "34000", "ap": "34100", "X": "FILLED", "l": "2", "z": "2", "T": T21}}
    (t,) = _usdm("btcusdt_210625@aggTrade", trade)
    (m,) = _usdm("btcusdt_210625@markPrice", mark)
    (lq,) = _usdm("!forceOrder@arr", liq)
    for ev in (t, m, lq):
        assert (ev.symbol, ev.base, ev.quote) == (sym, "BTC-20210625", "USDT")
    assert (t.kind, t.f1, t.f2, m.kind, m.f1) == (KIND_TRADE, 35000.1, 0.5, KIND_PRICE, 35010.0)
    assert (lq.kind, lq.f2, lq.f3, lq.f4) == (KIND_LIQUIDATION, 2.0, 1.0, 68200.0)
    diff = {"e": "depthUpdate", "E": T21, "T": T21, "s": sym, "U": 5, "u": 7, "pu": 4,
            "b": [["34990", "1"]], "a": [["35020", "2"]]}
    (book,) = parse_book("binance-usdm", "btcusdt_210625@depth@100ms",
                         {"stream": "btcusdt_210625@depth@100ms", "data": diff}, T21 + 5, {}, 60_000) or []
    assert (book.symbol, book.base, book.quote) == (sym, "BTC-20210625", "USDT")


def test_bybit_usdc_perpetual_is_accepted() -> None:
    raw = {"topic": "publicTrade.BTCPERP", "type": "snapshot", "ts": T0,
           "data": [{"T": T0, "s": "BTCPERP", "S": "Sell", "v": "0.25", "p": "100000", "L": "MinusTick",
                     "i": "x", "BT": False}]}
    (ev,) = normalize("bybit-linear", "publicTrade.BTCPERP", raw, T0, {}, 60_000)
    assert (ev.base, ev.quote, ev.f1, ev.f2, ev.f3) == ("BTC", "USDC", 100000.0, 0.25, -1.0)
    liq = {"topic": "allLiquidation.BTCPERP", "type": "snapshot", "ts": T0,
           "data": [{"T": T0, "s": "BTCPERP", "S": "Buy", "v": "0.1", "p": "99000"}]}
    (lq,) = normalize("bybit-linear", "allLiquidation.BTCPERP", liq, T0, {}, 60_000)
    assert (lq.base, lq.quote, lq.f3, lq.f4) == ("BTC", "USDC", 1.0, pytest.approx(9900.0))


def _okx_trades(*items: dict[str, Any]) -> dict[str, Any]:
    return {"arg": {"channel": "trades", "instId": items[0]["instId"]}, "data": list(items)}


def _okx_trade(inst_id: str, px: str, sz: str) -> dict[str, Any]:
    return {"instId": inst_id, "tradeId": "1", "px": px, "sz": sz, "side": "sell", "ts": "1646380800000"}


def test_okx_option_trade_is_refused_not_sized_as_the_future() -> None:
    raw = _okx_trades(_okx_trade("BTC-USD-220304-32000-P", "0.001", "85"))
    with pytest.raises(WireError) as err:
        normalize("okx", "trades", raw, 1_646_380_800_100, {}, 60_000)
    assert err.value.reason == "unsupported_instrument"
    assert "BTC-USD-220304-32000-P" in err.value.detail


def test_okx_frame_with_an_option_keeps_its_other_trades() -> None:
    ingest = Ingest(EngineConfig())
    raw = _okx_trades(_okx_trade("BTC-USD-220304-32000-P", "0.001", "85"),
                      _okx_trade("BTC-USDT", "42000", "0.5"))
    out = list(ingest.feed("okx", "trades", raw, 1_646_380_800_100, orjson.dumps(raw)))
    (dead,) = [o for o in out if isinstance(o, DeadLetter)]
    assert dead.reason == "unsupported_instrument"
    assert ingest.stats.deadletters["unsupported_instrument"] == 1 and ingest.stats.events == 1


# -- every kind on every venue (built-in fallback) ------------------------------------


@pytest.mark.parametrize(
    ("venue", "symbol", "expected"),
    [
        ("binance-spot", "ETHBTC", Instrument("ETHBTC", "ETH", "BTC", "BTC", KIND_SPOT)),
        ("binance-usdm", "BTCUSDT", Instrument("BTCUSDT", "BTC", "USDT", "USDT", KIND_PERPETUAL)),
        ("binance-usdm", "ETHUSDT_211231",
         Instrument("ETHUSDT_211231", "ETH", "USDT", "USDT", KIND_FUTURE, expiry_ms=1_640_937_600_000)),
        ("bybit-spot", "BTCUSDC", Instrument("BTCUSDC", "BTC", "USDC", "USDC", KIND_SPOT)),
        ("bybit-linear", "SOLUSDT", Instrument("SOLUSDT", "SOL", "USDT", "USDT", KIND_PERPETUAL)),
        ("bybit-linear", "ETHPERP", Instrument("ETHPERP", "ETH", "USDC", "USDC", KIND_PERPETUAL)),
        ("bybit-linear", "BTC-26JUN25",
         Instrument("BTC-26JUN25", "BTC", "USDC", "USDC", KIND_FUTURE, expiry_ms=1_750_924_800_000)),
        ("bybit-linear", "BTCUSDT-26JUN25",
         Instrument("BTCUSDT-26JUN25", "BTC", "USDT", "USDT", KIND_FUTURE, expiry_ms=1_750_924_800_000)),
        ("okx", "BTC-USDT", Instrument("BTC-USDT", "BTC", "USDT", "USDT", KIND_SPOT)),
        ("okx", "ETH-USDT-SWAP",
         Instrument("ETH-USDT-SWAP", "ETH", "USDT", "USDT", KIND_PERPETUAL, contract_value=0.1)),
        ("okx", "BTC-USD-SWAP",
         Instrument("BTC-USD-SWAP", "BTC", "USD", "BTC", KIND_PERPETUAL, contract_value=100.0, inverse=True)),
        ("okx", "BTC-USD-220304",
         Instrument("BTC-USD-220304", "BTC", "USD", "BTC", KIND_FUTURE, expiry_ms=1_646_380_800_000,
                    contract_value=100.0, inverse=True)),
        ("hyperliquid", "BTC", Instrument("BTC", "BTC", "USDC", "USDC", KIND_PERPETUAL)),
        ("hyperliquid", "PURR/USDC", Instrument("PURR/USDC", "PURR", "USDC", "USDC", KIND_SPOT)),
    ],
)
def test_fallback_names_each_kind(venue: str, symbol: str, expected: Instrument) -> None:
    assert fallback_instrument(venue, symbol, {}) == expected


@pytest.mark.parametrize(
    ("venue", "symbol", "reason"),
    [
        ("binance-usdm", "BTC-210625-30000-C", "unsupported_instrument"),
        ("bybit-linear", "BTC-26JUN25-100000-C", "unsupported_instrument"),
        ("okx", "BTC-USD-220304-32000-P", "unsupported_instrument"),
        ("okx", "PEPE-USDT-SWAP", "unknown_contract_value"),
        ("okx", "BTC-USD-991340", "unknown_symbol"),  # month 13
        ("okx", "BTC-USD-WEIRD", "unknown_symbol"),
        ("bybit-linear", "BTC-31FOO25", "unknown_symbol"),
        ("hyperliquid", "@107", "unknown_symbol"),
        ("binance-spot", "???", "unknown_symbol"),
    ],
)
def test_fallback_refuses_what_it_cannot_size(venue: str, symbol: str, reason: str) -> None:
    with pytest.raises(WireError) as err:
        resolve(venue, symbol, {})
    assert err.value.reason == reason


def test_sizes_follow_the_instrument() -> None:
    inverse = resolve("okx", "BTC-USD-SWAP", {})
    assert inverse.base_qty(10, 100_000.0) == pytest.approx(0.01)  # 10 × 100 USD / price
    linear = resolve("okx", "BTC-USDT-SWAP", {})
    assert linear.base_qty(200, 100_000.0) == pytest.approx(2.0)  # 200 × 0.01 BTC
    assert resolve("binance-usdm", "BTCUSDT", {}).base_qty(1.5, 1.0) == 1.5


def test_dated_future_asset_differs_from_the_perpetual() -> None:
    assert resolve("okx", "BTC-USD-220527", {}).asset == "BTC-20220527"
    assert resolve("okx", "BTC-USD-SWAP", {}).asset == "BTC"
    assert resolve("bybit-linear", "BTC-26JUN25", {}).asset == "BTC-20250626"


# -- the instruments table and its capture frame -------------------------------------


TABLE_RAW = {"instruments": [
    {"symbol": "BTC-USDT-SWAP", "base": "BTC", "quote": "USDT", "settle": "USDT", "kind": "perpetual",
     "contract_value": 0.001, "contract_multiplier": 1, "inverse": False},
    {"symbol": "USDEUSDT", "base": "USDE", "quote": "USDT", "settle": "USDT", "kind": "spot"},
    {"symbol": "BTC-USD-250328-90000-C", "base": "BTC", "quote": "USD", "settle": "BTC", "kind": "option",
     "expiry_ms": 1_743_148_800_000, "contract_value": 0.01},
]}


def test_instruments_frame_round_trips_and_applies_aliases() -> None:
    table = parse_instruments(TABLE_RAW, {"USDE": "USDe"})
    assert table["USDEUSDT"].base == "USDe"
    assert table["BTC-USDT-SWAP"].contract_value == 0.001
    assert parse_instruments(instruments_raw(table), {"USDE": "USDe"}) == table


def test_table_entry_wins_over_the_fallback_and_options_stay_refused() -> None:
    table = parse_instruments(TABLE_RAW)
    assert resolve("okx", "BTC-USDT-SWAP", {}, instruments=table).base_qty(200, 1.0) == pytest.approx(0.2)
    with pytest.raises(WireError) as err:
        resolve("okx", "BTC-USD-250328-90000-C", {}, instruments=table)
    assert err.value.reason == "unsupported_instrument"


def _okx_book(inst_id: str) -> dict[str, Any]:
    return {"arg": {"channel": "books", "instId": inst_id}, "action": "snapshot",
            "data": [{"asks": [["100001", "100", "0", "2"]], "bids": [["99999", "200", "0", "5"]],
                      "ts": str(T0), "checksum": 0, "seqId": 10, "prevSeqId": -1}]}


def test_ingest_sizes_with_the_recorded_instruments_frame() -> None:
    ingest = Ingest(EngineConfig())
    assert list(ingest.feed("okx", INSTRUMENTS_CHANNEL, TABLE_RAW, T0, orjson.dumps(TABLE_RAW))) == []
    assert ingest.watermark_ms is None  # configuration, not market data
    ingest.feed("okx", "books", _okx_book("BTC-USDT-SWAP"), T0, b"")
    frames = parse_book("okx", "books", _okx_book("BTC-USDT-SWAP"), T0, {}, 60_000,
                        instruments=ingest.instruments["okx"]) or []
    assert frames[0].bids == ((99999.0, pytest.approx(0.2)),)  # 200 × 0.001 from the table


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ([1], "wrong_type"),
        ({"instruments": "x"}, "wrong_type"),
        ({"instruments": [{"symbol": "X", "base": "X", "quote": "Y", "settle": "Y", "kind": "swap"}]},
         "wrong_value"),
        ({"instruments": [{"symbol": "X", "base": "X", "quote": "Y", "settle": "Y", "kind": "future"}]},
         "missing_field"),
        ({"instruments": [{"symbol": "X", "base": "X", "quote": "Y", "settle": "Y", "kind": "spot",
                           "contract_value": 0}]}, "wrong_value"),
        ({"instruments": [{"symbol": "X", "base": "X", "quote": "Y", "settle": "Y", "kind": "spot",
                           "inverse": "no"}]}, "wrong_type"),
    ],
)
def test_bad_instruments_frame_is_dead_lettered_and_changes_nothing(raw: Any, reason: str) -> None:
    ingest = Ingest(EngineConfig())
    (dead,) = list(ingest.feed("okx", INSTRUMENTS_CHANNEL, raw, T0, orjson.dumps(raw)))
    assert isinstance(dead, DeadLetter) and dead.reason == reason
    assert ingest.instruments == {}


def test_dated_future_publishes_its_own_price_key() -> None:
    cfg = EngineConfig()
    ingest, engine = Ingest(cfg), Engine(cfg)
    frames = [
        ("btcusdt@bookTicker", {"u": 1, "s": "BTCUSDT", "b": "100000", "B": "1", "a": "100001", "A": "1"}),
        ("btcusdt_251226@bookTicker",
         {"u": 2, "s": "BTCUSDT_251226", "b": "101500", "B": "1", "a": "101501", "A": "1"}),
    ]
    routed: list[Routed] = []
    for channel, raw in frames:
        routed += [r for r in ingest.feed("binance-usdm", channel, raw, T0, orjson.dumps(raw))
                   if isinstance(r, Routed)]
    routed += [r for r in ingest.finish() if isinstance(r, Routed)]
    assert sorted(r.batch.asset for r in routed if r.batch.tick_ms is None) == ["BTC", "BTC-20251226"]
    keys: dict[str, float] = {}
    for r in routed:
        if r.batch.tick_ms is None:
            for _ts, _asset, _seq, kind, payload in engine.process(r.batch).signals:
                if kind == "price":
                    keys[payload["key"]] = payload["price"]
    assert keys["BTC-20251226@binance-usdm"] == pytest.approx(101500.5, rel=1e-3)
    assert keys["BTC@binance-usdm"] == pytest.approx(100000.5, rel=1e-3)


def test_a_symbol_resolved_again_follows_a_replaced_contract_value_table() -> None:
    """Fallback instruments are remembered per (venue, symbol), but only with the very
    aliases and contract values they came from: a new contract-value table (as a
    ``contract_values`` frame brings) gives the new contract value, and a symbol the table
    does not know still fails."""
    first = {"BTC-USDT": (0.01, "BTC")}
    second = {"BTC-USDT": (0.001, "BTC")}
    aliases: dict[str, str] = {}
    one = resolve("okx", "BTC-USDT-SWAP", aliases, first)
    assert resolve("okx", "BTC-USDT-SWAP", aliases, first) is one and one.contract_value == 0.01
    assert resolve("okx", "BTC-USDT-SWAP", aliases, second).contract_value == 0.001
    assert resolve("okx", "BTC-USDT-SWAP", {"BTC": "XBT"}, second).base == "XBT"
    with pytest.raises(WireError, match="no contract value"):
        resolve("okx", "ETH-USDT-SWAP", aliases, second)
