"""Ingest: received frames → validated events → batches, or dead letters with a reason.

Shared by the replayer and the live feeds, so both validate and batch identically.
Pure: the caller supplies frames (with their receive time) and sends the outputs.

Order-book channels go through stateful local books kept here, one
:class:`monitor.ingest.orderbook.BookSync` per (venue, symbol): a valid book emits a
``KIND_BOOK`` summary at most once per ``book_throttle_ms`` of its event time, and at once
when it is (re)synchronised; a sequence gap emits ``KIND_BOOK_INVALID`` and the book feeds
nothing until a snapshot arrives. REST snapshots and connection resets are frames too
(channels ``<symbol>@depthSnapshot`` and ``book_reset``), so a recorded live session
replays to the same books. What the live connector must act on (fetch a snapshot, count
a gap or a resync) is queued as :class:`monitor.ingest.orderbook.BookNotice` records, read with
:meth:`Ingest.drain_notices`.

Feed alerts are raised here and nowhere else, so a recorded live session replays to the
same ones, id for id: ``book_gap`` when a local book detects a sequence gap,
``feed_stale`` from the ``feed_status`` frames a live connector records when a
subscribed channel goes silent (silence is only observable live), and ``feed_lag`` from
those it records when a venue's reader lag changes level (:mod:`monitor.ingest.feed_lag`). A ``contract_values``
frame sets a venue's contract-value table (OKX ``ctVal``) for the frames after it;
without one, :data:`monitor.ingest.wire.okx.BUILTIN_CONTRACT_VALUES` applies. A ``session``
frame sets the book throttle and tick lag the live session ran with; without one, the
constructor's.

Frames a live connector rejects before they have a channel (not JSON, not a frame of the
venue) are recorded as ``garbage`` frames carrying the bytes, the reason and the detail,
and become the same dead letter here, live and in a replay.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from monitor.alerts import make_alert
from monitor.config import EngineConfig
from monitor.events import MarketEvent
from monitor.ingest.batch import Batch, Batcher
from monitor.ingest.feed_lag import FEED_STATUS_LAG, LAG_LEVELS
from monitor.ingest.orderbook import (
    DEFAULT_SNAPSHOT_RETRY_MS,
    NOTICE_GAP,
    NOTICE_RESYNCED,
    BookFrame,
    BookNotice,
    BookSync,
)
from monitor.ingest.venue_tables import MARGIN_TABLES_CHANNEL
from monitor.ingest.wire import PartialWireError, WireError, normalize, parse_book
from monitor.ingest.wire._common import MAX_TS_MS, MIN_TS_MS, finite_float
from monitor.ingest.wire.instruments import NO_INSTRUMENTS, InstrumentTable, parse_instruments
from monitor.ingest.wire.okx import BUILTIN_CONTRACT_VALUES, ContractValues, parse_contract_values
from monitor.protocol import Alert, DeadLetter

__all__ = [
    "BOOK_RESET_CHANNEL",
    "CONFIG_CHANNELS",
    "CONTRACT_VALUES_CHANNEL",
    "DEFAULT_BOOK_THROTTLE_MS",
    "FEED_STATUS_CHANNEL",
    "FEED_STATUS_STALE",
    "GARBAGE_CHANNEL",
    "INSTRUMENTS_CHANNEL",
    "SESSION_CHANNEL",
    "SESSION_VENUE",
    "Ingest",
    "IngestOutput",
    "IngestStats",
    "Routed",
    "feed_status_raw",
    "garbage_raw",
    "session_raw",
]

#: Channel of the frame a live connector records when a connection carrying books drops:
#: raw ``{"symbols": ["BTCUSDT", ...], "reason": "..."}``.
BOOK_RESET_CHANNEL = "book_reset"
#: Channel of the frames a live connector records about its own subscriptions:
#: raw ``{"event": "stale", "channel": "<subscribed stream>", "age_s": 61.25}``, or about
#: its reader's lag: ``{"event": "lag", "level", "previous_level", "lag_s", ...}``
#: (:func:`monitor.ingest.feed_lag.lag_status_raw`).
FEED_STATUS_CHANNEL = "feed_status"
#: ``feed_status`` event: a subscribed channel sent nothing for ``age_s`` (→ ``feed_stale``).
FEED_STATUS_STALE = "stale"
#: Channel of a venue's contract-value table, recorded at the start of a live session:
#: raw ``{"values": {"BTC-USDT": {"ct_val": 0.01, "ct_val_ccy": "BTC"}, ...}}``.
CONTRACT_VALUES_CHANNEL = "contract_values"
#: Channel of a venue's instrument table (:mod:`monitor.ingest.wire.instruments`), recorded at the
#: start of a live session: raw ``{"instruments": [{"symbol", "base", "quote", "settle",
#: "kind", "expiry_ms", "contract_value", "contract_multiplier", "inverse"}, ...]}``.
INSTRUMENTS_CHANNEL = "instruments"
#: Channel of the settings a live recording starts with (venue :data:`SESSION_VENUE`):
#: raw ``{"book_throttle_ms": 250}``.
SESSION_CHANNEL = "session"
SESSION_VENUE = "liqmon"
#: Channels that configure ingest for the frames after them (no events, no watermark).
#: ``margin_tables`` (venue margin tables for the risk maths, :mod:`monitor.ingest.venue_tables`)
#: configures the replay's risk stage, not ingest, and may exceed the market frame cap.
CONFIG_CHANNELS = frozenset({CONTRACT_VALUES_CHANNEL, INSTRUMENTS_CHANNEL, SESSION_CHANNEL, MARGIN_TABLES_CHANNEL})
#: Channel of a frame a live connector rejected before routing it: raw ``{"reason",
#: "detail", "text": "<the frame>"}``, or ``"b64"`` instead of ``"text"`` when the bytes
#: are not UTF-8. It becomes a dead letter with that reason, detail and the bytes.
GARBAGE_CHANNEL = "garbage"
_REASON = re.compile(r"[a-z][a-z0-9_]{0,63}")
#: Figures a lag ``feed_status`` frame carries into its alert's evidence (numbers >= 0; all
#: but ``lag_s`` may be null).
_LAG_FIGURES = ("lag_s", "event_lag_s", "backlog_s", "backlog_frames", "backlog_bytes", "shed_frames")
#: At most one book summary per book per this much event time (plus one on every resync).
DEFAULT_BOOK_THROTTLE_MS = 100


@dataclass(slots=True)
class IngestStats:
    frames: int = 0
    events: int = 0
    events_by_source: Counter[str] = field(default_factory=Counter)
    deadletters: Counter[str] = field(default_factory=Counter)
    #: Sequence gaps and resynchronisations of local books, by venue.
    book_gaps: Counter[str] = field(default_factory=Counter)
    book_resyncs: Counter[str] = field(default_factory=Counter)


#: An ingest output: a batch for one partition, a batch for every partition
#: (quote-currency prices, ``broadcast=True``), or a dead letter.
@dataclass(frozen=True, slots=True)
class Routed:
    batch: Batch
    broadcast: bool


#: What :meth:`Ingest.feed` yields: batches, dead letters and feed alerts.
IngestOutput = Routed | DeadLetter | Alert


def feed_status_raw(watch: str, age_s: float) -> dict[str, Any]:
    """The ``feed_status`` frame of a channel silent for ``age_s`` (rounded to the ms)."""
    return {"event": FEED_STATUS_STALE, "channel": watch, "age_s": round(age_s, 3)}


def garbage_raw(reason: str, detail: str, raw_bytes: bytes) -> dict[str, Any]:
    """The ``garbage`` frame of a rejected frame: its text, or base64 when it is not UTF-8."""
    try:
        return {"reason": reason, "detail": detail, "text": raw_bytes.decode("utf-8")}
    except UnicodeDecodeError:
        return {"reason": reason, "detail": detail, "b64": base64.b64encode(raw_bytes).decode("ascii")}


def session_raw(book_throttle_ms: int, tick_lag_ms: int | None = None) -> dict[str, Any]:
    """The ``session`` frame of a live session's ingest settings."""
    raw: dict[str, Any] = {"book_throttle_ms": book_throttle_ms}
    if tick_lag_ms is not None:
        raw["tick_lag_ms"] = tick_lag_ms
    return raw


