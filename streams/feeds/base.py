"""The websocket loop, written once for every venue (STYLE.md "Feeds").

A :class:`VenueAdapter` says what is venue-specific (endpoints and sharding, subscribe
messages, how to tell a data frame's channel, app-level ping, limits); a
:class:`FeedConnection` runs one websocket with it:

* subscribe at most ``max_msgs_per_s`` messages per second (Binance: 10 incoming
  messages/s per connection, so we stay well under it);
* a staleness watchdog per subscribed channel on *receive* time: a channel with no frame
  for its timeout is reported (``feed_stale``) and the connection is re-opened, unless the
  venue refused it, or it sent nothing on the last connection either while other channels
  deliver on this one (a stream the venue took and never serves);
* a planned reconnect before the venue's connection-life limit (Binance: 24 h), and when
  the venue announces it will close the connection (OKX's ``64008`` notice);
* capped exponential backoff with jitter between attempts, reset after a healthy period;
* a failure in the downstream handler is reported and the loop goes on: it is never
  turned into a reconnect;
* the reader's lag, measured every watchdog tick and reported (:mod:`streams.feeds.overload`);
  when the client queues ``shed_backlog_frames`` or more, every queued message is taken at
  once and coalescible channels (the adapter's ``coalescible``) deliver only their newest
  frame; the rest is reported as shed, never silently dropped.

Time comes from an injectable :class:`Clock`, so tests measure the spacing of attempts
without waiting for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
import websockets

from streams.backoff import Backoff
from streams.feeds.overload import (
    LagSample,
    OverloadConfig,
    ReaderLag,
    coalesce,
    queued_frames,
    socket_backlog,
    take_queued,
)

__all__ = [
    "Clock",
    "ConnectionPlan",
    "FeedConnection",
    "FeedHandler",
    "FrameRoute",
    "SystemClock",
    "VenueAdapter",
    "ms_or_none",
]

log = logging.getLogger(__name__)


class Clock(Protocol):
    """Monotonic seconds for timers, wall milliseconds for receive stamps, and sleep."""

    def monotonic(self) -> float: ...

    def wall_ms(self) -> int: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock."""

    def monotonic(self) -> float:
        return time.monotonic()

    def wall_ms(self) -> int:
        return time.time_ns() // 1_000_000

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


@dataclass(frozen=True, slots=True)
class FrameRoute:
    """Where a data frame belongs: capture ``channel`` and staleness ``watch`` key."""

    channel: str
    watch: str


@dataclass(frozen=True, slots=True)
class ConnectionPlan:
    """One websocket: its URL and the streams (venue-native names) it carries."""

    url: str
    streams: tuple[str, ...]


