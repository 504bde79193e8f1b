"""Local L2 order books with each venue's sequence rules, and their summaries (FEEDS.md).

Pure and deterministic: :class:`BookSync` is fed :class:`BookFrame` records (decoded by
:mod:`monitor.ingest.wire`) in arrival order and answers with market events (``KIND_BOOK``
summaries, ``KIND_BOOK_INVALID`` on a gap) plus :class:`BookNotice` records telling the
live connector what to do (fetch a snapshot, count a gap or a resync). A replay of the
same frames, snapshots included, gives the same events and notices.

Sequence rules (venue documentation, summarised in FEEDS.md):

* ``binance-spot``: buffer diffs, load a REST snapshot (``lastUpdateId`` L), drop diffs
  with ``u <= L``; the first applied diff needs ``U <= L + 1 <= u``; afterwards a diff with
  ``u <= local`` is stale and ignored, ``U > local + 1`` is a gap.
* ``binance-usdm``: as spot, but drop ``u < L``, the first diff needs ``U <= L <= u`` and
  afterwards ``pu == previous u``.
* ``bybit``: a snapshot (including the ``u = 1`` restart snapshot) resets the book;
  deltas need ``u == previous u + 1``.
* ``okx``: a snapshot resets the book; updates need ``prevSeqId == previous seqId``
  (an empty update with ``seqId == prevSeqId`` is a heartbeat); the checksum is ignored
  (always 0 since 2026-06-23).
* ``snapshots`` (Hyperliquid ``l2Book``): every frame is a full book.

A book with a known gap serves nothing until a snapshot re-synchronises it. A snapshot asked
for and not come (refused as malformed, or never sent) is asked for again after
``snapshot_retry_ms`` of receive time.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from monitor.events import BOOK_BANDS_BPS, KIND_BOOK, KIND_BOOK_INVALID, MarketEvent

__all__ = [
    "ACTION_DELTA",
    "ACTION_SNAPSHOT",
    "DEFAULT_SNAPSHOT_RETRY_MS",
    "NOTICE_GAP",
    "NOTICE_NEED_SNAPSHOT",
    "NOTICE_RESYNCED",
    "RULES",
    "RULE_BINANCE_SPOT",
    "RULE_BINANCE_USDM",
    "RULE_BYBIT",
    "RULE_OKX",
    "RULE_SNAPSHOTS",
    "BookFrame",
    "BookNotice",
    "BookSide",
    "BookSync",
    "L2Book",
]

RULE_BINANCE_SPOT = "binance-spot"
RULE_BINANCE_USDM = "binance-usdm"
RULE_BYBIT = "bybit"
RULE_OKX = "okx"
RULE_SNAPSHOTS = "snapshots"
RULES = frozenset({RULE_BINANCE_SPOT, RULE_BINANCE_USDM, RULE_BYBIT, RULE_OKX, RULE_SNAPSHOTS})

ACTION_SNAPSHOT = "snapshot"
ACTION_DELTA = "delta"

#: The book needs a fresh snapshot (Binance: REST fetch; Bybit/OKX: resubscribe).
NOTICE_NEED_SNAPSHOT = "need_snapshot"
#: A sequence gap was detected; the book was discarded.
NOTICE_GAP = "gap"
#: The book became valid again after a snapshot.
NOTICE_RESYNCED = "resynced"

#: Receive time after which a book still without the snapshot it asked for asks again
#: (``[live] snapshot_retry_ms``): a book whose snapshot never comes asks once per 10 s, not
#: once per diff (Binance spot API, REST limits: ``GET /api/v3/depth`` of 501–1,000 levels
#: weighs 50 of the 6,000 request weight an IP may use a minute).
DEFAULT_SNAPSHOT_RETRY_MS = 10_000

Level = tuple[float, float]

_NO_BOOK = 0  # no usable book: buffering diffs (Binance) or waiting for a snapshot
_SNAPSHOT = 1  # Binance: snapshot loaded, waiting for the diff that bridges it
_LIVE = 2  # valid book


class BookFrame(NamedTuple):
    """One decoded book message: a full snapshot or a delta with its sequence ids.

    ``last_id`` is Binance ``u`` / snapshot ``lastUpdateId``, Bybit ``u``, OKX ``seqId``;
    ``first_id`` is Binance ``U``; ``prev_id`` is Binance futures ``pu`` / OKX ``prevSeqId``.
    Quantities are in base units (OKX contracts are converted by the parser).
    """

    rule: str
    symbol: str
    base: str
    quote: str
    action: str
    ts_ms: int
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]
    last_id: int = 0
    first_id: int = 0
    prev_id: int = -1


@dataclass(frozen=True, slots=True)
class BookNotice:
    """What the connector should know about a book: a gap, a resync, a snapshot request."""

    kind: str
    venue: str
    symbol: str
    ts_ms: int
    expected: int = 0
    received: int = 0


class BookSide(Mapping[float, float]):
    """One side of a book: price → quantity, iterated in ascending price order.

    A dict of the quantities and a sorted list of the prices beside it: a level that
    appears or goes is one C-level ``bisect`` and a list insert or delete (a book holds
    hundreds of levels, so the move is a short ``memmove``); a quantity that changes is a
    dict store."""

    __slots__ = ("prices", "qty")

    def __init__(self) -> None:
        self.qty: dict[float, float] = {}
        #: The prices of ``qty``, ascending.
        self.prices: list[float] = []

    def __getitem__(self, price: float) -> float:
        return self.qty[price]

    def __iter__(self) -> Iterator[float]:
        return iter(self.prices)

    def __len__(self) -> int:
        return len(self.prices)

    def __contains__(self, price: object) -> bool:
        return price in self.qty

    def clear(self) -> None:
        self.qty.clear()
        self.prices.clear()

    def apply(self, levels: Iterable[Level]) -> None:
        """Absolute quantities: a quantity above 0 sets its level, any other removes it."""
        qty_of, prices = self.qty, self.prices
        for price, qty in levels:
            if qty > 0.0:
                if price not in qty_of:
                    insort(prices, price)
                qty_of[price] = qty
            elif price in qty_of:
                del qty_of[price]
                del prices[bisect_left(prices, price)]


def _band_sums(best_first: list[float], qty: dict[float, float], mid: float, bands_bps: tuple[int, ...],
               sign: float) -> list[float]:
    """Σ price × qty of the levels within each band of ``mid`` (distance ``sign × (mid −
    price) / mid`` in bps), the levels best first and the bands rising."""
    out = [0.0] * len(bands_bps)
    band, total, n = 0, 0.0, len(bands_bps)
    for price in best_first:
        dist_bps = sign * (mid - price) / mid * 10_000.0
        while band < n and dist_bps > bands_bps[band]:
            out[band] = total
            band += 1
        if band == n:
            break
        total += price * qty[price]
    for i in range(band, n):
        out[i] = total
    return out


class L2Book:
    """Price → quantity on each side; quantity 0 removes a level."""

    __slots__ = ("asks", "bids")

    def __init__(self) -> None:
        self.bids = BookSide()
        self.asks = BookSide()

    def clear(self) -> None:
        self.bids.clear()
        self.asks.clear()

    def load(self, bids: Iterable[Level], asks: Iterable[Level]) -> None:
        """Replace the book with a snapshot."""
        self.clear()
        self.update(bids, asks)

    def update(self, bids: Iterable[Level], asks: Iterable[Level]) -> None:
        """Apply absolute level quantities (a diff)."""
        self.bids.apply(bids)
        self.asks.apply(asks)

    def best_bid(self) -> float | None:
        prices = self.bids.prices
        return float(prices[-1]) if prices else None

    def best_ask(self) -> float | None:
        prices = self.asks.prices
        return float(prices[0]) if prices else None

    def levels(self) -> tuple[list[Level], list[Level]]:
        """Bids best-first and asks best-first (tests, tooling)."""
        bids = [(float(p), float(self.bids.qty[p])) for p in reversed(self.bids.prices)]
        asks = [(float(p), float(self.asks.qty[p])) for p in self.asks.prices]
        return bids, asks

    def depth_bands(self, mid: float, bands_bps: tuple[int, ...]) -> tuple[float, ...]:
        """Cumulative Σ price × qty within each band of mid, bids then asks (RISK_MODEL §4).

        ``bands_bps`` rise, so each band's levels are the first ones best first: one running
        sum, read off where the distance passes each band, is each band's sum added in the
        same order."""
        widest = max(bands_bps) / 10_000.0
        bid_px, bid_qty = self.bids.prices, self.bids.qty
        near_bids = bid_px[bisect_left(bid_px, mid * (1.0 - widest)):]
        near_bids.reverse()
        ask_px, ask_qty = self.asks.prices, self.asks.qty
        near_asks = ask_px[: bisect_right(ask_px, mid * (1.0 + widest))]
        return (*_band_sums(near_bids, bid_qty, mid, bands_bps, 1.0),
                *_band_sums(near_asks, ask_qty, mid, bands_bps, -1.0))


@dataclass(slots=True)
class BookSync:
    """One venue/symbol book and its sequence state; ``apply`` is the only entry point."""

    venue: str
    symbol: str
    base: str
    quote: str
    rule: str
    throttle_ms: int = 100
    max_buffer: int = 2_000
    book: L2Book = field(default_factory=L2Book)
    state: int = _NO_BOOK
    last_id: int = 0
    buffer: deque[BookFrame] = field(default_factory=deque)
    #: A snapshot requested and not yet come is asked for again after this much receive
    #: time: the one answered may have been refused (a malformed REST body or venue
    #: frame goes to the dead letters, never to the book), or a resubscription ignored.
    snapshot_retry_ms: int = DEFAULT_SNAPSHOT_RETRY_MS
    #: Receive time of the pending snapshot request (None: none pending).
    requested_recv_ms: int | None = None
    last_summary_ts_ms: int | None = None
    gaps: int = 0
    resyncs: int = 0

    @property
    def valid(self) -> bool:
        return self.state == _LIVE

    # -- entry point ------------------------------------------------------------------
    def apply(
        self, frame: BookFrame, recv_ts_ms: int, events: list[MarketEvent], notices: list[BookNotice]
    ) -> None:
        """Apply one frame; append the events and notices it produces."""
        was_live = self.state == _LIVE
        if self.rule in (RULE_BINANCE_SPOT, RULE_BINANCE_USDM):
            self._binance(frame, recv_ts_ms, events, notices)
        elif self.rule == RULE_BYBIT:
            self._sequential(frame, recv_ts_ms, events, notices, okx=False)
        elif self.rule == RULE_OKX:
            self._sequential(frame, recv_ts_ms, events, notices, okx=True)
        else:
            self.book.load(frame.bids, frame.asks)
            self.state = _LIVE
        if self.state != _LIVE:
            return
        resynced = not was_live
        if resynced:
            self.resyncs += 1
            notices.append(BookNotice(NOTICE_RESYNCED, self.venue, self.symbol, frame.ts_ms))
        last = self.last_summary_ts_ms
        if resynced or last is None or frame.ts_ms - last >= self.throttle_ms or frame.ts_ms < last:
            summary = self.summary(frame.ts_ms, recv_ts_ms)
            if summary is not None:
                events.append(summary)
                self.last_summary_ts_ms = frame.ts_ms

    def reset(self, ts_ms: int, recv_ts_ms: int, events: list[MarketEvent]) -> None:
        """The connection carrying this book dropped: the book can no longer be trusted."""
        if self.state == _LIVE:
            events.append(self._invalid(ts_ms, recv_ts_ms, 0, 0))
        self._discard()
        self.requested_recv_ms = None

    # -- summary ----------------------------------------------------------------------
    def summary(self, ts_ms: int, recv_ts_ms: int) -> MarketEvent | None:
        """KIND_BOOK event of a valid, uncrossed, two-sided book (else None)."""
        bid, ask = self.book.best_bid(), self.book.best_ask()
        if self.state != _LIVE or bid is None or ask is None or bid >= ask:
            return None
        mid = (bid + ask) * 0.5
        spread_bps = (ask - bid) / mid * 10_000.0
        bands = self.book.depth_bands(mid, BOOK_BANDS_BPS)
        return MarketEvent(
            KIND_BOOK, self.venue, self.symbol, self.base, self.quote, ts_ms, recv_ts_ms,
            bid, ask, mid, spread_bps, bands,
        )

    # -- helpers ----------------------------------------------------------------------
    def _invalid(self, ts_ms: int, recv_ts_ms: int, expected: int, received: int) -> MarketEvent:
        return MarketEvent(
            KIND_BOOK_INVALID, self.venue, self.symbol, self.base, self.quote, ts_ms, recv_ts_ms,
            float(expected), float(received), 0.0, 0.0,
        )

    def _discard(self) -> None:
        self.book.clear()
        self.state = _NO_BOOK
        self.buffer.clear()
        self.last_summary_ts_ms = None

    def _gap(
        self, frame: BookFrame, recv_ts_ms: int, expected: int, received: int,
        events: list[MarketEvent], notices: list[BookNotice],
    ) -> None:
        self.gaps += 1
        events.append(self._invalid(frame.ts_ms, recv_ts_ms, expected, received))
        notices.append(BookNotice(NOTICE_GAP, self.venue, self.symbol, frame.ts_ms, expected, received))
        self._discard()
        self._request(frame, recv_ts_ms, notices)

    def _request(self, frame: BookFrame, recv_ts_ms: int, notices: list[BookNotice]) -> None:
        """Ask for a snapshot, unless one was asked for less than ``snapshot_retry_ms`` ago."""
        asked = self.requested_recv_ms
        if asked is None or abs(recv_ts_ms - asked) >= self.snapshot_retry_ms:
            self.requested_recv_ms = recv_ts_ms
            notices.append(BookNotice(NOTICE_NEED_SNAPSHOT, self.venue, self.symbol, frame.ts_ms))

    # -- Bybit / OKX ------------------------------------------------------------------
    def _sequential(
        self, frame: BookFrame, recv_ts_ms: int, events: list[MarketEvent],
        notices: list[BookNotice], *, okx: bool,
    ) -> None:
        if frame.action == ACTION_SNAPSHOT:
            self.book.load(frame.bids, frame.asks)
            self.last_id = frame.last_id
            self.state = _LIVE
            self.requested_recv_ms = None
            return
        if self.state != _LIVE:
            self._request(frame, recv_ts_ms, notices)
            return
        if okx:
            expected, received = self.last_id, frame.prev_id
        else:
            expected, received = self.last_id + 1, frame.last_id
        if received != expected:
            self._gap(frame, recv_ts_ms, expected, received, events, notices)
            return
        self.book.update(frame.bids, frame.asks)
        self.last_id = frame.last_id

    # -- Binance ----------------------------------------------------------------------
    def _binance(
        self, frame: BookFrame, recv_ts_ms: int, events: list[MarketEvent], notices: list[BookNotice]
    ) -> None:
        futures = self.rule == RULE_BINANCE_USDM
        if frame.action == ACTION_SNAPSHOT:
            self.requested_recv_ms = None
            if self.state == _LIVE:
                return  # an unrequested snapshot: the live book is already ahead of it
            self.book.load(frame.bids, frame.asks)
            self.last_id = frame.last_id
            self.state = _SNAPSHOT
            pending = list(self.buffer)
            self.buffer.clear()
            for diff in pending:
                self._binance_diff(diff, recv_ts_ms, events, notices, futures)
            return
        self._binance_diff(frame, recv_ts_ms, events, notices, futures)

    def _binance_diff(
        self, diff: BookFrame, recv_ts_ms: int, events: list[MarketEvent],
        notices: list[BookNotice], futures: bool,
    ) -> None:
        if self.state == _NO_BOOK:
            self.buffer.append(diff)
            if len(self.buffer) > self.max_buffer:
                self.buffer.popleft()
            self._request(diff, recv_ts_ms, notices)
            return
        last = self.last_id
        if self.state == _SNAPSHOT:
            stale = diff.last_id < last if futures else diff.last_id <= last
            if stale:
                return
            target = last if futures else last + 1
            if diff.first_id <= target <= diff.last_id:
                self.book.update(diff.bids, diff.asks)
                self.last_id = diff.last_id
                self.state = _LIVE
                return
            # The snapshot is older than the stream: not a gap in the data, fetch another.
            self._discard()
            self.buffer.append(diff)
            self._request(diff, recv_ts_ms, notices)
            return
        if diff.last_id <= last:
            return  # already applied (duplicate or overlap)
        if futures:
            if diff.prev_id != last:
                self._gap(diff, recv_ts_ms, last, diff.prev_id, events, notices)
                self.buffer.append(diff)
                return
        elif diff.first_id > last + 1:
            self._gap(diff, recv_ts_ms, last + 1, diff.first_id, events, notices)
            self.buffer.append(diff)
            return
        self.book.update(diff.bids, diff.asks)
        self.last_id = diff.last_id
