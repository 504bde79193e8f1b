"""Binance connectors against local websocket and REST servers: the snapshot procedure, gaps,
restarts, silence on the split futures endpoint, dropped connections, garbage, backoff,
handler errors, and a recorded session replayed to identical alerts."""

from __future__ import annotations

import asyncio
import errno
import itertools
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from monitor.events import KIND_BOOK, KIND_BOOK_INVALID, KIND_QUOTE
from replay.replayer import replay_inline
from streams.feeds.runner import Recorder
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

pytestmark = pytest.mark.timeout(30)

Levels = list[list[str]]
SNAP_A = ([["100.0", "5"], ["99.5", "2"], ["99.0", "1"]], [["100.5", "4"], ["101.0", "3"]])


def diff(first: int, last: int, bids: Levels, asks: Levels, futures: bool = False) -> dict[str, Any]:
    data: dict[str, Any] = {"e": "depthUpdate", "E": now_ms(), "s": "BTCUSDT", "U": first, "u": last,
                            "b": bids, "a": asks}
    if futures:
        data |= {"T": now_ms(), "pu": first - 1}
    return {"stream": "btcusdt@depth@100ms", "data": data}


def snapshot(last_id: int, levels: tuple[Levels, Levels]) -> dict[str, Any]:
    return {"lastUpdateId": last_id, "bids": levels[0], "asks": levels[1]}


def diffs_from(start: int, n: int, seed_px: float = 99.0) -> list[tuple[int, int, Levels, Levels]]:
    out = []
    for i in range(n):
        first = start + 3 * i
        px = seed_px - 0.5 * (i % 4)
        ask = f"{101.0 + 0.5 * (i % 3):.1f}"
        out.append((first, first + 2, [[f"{px:.1f}", str(i % 3)]], [[ask, str((i + 1) % 2)]]))
    return out


async def ack(conn: Conn) -> None:
    sub = await conn.recv_json()
    assert sub["method"] == "SUBSCRIBE"
    await conn.send({"result": None, "id": sub["id"]})


def diffs_script(diffs: list[tuple[int, int, Levels, Levels]], pause_s: float) -> Callable[[Conn], Awaitable[None]]:
    """A server script: acknowledge the subscription, send ``diffs`` ``pause_s`` apart, idle."""
    async def script(conn: Conn) -> None:
        await ack(conn)
        for first, last, b, a in diffs:
            await conn.send(diff(first, last, b, a))
            await asyncio.sleep(pause_s)
        await conn.idle()

    return script


def book_levels(run: Any, venue: str = "binance-spot") -> Any:
    book = run.runner.ingest.book(venue, "BTCUSDT")
    return None if book is None or not book.valid else book.book.levels()


async def test_normal_session_book_equals_rebuild() -> None:
    diffs = diffs_from(101, 12)  # u = 103, 106, ...; the snapshot at 105 bridges with 104..106
    async with ws_server([diffs_script(diffs, 0.01)]) as ws, rest_server({"BTCUSDT": [snapshot(105, SNAP_A)]}) as rest:
        run = make_runner(live_config("binance-spot", ws.url, ("btcusdt@depth@100ms",), rest.url))
        final_u = diffs[-1][1]
        await run_until(run, lambda: (b := run.runner.ingest.book("binance-spot", "BTCUSDT")) is not None
                        and b.valid and b.last_id == final_u)
    expected = reference_book(SNAP_A, [(b, a) for _f, u, b, a in diffs if u > 105])
    assert book_levels(run) == expected
    assert rest.requests[0] == {"symbol": "BTCUSDT", "limit": "1000"}
    assert ws.connections[0].ws.request is not None and ws.connections[0].ws.request.path == "/stream"
    assert run.metric("liqmon_feed_resyncs_total", venue="binance-spot") == 1
    assert run.metric("liqmon_feed_gaps_total", venue="binance-spot") == 0
    assert any(e.kind == KIND_BOOK and e.f1 < e.f2 for e in run.sink.events())


