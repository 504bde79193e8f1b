"""``liqmon live`` fetches the venues' margin tables at start from a loopback HTTP server
speaking the documented formats, records them, and ``liqmon stress`` uses the recording."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from benchmarks.e2e import HOST
from monitor.config import EngineConfig
from replay.capture import CaptureLine, iter_capture
from streams.cmd import stress as stress_cmd
from streams.feeds.config import LiveConfig, MarginTablesConfig, VenueFeed
from streams.feeds.margin_tables import fetch_margin_tables, wanted_parts
from streams.feeds.runner import LiveRunner, Recorder
from tests.integration.test_feeds_harness import EngineSink, loopback_routes
from tests.unit.test_venue_tables import (
    BYBIT_COLLATERAL,
    BYBIT_RISK_LIMIT,
    HL_META,
    OKX_DISCOUNT,
    OKX_POSITION_TIERS,
)


@dataclass
class VenueTables:
    """Answers like the venues: Hyperliquid POST /info, Bybit and OKX GETs."""

    hl: Any = field(default_factory=lambda: HL_META)
    bybit_status: int = 200
    requests: list[str] = field(default_factory=list)
    port: int = 0

    def url(self, path: str) -> str:
        return f"http://{HOST}:{self.port}{path}"

    async def info(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(f"hyperliquid {body}")
        if body != {"type": "meta"}:
            return web.json_response({"error": "unknown type"}, status=422)
        return web.json_response(self.hl)

    async def bybit(self, request: web.Request) -> web.Response:
        self.requests.append("bybit")
        if self.bybit_status != 200:
            return web.Response(status=self.bybit_status, text="busy")
        return web.json_response(BYBIT_COLLATERAL)

    async def okx(self, request: web.Request) -> web.Response:
        self.requests.append("okx")
        return web.json_response(OKX_DISCOUNT)

    async def risk_limit(self, request: web.Request) -> web.Response:
        q = request.query
        self.requests.append(f"bybit risk-limit {q['category']} {q['symbol']}")
        body = {**BYBIT_RISK_LIMIT, "result": {**BYBIT_RISK_LIMIT["result"], "list": [
            {**t, "symbol": q["symbol"]} for t in BYBIT_RISK_LIMIT["result"]["list"]]}}
        return web.json_response(body)

    async def position_tiers(self, request: web.Request) -> web.Response:
        q = request.query
        self.requests.append(f"okx position-tiers {q['instType']} {q['tdMode']} {q['instFamily']}")
        return web.json_response({**OKX_POSITION_TIERS, "data": [
            {**t, "instFamily": f, "uly": f} for f in q["instFamily"].split(",")
            for t in OKX_POSITION_TIERS["data"]]})


@asynccontextmanager
async def venue_tables(server: VenueTables) -> AsyncIterator[VenueTables]:
    async with loopback_routes([
        ("POST", "/info", server.info),
        ("GET", "/v5/spot-margin-trade/collateral", server.bybit),
        ("GET", "/api/v5/public/discount-rate-interest-free-quota", server.okx),
        ("GET", "/v5/market/risk-limit", server.risk_limit),
        ("GET", "/api/v5/public/position-tiers", server.position_tiers),
    ]) as server.port:
        yield server


def _config(server: VenueTables, venues: tuple[str, ...]) -> LiveConfig:
    tables = MarginTablesConfig(
        hyperliquid_url=server.url("/info"),
        bybit_url=server.url("/v5/spot-margin-trade/collateral"),
        okx_url=server.url("/api/v5/public/discount-rate-interest-free-quota"),
        bybit_risk_limit_url=server.url("/v5/market/risk-limit"),
        okx_position_tiers_url=server.url("/api/v5/public/position-tiers"),
        timeout_s=5.0,
    )
    feeds = {v: VenueFeed(streams=("x",), ws_url=f"ws://{HOST}:1") for v in venues}
    return LiveConfig(venues=feeds, margin_tables=tables)


async def test_fetches_the_tables_of_the_session_venues() -> None:
    async with venue_tables(VenueTables()) as server:
        got = await fetch_margin_tables(_config(server, ("hyperliquid", "bybit-linear", "okx")))
    assert {k: got[k] for k in ("hyperliquid", "bybit", "okx")} == {
        "hyperliquid": HL_META, "bybit": BYBIT_COLLATERAL, "okx": OKX_DISCOUNT}
    assert [r["result"]["list"][0]["symbol"] for r in got["bybit_risk_limit"]] == [
        "BTCUSDT", "ETHUSDT", "SOLUSDT"]
    assert len(got["okx_position_tiers"]) == 1
    assert server.requests == [
        "hyperliquid {'type': 'meta'}", "bybit", "okx",
        "bybit risk-limit linear BTCUSDT", "bybit risk-limit linear ETHUSDT",
        "bybit risk-limit linear SOLUSDT",
        "okx position-tiers SWAP cross BTC-USDT,ETH-USDT,SOL-USDT"]


async def test_only_venues_with_feeds_and_not_when_disabled() -> None:
    async with venue_tables(VenueTables()) as server:
        cfg = _config(server, ("okx", "binance-spot"))
        assert wanted_parts(cfg) == ["okx", "okx_position_tiers"]
        assert (await fetch_margin_tables(cfg))["okx"] == OKX_DISCOUNT
        off = cfg.model_copy(update={"margin_tables": cfg.margin_tables.model_copy(
            update={"enabled": False})})
        assert await fetch_margin_tables(off) == {}
    assert server.requests == ["okx", "okx position-tiers SWAP cross BTC-USDT,ETH-USDT,SOL-USDT"]


async def test_a_failing_or_malformed_venue_keeps_its_built_in_table() -> None:
    server = VenueTables(hl={"universe": [{"name": "BTC", "marginTableId": 99}]}, bybit_status=503)
    async with venue_tables(server):
        got = await fetch_margin_tables(_config(server, ("hyperliquid", "bybit-linear", "okx")))
    assert set(got) == {"okx", "bybit_risk_limit", "okx_position_tiers"}


async def test_recorded_tables_feed_liqmon_stress(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with venue_tables(VenueTables()) as server:
        tables = await fetch_margin_tables(_config(server, ("hyperliquid", "okx")))
    capture = tmp_path / "live.jsonl.gz"
    recorder = Recorder(capture)
    engine = EngineConfig()
    runner = LiveRunner(engine, LiveConfig(venues={}), EngineSink(engine), recorder=recorder,
                        margin_tables=tables)
    await runner.run(0.05)
    recorder.close()
    frames = [x for x in iter_capture(capture) if isinstance(x, CaptureLine)]
    recorded = {(f.venue, f.channel, next(iter(f.raw))) for f in frames if f.channel == "margin_tables"}
    assert recorded == {("liqmon", "margin_tables", part)
                        for part in ("hyperliquid", "okx", "okx_position_tiers")}
    assert runner.ingest.stats.deadletters.total() == 0

    accounts = tmp_path / "A.jsonl"
    accounts.write_text(json.dumps({
        "account_id": "h1", "venue": "hyperliquid", "model": "hyperliquid",
        "balances": [{"asset": "USDC", "amount": 999, "price_key": "USDC"}],
        "perps": [{"symbol": "NEW", "qty": 600, "entry_price": 10, "price_key": "NEW"}]}) + "\n"
        + json.dumps({
            "account_id": "o1", "venue": "okx", "model": "okx-mc",
            "balances": [{"asset": "USDT", "amount": 1_000_000, "price_key": "USDT"}],
            "perps": [{"symbol": "BTC-USDT-SWAP", "qty": 300, "entry_price": 100_000,
                       "price_key": "BTC"}]}) + "\n")
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"USDC": 1.0, "NEW": 10.0, "USDT": 1.0, "BTC": 100_000.0}))
    rc = stress_cmd.main(["--accounts", str(accounts), "--prices", str(prices),
                          "--margin-tables", str(capture)])
    doc = json.loads(capsys.readouterr().out)
    assert rc == 0
    # the recorded meta puts NEW on 3x: MM 1,000 > equity 999 (built-in 10x: MM 300)
    assert doc["accounts"][0]["maintenance_margin_usd"] == pytest.approx(1_000)
    assert doc["accounts"][0]["status"] == "liquidation"
    # the recorded OKX tiers end at 200 BTC (0.75%); the built-in ones put 300 BTC at 1.25%
    assert doc["accounts"][1]["maintenance_margin_usd"] == pytest.approx(30_000_000 * 0.0075)
    assert doc["perp_tables_sources"]["okx-mc"].startswith("margin_tables frame recorded")