class Ingest:
    """Validates frames and groups their events into batches (deterministically)."""

    def __init__(
        self, config: EngineConfig, book_throttle_ms: int = DEFAULT_BOOK_THROTTLE_MS,
        tick_lag_ms: int | None = None, batch_max_events: int | None = None,
        snapshot_retry_ms: int = DEFAULT_SNAPSHOT_RETRY_MS,
    ) -> None:
        cfg = config.ingest
        self.max_frame_bytes = cfg.max_frame_bytes
        self.max_future_skew_ms = cfg.max_future_skew_ms
        self.max_jump_ms = cfg.max_watermark_jump_ms
        self.aliases = cfg.asset_aliases
        self.quote_assets = frozenset(cfg.quote_prices_usd)
        # A live session sets its own, smaller batches (a batch waits until it closes).
        self.batcher = Batcher(batch_max_events or cfg.batch_max_events, cfg.batch_max_span_ms)
        self.watermark_ms: int | None = None
        self.tick_interval_ms = cfg.tick_interval_ms
        #: How far a tick trails receive time (see :meth:`_tick`); the batch span unless set.
        self.tick_lag_ms = cfg.batch_max_span_ms if tick_lag_ms is None else tick_lag_ms
        self._next_tick_ms: int | None = None
        self.stats = IngestStats()
        self.book_throttle_ms = book_throttle_ms
        #: A book's snapshot asked for and not come is asked for again after this much receive time.
        self.snapshot_retry_ms = snapshot_retry_ms
        self.books: dict[tuple[str, str], BookSync] = {}
        self._notices: list[BookNotice] = []
        self.config_hash = config.config_hash
        #: Contract-value tables set by ``contract_values`` frames, by venue.
        self.contract_values: dict[str, ContractValues] = {}
        #: Instrument tables set by ``instruments`` frames, by venue (else the fallback).
        self.instruments: dict[str, InstrumentTable] = {}

    # -- books ---------------------------------------------------------------------------
    def drain_notices(self) -> list[BookNotice]:
        """Book notices queued since the last call (gaps, resyncs, snapshot requests)."""
        out, self._notices = self._notices, []
        return out

    def book(self, venue: str, symbol: str) -> BookSync | None:
        return self.books.get((venue, symbol))

    def _apply_books(
        self, venue: str, frames: list[BookFrame], recv_ts_ms: int, alerts: list[Alert]
    ) -> list[MarketEvent]:
        events: list[MarketEvent] = []
        notices: list[BookNotice] = []
        for frame in frames:
            key = (venue, frame.symbol)
            sync = self.books.get(key)
            if sync is None:
                sync = BookSync(venue, frame.symbol, frame.base, frame.quote, frame.rule, self.book_throttle_ms,
                                snapshot_retry_ms=self.snapshot_retry_ms)
                self.books[key] = sync
            sync.apply(frame, recv_ts_ms, events, notices)
        for notice in notices:
            if notice.kind == NOTICE_GAP:
                self.stats.book_gaps[venue] += 1
                alerts.append(self._gap_alert(notice))
            elif notice.kind == NOTICE_RESYNCED:
                self.stats.book_resyncs[venue] += 1
        self._notices.extend(notices)
        return events

    def _gap_alert(self, notice: BookNotice) -> Alert:
        """``book_gap``: the book is invalid (feeds no price or depth) until re-synchronised."""
        venue, symbol = notice.venue, notice.symbol
        sync = self.books.get((venue, symbol))
        return make_alert(
            kind="book_gap", ts_ms=notice.ts_ms, severity="warning", venue=venue,
            asset=sync.base if sync is not None else None,
            message=(f"{venue} {symbol}: order-book sequence gap (expected {notice.expected}, "
                     f"got {notice.received}); book invalid until re-synchronised"),
            evidence={"symbol": symbol, "expected": notice.expected, "received": notice.received},
            config_hash=self.config_hash, identity=f"gap|{symbol}|{notice.expected}|{notice.received}",
        )

    def _status_alert(self, venue: str, raw: Any, recv_ts_ms: int) -> Alert:
        """``feed_stale`` or ``feed_lag`` from a ``feed_status`` frame (stamped with its receive time)."""
        if not isinstance(raw, dict):
            raise WireError("wrong_type", f"feed_status must be a JSON object, got {type(raw).__name__}")
        event = raw.get("event")
        if event == FEED_STATUS_LAG:
            return self._lag_alert(venue, raw, recv_ts_ms)
        if event != FEED_STATUS_STALE:
            raise WireError("wrong_value", f"feed_status event must be {FEED_STATUS_STALE!r} or "
                                           f"{FEED_STATUS_LAG!r}, got {event!r:.20}")
        watch = raw.get("channel")
        if not isinstance(watch, str) or not watch:
            raise WireError("wrong_type", "feed_status 'channel' must be a non-empty string")
        age_s = finite_float(raw.get("age_s"), "age_s")
        if age_s < 0.0:
            raise WireError("wrong_value", f"feed_status 'age_s' must be >= 0, got {age_s}")
        return make_alert(
            kind="feed_stale", ts_ms=recv_ts_ms, severity="warning", venue=venue, asset=None,
            message=f"{venue} {watch}: no data for {age_s:.1f} s after subscribing; reconnecting",
            evidence={"channel": watch, "age_s": age_s},
            config_hash=self.config_hash, identity=f"stale|{watch}",
        )

    def _lag_alert(self, venue: str, raw: dict[str, Any], recv_ts_ms: int) -> Alert:
        """``feed_lag``: the reader's lag level changed (``normal`` resolves the episode)."""
        level, previous = raw.get("level"), raw.get("previous_level")
        if level not in LAG_LEVELS or previous not in LAG_LEVELS or level == previous:
            raise WireError("wrong_value", f"feed_status lag levels must be two of {LAG_LEVELS}, "
                                           f"got {previous!r:.20} -> {level!r:.20}")
        figures: dict[str, float | None] = {}
        for key in _LAG_FIGURES:
            value = raw.get(key)
            if value is None and key != "lag_s":
                figures[key] = None
                continue
            number = finite_float(value, key)
            if number < 0.0:
                raise WireError("wrong_value", f"feed_status '{key}' must be >= 0, got {number}")
            figures[key] = number
        lag_s = figures["lag_s"] or 0.0
        rising = LAG_LEVELS.index(level) > LAG_LEVELS.index(previous)
        if level == "normal":
            message = f"{venue}: the feed reader caught up (lag {lag_s:.1f} s); the {previous} lag episode ends"
        else:
            verb = "is behind" if rising else "is still behind"
            message = f"{venue}: the feed reader {verb} the venue by {lag_s:.1f} s ({level})"
        return make_alert(
            kind="feed_lag", ts_ms=recv_ts_ms, severity="info" if level == "normal" else level,
            venue=venue, asset=None, message=message,
            evidence={"level": level, "previous_level": previous, **figures, "resolved": level == "normal"},
            config_hash=self.config_hash, identity=f"lag|{previous}->{level}",
        )

    def _reset_books(self, venue: str, raw: Any, recv_ts_ms: int) -> list[MarketEvent]:
        symbols = raw.get("symbols") if isinstance(raw, dict) else None
        if not isinstance(symbols, list) or not all(isinstance(x, str) for x in symbols):
            raise WireError("wrong_type", "book_reset needs 'symbols': a list of strings")
        events: list[MarketEvent] = []
        wanted = {s.upper() for s in symbols}
        for (book_venue, symbol), sync in self.books.items():
            if book_venue == venue and symbol.upper() in wanted:
                sync.reset(recv_ts_ms, recv_ts_ms, events)
        return events

    def _apply_session(self, raw: Any) -> None:
        """A ``session`` frame: the book throttle, for the books known and those to come."""
        if not isinstance(raw, dict):
            raise WireError("wrong_type", f"session must be a JSON object, got {type(raw).__name__}")
        throttle = raw.get("book_throttle_ms")
        if isinstance(throttle, bool) or not isinstance(throttle, int):
            raise WireError("wrong_type", f"session 'book_throttle_ms' must be an integer, got {throttle!r:.20}")
        if throttle < 0:
            raise WireError("wrong_value", f"session 'book_throttle_ms' must be >= 0, got {throttle}")
        lag = raw.get("tick_lag_ms", self.tick_lag_ms)
        if isinstance(lag, bool) or not isinstance(lag, int) or lag < 0:
            raise WireError("wrong_value", f"session 'tick_lag_ms' must be an integer >= 0, got {lag!r:.20}")
        self.book_throttle_ms = throttle
        self.tick_lag_ms = lag
        for sync in self.books.values():
            sync.throttle_ms = throttle

    def _garbage(self, venue: str, raw: Any, recv_ts_ms: int, line_no: int | None) -> DeadLetter:
        """The dead letter of a ``garbage`` frame: its reason, detail and bytes (at most a frame's worth)."""
        if not isinstance(raw, dict):
            raise WireError("wrong_type", f"garbage must be a JSON object, got {type(raw).__name__}")
        reason, detail = raw.get("reason"), raw.get("detail")
        if not isinstance(reason, str) or not _REASON.fullmatch(reason):
            raise WireError("wrong_value", f"garbage 'reason' must be a lower-case label, got {reason!r:.40}")
        if not isinstance(detail, str):
            raise WireError("wrong_type", "garbage 'detail' must be a string")
        text, b64 = raw.get("text"), raw.get("b64")
        if isinstance(text, str) and b64 is None:
            frame = text.encode("utf-8", "surrogatepass")
        elif isinstance(b64, str) and text is None:
            try:
                frame = base64.b64decode(b64, validate=True)
            except (binascii.Error, ValueError):
                raise WireError("wrong_value", "garbage 'b64' is not base64") from None
        else:
            raise WireError("missing_field", "garbage needs exactly one of 'text' or 'b64' (a string)")
        return self._dead(reason, f"{venue}: {detail}", frame[: self.max_frame_bytes],
                          venue=venue, ts_ms=recv_ts_ms, line_no=line_no)

    def _dead(self, reason: str, detail: str, raw: bytes, **where: Any) -> DeadLetter:
        self.stats.deadletters[reason] += 1
        return DeadLetter(reason, detail, raw, **where)

    def reject(self, reason: str, detail: str, raw: bytes, line_no: int | None = None) -> DeadLetter:
        """Dead-letter a line that failed before it became a frame (bad JSON, bad envelope)."""
        self.stats.frames += 1
        return self._dead(reason, detail, raw, line_no=line_no)

    def time_refusal(self, recv_ts_ms: int) -> tuple[str, str] | None:
        """(reason, detail) of a market or configuration frame received at ``recv_ts_ms``
        that :meth:`feed` refuses for its time alone, now (outside 2009-2100, or jumping
        past the stream's watermark by more than the configured jump); else None."""
        if not MIN_TS_MS <= recv_ts_ms <= MAX_TS_MS:
            return "timestamp_out_of_range", f"receive time {recv_ts_ms}"
        wm = self.watermark_ms
        if wm is not None and recv_ts_ms - wm > self.max_jump_ms:
            return "timestamp_future", f"receive time jumps {(recv_ts_ms - wm) / 1000:.0f} s past the stream"
        return None

    def feed(
        self,
        venue: str,
        channel: str,
        raw: Any,
        recv_ts_ms: int,
        raw_bytes: bytes,
        line_no: int | None = None,
    ) -> Iterator[IngestOutput]:
        """Validate one frame; yield the batches it closed, its dead letter, its feed alerts."""
        self.stats.frames += 1
        where = {"venue": venue, "channel": channel, "ts_ms": recv_ts_ms, "line_no": line_no}
        if channel == GARBAGE_CHANNEL:
            # Rejected before it was a frame: its dead letter only (no watermark, no checks
            # the live connector did not make either).
            try:
                yield self._garbage(venue, raw, recv_ts_ms, line_no)
            except WireError as exc:
                yield self._dead(exc.reason, exc.detail, raw_bytes[: self.max_frame_bytes], **where)
            return
        if len(raw_bytes) > self.max_frame_bytes and channel != MARGIN_TABLES_CHANNEL:
            yield self._dead(
                "oversize", f"frame of {len(raw_bytes)} bytes > {self.max_frame_bytes}",
                raw_bytes[: self.max_frame_bytes], **where)
            return
        refused = self.time_refusal(recv_ts_ms)
        if refused is not None:
            reason, detail = refused
            yield self._dead(reason, detail, raw_bytes, **where)
            return
        wm = self.watermark_ms
        alerts: list[Alert] = []
        try:
            if channel in CONFIG_CHANNELS:
                # Configuration, not market data: no events, and the watermark stays.
                if channel == CONTRACT_VALUES_CHANNEL:
                    self.contract_values[venue] = parse_contract_values(raw)
                elif channel == INSTRUMENTS_CHANNEL:
                    self.instruments[venue] = parse_instruments(raw, self.aliases)
                elif channel == SESSION_CHANNEL:
                    self._apply_session(raw)
                return
            if channel == BOOK_RESET_CHANNEL:
                events = self._reset_books(venue, raw, recv_ts_ms)
            elif channel == FEED_STATUS_CHANNEL:
                alerts.append(self._status_alert(venue, raw, recv_ts_ms))
                events = []
            else:
                events = self._market(venue, channel, raw, recv_ts_ms, alerts)
        except PartialWireError as exc:
            # Some items are unusable: dead-letter the frame, keep the events of the others.
            yield self._dead(exc.reason, exc.detail, raw_bytes, **where)
            events = exc.events
        except WireError as exc:
            yield self._dead(exc.reason, exc.detail, raw_bytes, **where)
            return
        if wm is None or recv_ts_ms > wm:
            self.watermark_ms = recv_ts_ms
            yield from self._tick(recv_ts_ms)
        for ev in events:
            self.stats.events += 1
            self.stats.events_by_source[ev.venue] += 1
            if ev.base in self.quote_assets:
                # A quote currency's price converts every asset: a barrier for all batches.
                for batch in self.batcher.flush():
                    yield Routed(batch, broadcast=False)
                single = Batch(asset=ev.base)
                single.add(ev)
                yield Routed(single, broadcast=True)
                continue
            for batch in self.batcher.add(ev):
                yield Routed(batch, broadcast=False)
        yield from alerts

    def _market(self, venue: str, channel: str, raw: Any, recv_ts_ms: int, alerts: list[Alert]) -> list[MarketEvent]:
        """Events of one market frame, its symbols resolved with the venue's tables."""
        table = self.contract_values.get(venue, BUILTIN_CONTRACT_VALUES)
        instruments = self.instruments.get(venue, NO_INSTRUMENTS)
        args = (venue, channel, raw, recv_ts_ms, self.aliases, self.max_future_skew_ms, table, instruments)
        frames = parse_book(*args)
        if frames is None:
            return normalize(*args)
        return self._apply_books(venue, frames, recv_ts_ms, alerts)

    def _tick(self, now_ms: int) -> Iterator[Routed]:
        """Expire old batches and broadcast a tick at (now − lag), once per tick interval.

        The lag is the batch span by default: in a replay at full speed a sparse asset's
        batch stays open that long, and closing it earlier would cost records. A live
        session closes its batches every flush interval anyway and sets a short lag (its
        ``session`` frame records it), so silent partitions hold the global stage back
        by seconds, not by the span. A pure function of the frames' receive times, so the
        replayer, the inline path and the live feeds emit the same ticks for the same stream.
        """
        if self._next_tick_ms is None:
            self._next_tick_ms = now_ms - now_ms % self.tick_interval_ms + self.tick_interval_ms
            return
        if now_ms < self._next_tick_ms:
            return
        self._next_tick_ms = now_ms - now_ms % self.tick_interval_ms + self.tick_interval_ms
        horizon = now_ms - self.tick_lag_ms
        for batch in self.batcher.expire(horizon):
            yield Routed(batch, broadcast=False)
        yield Routed(Batch.tick(horizon), broadcast=True)

    def finish(self) -> Iterator[Routed]:
        """Close every open batch."""
        for batch in self.batcher.flush():
            yield Routed(batch, broadcast=False)
