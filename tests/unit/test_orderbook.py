"""Local books: each venue's sequence rules, gap → invalid → resync, throttled summaries."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.config import EngineConfig
from monitor.events import BOOK_BANDS_BPS, KIND_BOOK, KIND_BOOK_INVALID, MarketEvent
from monitor.ingest.frames import BOOK_RESET_CHANNEL, Ingest, Routed
from monitor.ingest.orderbook import (
    ACTION_DELTA,
    ACTION_SNAPSHOT,
    NOTICE_GAP,
    NOTICE_NEED_SNAPSHOT,
    NOTICE_RESYNCED,
    RULE_BINANCE_SPOT,
    RULE_BINANCE_USDM,
    RULE_BYBIT,
    RULE_OKX,
    BookFrame,
    BookNotice,
    BookSync,
    L2Book,
)
from monitor.protocol import DeadLetter

T0 = 1_760_130_000_000


def frame(rule: str, action: str, ts: int, bids: list[tuple[float, float]], asks: list[tuple[float, float]],
          last: int = 0, first: int = 0, prev: int = -1) -> BookFrame:
    return BookFrame(rule, "BTCUSDT", "BTC", "USDT", action, ts, tuple(bids), tuple(asks), last, first, prev)


def run(sync: BookSync, *frames: BookFrame) -> tuple[list[MarketEvent], list[BookNotice]]:
    events: list[MarketEvent] = []
    notices: list[BookNotice] = []
    for f in frames:
        sync.apply(f, f.ts_ms, events, notices)
    return events, notices


Side = list[tuple[float, float]]


def reference(frames: list[tuple[Side, Side]]) -> tuple[dict[float, float], dict[float, float]]:
    """An independent rebuild: plain dicts, absolute quantities, 0 deletes."""
    bids: dict[float, float] = {}
    asks: dict[float, float] = {}
    for b, a in frames:
        for side, lv in ((bids, b), (asks, a)):
            for p, q in lv:
                if q == 0:
                    side.pop(p, None)
                else:
                    side[p] = q
    return bids, asks


def as_dicts(book: L2Book) -> tuple[dict[float, float], dict[float, float]]:
    b, a = book.levels()
    return dict(b), dict(a)


def test_summary_bands_and_spread() -> None:
    sync = BookSync("bybit-linear", "BTCUSDT", "BTC", "USDT", RULE_BYBIT)
    bids = [(99.95, 1.0), (99.5, 2.0), (98.0, 10.0)]
    asks = [(100.05, 1.0), (100.6, 3.0), (104.0, 5.0)]
    events, notices = run(sync, frame(RULE_BYBIT, ACTION_SNAPSHOT, T0, bids, asks, last=5))
    assert [n.kind for n in notices] == [NOTICE_RESYNCED]
    (ev,) = events
    assert ev.kind == KIND_BOOK
    assert (ev.f1, ev.f2, ev.f3) == (99.95, 100.05, 100.0)
    assert ev.f4 == pytest.approx(10.0)
    assert BOOK_BANDS_BPS == (10, 50, 100, 200, 500)
    # bids: 99.95 at 5 bps, 99.5 at 50 bps, 98 at 200 bps; asks: 100.05 at 5, 100.6 at 60, 104 at 400.
    assert ev.bands[:5] == pytest.approx((99.95, 99.95 + 199.0, 298.95, 298.95 + 980.0, 1278.95))
    assert ev.bands[5:] == pytest.approx((100.05, 100.05, 100.05 + 301.8, 401.85, 401.85 + 520.0))


def test_bybit_delta_continuity_gap_and_restart_snapshot() -> None:
    sync = BookSync("bybit-linear", "BTCUSDT", "BTC", "USDT", RULE_BYBIT, throttle_ms=100)
    ev, no = run(
        sync,
        frame(RULE_BYBIT, ACTION_SNAPSHOT, T0, [(100.0, 1.0)], [(101.0, 1.0)], last=10),
        frame(RULE_BYBIT, ACTION_DELTA, T0 + 20, [(100.5, 2.0)], [], last=11),
        frame(RULE_BYBIT, ACTION_DELTA, T0 + 150, [(100.0, 0.0)], [], last=12),
    )
    assert [e.kind for e in ev] == [KIND_BOOK, KIND_BOOK]  # second delta within 100 ms: throttled
    assert sync.book.levels() == ([(100.5, 2.0)], [(101.0, 1.0)])
    ev, no = run(sync, frame(RULE_BYBIT, ACTION_DELTA, T0 + 300, [(99.0, 1.0)], [], last=14))
    assert [e.kind for e in ev] == [KIND_BOOK_INVALID]
    assert (ev[0].f1, ev[0].f2) == (13.0, 14.0)
    assert [n.kind for n in no] == [NOTICE_GAP, NOTICE_NEED_SNAPSHOT]
    assert not sync.valid
    # Deltas while invalid feed nothing; the u=1 restart snapshot resynchronises.
    ev, no = run(sync, frame(RULE_BYBIT, ACTION_DELTA, T0 + 400, [(99.0, 1.0)], [], last=15))
    assert ev == [] and no == []
    ev, no = run(sync, frame(RULE_BYBIT, ACTION_SNAPSHOT, T0 + 500, [(98.0, 1.0)], [(99.0, 1.0)], last=1))
    assert [e.kind for e in ev] == [KIND_BOOK] and [n.kind for n in no] == [NOTICE_RESYNCED]
    assert sync.gaps == 1 and sync.resyncs == 2


def test_okx_prev_seq_and_heartbeat() -> None:
    sync = BookSync("okx", "BTC-USDT-SWAP", "BTC", "USDT", RULE_OKX)
    ev, _ = run(
        sync,
        frame(RULE_OKX, ACTION_SNAPSHOT, T0, [(100.0, 1.0)], [(101.0, 1.0)], last=100, prev=-1),
        frame(RULE_OKX, ACTION_DELTA, T0 + 10, [(100.0, 3.0)], [], last=107, prev=100),
        frame(RULE_OKX, ACTION_DELTA, T0 + 20, [], [], last=107, prev=107),  # heartbeat
        frame(RULE_OKX, ACTION_DELTA, T0 + 30, [], [(101.0, 0.0), (102.0, 1.0)], last=120, prev=107),
    )
    assert [e.kind for e in ev] == [KIND_BOOK]
    assert sync.valid and sync.book.levels() == ([(100.0, 3.0)], [(102.0, 1.0)])
    ev, no = run(sync, frame(RULE_OKX, ACTION_DELTA, T0 + 200, [], [], last=140, prev=130))
    assert [e.kind for e in ev] == [KIND_BOOK_INVALID] and (ev[0].f1, ev[0].f2) == (120.0, 130.0)
    assert NOTICE_GAP in [n.kind for n in no]


def test_binance_spot_snapshot_procedure() -> None:
    sync = BookSync("binance-spot", "BTCUSDT", "BTC", "USDT", RULE_BINANCE_SPOT)
    d1 = frame(RULE_BINANCE_SPOT, ACTION_DELTA, T0, [(100.0, 1.0)], [], last=105, first=101)
    d2 = frame(RULE_BINANCE_SPOT, ACTION_DELTA, T0 + 100, [(100.0, 2.0)], [(101.0, 1.0)], last=110, first=106)
    d3 = frame(RULE_BINANCE_SPOT, ACTION_DELTA, T0 + 200, [(99.0, 1.0)], [], last=115, first=111)
    ev, no = run(sync, d1, d2)
    assert ev == [] and [n.kind for n in no] == [NOTICE_NEED_SNAPSHOT]  # one request only
    snap = frame(RULE_BINANCE_SPOT, ACTION_SNAPSHOT, T0 + 150, [(100.0, 5.0), (98.0, 1.0)], [(101.0, 4.0)], last=107)
    ev, no = run(sync, snap)
    # d1 (u=105 <= 107) dropped; d2 bridges (106 <= 108 <= 110).
    assert [n.kind for n in no] == [NOTICE_RESYNCED] and sync.valid
    ev, no = run(sync, d3)
    assert sync.book.levels() == ([(100.0, 2.0), (99.0, 1.0), (98.0, 1.0)], [(101.0, 1.0)])
    # Overlapping diff (U <= local+1 <= u) applies; an old one is ignored; a jump is a gap.
    ev, no = run(sync, frame(RULE_BINANCE_SPOT, ACTION_DELTA, T0 + 300, [], [], last=112, first=108))
    assert [e.kind for e in ev] == [KIND_BOOK] and no == [] and sync.last_id == 115
    ev, no = run(sync, frame(RULE_BINANCE_SPOT, ACTION_DELTA, T0 + 400, [], [], last=130, first=120))
    assert [e.kind for e in ev] == [KIND_BOOK_INVALID] and (ev[0].f1, ev[0].f2) == (116.0, 120.0)
    assert [n.kind for n in no] == [NOTICE_GAP, NOTICE_NEED_SNAPSHOT]


def test_binance_snapshot_older_than_stream_is_refetched_not_a_gap() -> None:
    sync = BookSync("binance-spot", "BTCUSDT", "BTC", "USDT", RULE_BINANCE_SPOT)
    run(sync, frame(RULE_BINANCE_SPOT, ACTION_DELTA, T0, [], [], last=210, first=200))
    ev, no = run(sync, frame(RULE_BINANCE_SPOT, ACTION_SNAPSHOT, T0, [(1.0, 1.0)], [(2.0, 1.0)], last=150))
    assert ev == [] and [n.kind for n in no] == [NOTICE_NEED_SNAPSHOT] and sync.gaps == 0
    ev, no = run(sync, frame(RULE_BINANCE_SPOT, ACTION_SNAPSHOT, T0, [(1.0, 1.0)], [(2.0, 1.0)], last=205))
    assert sync.valid and [n.kind for n in no] == [NOTICE_RESYNCED]


def test_binance_futures_pu_rule() -> None:
    sync = BookSync("binance-usdm", "BTCUSDT", "BTC", "USDT", RULE_BINANCE_USDM)
    run(sync, frame(RULE_BINANCE_USDM, ACTION_DELTA, T0, [(100.0, 1.0)], [], last=50, first=40, prev=39))
    # Futures: drop u < L, first applied needs U <= L <= u.
    run(sync, frame(RULE_BINANCE_USDM, ACTION_SNAPSHOT, T0, [(100.0, 9.0)], [(101.0, 1.0)], last=45))
    assert sync.valid and sync.book.levels() == ([(100.0, 1.0)], [(101.0, 1.0)])
    ev, _ = run(sync, frame(RULE_BINANCE_USDM, ACTION_DELTA, T0 + 500, [(99.0, 1.0)], [], last=60, first=51, prev=50))
    assert [e.kind for e in ev] == [KIND_BOOK]
    ev, no = run(sync, frame(RULE_BINANCE_USDM, ACTION_DELTA, T0 + 600, [], [], last=70, first=62, prev=61))
    assert [e.kind for e in ev] == [KIND_BOOK_INVALID] and (ev[0].f1, ev[0].f2) == (60.0, 61.0)
    assert [n.kind for n in no] == [NOTICE_GAP, NOTICE_NEED_SNAPSHOT]


def test_random_diffs_match_reference_rebuild() -> None:
    rng = random.Random(7)
    sync = BookSync("bybit-linear", "BTCUSDT", "BTC", "USDT", RULE_BYBIT)
    snap_b = [(100.0 - i * 0.5, 1.0 + i) for i in range(20)]
    snap_a = [(100.5 + i * 0.5, 1.0 + i) for i in range(20)]
    history = [(snap_b, snap_a)]
    run(sync, frame(RULE_BYBIT, ACTION_SNAPSHOT, T0, snap_b, snap_a, last=1))
    for u in range(2, 400):
        b = [(100.0 - rng.randrange(40) * 0.5, rng.choice([0.0, rng.uniform(0.1, 5)])) for _ in range(3)]
        a = [(100.5 + rng.randrange(40) * 0.5, rng.choice([0.0, rng.uniform(0.1, 5)])) for _ in range(3)]
        history.append((b, a))
        run(sync, frame(RULE_BYBIT, ACTION_DELTA, T0 + u, b, a, last=u))
    assert as_dicts(sync.book) == reference(history)


def feed(ingest: Ingest, venue: str, channel: str, raw: Any, ts: int) -> list[Routed | DeadLetter]:
    return list(ingest.feed(venue, channel, raw, ts, orjson.dumps(raw)))


def depth(first: int, u: int, bids: list[list[str]], asks: list[list[str]], ts: int) -> dict[str, Any]:
    return {"stream": "btcusdt@depth@100ms",
            "data": {"e": "depthUpdate", "E": ts, "s": "BTCUSDT", "U": first, "u": u, "b": bids, "a": asks}}


def test_ingest_books_through_capture_channels_and_reset() -> None:
    ingest = Ingest(EngineConfig())
    assert feed(ingest, "binance-spot", "btcusdt@depth@100ms", depth(11, 12, [["100", "1"]], [], T0), T0) == []
    assert [n.kind for n in ingest.drain_notices()] == [NOTICE_NEED_SNAPSHOT]
    snap = {"lastUpdateId": 11, "bids": [["100", "5"]], "asks": [["101", "1"]]}
    feed(ingest, "binance-spot", "btcusdt@depthSnapshot", snap, T0 + 5)
    assert [n.kind for n in ingest.drain_notices()] == [NOTICE_RESYNCED]
    feed(ingest, "binance-spot", BOOK_RESET_CHANNEL, {"symbols": ["BTCUSDT"], "reason": "reconnect"}, T0 + 9)
    out = [ev for r in ingest.finish() for ev in r.batch.events()]
    assert [e.kind for e in out] == [KIND_BOOK, KIND_BOOK_INVALID]
    assert out[0].f1 == 100.0 and out[0].f2 == 101.0 and len(out[0].bands) == 10
    assert ingest.stats.book_resyncs["binance-spot"] == 1 and ingest.stats.book_gaps["binance-spot"] == 0
    book = ingest.book("binance-spot", "BTCUSDT")
    assert book is not None and not book.valid


def test_a_snapshot_asked_for_and_refused_is_asked_for_again() -> None:
    """A Binance depth snapshot that fails validation goes to the dead letters and never
    reaches the book: the book asks again once ``snapshot_retry_ms`` of receive time has
    passed since it asked (before, it never asked again: invalid for the whole session)."""
    ingest = Ingest(EngineConfig(), snapshot_retry_ms=10_000)
    feed(ingest, "binance-spot", "btcusdt@depth@100ms", depth(11, 12, [["100", "1"]], [], T0), T0)
    assert [n.kind for n in ingest.drain_notices()] == [NOTICE_NEED_SNAPSHOT]
    bad = {"lastUpdateId": 11, "bids": [["100", "x"]], "asks": []}
    (out,) = feed(ingest, "binance-spot", "btcusdt@depthSnapshot", bad, T0 + 5)
    assert isinstance(out, DeadLetter) and out.reason == "wrong_type"
    for u, recv in ((13, T0 + 5_000), (14, T0 + 9_999)):
        feed(ingest, "binance-spot", "btcusdt@depth@100ms", depth(u, u, [], [], recv), recv)
    assert ingest.drain_notices() == []
    feed(ingest, "binance-spot", "btcusdt@depth@100ms", depth(15, 15, [], [], T0 + 10_000), T0 + 10_000)
    feed(ingest, "binance-spot", "btcusdt@depth@100ms", depth(16, 16, [], [], T0 + 10_050), T0 + 10_050)
    assert [n.kind for n in ingest.drain_notices()] == [NOTICE_NEED_SNAPSHOT]  # once per retry
    good = {"lastUpdateId": 14, "bids": [["100", "5"]], "asks": [["101", "1"]]}
    feed(ingest, "binance-spot", "btcusdt@depthSnapshot", good, T0 + 10_100)
    assert [n.kind for n in ingest.drain_notices()] == [NOTICE_RESYNCED]
    book = ingest.book("binance-spot", "BTCUSDT")
    assert book is not None and book.valid and book.last_id == 16


def test_a_resubscription_unanswered_is_made_again_after_the_retry() -> None:
    """Bybit and OKX resubscribe for a snapshot: deltas while it has not come ask once,
    then once more per ``snapshot_retry_ms`` of receive time; a snapshot ends the asking."""
    sync = BookSync("bybit-linear", "BTCUSDT", "BTC", "USDT", RULE_BYBIT, snapshot_retry_ms=2_000)
    deltas = [frame(RULE_BYBIT, ACTION_DELTA, T0 + ms, [(99.0, 1.0)], [], last=5 + i)
              for i, ms in enumerate((0, 1_000, 1_999, 2_000, 3_000, 4_000))]
    asked = [bool(run(sync, d)[1]) for d in deltas]
    assert asked == [True, False, False, True, False, True]
    _, no = run(sync, frame(RULE_BYBIT, ACTION_SNAPSHOT, T0 + 4_100, [(98.0, 1.0)], [(99.0, 1.0)], last=20))
    assert [n.kind for n in no] == [NOTICE_RESYNCED] and sync.requested_recv_ms is None


def test_ingest_dead_letters_bad_book_frames() -> None:
    ingest = Ingest(EngineConfig())
    bad = depth(11, 12, [["100", "x"]], [], T0)
    (out,) = feed(ingest, "binance-spot", "btcusdt@depth@100ms", bad, T0)
    assert isinstance(out, DeadLetter) and out.reason == "wrong_type"
    (out,) = feed(ingest, "binance-spot", BOOK_RESET_CHANNEL, {"symbols": "BTC"}, T0)
    assert isinstance(out, DeadLetter)
    assert ingest.books == {}


_PRICES = st.sampled_from([round(95.0 + 0.25 * i, 2) for i in range(41)])
_LEVELS = st.lists(st.tuples(_PRICES, st.sampled_from([0.0, -1.0, 0.5, 1.0, 2.5, 1e-9])), max_size=12)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_LEVELS, _LEVELS), min_size=1, max_size=30), st.sampled_from([99.0, 100.0, 100.3, 101.2]))
def test_a_book_equals_a_dict_of_its_levels(
    diffs: list[tuple[list[tuple[float, float]], list[tuple[float, float]]]], mid: float,
) -> None:
    """L2Book after any diffs (levels set, changed, removed, removed twice, set again): its
    sides iterate as the sorted levels of a plain dict, its best prices are the dict's, and
    its depth bands are the sums over the sorted levels, best first (RISK_MODEL §4)."""
    book = L2Book()
    bids: dict[float, float] = {}
    asks: dict[float, float] = {}
    for b, a in diffs:
        book.update(b, a)
        for side, levels in ((bids, b), (asks, a)):
            for price, qty in levels:
                if qty > 0.0:
                    side[price] = qty
                else:
                    side.pop(price, None)
        assert list(book.bids.items()) == sorted(bids.items()) and list(book.asks.items()) == sorted(asks.items())
        assert book.best_bid() == (max(bids) if bids else None) and book.best_ask() == (min(asks) if asks else None)
    want: list[float] = []
    widest = max(BOOK_BANDS_BPS) / 10_000.0
    near_bids = sorted((p for p in bids if p >= mid * (1.0 - widest)), reverse=True)
    near_asks = sorted(p for p in asks if p <= mid * (1.0 + widest))
    for side, best_first, sign in ((bids, near_bids, 1.0), (asks, near_asks, -1.0)):
        out = [0.0] * len(BOOK_BANDS_BPS)
        for price in best_first:
            dist_bps = sign * (mid - price) / mid * 10_000.0
            for i, band in enumerate(BOOK_BANDS_BPS):
                if dist_bps <= band:
                    out[i] += price * side[price]
        want.extend(out)
    assert book.depth_bands(mid, BOOK_BANDS_BPS) == tuple(want)