async def test_skipped_sequence_is_a_gap_then_resync() -> None:
    before = diffs_from(101, 4)  # up to u = 112
    after = diffs_from(116, 6)  # 113..115 never sent
    snap_b = ([["98.0", "7"]], [["102.0", "7"]])

    async def script(conn: Conn) -> None:
        await ack(conn)
        for first, last, b, a in before:
            await conn.send(diff(first, last, b, a))
            await asyncio.sleep(0.03)
        for first, last, b, a in after:
            await conn.send(diff(first, last, b, a))
            await asyncio.sleep(0.03)
        await conn.idle()

    snaps = {"BTCUSDT": [snapshot(105, SNAP_A), snapshot(118, snap_b)]}
    async with ws_server([script]) as ws, rest_server(snaps) as rest:
        run = make_runner(live_config("binance-spot", ws.url, ("btcusdt@depth@100ms",), rest.url))
        final_u = after[-1][1]
        await run_until(run, lambda: (b := run.runner.ingest.book("binance-spot", "BTCUSDT")) is not None
                        and b.valid and b.last_id == final_u)
    assert book_levels(run) == reference_book(snap_b, [(b, a) for _f, u, b, a in after if u > 118])
    gaps = [a for a in run.sink.feed_alerts if a.kind == "book_gap"]
    assert len(gaps) == 1 and gaps[0].evidence == {"symbol": "BTCUSDT", "expected": 113, "received": 116}
    assert run.metric("liqmon_feed_gaps_total", venue="binance-spot") == 1
    assert run.metric("liqmon_feed_resyncs_total", venue="binance-spot") == 2
    invalid = [e for e in run.sink.events() if e.kind == KIND_BOOK_INVALID]
    assert [(e.f1, e.f2) for e in invalid] == [(113.0, 116.0)]


async def test_dropped_mid_frame_reconnects_and_restarts_from_fresh_snapshot() -> None:
    first = diffs_from(101, 4)
    second = diffs_from(5001, 5)  # the venue restarted: a new sequence

    async def drops(conn: Conn) -> None:
        await ack(conn)
        for f, u, b, a in first:
            await conn.send(diff(f, u, b, a))
            await asyncio.sleep(0.03)
        conn.drop_mid_frame()

    async def restarted(conn: Conn) -> None:
        await ack(conn)
        for f, u, b, a in second:
            await conn.send(diff(f, u, b, a))
            await asyncio.sleep(0.03)
        await conn.idle()

    snap_c = ([["97.0", "1"]], [["103.0", "1"]])
    snaps = {"BTCUSDT": [snapshot(105, SNAP_A), snapshot(5003, snap_c)]}
    async with ws_server([drops, restarted]) as ws, rest_server(snaps) as rest:
        run = make_runner(live_config("binance-spot", ws.url, ("btcusdt@depth@100ms",), rest.url))
        final_u = second[-1][1]
        await run_until(run, lambda: (b := run.runner.ingest.book("binance-spot", "BTCUSDT")) is not None
                        and b.valid and b.last_id == final_u)
    assert len(ws.connections) == 2
    assert book_levels(run) == reference_book(snap_c, [(b, a) for _f, u, b, a in second if u > 5003])
    assert run.metric("liqmon_feed_reconnects_total", venue="binance-spot") == 1
    assert run.metric("liqmon_feed_gaps_total", venue="binance-spot") == 0  # a drop is a reset, not a gap
    invalid = [e for e in run.sink.events() if e.kind == KIND_BOOK_INVALID]
    assert [(e.f1, e.f2) for e in invalid] == [(0.0, 0.0)]
    assert run.runner.connections[0].endings[0].startswith("closed")


async def test_a_malformed_rest_snapshot_is_dead_lettered_and_fetched_again() -> None:
    """A depth snapshot answered 200 with a body the parser refuses is a dead letter; the
    book asks again after ``snapshot_retry_ms`` and the second snapshot syncs it (before, the
    book waited for the refused snapshot for the rest of the session)."""
    diffs = diffs_from(101, 40)
    bad = {"lastUpdateId": 105, "bids": [["100.0", "five"]], "asks": []}
    snaps = {"BTCUSDT": [bad, snapshot(130, SNAP_A)]}
    async with ws_server([diffs_script(diffs, 0.05)]) as ws, rest_server(snaps) as rest:
        cfg = live_config("binance-spot", ws.url, ("btcusdt@depth@100ms",), rest.url).model_copy(
            update={"snapshot_retry_ms": 1_000})
        run = make_runner(cfg)
        final_u = diffs[-1][1]
        await run_until(run, lambda: (b := run.runner.ingest.book("binance-spot", "BTCUSDT")) is not None
                        and b.valid and b.last_id == final_u)
    assert [d.reason for d in run.sink.deadletters] == ["wrong_type"]
    assert len(rest.requests) == 2
    assert book_levels(run) == reference_book(SNAP_A, [(b, a) for _f, u, b, a in diffs if u > 130])
    assert run.metric("liqmon_feed_resyncs_total", venue="binance-spot") == 1
    assert ws.connections and len(ws.connections) == 1  # no reconnect: the stream was never at fault


