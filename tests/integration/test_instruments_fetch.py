"""``liqmon live`` fetches the venues' instrument tables at start from a loopback HTTP server
speaking the documented formats, records them, and a replay of the recording resolves
symbols with them.

Response bodies follow the venues' documentation (fields listed in
:mod:`monitor.ingest.wire.instrument_sources`), trimmed to a few instruments.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from benchmarks.e2e import HOST
from monitor.config import EngineConfig
from monitor.ingest.frames import INSTRUMENTS_CHANNEL, Ingest
from monitor.ingest.wire import WireError
from monitor.ingest.wire.instrument_sources import okx_instruments
from monitor.ingest.wire.instruments import KIND_FUTURE, KIND_OPTION, KIND_PERPETUAL, KIND_SPOT, resolve
from monitor.protocol import DeadLetter
from replay.capture import CaptureLine, iter_capture
from streams.feeds.config import InstrumentsConfig, LiveConfig, VenueFeed
from streams.feeds.instruments import fetch_instruments, wanted_venues
from streams.feeds.runner import LiveRunner, Recorder
from tests.integration.test_feeds_harness import EngineSink, Handler, loopback_routes

BINANCE_USDM = {"timezone": "UTC", "serverTime": 1624000000000, "symbols": [
    {"symbol": "BTCUSDT", "pair": "BTCUSDT", "contractType": "PERPETUAL", "deliveryDate": 4133404800000,
     "status": "TRADING", "baseAsset": "BTC", "quoteAsset": "USDT", "marginAsset": "USDT"},
    {"symbol": "BTCUSDT_210625", "pair": "BTCUSDT", "contractType": "CURRENT_QUARTER",
     "deliveryDate": 1624608000000, "status": "TRADING", "baseAsset": "BTC", "quoteAsset": "USDT",
     "marginAsset": "USDT"},
]}
BYBIT_LINEAR = {"retCode": 0, "retMsg": "OK", "result": {"category": "linear", "nextPageCursor": "", "list": [
    {"symbol": "BTCPERP", "contractType": "LinearPerpetual", "status": "Trading", "baseCoin": "BTC",
     "quoteCoin": "USDC", "settleCoin": "USDC", "deliveryTime": "0"},
    {"symbol": "BTC-26JUN25", "contractType": "LinearFutures", "status": "Trading", "baseCoin": "BTC",
     "quoteCoin": "USDC", "settleCoin": "USDC", "deliveryTime": "1750924800000"},
]}}
OKX: dict[str, Any] = {
    "SPOT": {"code": "0", "data": [{"instType": "SPOT", "instId": "BTC-USDT", "baseCcy": "BTC", "quoteCcy": "USDT",
                                    "ctVal": "", "ctMult": "", "ctType": ""}]},
    "SWAP": {"code": "0", "data": [{"instType": "SWAP", "instId": "DOGE-USDT-SWAP", "uly": "DOGE-USDT",
                                    "settleCcy": "USDT", "ctVal": "1000", "ctMult": "1", "ctValCcy": "DOGE",
                                    "ctType": "linear", "expTime": ""}]},
    "FUTURES": {"code": "0", "data": [{"instType": "FUTURES", "instId": "BTC-USD-220304", "uly": "BTC-USD",
                                       "settleCcy": "BTC", "ctVal": "100", "ctMult": "1", "ctValCcy": "USD",
                                       "ctType": "inverse", "expTime": "1646380800000"}]},
}
HL_META = {"universe": [{"name": "BTC", "szDecimals": 5, "maxLeverage": 40},
                        {"name": "kPEPE", "szDecimals": 0, "maxLeverage": 10}]}


@dataclass
class VenueInstruments:
    """Answers like the venues' instruments endpoints."""

    okx_swap: Any = field(default_factory=lambda: OKX["SWAP"])
    requests: list[str] = field(default_factory=list)
    port: int = 0

    def url(self, path: str) -> str:
        return f"http://{HOST}:{self.port}{path}"

    async def binance(self, request: web.Request) -> web.Response:
        self.requests.append("binance-usdm")
        return web.json_response(BINANCE_USDM)

    async def bybit(self, request: web.Request) -> web.Response:
        category = request.query.get("category", "")
        self.requests.append(f"bybit {category}")
        if category != "linear":
            return web.Response(status=503, text="busy")
        return web.json_response(BYBIT_LINEAR)

    async def okx(self, request: web.Request) -> web.Response:
        kind = request.query.get("instType", "")
        self.requests.append(f"okx {kind}")
        return web.json_response(self.okx_swap if kind == "SWAP" else OKX[kind])

    def routes(self) -> list[tuple[str, str, Handler]]:
        return [("GET", "/fapi/v1/exchangeInfo", self.binance), ("GET", "/v5/market/instruments-info", self.bybit),
                ("GET", "/api/v5/public/instruments", self.okx), ("POST", "/info", self.hyperliquid)]

    async def hyperliquid(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(f"hyperliquid {body}")
        return web.json_response(HL_META if body == {"type": "meta"} else {"error": "type"},
                                 status=200 if body == {"type": "meta"} else 422)


def _config(server: VenueInstruments, venues: tuple[str, ...], enabled: bool = True) -> LiveConfig:
    okx = server.url("/api/v5/public/instruments?instType=")
    bybit = server.url("/v5/market/instruments-info?category=")
    urls = {
        "binance-usdm": (server.url("/fapi/v1/exchangeInfo"),),
        "bybit-spot": (bybit + "spot",),
        "bybit-linear": (bybit + "linear",),
        "okx": (okx + "SPOT", okx + "SWAP", okx + "FUTURES"),
        "hyperliquid": (server.url("/info"),),
    }
    feeds = {v: VenueFeed(streams=("x",), ws_url=f"ws://{HOST}:1") for v in venues}
    return LiveConfig(venues=feeds, instruments=InstrumentsConfig(enabled=enabled, urls=urls, timeout_s=5.0))


ALL = ("binance-usdm", "bybit-spot", "bybit-linear", "okx", "hyperliquid")


async def test_fetches_each_venue_table_and_leaves_out_a_failing_one() -> None:
    server = VenueInstruments()
    async with loopback_routes(server.routes()) as server.port:
        got = await fetch_instruments(_config(server, ALL))
    assert sorted(got) == ["binance-usdm", "bybit-linear", "hyperliquid", "okx"]  # bybit-spot: 503
    assert got["binance-usdm"]["BTCUSDT_210625"].kind == KIND_FUTURE
    assert got["binance-usdm"]["BTCUSDT_210625"].asset == "BTC-20210625"
    assert got["bybit-linear"]["BTCPERP"].quote == "USDC"
    assert got["bybit-linear"]["BTCPERP"].kind == KIND_PERPETUAL
    okx = got["okx"]
    assert (okx["BTC-USDT"].kind, okx["DOGE-USDT-SWAP"].contract_value) == (KIND_SPOT, 1000.0)
    assert okx["BTC-USD-220304"].inverse and okx["BTC-USD-220304"].expiry_ms == 1646380800000
    assert sorted(got["hyperliquid"]) == ["BTC", "KPEPE"]
    assert "hyperliquid {'type': 'meta'}" in server.requests


async def test_nothing_is_fetched_when_disabled_or_for_venues_without_feeds() -> None:
    server = VenueInstruments()
    async with loopback_routes(server.routes()) as server.port:
        cfg = _config(server, ("okx", "binance-spot"))
        assert wanted_venues(cfg) == ["okx"]
        assert await fetch_instruments(_config(server, ALL, enabled=False)) == {}
    assert server.requests == []


async def test_a_malformed_table_is_left_out() -> None:
    broken = {"code": "0", "data": [{"instType": "SWAP", "instId": "DOGE-USDT-SWAP", "uly": "DOGE-USDT"}]}
    server = VenueInstruments(okx_swap=broken)
    async with loopback_routes(server.routes()) as server.port:
        got = await fetch_instruments(_config(server, ("okx", "hyperliquid")))
    assert sorted(got) == ["hyperliquid"]


async def test_recorded_tables_replay_to_the_same_sizes(tmp_path: Path) -> None:
    server = VenueInstruments()
    async with loopback_routes(server.routes()) as server.port:
        tables = await fetch_instruments(_config(server, ("okx",)))
    capture = tmp_path / "live.jsonl.gz"
    recorder = Recorder(capture)
    engine = EngineConfig()
    runner = LiveRunner(engine, LiveConfig(venues={}), EngineSink(engine), recorder=recorder, instruments=tables)
    await runner.run(0.05)
    recorder.close()
    frames = [x for x in iter_capture(capture) if isinstance(x, CaptureLine)]
    recorded = [f for f in frames if f.channel == INSTRUMENTS_CHANNEL]
    assert [f.venue for f in recorded] == ["okx"]
    assert runner.ingest.instruments["okx"]["DOGE-USDT-SWAP"].contract_value == 1000.0

    trade = {"arg": {"channel": "trades", "instId": "DOGE-USDT-SWAP"},
             "data": [{"instId": "DOGE-USDT-SWAP", "tradeId": "1", "px": "0.25", "sz": "3", "side": "buy",
                       "ts": str(recorded[0].ts_ms)}]}
    ts = recorded[0].ts_ms
    without = Ingest(engine)  # no table: DOGE-USDT has no built-in contract value
    (dead,) = [o for o in without.feed("okx", "trades", trade, ts, orjson.dumps(trade)) if isinstance(o, DeadLetter)]
    assert dead.reason == "unknown_contract_value"
    replayed = Ingest(engine)
    for f in frames:
        list(replayed.feed(f.venue, f.channel, f.raw, f.ts_ms, orjson.dumps(f.raw)))
    out = list(replayed.feed("okx", "trades", trade, ts, orjson.dumps(trade)))
    assert [o for o in out if isinstance(o, DeadLetter)] == []
    assert replayed.stats.events == 1
    assert replayed.instruments["okx"]["DOGE-USDT-SWAP"].base_qty(3, 0.25) == pytest.approx(3000.0)


def test_options_from_a_table_stay_refused() -> None:
    table = okx_instruments({"data": [{"instType": "OPTION", "instId": "BTC-USD-220304-32000-P", "uly": "BTC-USD",
                                       "settleCcy": "BTC", "ctVal": "0.01", "ctMult": "1", "ctValCcy": "BTC",
                                       "ctType": "", "expTime": "1646380800000"}]})
    assert table["BTC-USD-220304-32000-P"].kind == KIND_OPTION
    with pytest.raises(WireError) as err:
        resolve("okx", "BTC-USD-220304-32000-P", {}, instruments=table)
    assert err.value.reason == "unsupported_instrument"