class VenueAdapter(ABC):
    """What differs per venue; everything else is in :class:`FeedConnection`."""

    venue: str = ""
    #: Streams per connection (Binance: 1024).
    max_streams_per_connection: int = 200
    #: Outgoing messages per second on one connection (subscribe, ping).
    max_msgs_per_s: float = 5.0
    #: Planned reconnect after this long (None: no limit).
    max_connection_life_s: float | None = None
    #: Application-level ping period (None: rely on protocol pings).
    ping_interval_s: float | None = None
    #: Streams per subscribe message.
    streams_per_message: int = 10

    def __init__(self, ws_url: str, rest_url: str | None = None) -> None:
        self.ws_url = ws_url.rstrip("/")
        self.rest_url = rest_url.rstrip("/") if rest_url else None

    def plan(self, streams: Sequence[str]) -> list[ConnectionPlan]:
        """Connections for ``streams``: grouped by endpoint, at most the stream cap each."""
        by_url: dict[str, list[str]] = {}
        for stream in streams:
            by_url.setdefault(self.endpoint(stream), []).append(stream)
        out: list[ConnectionPlan] = []
        cap = self.max_streams_per_connection
        for url, group in by_url.items():
            for i in range(0, len(group), cap):
                out.append(ConnectionPlan(url, tuple(group[i : i + cap])))
        return out

    def endpoint(self, stream: str) -> str:
        """Websocket URL serving ``stream``."""
        return self.ws_url

    @abstractmethod
    def subscribe_messages(self, streams: Sequence[str]) -> list[str]:
        """Subscribe messages (JSON text) for ``streams``."""

    def unsubscribe_messages(self, streams: Sequence[str]) -> list[str]:
        """Unsubscribe messages for ``streams`` (used to force a fresh book snapshot)."""
        return []

    @abstractmethod
    def route(self, msg: Any) -> FrameRoute | None:
        """The route of a decoded data frame; None for control frames (acks, pongs)."""

    def ping_message(self) -> str | None:
        return None

    def refusal(self, msg: Any) -> str | None:
        """The venue's own words when a control frame refuses a request (a subscription to a
        stream it does not have, a malformed one); None for every other frame."""
        return None

    def refused_stream(self, said: str) -> str | None:
        """The stream (as configured) a refusal's words name, None when they name none."""
        return None

    def closing_notice(self, msg: Any) -> str | None:
        """The venue's words when a control frame announces it will close this connection
        soon (a service upgrade); None for every other frame."""
        return None

    def is_control_text(self, text: str) -> bool:
        """Non-JSON control text a venue sends (OKX ``pong``)."""
        return False

    def book_symbol(self, stream: str) -> str | None:
        """Symbol of the local book fed by ``stream`` (upper case), None if not a book stream."""
        return None

    def book_stream(self, symbol: str, streams: Sequence[str]) -> str | None:
        """The book stream of ``symbol`` among ``streams``."""
        for stream in streams:
            if self.book_symbol(stream) == symbol.upper():
                return stream
        return None

    def stale_after_s(self, stream: str, default_s: float, liquidation_s: float) -> float:
        """Staleness timeout of ``stream`` (liquidation streams are quiet in calm markets)."""
        return liquidation_s if "liquidation" in stream.lower() or "forceorder" in stream.lower() else default_s

    #: REST snapshot needed to start a book (Binance depth); None when books snapshot in-band.
    def snapshot_request(self, symbol: str) -> tuple[str, dict[str, str]] | None:
        return None

    def coalescible(self, route: FrameRoute) -> bool:
        """True when each frame of the route carries a whole state (a ticker, a book snapshot):
        under a backlog only the newest is delivered. Never trades, liquidations or book diffs."""
        return False

    def event_ts_ms(self, msg: Any) -> int | None:
        """The venue's own timestamp of a data frame (ms), None when it has none."""
        return None

    def peek_route(self, raw_bytes: bytes) -> FrameRoute | None:
        """The route read off the frame's first bytes without decoding it, None when unsure:
        under a backlog a coalesced frame costs no JSON decoding."""
        return None


class FeedHandler(Protocol):
    """The downstream side of a connection (the live runner)."""

    def on_frame(self, venue: str, channel: str, raw: Any, raw_bytes: bytes, recv_ts_ms: int) -> None: ...

    def on_garbage(self, venue: str, raw_bytes: bytes, reason: str, detail: str, recv_ts_ms: int) -> None: ...

    def on_stale(self, venue: str, watch: str, age_s: float, ts_ms: int) -> None: ...

    def on_age(self, venue: str, watch: str, age_s: float) -> None: ...

    def on_connected(self, conn: FeedConnection) -> None: ...

    def on_disconnected(self, conn: FeedConnection, reason: str, ts_ms: int) -> None: ...

    def on_handler_error(self, venue: str, exc: BaseException) -> None: ...

    def on_lag(self, conn: FeedConnection, sample: LagSample) -> None: ...

    def on_shed(self, venue: str, watch: str, frames: int) -> None: ...

    def on_backlog_taken(self, venue: str) -> None: ...


def ms_or_none(value: Any) -> int | None:
    """An integer millisecond timestamp from a JSON number or numeric string, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def data_ms(msg: Any, *fields: str) -> int | None:
    """The first of ``fields`` present in a frame's ``data`` object (or its list's first
    element) as a millisecond timestamp, else None: the event time of most venues' pushes."""
    data = msg.get("data")
    if isinstance(data, list):
        data = data[0] if data else None
    if not isinstance(data, dict):
        return None
    return ms_or_none(next((data[f] for f in fields if f in data), None))


