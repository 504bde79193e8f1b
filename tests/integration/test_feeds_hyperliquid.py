"""Hyperliquid connector against a local websocket server: l2Book snapshots, trades, the
application-level ping, and silence after the subscription."""

from __future__ import annotations

from typing import Any

import pytest

from monitor.events import KIND_BOOK, KIND_BOOK_INVALID, KIND_TRADE
from tests.integration.test_feeds_harness import Conn, live_config, make_runner, now_ms, run_until, ws_server

pytestmark = pytest.mark.timeout(30)


def l2(bids: list[tuple[str, str]], asks: list[tuple[str, str]]) -> dict[str, Any]:
    return {"channel": "l2Book", "data": {"coin": "BTC", "time": now_ms(), "levels": [
        [{"px": p, "sz": q, "n": 1} for p, q in bids], [{"px": p, "sz": q, "n": 1} for p, q in asks]]}}


async def test_snapshots_trades_and_silence() -> None:
    async def script(conn: Conn) -> None:
        for _ in range(2):
            msg = await conn.recv_json()
            assert msg["method"] == "subscribe"
            await conn.send({"channel": "subscriptionResponse", "data": msg})
        await conn.send(l2([("100", "1"), ("99", "2")], [("101", "1")]))
        await conn.send(l2([("100.5", "3")], [("101", "1"), ("102", "4")]))  # a full book replaces the last
        await conn.send({"channel": "trades", "data": [
            {"coin": "BTC", "side": "A", "px": "100.4", "sz": "0.3", "hash": "0x0", "time": now_ms(), "tid": 1,
             "users": ["0xa", "0xb"]}]})
        await conn.idle()  # l2Book goes silent; trades too

    async def quiet(conn: Conn) -> None:
        await conn.idle()

    async with ws_server([script, quiet]) as ws:
        cfg = live_config("hyperliquid", ws.url, ("l2Book:BTC", "trades:BTC"), stale_after_s=0.4)
        run = make_runner(cfg)
        run.runner.connections[0].adapter.ping_interval_s = 0.1
        # The book reset follows the stale report once the old connection has closed.
        await run_until(run, lambda: any(a.kind == "feed_stale" for a in run.sink.feed_alerts)
                        and any(e.kind == KIND_BOOK_INVALID for e in run.sink.events()))
    books = [e for e in run.sink.events() if e.kind in (KIND_BOOK, KIND_BOOK_INVALID)]
    # Two full books (the second within 100 ms is throttled), then the stale reconnect resets the book.
    assert [(e.kind, e.f1, e.f2) for e in books] == [(KIND_BOOK, 100.0, 101.0), (KIND_BOOK_INVALID, 0.0, 0.0)]
    sync = run.runner.ingest.book("hyperliquid", "BTC")
    assert sync is not None and not sync.valid and sync.book.levels() == ([], [])
    (trade,) = [e for e in run.sink.events() if e.kind == KIND_TRADE]
    assert (trade.quote, trade.f1, trade.f3) == ("USDC", 100.4, -1.0)
    assert {"method": "ping"} in ws.connections[0].received
    assert {a.evidence["channel"] for a in run.sink.feed_alerts} <= {"l2Book:BTC", "trades:BTC"}
