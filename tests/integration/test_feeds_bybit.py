"""Bybit connector against a local websocket server: snapshot/delta books, a skipped update id
(gap → resubscribe → fresh snapshot), the u = 1 restart snapshot, liquidations, garbage."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from monitor.events import KIND_BOOK_INVALID, KIND_LIQUIDATION
from tests.integration.test_feeds_harness import (
    Conn,
    live_config,
    make_runner,
    now_ms,
    reference_book,
    run_until,
    ws_server,
)

pytestmark = pytest.mark.timeout(30)

TOPIC = "orderbook.50.BTCUSDT"
SNAP = ([["100.0", "5"], ["99.5", "2"]], [["100.5", "4"], ["101.0", "3"]])


def book(kind: str, u: int, levels: tuple[list[list[str]], list[list[str]]]) -> dict[str, Any]:
    return {"topic": TOPIC, "type": kind, "ts": now_ms(), "cts": now_ms(),
            "data": {"s": "BTCUSDT", "b": levels[0], "a": levels[1], "u": u, "seq": u * 7}}


DELTAS = [([["99.5", "0"]], [["100.5", "6"]]), ([["99.0", "1"]], []), ([], [["101.0", "0"], ["102.0", "2"]])]


async def subscribed(conn: Conn) -> list[str]:
    msg = await conn.recv_json()
    assert msg["op"] == "subscribe"
    await conn.send({"success": True, "ret_msg": "", "conn_id": "x", "op": "subscribe"})
    return list(msg["args"])


async def test_session_gap_resubscribe_and_restart_snapshot() -> None:
    restart = ([["90.0", "1"]], [["91.0", "1"]])

    async def script(conn: Conn) -> None:
        await subscribed(conn)
        await conn.send(book("snapshot", 10, SNAP))
        for i, levels in enumerate(DELTAS):
            await conn.send(book("delta", 11 + i, levels))
        await conn.send(book("delta", 20, ([["1.0", "1"]], [])))  # 14..19 lost
        msg = await conn.recv_json()  # the client resubscribes to get a fresh snapshot
        assert msg == {"op": "unsubscribe", "args": [TOPIC]}
        assert (await conn.recv_json())["op"] == "subscribe"
        await conn.send(book("snapshot", 30, SNAP))
        await conn.send(book("delta", 31, DELTAS[0]))
        await asyncio.sleep(0.05)
        await conn.send(book("snapshot", 1, restart))  # service restart: u = 1
        await conn.send(book("delta", 2, DELTAS[1]))
        await conn.send({"topic": "allLiquidation.BTCUSDT", "type": "snapshot", "ts": now_ms(),
                         "data": [{"T": now_ms(), "s": "BTCUSDT", "S": "Buy", "v": "0.5", "p": "95000"}]})
        await conn.idle()

    async with ws_server([script]) as ws:
        run = make_runner(live_config("bybit-linear", ws.url, (TOPIC, "allLiquidation.BTCUSDT")))
        await run_until(run, lambda: any(e.kind == KIND_LIQUIDATION for e in run.sink.events()))
    sync = run.runner.ingest.book("bybit-linear", "BTCUSDT")
    assert sync is not None and sync.valid
    assert sync.book.levels() == reference_book(restart, [DELTAS[1]])
    assert [a.evidence for a in run.sink.feed_alerts if a.kind == "book_gap"] == [
        {"symbol": "BTCUSDT", "expected": 14, "received": 20}]
    assert run.metric("liqmon_feed_gaps_total", venue="bybit-linear") == 1
    assert run.metric("liqmon_feed_resyncs_total", venue="bybit-linear") == 2
    assert [(e.f1, e.f2) for e in run.sink.events() if e.kind == KIND_BOOK_INVALID] == [(14.0, 20.0)]
    (liq,) = [e for e in run.sink.events() if e.kind == KIND_LIQUIDATION]
    assert (liq.f3, liq.f4) == (1.0, 47_500.0)
    assert len(ws.connections) == 1


async def send_deltas(conn: Conn, ids: range) -> None:
    for u in ids:
        await conn.send(book("delta", u, DELTAS[1]))
        await asyncio.sleep(0.05)


async def test_a_malformed_snapshot_after_a_gap_is_resubscribed_again() -> None:
    """The snapshot a resubscription brings is refused (a dead letter): the book resubscribes
    again once ``snapshot_retry_ms`` has passed, and the next snapshot syncs it (before, it
    waited for the refused one for the rest of the session)."""
    async def script(conn: Conn) -> None:
        await subscribed(conn)
        await conn.send(book("snapshot", 10, SNAP))
        await conn.send(book("delta", 20, DELTAS[0]))  # 11..19 lost: a gap, a resubscription
        assert (await conn.recv_json()) == {"op": "unsubscribe", "args": [TOPIC]}
        await subscribed(conn)
        await conn.send(book("snapshot", 30, ([["x", "1"]], [])))
        deltas = asyncio.ensure_future(send_deltas(conn, range(31, 90)))  # 50 ms apart
        assert (await conn.recv_json()) == {"op": "unsubscribe", "args": [TOPIC]}  # after 1 s of them
        deltas.cancel()
        await subscribed(conn)
        await conn.send(book("snapshot", 70, SNAP))
        await conn.send(book("delta", 71, DELTAS[2]))
        await conn.idle()

    async with ws_server([script]) as ws:
        cfg = live_config("bybit-linear", ws.url, (TOPIC,)).model_copy(update={"snapshot_retry_ms": 1_000})
        run = make_runner(cfg)
        await run_until(run, lambda: (b := run.runner.ingest.book("bybit-linear", "BTCUSDT")) is not None
                        and b.valid and b.last_id == 71)
    assert [d.reason for d in run.sink.deadletters] == ["wrong_type"]
    assert [m["op"] for m in ws.connections[0].received] == [
        "subscribe", "unsubscribe", "subscribe", "unsubscribe", "subscribe"]
    assert run.runner.ingest.book("bybit-linear", "BTCUSDT").book.levels() == reference_book(SNAP, [DELTAS[2]])
    assert len(ws.connections) == 1


async def test_garbage_and_silence() -> None:
    async def script(conn: Conn) -> None:
        await subscribed(conn)
        await conn.send("<html>502</html>")
        await conn.send(book("snapshot", 10, ([["x", "1"]], [])))
        await conn.idle()  # then silence

    async with ws_server([script]) as ws:
        run = make_runner(live_config("bybit-linear", ws.url, (TOPIC,), stale_after_s=0.3))
        await run_until(run, lambda: any(a.kind == "feed_stale" for a in run.sink.feed_alerts))
    assert [d.reason for d in run.sink.deadletters][:2] == ["invalid_json", "wrong_type"]
    pings = [m for c in ws.connections for m in c.received if m.get("op") == "ping"]
    assert pings == [] or pings[0] == {"op": "ping"}
