"""A reader behind its venue, against local websocket servers speaking Binance combined streams:
a burst larger than the shedding threshold is coalesced (book tickers keep their newest frame,
trades and book diffs all arrive, every shed frame is counted), a venue whose timestamps trail
receive time raises ``feed_lag`` and resolves it once the frames are fresh (the recorded session
replays to the same alerts), and the socket backlog of an unread connection is measured."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest
import websockets

from benchmarks.e2e import ws_frame
from monitor.events import KIND_QUOTE, KIND_TRADE
from replay.replayer import replay_inline
from streams.feeds.config import LiveConfig
from streams.feeds.overload import OverloadConfig, ReaderLag, socket_backlog
from streams.feeds.runner import Recorder
from tests.integration.test_feeds_binance import SNAP_A, ack, diff, diffs_from, snapshot
from tests.integration.test_feeds_harness import (
    Conn,
    live_config,
    make_runner,
    now_ms,
    reference_book,
    rest_server,
    run_until,
    ws_server,
)

pytestmark = pytest.mark.timeout(60)

TICKER_SYMBOLS = ("BTCUSDT", "ETHUSDT")
STREAMS = ("btcusdt@bookTicker", "ethusdt@bookTicker", "btcusdt@aggTrade", "btcusdt@depth@100ms")
ROUNDS = 300


def ticker(symbol: str, i: int) -> dict[str, Any]:
    bid = 100_000.0 + i if symbol == "BTCUSDT" else 4_000.0 + i
    return {"stream": f"{symbol.lower()}@bookTicker", "data": {
        "u": i, "s": symbol, "b": f"{bid:.2f}", "B": "1.5", "a": f"{bid + 0.5:.2f}", "A": "2.5"}}


def trade(i: int, ts_ms: int) -> dict[str, Any]:
    return {"stream": "btcusdt@aggTrade", "data": {
        "e": "aggTrade", "E": ts_ms, "s": "BTCUSDT", "a": i, "p": f"{100_000.0 + i:.1f}", "q": "0.010",
        "f": i, "l": i, "T": ts_ms, "m": bool(i % 2)}}


def overloaded(cfg: LiveConfig, shed_backlog_frames: int) -> LiveConfig:
    return cfg.model_copy(update={"overload": OverloadConfig(shed_backlog_frames=shed_backlog_frames)})


async def burst_session(shed_backlog_frames: int) -> tuple[Any, list[dict[str, Any]], list[int]]:
    """One write of ROUNDS × (two tickers, one trade) with book diffs among them; also the
    batches published at once after each backlog taken (the next frames are a backlog away)."""
    diffs = diffs_from(101, 20)  # the snapshot at 105 bridges the second diff
    sent: list[dict[str, Any]] = []
    for i in range(ROUNDS):
        sent += [ticker("BTCUSDT", i), ticker("ETHUSDT", i), trade(i, now_ms())]
        if i % 15 == 0 and diffs:
            first, last, b, a = diffs.pop(0)
            sent.append(diff(first, last, b, a))

    async def script(conn: Conn) -> None:
        await ack(conn)
        await asyncio.sleep(0.3)  # the REST snapshot first: the book then follows every diff
        conn.ws.transport.write(b"".join(ws_frame(orjson.dumps(f).decode()) for f in sent))
        await conn.idle()

    async with ws_server([script]) as ws, rest_server({"BTCUSDT": [snapshot(105, SNAP_A)]}) as rest:
        cfg = overloaded(live_config("binance-spot", ws.url, STREAMS, rest.url), shed_backlog_frames)
        run = make_runner(cfg)
        published_at_once: list[int] = []
        taken = run.runner.on_backlog_taken

        def spy(venue: str) -> None:
            queued = run.runner.backlog_items
            taken(venue)
            published_at_once.append(run.runner.backlog_items - queued)

        run.runner.on_backlog_taken = spy  # type: ignore[method-assign]
        await run_until(run, lambda: sum(e.kind == KIND_TRADE for e in run.sink.events()) >= ROUNDS
                        and (b := run.runner.ingest.book("binance-spot", "BTCUSDT")) is not None
                        and b.valid and b.last_id == 160)
    return run, sent, published_at_once


async def test_a_burst_is_coalesced_trades_and_diffs_all_arrive_every_shed_frame_counted() -> None:
    run, sent, published_at_once = await burst_session(shed_backlog_frames=16)
    assert published_at_once and sum(published_at_once) > 0  # batches of a backlog go out at once
    events = run.sink.events()
    trades = [e for e in events if e.kind == KIND_TRADE]
    assert [e.f1 for e in trades] == [100_000.0 + i for i in range(ROUNDS)]  # all of them, in order
    for symbol in TICKER_SYMBOLS:
        quotes = [e for e in events if e.kind == KIND_QUOTE and e.symbol == symbol]
        shed = run.metric("liqmon_feed_shed_frames_total", venue="binance-spot", channel=f"{symbol.lower()}@bookTicker")
        assert shed > 0
        assert len(quotes) + shed == ROUNDS  # nothing lost without a count
        last = ticker(symbol, ROUNDS - 1)["data"]
        assert (quotes[-1].f1, quotes[-1].f2) == (float(last["b"]), float(last["a"]))  # the newest survives
        assert [q.f1 for q in quotes] == sorted(q.f1 for q in quotes)  # in arrival order
    assert sum(run.runner.stats.shed.values()) == sum(
        run.metric("liqmon_feed_shed_frames_total", venue="binance-spot", channel=f"{s.lower()}@bookTicker")
        for s in TICKER_SYMBOLS)
    # Every diff reached the book: it equals one rebuilt from the snapshot and all diffs after it.
    book = run.runner.ingest.book("binance-spot", "BTCUSDT")
    diffs = [f["data"] for f in sent if f["stream"].endswith("@depth@100ms") and f["data"]["u"] > 105]
    expected = reference_book(SNAP_A, [(d["b"], d["a"]) for d in diffs])
    assert book is not None and book.book.levels() == expected
    assert run.metric("liqmon_feed_gaps_total", venue="binance-spot") == 0


async def test_without_shedding_the_same_burst_delivers_every_quote() -> None:
    run, _, published_at_once = await burst_session(shed_backlog_frames=0)
    assert published_at_once == []
    quotes = [e for e in run.sink.events() if e.kind == KIND_QUOTE]
    assert len(quotes) == ROUNDS * len(TICKER_SYMBOLS)
    assert sum(run.runner.stats.shed.values()) == 0


async def test_a_lagging_venue_raises_feed_lag_and_resolves_it_and_a_replay_agrees(tmp_path: Path) -> None:
    behind_ms = 15_000

    async def script(conn: Conn) -> None:
        await ack(conn)
        i = 0
        for behind in (behind_ms, 0):  # 1 s of trades stamped 15 s ago, then fresh ones
            for _ in range(25):
                await conn.send(trade(i, now_ms() - behind))
                i += 1
                await asyncio.sleep(0.04)
        while True:
            await conn.send(trade(i, now_ms()))
            i += 1
            await asyncio.sleep(0.04)

    path = tmp_path / "live.jsonl.gz"
    recorder = Recorder(path)
    async with ws_server([script]) as ws:
        cfg = live_config("binance-spot", ws.url, ("btcusdt@aggTrade",))
        run = make_runner(cfg, recorder=recorder)
        await run_until(run, lambda: [a.evidence["level"] for a in run.sink.feed_alerts if a.kind == "feed_lag"]
                        == ["high", "normal"], timeout_s=20)
    recorder.close()
    lags = [a for a in run.sink.feed_alerts if a.kind == "feed_lag"]
    assert [(a.severity, a.evidence["previous_level"], a.evidence["resolved"]) for a in lags] == [
        ("high", "normal", False), ("info", "high", True)]
    assert 10.0 <= lags[0].evidence["lag_s"] < 20.0  # 15 s behind (thresholds: high 10 s, critical 30 s)
    assert lags[0].evidence["event_lag_s"] == lags[0].evidence["lag_s"]
    assert lags[1].evidence["lag_s"] < 5.0  # below clear_ratio × the high threshold
    assert lags[0].venue == "binance-spot" and lags[0].alert_id != lags[1].alert_id
    assert run.metric("liqmon_feed_lag_seconds", venue="binance-spot") < 5.0
    replayed = await replay_inline(path, run.runner.engine_config)
    assert [a.to_json() for a in replayed.alerts if a.kind == "feed_lag"] == [a.to_json() for a in lags]


async def test_an_unread_connection_shows_its_backlog() -> None:
    text = orjson.dumps(ticker("BTCUSDT", 1))
    frame = ws_frame(text.decode())
    n_frames = 500  # within the loopback socket buffers: all of it reaches the client

    async def script(conn: Conn) -> None:
        await conn.ws.recv()
        conn.ws.transport.write(frame * n_frames)
        await conn.idle()

    async with ws_server([script]) as ws, websockets.connect(ws.url, proxy=None, compression=None) as client:
        await client.send("go")
        queued = waiting = 0
        for _ in range(100):  # until the kernel and the client hold what the server wrote
            await asyncio.sleep(0.05)
            queued, waiting = socket_backlog(client)
            if waiting >= len(text) * n_frames:
                break
        # Frames parsed into the client count their payload, bytes still in the kernel or the
        # client's buffer count whole: between the two totals, whatever the split.
        assert queued > 0
        assert len(text) * n_frames <= waiting <= len(frame) * n_frames
        lag = ReaderLag(0.0)
        for tick_s in (1.0, 2.0):  # a backlog counts once it outlasts a tick
            lag.on_frame(1_000, 0, None)
            sample = lag.sample(tick_s, queued, waiting)
        assert sample.backlog_bytes == waiting and sample.backlog_s == pytest.approx(waiting / 1_000)
        assert sample.lag_s == sample.backlog_s and sample.event_lag_s is None
