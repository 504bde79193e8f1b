"""OKX connector against a local websocket server: books with seqId/prevSeqId (heartbeats,
a break, resubscribe), text ping/pong, liquidations in contracts, garbage, dropped connection."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from monitor.events import KIND_BOOK_INVALID, KIND_LIQUIDATION
from tests.integration.test_feeds_harness import (
    Conn,
    Run,
    Script,
    WsServer,
    live_config,
    make_runner,
    now_ms,
    reference_book,
    run_until,
    ws_server,
)

pytestmark = pytest.mark.timeout(30)

INST = "BTC-USDT-SWAP"


def books(action: str, seq: int, prev: int, bids: list[list[str]], asks: list[list[str]]) -> dict[str, Any]:
    return {"arg": {"channel": "books", "instId": INST}, "action": action,
            "data": [{"asks": [[p, q, "0", "1"] for p, q in asks], "bids": [[p, q, "0", "1"] for p, q in bids],
                      "ts": str(now_ms()), "checksum": 0, "seqId": seq, "prevSeqId": prev}]}


def in_btc(levels: list[list[str]]) -> list[list[str]]:
    return [[p, str(float(q) * 0.01)] for p, q in levels]  # 0.01 BTC per contract


async def subscribed(conn: Conn) -> None:
    msg = await conn.recv_json()
    assert msg["op"] == "subscribe"
    for arg in msg["args"]:
        await conn.send({"event": "subscribe", "arg": arg, "connId": "a"})


async def fresh_snapshot(conn: Conn) -> None:
    """The next connection: subscribed, a snapshot at seqId 50, then quiet."""
    await subscribed(conn)
    await conn.send(books("snapshot", 50, -1, [["200", "1"]], [["201", "1"]]))
    await conn.idle()


async def reconnected(first: Script) -> tuple[WsServer, Run]:
    """A session whose first connection runs ``first`` and the next :func:`fresh_snapshot`,
    run until the book stands on the fresh snapshot."""
    async with ws_server([first, fresh_snapshot]) as ws:
        run = make_runner(live_config("okx", ws.url, (f"books:{INST}",)))
        await run_until(run, lambda: (s := run.runner.ingest.book("okx", INST)) is not None and s.valid
                        and s.last_id == 50)
    return ws, run


async def test_session_heartbeat_gap_and_resubscribe() -> None:
    snap2 = ([["99000", "300"]], [["99010", "100"]])
    after = ([["99000", "0"], ["98990", "50"]], [])

    async def script(conn: Conn) -> None:
        await subscribed(conn)
        await conn.send(books("snapshot", 100, -1, [["100000", "100"]], [["100010", "200"]]))
        await conn.send(books("update", 105, 100, [["100000", "150"]], []))
        await conn.send(books("update", 105, 105, [], []))  # heartbeat
        await conn.send(books("update", 130, 120, [], []))  # break: prevSeqId 120 != 105
        assert (await conn.recv_json())["op"] == "unsubscribe"
        assert (await conn.recv_json())["op"] == "subscribe"
        await conn.send(books("snapshot", 200, -1, *snap2))
        await conn.send(books("update", 210, 200, *after))
        await conn.send({"arg": {"channel": "liquidation-orders", "instType": "SWAP"}, "data": [
            {"instId": INST, "instType": "SWAP", "details": [
                {"side": "sell", "posSide": "long", "bkPx": "99000", "sz": "20", "bkLoss": "0", "ccy": "",
                 "ts": str(now_ms())}]}]})
        await conn.idle()

    async with ws_server([script]) as ws:
        run = make_runner(live_config("okx", ws.url, (f"books:{INST}", "liquidation-orders:SWAP")))
        await run_until(run, lambda: any(e.kind == KIND_LIQUIDATION for e in run.sink.events()))
    sync = run.runner.ingest.book("okx", INST)
    assert sync is not None and sync.valid and sync.last_id == 210
    assert sync.book.levels() == reference_book((in_btc(snap2[0]), in_btc(snap2[1])), [(in_btc(after[0]), [])])
    assert [a.evidence for a in run.sink.feed_alerts if a.kind == "book_gap"] == [
        {"symbol": INST, "expected": 105, "received": 120}]
    assert [(e.f1, e.f2) for e in run.sink.events() if e.kind == KIND_BOOK_INVALID] == [(105.0, 120.0)]
    assert run.metric("liqmon_feed_resyncs_total", venue="okx") == 2
    (liq,) = [e for e in run.sink.events() if e.kind == KIND_LIQUIDATION]
    assert liq.f3 == 1.0 and liq.f4 == pytest.approx(0.2 * 99000)


async def test_dropped_connection_resets_book_and_resubscribes() -> None:
    async def drops(conn: Conn) -> None:
        await subscribed(conn)
        await conn.send(books("snapshot", 1, -1, [["100", "1"]], [["101", "1"]]))
        await conn.send("garbage")
        conn.drop_mid_frame()

    ws, run = await reconnected(drops)
    assert len(ws.connections) == 2
    assert [d.reason for d in run.sink.deadletters] == ["invalid_json"]
    assert [(e.f1, e.f2) for e in run.sink.events() if e.kind == KIND_BOOK_INVALID] == [(0.0, 0.0)]
    assert run.metric("liqmon_feed_reconnects_total", venue="okx") == 1


async def test_a_refused_subscription_is_said_and_dead_lettered_with_the_venues_words(
        caplog: pytest.LogCaptureFixture) -> None:
    """OKX answers a subscription to an instrument it does not have with an ``error`` event;
    before, that frame was taken for an ack and dropped: the stream asked for never came,
    without a word, and its silence re-opened the connection every ``stale_after_s``. Now it
    is logged and dead-lettered (``subscription_refused``) with the venue's code and message,
    no longer watched on that connection, and the streams it did take go on undisturbed."""
    refused = {"event": "error", "code": "60018",
               "msg": "Wrong URL or channel:books,instId:NOPE-USDT-SWAP doesn't exist. Please use the correct URL, "
                      "channel and parameters referring to API document.", "connId": "a"}

    async def script(conn: Conn) -> None:
        msg = await conn.recv_json()
        assert msg["op"] == "subscribe"
        await conn.send({"event": "subscribe", "arg": msg["args"][0], "connId": "a"})
        await conn.send(refused)
        await conn.send(books("snapshot", 1, -1, [["100", "1"]], [["101", "1"]]))
        for _ in range(40):  # the stream taken keeps coming (OKX's heartbeats: seqId = prevSeqId) for 4 s
            await asyncio.sleep(0.1)
            await conn.send(books("update", 1, 1, [], []))
        await conn.idle()

    start = time.monotonic()
    async with ws_server([script]) as ws:
        cfg = live_config("okx", ws.url, (f"books:{INST}", "books:NOPE-USDT-SWAP"), stale_after_s=1.0)
        run = make_runner(cfg)
        await run_until(run, lambda: time.monotonic() - start > 3.0)
    (dead,) = run.sink.deadletters
    assert dead.reason == "subscription_refused" and dead.detail.startswith("okx: 60018 Wrong URL or channel:books,")
    said = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(said) == 1 and "NOPE-USDT-SWAP doesn't exist" in said[0] and "never a reason to re-open" in said[0]
    # The refused stream's silence is reported (its alert, its age) but never re-opens the
    # connection (before: every stale_after_s, the stream taken with it resynced each time).
    assert len(ws.connections) == 1 and run.metric("liqmon_feed_reconnects_total", venue="okx") == 0
    assert [a.evidence["channel"] for a in run.sink.feed_alerts if a.kind == "feed_stale"] == ["books:NOPE-USDT-SWAP"]
    assert run.metric("liqmon_feed_last_event_age_seconds", venue="okx", channel="books:NOPE-USDT-SWAP") > 1.0


async def test_a_service_upgrade_notice_reopens_the_connection_at_once(caplog: pytest.LogCaptureFixture) -> None:
    """OKX sends ``{"event":"notice","code":"64008"}`` about 60 s before it closes a
    connection for a service upgrade, and asks the client to reconnect. The connection is
    re-opened at once as a planned one (no backoff), and the book starts again from the new
    connection's snapshot (before: the notice was taken for an ack, and the venue's close
    came as an error a minute later)."""
    notice = {"event": "notice", "code": "64008", "msg": "The connection will soon be closed for a service "
              "upgrade. Please reconnect.", "connId": "a"}

    async def first(conn: Conn) -> None:
        await subscribed(conn)
        await conn.send(books("snapshot", 1, -1, [["100", "1"]], [["101", "1"]]))
        await conn.send(notice)
        await conn.idle()

    ws, run = await reconnected(first)
    assert len(ws.connections) == 2 and run.runner.connections[0].endings == ["planned"]
    assert run.runner.connections[0].backoff.attempt == 0  # no backoff before a planned re-opening
    said = [r.getMessage() for r in caplog.records if "will close the connection" in r.getMessage()]
    assert len(said) == 1 and "64008" in said[0]
