"""The live runner: connections → record → :class:`monitor.ingest.frames.Ingest` → sink.

Every data frame is recorded (when recording) and fed to the one Ingest in the same
synchronous step, in arrival order, with the same receive time, so a recording replays
through the replayer to the same books, events and alerts. REST snapshots, connection
drops (``book_reset``), silent channels (``feed_status``), frames rejected before routing
(``garbage``: their bytes, reason and detail, so a replay gives the same dead letters),
and, once at the start, the session's ingest settings (``session``: the book throttle and tick lag)
and the contract-value tables (``contract_values``) are frames too, for the same reason;
so are the venue margin tables fetched at start (``margin_tables``, one frame per venue,
raw ``{venue: response}``), which ingest passes over and ``liqmon stress`` reads.

Feed alerts come out of Ingest, as in a replay: ``book_gap`` when a book detects a
sequence gap, ``feed_stale`` from the ``feed_status`` frame the watchdog's report
becomes. Book notices from Ingest drive the connectors: a gap counts in
``liqmon_feed_gaps_total``; a snapshot request fetches the REST depth snapshot (Binance)
or resubscribes the book stream (Bybit, OKX); a resync counts in
``liqmon_feed_resyncs_total``.

A reader behind its venue (:mod:`streams.feeds.overload`): each connection's lag sample
sets ``liqmon_feed_lag_seconds`` (the venue's largest); a change of the venue's lag level
(:class:`monitor.ingest.feed_lag.LagLevel`) becomes a ``feed_status`` frame, recorded and turned
into a ``feed_lag`` alert by Ingest like ``feed_stale``. Frames a connection coalesced away
count in ``liqmon_feed_shed_frames_total``; they are neither recorded nor ingested, so a
recording replays to what the session processed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import zlib
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import aiohttp
import orjson

from monitor.config import EngineConfig
from monitor.ingest.feed_lag import LagLevel, lag_status_raw
from monitor.ingest.frames import (
    BOOK_RESET_CHANNEL,
    CONTRACT_VALUES_CHANNEL,
    FEED_STATUS_CHANNEL,
    GARBAGE_CHANNEL,
    INSTRUMENTS_CHANNEL,
    SESSION_CHANNEL,
    SESSION_VENUE,
    Ingest,
    Routed,
    feed_status_raw,
    garbage_raw,
    session_raw,
)
from monitor.ingest.orderbook import NOTICE_GAP, NOTICE_NEED_SNAPSHOT, NOTICE_RESYNCED, BookNotice
from monitor.ingest.venue_tables import MARGIN_TABLES_CHANNEL
from monitor.ingest.wire.instruments import InstrumentTable, instruments_raw
from monitor.ingest.wire.okx import contract_values_raw
from monitor.metrics import Metrics
from monitor.protocol import Alert, DeadLetter
from replay.capture import dumps_line, gzip_writer
from streams.backoff import Backoff
from streams.feeds.backlog import PublishBacklog
from streams.feeds.base import Clock, FeedConnection, SystemClock, VenueAdapter
from streams.feeds.config import LiveConfig, build_adapter
from streams.feeds.overload import LagSample
from streams.feeds.rest import RATE_LIMITED, RateLimitHolds
from streams.kafka.publish import ITEM_KINDS, Sink, item_kind

__all__ = ["LiveRunner", "LiveStats", "Recorder"]

log = logging.getLogger(__name__)


class Recorder:
    """Appends frames to a capture file (gzip when the name ends in .gz, mtime 0).

    The recording serves the monitor, never the other way round: the first write, flush or
    close that fails (a full disk, a file system gone read-only) stops it for good and is
    logged once, and :attr:`error` says why; the frames go on to ingest as before. The file
    keeps what reached it before (its last line, or a gzip file's end, may be cut short)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._fh: IO[bytes] = path.open("wb")
        self._out: IO[bytes] = self._fh
        if path.suffix == ".gz":
            self._out = gzip_writer(self._fh)
        #: Lines handed to the file (the last of them may not have reached the disk after a failure).
        self.lines = 0
        #: Why the recording stopped before the session did (None: it has not).
        self.error: OSError | None = None

    def write(self, ts_ms: int, venue: str, channel: str, raw: Any) -> None:
        if self.error is not None:
            return
        try:
            self._out.write(dumps_line(ts_ms, venue, channel, raw) + b"\n")
        except OSError as exc:
            self._stop(exc)
            return
        self.lines += 1

    def flush(self) -> None:
        self._guarded(self._flush)

    def close(self) -> None:
        self._guarded(self._close)

    def _flush(self) -> None:
        self._out.flush()
        if self._out is not self._fh:
            self._fh.flush()

    def _close(self) -> None:
        if self._out is not self._fh:
            self._out.close()
        self._fh.close()

    def _guarded(self, step: Callable[[], None]) -> None:
        """``step()`` unless the recording has stopped; its OSError stops it."""
        if self.error is not None:
            return
        try:
            step()
        except OSError as exc:
            self._stop(exc)

    def _stop(self, exc: OSError) -> None:
        self.error = exc
        log.error("recording to %s stopped after %d lines: %s; the session goes on unrecorded",
                  self.path, self.lines, exc.strerror or exc)
        for handle in (self._out, self._fh):  # the file descriptor is released even if a flush fails
            with contextlib.suppress(OSError, ValueError):
                handle.close()


@dataclass
class LiveStats:
    frames: int = 0
    garbage: int = 0
    handler_errors: int = 0
    stale: int = 0
    reconnects: int = 0
    snapshots: int = 0
    resubscribes: int = 0
    #: Frames coalesced away while a reader was behind, by venue.
    shed: Counter[str] = field(default_factory=Counter)
    #: Feed alerts raised (``book_gap``, ``feed_stale``, ``feed_lag``), by kind: counted, not
    #: kept (a session may run for months; the alerts themselves are published).
    alerts: Counter[str] = field(default_factory=Counter)
    #: Items never handed to the broker (shed from a full backlog, refused by the producer,
    #: left at the end), by kind (:func:`streams.kafka.publish.item_kind`).
    unpublished: Counter[str] = field(default_factory=Counter)
    #: Why the producer could not confirm what it was handed at the end (None: it did).
    unconfirmed: str | None = None


class LiveRunner:
    """Runs the configured connections and turns their frames into sink output."""

    def __init__(
        self,
        engine_config: EngineConfig,
        live_config: LiveConfig,
        sink: Sink,
        *,
        recorder: Recorder | None = None,
        metrics: Metrics | None = None,
        clock: Clock | None = None,
        margin_tables: Mapping[str, Any] | None = None,
        instruments: Mapping[str, InstrumentTable] | None = None,
    ) -> None:
        self.engine_config = engine_config
        #: Venue instrument tables to record at start (:mod:`streams.feeds.instruments`).
        self.instruments = dict(instruments or {})
        #: Venue responses to record at start (:mod:`streams.feeds.margin_tables`).
        self.margin_tables = dict(margin_tables or {})
        self.config_hash = engine_config.config_hash
        self.live = live_config
        self.sink = sink
        self.recorder = recorder
        self.metrics = metrics
        self.clock: Clock = clock or SystemClock()
        self._holds = RateLimitHolds(self.clock)
        self.ingest = Ingest(engine_config, book_throttle_ms=live_config.book_throttle_ms,
                             tick_lag_ms=live_config.tick_lag_ms,
                             batch_max_events=live_config.batch_max_events,
                             snapshot_retry_ms=live_config.snapshot_retry_ms)
        self.stats = LiveStats()
        self.adapters: dict[str, VenueAdapter] = {}
        self.connections: list[FeedConnection] = []
        rng = random.Random(live_config.seed)
        for venue, feed in live_config.venues.items():
            if not feed.enabled or not feed.streams:
                continue
            adapter = build_adapter(venue, feed)
            self.adapters[venue] = adapter
            for plan in adapter.plan(feed.streams):
                self.connections.append(FeedConnection(
                    adapter, plan, self, self.clock, Backoff(live_config.backoff, random.Random(rng.random())),
                    stale_after_s=feed.stale_after_s, liquidation_stale_after_s=feed.liquidation_stale_after_s,
                    tick_s=live_config.watchdog_tick_s, overload=live_config.overload,
                ))
        self._backlog: PublishBacklog[Routed | DeadLetter | Alert] = PublishBacklog(live_config.publish_backlog_items)
        self._shedding = False  # the backlog is full: its oldest items are being shed
        self._sending: str | None = None  # the kind of the item the pump is handing to the sink
        self._failed_seen: Counter[str] = Counter()  # the sink's failures counted so far
        self._inflight: set[tuple[str, str]] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._http: aiohttp.ClientSession | None = None
        self._lag_samples: dict[int, LagSample] = {}
        self._lag_levels = {venue: LagLevel(live_config.overload.lag) for venue in self.adapters}
        if self.metrics is not None:  # each kind's series from the start: an increase counts the first drop
            for kind in ITEM_KINDS:
                self.metrics.publish_dropped_total.labels(kind=kind)

    # -- FeedHandler ----------------------------------------------------------------------
    def on_frame(self, venue: str, channel: str, raw: Any, raw_bytes: bytes, recv_ts_ms: int) -> None:
        self.stats.frames += 1
        if self.recorder is not None:
            self.recorder.write(recv_ts_ms, venue, channel, raw)
        for out in self.ingest.feed(venue, channel, raw, recv_ts_ms, raw_bytes):
            if isinstance(out, Alert):
                self._alert(out)
            else:
                self._publish(out)
        for notice in self.ingest.drain_notices():
            self._on_notice(notice)

    def on_garbage(self, venue: str, raw_bytes: bytes, reason: str, detail: str, recv_ts_ms: int) -> None:
        self.stats.garbage += 1
        raw = garbage_raw(reason, detail, raw_bytes[: self.ingest.max_frame_bytes])
        if self.recorder is not None:
            self.recorder.write(recv_ts_ms, venue, GARBAGE_CHANNEL, raw)
        for out in self.ingest.feed(venue, GARBAGE_CHANNEL, raw, recv_ts_ms, orjson.dumps(raw)):
            self._publish(out)
            if isinstance(out, DeadLetter) and self.metrics is not None:
                self.metrics.deadletter_total.labels(reason=out.reason).inc()

    def on_stale(self, venue: str, watch: str, age_s: float, ts_ms: int) -> None:
        self.stats.stale += 1
        raw = feed_status_raw(watch, age_s)
        self.on_frame(venue, FEED_STATUS_CHANNEL, raw, orjson.dumps(raw), ts_ms)

    def on_age(self, venue: str, watch: str, age_s: float) -> None:
        if self.metrics is not None:
            self.metrics.feed_last_event_age_seconds.labels(venue=venue, channel=watch).set(age_s)

    def on_connected(self, conn: FeedConnection) -> None:
        if conn.connects > 1:
            self.stats.reconnects += 1
            if self.metrics is not None:
                self.metrics.feed_reconnects_total.labels(venue=conn.venue).inc()

    def on_disconnected(self, conn: FeedConnection, reason: str, ts_ms: int) -> None:
        symbols = sorted({s for s in (conn.adapter.book_symbol(x) for x in conn.plan.streams) if s})
        if symbols:
            raw = {"symbols": symbols, "reason": reason[:200]}
            self.on_frame(conn.venue, BOOK_RESET_CHANNEL, raw, orjson.dumps(raw), ts_ms)

    def on_lag(self, conn: FeedConnection, sample: LagSample) -> None:
        """A connection's lag sample: the venue's gauge, and a ``feed_status`` frame on a level change."""
        venue = conn.venue
        self._lag_samples[id(conn)] = sample
        worst = max((self._lag_samples[id(c)] for c in self.connections
                     if c.venue == venue and id(c) in self._lag_samples), key=lambda x: x.lag_s)
        if self.metrics is not None:
            self.metrics.feed_lag_seconds.labels(venue=venue).set(worst.lag_s)
        level = self._lag_levels.get(venue)
        change = level.observe(worst.lag_s) if level is not None else None
        if change is not None:
            raw = lag_status_raw(*change, worst.lag_s, {**worst.evidence(), "shed_frames": self.stats.shed[venue]})
            self.on_frame(venue, FEED_STATUS_CHANNEL, raw, orjson.dumps(raw), self.clock.wall_ms())

    def on_shed(self, venue: str, watch: str, frames: int) -> None:
        self.stats.shed[venue] += frames
        if self.metrics is not None:
            self.metrics.feed_shed_frames_total.labels(venue=venue, channel=watch).inc(frames)

    def on_backlog_taken(self, venue: str) -> None:
        """A backlog was taken at once: publish its batches now. The next frames of the same
        assets are a backlog away, and batch boundaries are not part of a recording."""
        for routed in self.ingest.finish():
            self._publish(routed)

    def on_handler_error(self, venue: str, exc: BaseException) -> None:
        self.stats.handler_errors += 1
        log.error("%s: frame handler failed: %r", venue, exc)

    # -- notices ----------------------------------------------------------------------------
    def _alert(self, alert: Alert) -> None:
        self.stats.alerts[alert.kind] += 1
        self._publish(alert)
        if self.metrics is not None:
            self.metrics.alerts_total.labels(kind=alert.kind, severity=alert.severity).inc()

    def _on_notice(self, notice: BookNotice) -> None:
        venue, symbol = notice.venue, notice.symbol
        if notice.kind == NOTICE_GAP:
            if self.metrics is not None:
                self.metrics.feed_gaps_total.labels(venue=venue).inc()
        elif notice.kind == NOTICE_RESYNCED:
            if self.metrics is not None:
                self.metrics.feed_resyncs_total.labels(venue=venue).inc()
        elif notice.kind == NOTICE_NEED_SNAPSHOT:
            self._resync(venue, symbol)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _resync(self, venue: str, symbol: str) -> None:
        adapter = self.adapters.get(venue)
        if adapter is None:
            return
        key = (venue, symbol)
        if key in self._inflight:
            return
        request = adapter.snapshot_request(symbol)
        if request is not None:
            self._inflight.add(key)
            self._spawn(self._fetch_snapshot(adapter, symbol, request[0], request[1]))
            return
        for conn in self.connections:
            if conn.venue == venue:
                stream = adapter.book_stream(symbol, conn.plan.streams)
                if stream is not None:
                    self.stats.resubscribes += 1
                    self._spawn(conn.resubscribe([stream]))
                    return

    async def _fetch_snapshot(self, adapter: VenueAdapter, symbol: str, url: str, params: dict[str, str]) -> None:
        venue = adapter.venue
        backoff = Backoff(self.live.backoff, random.Random(zlib.crc32(f"{venue}|{symbol}".encode())))
        try:
            while True:
                held_s = self._holds.remaining_s(url)  # the venue's rate limit, whichever book met it
                if held_s > 0:
                    await self.clock.sleep(held_s)
                    continue
                try:
                    body = await self._get(venue, url, params)
                    raw = orjson.loads(body)
                except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError) as exc:
                    delay = max(backoff.next_delay(), self._holds.remaining_s(url))
                    log.warning("%s %s: depth snapshot failed (%s); retry in %.1f s", venue, symbol, exc, delay)
                    await self.clock.sleep(delay)
                    continue
                self.stats.snapshots += 1
                self._inflight.discard((venue, symbol))
                try:
                    self.on_frame(venue, f"{symbol.lower()}@depthSnapshot", raw, body, self.clock.wall_ms())
                except Exception as exc:
                    self.on_handler_error(venue, exc)
                return
        finally:
            self._inflight.discard((venue, symbol))

    async def _get(self, venue: str, url: str, params: dict[str, str]) -> bytes:
        """The body of a 200 answer to ``GET url``; any other raises ClientResponseError (a
        rate limit's ``Retry-After`` held on the host first)."""
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        async with self._http.get(url, params=params) as resp:
            body = await resp.read()
            if resp.status != 200:
                if resp.status in RATE_LIMITED:
                    self._holds.hold(url, resp.status, resp.headers, venue)
                raise aiohttp.ClientResponseError(
                    resp.request_info, (), status=resp.status, message=body[:200].decode(errors="replace"))
        return body

    def _announce_session(self) -> None:
        """Feed (and record) the ingest settings a replay needs to match this session."""
        raw = session_raw(self.live.book_throttle_ms, self.live.tick_lag_ms)
        self.on_frame(SESSION_VENUE, SESSION_CHANNEL, raw, orjson.dumps(raw), self.clock.wall_ms())

    def _announce_contract_values(self) -> None:
        """Feed (and record) the contract-value table of each connected contract-sized venue."""
        for venue, table in self.live.contract_values().items():
            if venue in self.adapters:
                raw = contract_values_raw(table)
                self.on_frame(venue, CONTRACT_VALUES_CHANNEL, raw, orjson.dumps(raw), self.clock.wall_ms())

    def _announce_instruments(self) -> None:
        """Feed (and record) the instrument table fetched for each venue of the session."""
        for venue, table in sorted(self.instruments.items()):
            raw = instruments_raw(table)
            self.on_frame(venue, INSTRUMENTS_CHANNEL, raw, orjson.dumps(raw), self.clock.wall_ms())

    def _announce_margin_tables(self) -> None:
        """Record the venue margin tables fetched at start, one frame per venue."""
        for part, resp in self.margin_tables.items():
            raw = {part: resp}
            self.on_frame(SESSION_VENUE, MARGIN_TABLES_CHANNEL, raw, orjson.dumps(raw), self.clock.wall_ms())

    # -- running ----------------------------------------------------------------------------
    @property
    def backlog_items(self) -> int:
        """Items waiting for the pump to hand them to the sink."""
        return len(self._backlog)

    def _publish(self, item: Routed | DeadLetter | Alert | None) -> None:
        """Queue ``item`` for the pump (None: the last); a full backlog sheds its oldest item."""
        shed = self._backlog.put(item)
        if shed is not None:
            self._unpublished(shed, 1)
            if not self._shedding:
                self._shedding = True
                log.error("the broker is not taking records: %d wait to be published; the oldest are shed "
                          "(liqmon_publish_dropped_total) until it does", len(self._backlog))
        if self.metrics is not None:
            self.metrics.publish_backlog_items.set(self.backlog_items)

    def _count_failed(self) -> None:
        """Count the items the sink sent and the broker did not take since the last call."""
        failed = self.sink.failed
        for kind, count in failed.items():
            if count > self._failed_seen[kind]:
                self._unpublished(kind, count - self._failed_seen[kind])
        self._failed_seen = Counter(failed)

    def _unpublished(self, kind: str, count: int) -> None:
        self.stats.unpublished[kind] += count
        if self.metrics is not None:
            self.metrics.publish_dropped_total.labels(kind=kind).inc(count)

    async def _pump(self) -> None:
        while True:
            item = await self._backlog.get()
            if item is None:
                return
            self._sending = item_kind(item)
            try:
                if isinstance(item, Alert):
                    await self.sink.send_alert(item)
                else:
                    await self.sink.send(item)
            except Exception as exc:  # the broker is down or a sink bug: report, keep the feeds
                self._unpublished(self._sending, 1)
                self.on_handler_error("sink", exc)
            self._sending = None
            if self._shedding and not len(self._backlog):
                self._shedding = False
                log.warning("publishing caught up; %s shed meanwhile", dict(self.stats.unpublished))
            if self.metrics is not None:
                self.metrics.publish_backlog_items.set(self.backlog_items)

    async def _drain(self, pump: asyncio.Future[None]) -> None:
        """Let the pump publish what is left and the producer confirm it, for at most
        ``publish_drain_s`` together (the broker may be away); what is left is then counted
        as not published, and a producer that cannot confirm is said so in the stats."""
        loop = asyncio.get_running_loop()
        end = loop.time() + self.live.publish_drain_s
        try:
            await asyncio.wait_for(pump, self.live.publish_drain_s)
        except TimeoutError:
            left = self._backlog.left()
            if self._sending is not None:
                left[self._sending] += 1
            for kind, count in left.items():
                self._unpublished(kind, count)
            log.error("the broker took nothing for %.0f s: %s left unpublished", self.live.publish_drain_s, dict(left))
        try:
            await asyncio.wait_for(self.sink.flush(), max(0.1, end - loop.time()))
        except Exception as exc:  # whatever the producer raises (TimeoutError too), the session ends saying it
            self.stats.unconfirmed = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            waiting = self.sink.unconfirmed()  # an item refused is in failed, counted below, not here
            for kind, count in waiting.items():
                self._unpublished(kind, count)
            log.error("the broker did not confirm the last records (%s): %s counted as not published",
                      self.stats.unconfirmed, dict(waiting))
        self._count_failed()

    async def _flusher(self) -> None:
        while True:
            await asyncio.sleep(self.live.flush_interval_s)
            for routed in self.ingest.finish():
                self._publish(routed)
            self._flush_recording()
            self._count_failed()

    def _flush_recording(self) -> None:
        """Flush the recording; once it has stopped (:class:`Recorder`), say so in ``liqmon_recording_failed``."""
        if self.recorder is None:
            return
        self.recorder.flush()
        if self.recorder.error is not None and self.metrics is not None:
            self.metrics.recording_failed.set(1)

    async def run(self, duration_s: float | None = None, stop: asyncio.Event | None = None) -> LiveStats:
        """Run until ``duration_s`` passes or ``stop`` is set; then flush everything."""
        self._announce_session()
        self._announce_contract_values()
        self._announce_instruments()
        self._announce_margin_tables()
        pump = asyncio.ensure_future(self._pump())
        flusher = asyncio.ensure_future(self._flusher())
        conns = [asyncio.ensure_future(c.run()) for c in self.connections]
        stopper = asyncio.ensure_future(stop.wait() if stop is not None else asyncio.Event().wait())
        try:
            await asyncio.wait({stopper, *conns}, timeout=duration_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for conn in self.connections:
                conn.stop()
            for task in (*conns, flusher, stopper, *self._tasks):
                task.cancel()
            for task in (*conns, flusher, stopper, *list(self._tasks)):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            for routed in self.ingest.finish():
                self._publish(routed)
            self._publish(None)
            await self._drain(pump)
            if self._http is not None:
                await self._http.close()
            self._flush_recording()
        return self.stats