@pytest.mark.parametrize("name", ["full.jsonl", "full.jsonl.gz"])
async def test_a_recording_that_cannot_be_written_stops_and_the_session_goes_on(
        tmp_path: Path, name: str, caplog: pytest.LogCaptureFixture) -> None:
    """``--record`` onto a full disk (``/dev/full``): before, every frame's write raised in
    the frame handler, so no frame reached ingest (the monitor went blind), and the last
    flush raised out of the run. Now the recording stops at the first failure, once, and
    every frame still reaches the book."""
    (tmp_path / name).symlink_to("/dev/full")
    recorder = Recorder(tmp_path / name)
    diffs = diffs_from(101, 300)  # ≈ 50 KB of frames: past the file's buffers
    async with ws_server([diffs_script(diffs, 0.002)]) as ws, \
            rest_server({"BTCUSDT": [snapshot(105, SNAP_A)]}) as rest:
        run = make_runner(live_config("binance-spot", ws.url, ("btcusdt@depth@100ms",), rest.url), recorder=recorder)
        final_u = diffs[-1][1]
        await run_until(run, lambda: (b := run.runner.ingest.book("binance-spot", "BTCUSDT")) is not None
                        and b.valid and b.last_id == final_u)
    assert book_levels(run) == reference_book(SNAP_A, [(b, a) for _f, u, b, a in diffs if u > 105])
    assert run.runner.stats.handler_errors == 0
    assert recorder.error is not None and recorder.error.errno == errno.ENOSPC
    assert run.metric("liqmon_recording_failed") == 1
    stopped = [r for r in caplog.records if "recording to" in r.getMessage()]
    assert len(stopped) == 1 and "No space left on device" in stopped[0].getMessage()
    recorder.close()  # after the stop: nothing more to do, no error


async def test_silent_market_endpoint_is_stale_and_reconnected() -> None:
    paths: list[str] = []

    async def silent(conn: Conn) -> None:
        paths.append(conn.ws.request.path if conn.ws.request else "")
        await ack(conn)
        await conn.idle()

    async with ws_server([silent]) as ws:
        cfg = live_config("binance-usdm", ws.url, ("!forceOrder@arr", "btcusdt@markPrice@1s"), stale_after_s=0.4)
        run = make_runner(cfg)
        await run_until(run, lambda: len(ws.connections) >= 2 and bool(run.sink.feed_alerts))
    assert set(paths) == {"/market/stream"}
    stale = [a for a in run.sink.feed_alerts if a.kind == "feed_stale"]
    assert [a.evidence["channel"] for a in stale] == ["btcusdt@markPrice@1s"]  # liquidations may be quiet
    # Detected within one watchdog tick of the timeout (0.05 s), plus scheduling slack.
    assert 0.4 < stale[0].evidence["age_s"] < 0.4 + 0.05 + 0.25
    assert run.metric("liqmon_feed_last_event_age_seconds", venue="binance-usdm",
                      channel="btcusdt@markPrice@1s") > 0.0
    assert run.runner.connections[0].endings[0] == "stale"


async def test_garbage_is_dead_lettered_without_reconnecting() -> None:
    bad_level = diff(1, 2, [["100", "lots"]], [])

    async def garbage(conn: Conn) -> None:
        await ack(conn)
        await conn.send("this is not json {")
        await conn.send({"unexpected": True})
        await conn.send(bad_level)
        await conn.send({"stream": "btcusdt@bookTicker", "data": {"u": 1, "s": "BTCUSDT", "b": "100", "B": "1",
                                                                  "a": "100.1", "A": "1"}})
        await conn.idle()

    async with ws_server([garbage]) as ws:
        run = make_runner(live_config("binance-spot", ws.url, ("btcusdt@depth@100ms", "btcusdt@bookTicker")))
        await run_until(run, lambda: len(run.sink.deadletters) >= 3 and any(
            e.kind == KIND_QUOTE for e in run.sink.events()))
    assert [d.reason for d in run.sink.deadletters] == ["invalid_json", "unroutable", "wrong_type"]
    assert run.sink.deadletters[0].raw == b"this is not json {"
    assert len(ws.connections) == 1