@dataclass
class _Watch:
    timeout_s: float
    last_rx: float
    stale: bool = False
    #: A frame came on this connection.
    delivered: bool = False
    #: The venue refused its subscription on this connection.
    refused: bool = False


@dataclass
class FeedConnection:
    """One websocket of one venue, reconnecting forever until ``stop()``."""

    adapter: VenueAdapter
    plan: ConnectionPlan
    handler: FeedHandler
    clock: Clock
    backoff: Backoff
    stale_after_s: float = 30.0
    liquidation_stale_after_s: float = 900.0
    #: Watchdog and gauge period.
    tick_s: float = 1.0
    max_frame_bytes: int = 4 << 20
    overload: OverloadConfig = field(default_factory=OverloadConfig)
    attempts: list[float] = field(default_factory=list)
    #: Why each connection ended ("stale", "planned", "closed: ...", "error: ...").
    endings: list[str] = field(default_factory=list)
    connects: int = 0
    _ws: Any = None
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _watches: dict[str, _Watch] = field(default_factory=dict)
    #: Streams that went stale on the last connection without a single frame on it.
    _silent_before: frozenset[str] = frozenset()
    #: The venue announced it will close this connection (re-opened at the next tick).
    _closing: bool = False
    _last_send: float = -1e18
    _lag: ReaderLag = field(default_factory=lambda: ReaderLag(0.0))
    #: Channel → coalescible (the adapter's answer, cached: the hot path under load).
    _coalescible: dict[str, bool] = field(default_factory=dict)

    @property
    def venue(self) -> str:
        return self.adapter.venue

    def stop(self) -> None:
        """Ask the loop to end (it notices within one watchdog tick)."""
        self._stop.set()

    async def run(self) -> None:
        """Connect, subscribe, receive; on any failure back off and do it again."""
        while not self._stop.is_set():
            started = self.clock.monotonic()
            self.attempts.append(started)
            got_data = False
            reason = "stopped"
            try:
                async with websockets.connect(
                    self.plan.url, proxy=None, open_timeout=10, max_size=self.max_frame_bytes,
                    compression=None, max_queue=self.overload.max_queue_frames,
                ) as ws:
                    self._ws = ws
                    self._closing = False
                    self.connects += 1
                    self._safe(self.handler.on_connected, self)
                    await self._send_all(ws, self.adapter.subscribe_messages(self.plan.streams))
                    now = self.clock.monotonic()
                    timeout = self.adapter.stale_after_s
                    self._watches = {
                        s: _Watch(timeout(s, self.stale_after_s, self.liquidation_stale_after_s), now)
                        for s in self.plan.streams
                    }
                    self._lag = ReaderLag(now)
                    reason, got_data = await self._receive(ws, started)
            except asyncio.CancelledError:
                raise
            except (OSError, TimeoutError, websockets.WebSocketException) as exc:
                reason = f"error: {type(exc).__name__}: {exc}"
            finally:
                self._ws = None
                self._silent_before = frozenset(k for k, w in self._watches.items() if w.stale and not w.delivered)
            self.endings.append(reason)
            if self.connects:
                self._safe(self.handler.on_disconnected, self, reason, self.clock.wall_ms())
            if self._stop.is_set():
                break
            healthy = got_data and self.clock.monotonic() - started >= self.backoff.policy.healthy_after_s
            if healthy or reason == "planned":
                self.backoff.reset()
            delay = 0.0 if reason == "planned" else self.backoff.next_delay()
            log.warning("%s: connection ended (%s); reconnecting in %.2f s", self.venue, reason, delay)
            await self._sleep(delay)

    async def resubscribe(self, streams: Sequence[str]) -> None:
        """Unsubscribe and subscribe again (Bybit/OKX send a fresh book snapshot)."""
        ws = self._ws
        if ws is None:
            return
        msgs = self.adapter.unsubscribe_messages(streams) + self.adapter.subscribe_messages(streams)
        with contextlib.suppress(websockets.WebSocketException, OSError):
            await self._send_all(ws, msgs)

    # -- internals ----------------------------------------------------------------------
    async def _sleep(self, seconds: float) -> None:
        if seconds <= 0:
            return
        sleeper = asyncio.ensure_future(self.clock.sleep(seconds))
        stopper = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            stopper.cancel()

    async def _send_all(self, ws: Any, messages: Sequence[str]) -> None:
        spacing = 1.0 / self.adapter.max_msgs_per_s
        for msg in messages:
            wait = self._last_send + spacing - self.clock.monotonic()
            if wait > 0:
                await self.clock.sleep(wait)
            await ws.send(msg)
            self._last_send = self.clock.monotonic()

    def _safe(self, fn: Any, *args: Any) -> None:
        try:
            fn(*args)
        except Exception as exc:  # a downstream bug: report it, keep the feed
            log.exception("%s: handler failed", self.venue)
            with contextlib.suppress(Exception):
                self.handler.on_handler_error(self.venue, exc)

    def _refused(self, said: str, raw_bytes: bytes, recv_ms: int) -> None:
        """A refusal: the stream it names never comes on this connection, so its silence is
        reported but never re-opens the connection (it would, and every stream on it, again
        and again); said, and dead-lettered with the venue's words."""
        stream = self.adapter.refused_stream(said)
        watch = self._watches.get(stream) if stream is not None else None
        if watch is not None:
            watch.refused = True
        note = f" ({stream}: reported stale, never a reason to re-open the connection)" if watch is not None else ""
        log.error("%s: the venue refused a request: %s%s", self.venue, said, note)
        self._safe(self.handler.on_garbage, self.venue, raw_bytes, "subscription_refused", said, recv_ms)

    def _reopen_for(self, key: str, watch: _Watch) -> bool:
        """Whether a stream gone stale re-opens the connection: yes, unless the venue refused
        it, or it sent nothing on the last connection either while other streams deliver on
        this one (a stream the venue took and never serves, as Binance does an unlisted
        symbol's: a new connection does not bring it, and re-opening costs every other stream
        its books). It is still reported stale; its first frame makes it a reason again."""
        if watch.refused:
            return False
        if key not in self._silent_before or watch.delivered or not any(w.delivered for w in self._watches.values()):
            return True
        log.error("%s: %s has sent nothing on two connections in a row: reported stale, no longer a reason "
                  "to re-open the connection its other streams share", self.venue, key)
        return False

    def _housekeeping(self, ws: Any, now: float, started: float) -> str | None:
        frames, waiting_bytes = socket_backlog(ws)
        self._safe(self.handler.on_lag, self, self._lag.sample(now, frames, waiting_bytes))
        stale_now = False
        for key, watch in self._watches.items():
            age = now - watch.last_rx
            self._safe(self.handler.on_age, self.venue, key, age)
            if age > watch.timeout_s and not watch.stale:
                watch.stale = True
                stale_now = stale_now or self._reopen_for(key, watch)
                self._safe(self.handler.on_stale, self.venue, key, age, self.clock.wall_ms())
        if stale_now:
            return "stale"
        life = self.adapter.max_connection_life_s
        if (life is not None and now - started >= life) or self._closing:
            return "planned"
        return None

    async def _receive(self, ws: Any, started: float) -> tuple[str, bool]:
        got_data = False
        ping_s = self.adapter.ping_interval_s
        next_ping = self.clock.monotonic() + ping_s if ping_s else float("inf")
        next_tick = self.clock.monotonic()
        while not self._stop.is_set():
            now = self.clock.monotonic()
            if now >= next_tick:
                ending = self._housekeeping(ws, now, started)
                if ending is not None:
                    return ending, got_data
                next_tick = now + self.tick_s
            if now >= next_ping:
                ping = self.adapter.ping_message()
                if ping is not None:
                    await self._send_all(ws, [ping])
                next_ping = now + (ping_s or 0.0)
            timeout = max(0.0, min(next_tick, next_ping) - self.clock.monotonic())
            try:
                # A queued message is taken without a timer task (the hot path under load).
                msg = await (ws.recv(decode=False) if queued_frames(ws)
                             else asyncio.wait_for(ws.recv(decode=False), timeout=timeout))
                msgs = await self._take_backlog(ws, msg)
            except TimeoutError:
                continue
            except websockets.ConnectionClosed as exc:
                return f"closed: {exc}", got_data
            if self._dispatch(msgs):
                got_data = True
        return "stopped", got_data

    async def _take_backlog(self, ws: Any, first: bytes) -> list[bytes]:
        """``[first]``, or, when ``shed_backlog_frames`` or more wait, every queued message too."""
        threshold = self.overload.shed_backlog_frames
        if threshold <= 0 or queued_frames(ws) < threshold:
            return [first]
        msgs = [first, *take_queued(ws, self.overload.max_queue_frames)]
        if queued_frames(ws) and len(msgs) < self.overload.max_queue_frames:
            msgs.append(await ws.recv(decode=False))  # a fragmented message: the usual way
        return msgs

    def _coalesce_key(self, route: FrameRoute) -> str | None:
        """The route's coalescing key (its watch key), None when its frames are never shed."""
        known = self._coalescible.get(route.channel)
        if known is None:
            known = self._coalescible[route.channel] = self.adapter.coalescible(route)
        return route.watch if known else None

    def _dispatch(self, msgs: Sequence[bytes]) -> bool:
        """Hand messages on, coalesced when there are several; True when one was a data frame."""
        recv_ms = self.clock.wall_ms()
        decoded: dict[int, tuple[FrameRoute, Any, bytes] | None] = {}
        kept: Sequence[int] = (0,)
        if len(msgs) > 1:
            keys: list[str | None] = []
            for i, msg in enumerate(msgs):
                route = self.adapter.peek_route(msg)
                if route is None:  # no cheap look: decode it now, once
                    item = decoded[i] = self._decode(msg, recv_ms)
                    route = item[0] if item is not None else None
                keys.append(self._coalesce_key(route) if route is not None else None)
            kept, shed = coalesce(keys)
            for key, frames in shed.items():
                self._safe(self.handler.on_shed, self.venue, key, frames)
            keep = set(kept)
            self._lag.bytes_read += sum(len(m) for i, m in enumerate(msgs) if i not in keep and i not in decoded)
        delivered = False
        for i in kept:
            item = decoded[i] if i in decoded else self._decode(msgs[i], recv_ms)
            if item is not None:
                route, raw, raw_bytes = item
                self._safe(self.handler.on_frame, self.venue, route.channel, raw, raw_bytes, recv_ms)
                delivered = True
        if len(msgs) > 1:
            self._safe(self.handler.on_backlog_taken, self.venue)
        return delivered

    def _decode(self, msg: bytes, recv_ms: int) -> tuple[FrameRoute, Any, bytes] | None:
        """A data frame's route, value and bytes; None for control frames and garbage (reported)."""
        raw_bytes = bytes(msg)
        try:
            raw = orjson.loads(raw_bytes)
        except orjson.JSONDecodeError as exc:
            if self.adapter.is_control_text(raw_bytes.decode("utf-8", "replace")):
                return None
            self._safe(self.handler.on_garbage, self.venue, raw_bytes, "invalid_json", str(exc), recv_ms)
            return None
        try:
            route = self.adapter.route(raw)
        except Exception as exc:  # a frame the adapter cannot place: dead-letter it
            self._safe(self.handler.on_garbage, self.venue, raw_bytes, "unroutable", str(exc), recv_ms)
            return None
        if route is None:
            said = self.adapter.refusal(raw)
            if said is not None:
                self._refused(said, raw_bytes, recv_ms)
            notice = self.adapter.closing_notice(raw)
            if notice is not None and not self._closing:
                log.warning("%s: the venue will close the connection (%s): re-opening it now", self.venue, notice)
                self._closing = True
            return None
        venue_ts_ms = None
        with contextlib.suppress(Exception):  # a timestamp is a measurement, never a reason to drop
            venue_ts_ms = self.adapter.event_ts_ms(raw)
        self._lag.on_frame(len(raw_bytes), recv_ms, venue_ts_ms)
        watch = self._watches.get(route.watch)
        if watch is not None:
            watch.last_rx = self.clock.monotonic()
            watch.stale = False
            watch.delivered = True
        return route, raw, raw_bytes