async def test_handler_error_is_reported_not_a_reconnect_loop() -> None:
    async def two_quotes(conn: Conn) -> None:
        await ack(conn)
        for i in range(2):
            await conn.send({"stream": "btcusdt@bookTicker", "data": {"u": i, "s": "BTCUSDT", "b": "100", "B": "1",
                                                                      "a": "100.1", "A": "1"}})
        await conn.idle()

    async with ws_server([two_quotes]) as ws:
        run = make_runner(live_config("binance-spot", ws.url, ("btcusdt@bookTicker",)))
        real_feed = run.runner.ingest.feed
        calls = {"n": 0}

        def flaky(*args: Any, **kwargs: Any) -> Any:
            if args[1] == "btcusdt@bookTicker":  # the first quote: a handler bug
                calls["n"] += 1
                if calls["n"] == 1:
                    raise RuntimeError("downstream bug")
            return real_feed(*args, **kwargs)

        run.runner.ingest.feed = flaky  # type: ignore[method-assign]
        await run_until(run, lambda: any(e.kind == KIND_QUOTE for e in run.sink.events()))
    assert run.runner.stats.handler_errors == 1
    assert len(ws.connections) == 1 and run.runner.connections[0].connects == 1


async def test_reconnects_back_off_exponentially_with_cap_and_reset_when_healthy() -> None:
    async def hang_up(conn: Conn) -> None:
        await conn.ws.close()

    async with ws_server([hang_up]) as ws:
        run = make_runner(live_config("binance-spot", ws.url, ("btcusdt@bookTicker",),
                                      initial_s=0.1, max_s=0.8, jitter_ratio=0.25))
        await run_until(run, lambda: len(run.runner.connections[0].attempts) >= 7)
    attempts = run.runner.connections[0].attempts[:7]
    spacing = [b - a for a, b in itertools.pairwise(attempts)]
    for n, gap in enumerate(spacing):
        nominal = min(0.8, 0.1 * 2**n)
        # Jitter takes off at most 25 %; the rest is subscribe pacing (0.2 s) and real time.
        assert nominal * 0.75 <= gap <= nominal + 0.2 + 0.3, (n, spacing)
    assert spacing[-1] < 0.8 + 0.5  # capped

    async def one_frame_then_close(conn: Conn) -> None:
        await ack(conn)
        await conn.send({"stream": "btcusdt@bookTicker", "data": {"u": 1, "s": "BTCUSDT", "b": "100", "B": "1",
                                                                  "a": "100.1", "A": "1"}})
        await conn.ws.close()

    async with ws_server([one_frame_then_close]) as ws:
        run = make_runner(live_config("binance-spot", ws.url, ("btcusdt@bookTicker",),
                                      initial_s=0.1, max_s=0.8, jitter_ratio=0.0, healthy_after_s=0.0))
        await run_until(run, lambda: len(run.runner.connections[0].attempts) >= 5)
    backoffs = [s for s in run.clock.sleeps if s >= 0.1 - 1e-9]
    assert backoffs[:4] == [pytest.approx(0.1)] * 4  # healthy connections reset the backoff


async def test_recorded_session_replays_to_identical_alerts(tmp_path: Path) -> None:
    start = now_ms() - 600_000

    async def depeg(conn: Conn) -> None:
        await ack(conn)
        for k in range(40):
            ts = start + k * 5_000
            await conn.send({"stream": "usdeusdt@bookTicker", "data": {
                "e": "bookTicker", "u": k, "E": ts, "T": ts, "s": "USDEUSDT",
                "b": "0.9700", "B": "100000", "a": "0.9702", "A": "100000"}})
        for f, u, b, a in diffs_from(101, 6):
            await conn.send(diff(f, u, b, a, futures=True))
        await conn.idle()

    path = tmp_path / "live.jsonl.gz"
    recorder = Recorder(path)
    async with ws_server([depeg]) as ws, rest_server({"BTCUSDT": [
            {"lastUpdateId": 105, "E": now_ms(), "T": now_ms(), "bids": SNAP_A[0], "asks": SNAP_A[1]}]}) as rest:
        run = make_runner(live_config("binance-usdm", ws.url, ("usdeusdt@bookTicker", "btcusdt@depth@100ms"),
                                      rest.url), recorder=recorder)
        await run_until(run, lambda: bool(run.sink.engine_alerts) and run.runner.stats.snapshots >= 1
                        and (b := run.runner.ingest.book("binance-usdm", "BTCUSDT")) is not None and b.valid
                        and b.last_id == 118)
    recorder.close()
    # Peg alerts only: the depeg, and possibly a second one (the stale-quote alert, when the
    # BTC frames move event time on before the session stops — it depends on when the wait
    # below sees its conditions). The replay must give whatever the live run gave.
    assert {a.kind for a in run.sink.engine_alerts} == {"peg_deviation"}
    replayed_batches: list[Any] = []
    replayed = await replay_inline(path, run.runner.engine_config, on_batch=replayed_batches.append)
    assert [a.alert_id for a in replayed.alerts] == [a.alert_id for a in run.sink.engine_alerts]
    assert [a.to_json() for a in replayed.alerts] == [a.to_json() for a in run.sink.engine_alerts]
    live_events = sorted((e.base, i, e) for i, e in enumerate(run.sink.events()))
    replay_events = sorted((e.base, i, e) for i, e in enumerate(ev for b in replayed_batches for ev in b.events()))
    assert [e for _b, _i, e in live_events] == [e for _b, _i, e in replay_events]
    assert any(e.kind == KIND_BOOK for e in run.sink.events())
    assert replayed.stats.deadletters == {}


@pytest.mark.parametrize(("status", "retry_after"), [(429, "7"), (418, "20")])
async def test_a_rate_limited_snapshot_waits_what_retry_after_asks(status: int, retry_after: str,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    """Binance's 429 (and 418, a ban) carries ``Retry-After``: the seconds to wait before the
    host is asked again. The snapshot is asked again only then, and the book syncs (before:
    asked again after the backoff's first 0.05 s, the way to a ban)."""
    diffs = diffs_from(101, 40)
    limited = {"status": status, "headers": {"Retry-After": retry_after}}
    async with ws_server([diffs_script(diffs, 0.05)]) as ws, \
            rest_server({"BTCUSDT": [limited, snapshot(105, SNAP_A)]}) as rest:
        run = make_runner(live_config("binance-spot", ws.url, ("btcusdt@depth@100ms",), rest.url))
        final_u = diffs[-1][1]
        await run_until(run, lambda: (b := run.runner.ingest.book("binance-spot", "BTCUSDT")) is not None
                        and b.valid and b.last_id == final_u)
    assert len(rest.requests) == 2
    assert max(run.clock.sleeps) >= float(retry_after) - 1.0
    assert book_levels(run) == reference_book(SNAP_A, [(b, a) for _f, u, b, a in diffs if u > 105])
    said = [r.getMessage() for r in caplog.records if "Retry-After" in r.getMessage()]
    assert len(said) == 1 and f"answered {status}" in said[0], said


async def test_a_stream_the_venue_never_serves_stops_reopening_the_connection(caplog: pytest.LogCaptureFixture,
                                                                              ) -> None:
    """Binance takes a subscription to an unlisted symbol (``result: null``) and never sends
    on it. Its silence re-opens the connection once; when the new connection brings nothing
    on it either while the other stream delivers, it is reported stale and no longer
    re-opens the connection (before: every ``stale_after_s``, with every other stream's
    books resynced each time)."""
    async def quotes(conn: Conn) -> None:
        await ack(conn)
        for i in range(100):
            await conn.send({"stream": "btcusdt@bookTicker", "data": {
                "u": i, "s": "BTCUSDT", "b": "100", "B": "1", "a": "100.1", "A": "1"}})
            await asyncio.sleep(0.05)
        await conn.idle()

    async with ws_server([quotes]) as ws:
        cfg = live_config("binance-spot", ws.url, ("btcusdt@bookTicker", "nopeusdt@bookTicker"), stale_after_s=0.5)
        run = make_runner(cfg)
        started = time.monotonic()
        await run_until(run, lambda: time.monotonic() - started > 3.5)
    assert len(ws.connections) == 2, run.runner.connections[0].endings
    stale = [a.evidence["channel"] for a in run.sink.feed_alerts if a.kind == "feed_stale"]
    assert stale == ["nopeusdt@bookTicker", "nopeusdt@bookTicker"]  # reported on each connection
    said = [r.getMessage() for r in caplog.records if "sent nothing on two connections" in r.getMessage()]
    assert len(said) == 1 and "nopeusdt@bookTicker" in said[0]
