"""A feed reader that falls behind: its lag, its socket backlog, and what it sheds.

Measured per connection, once per watchdog tick (:class:`ReaderLag`):

* the event-time lag: receive time minus the venue's own timestamp, the smallest over the
  tick (a venue stamps some frames before it batches them: the smallest is the reader's
  share), never below 0 (a clock behind the venue's);
* the socket backlog: frames waiting in the websocket client and bytes waiting in the
  kernel and in the client's read buffer (:func:`socket_backlog`), turned into seconds by
  the rate the reader drained bytes over the tick; the smaller of this tick's and the last
  one's, so a frame that arrived just before the tick on a quiet connection is not lag.

The lag is the larger of the two. Shedding (:func:`coalesce`) keeps the feed up when the
backlog passes ``shed_backlog_frames``: the connection then takes every queued message at
once and, for channels whose frames each carry a whole state (best bid/ask tickers, mark
prices, partial-depth and full-book snapshots: the adapter's ``coalescible``), delivers
only the newest frame per channel. Trades, liquidations and order-book diffs are never
shed: a diff dropped would corrupt the local book. Every shed frame is counted.
"""

from __future__ import annotations

import contextlib
import struct
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from monitor.ingest.feed_lag import FeedLagThresholds

__all__ = ["LagSample", "OverloadConfig", "ReaderLag", "coalesce", "queued_frames", "socket_backlog", "take_queued"]

#: Websocket opcodes of data frames (RFC 6455 §5.2).
_TEXT, _BINARY = 0x1, 0x2


class OverloadConfig(BaseModel):
    """``[live.overload]``: when to shed, how much the client may queue, the lag thresholds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: Frames queued in the websocket client at which the reader starts coalescing (0: never).
    shed_backlog_frames: int = Field(default=1_024, ge=0)
    #: Frames the websocket client queues before it stops reading the socket (its high-water mark).
    max_queue_frames: int = Field(default=4_096, gt=0)
    lag: FeedLagThresholds = Field(default_factory=FeedLagThresholds)


@dataclass(frozen=True, slots=True)
class LagSample:
    """One tick's measurement of one connection."""

    lag_s: float
    event_lag_s: float | None
    backlog_s: float
    backlog_frames: int
    backlog_bytes: int

    def evidence(self) -> dict[str, Any]:
        return {"event_lag_s": None if self.event_lag_s is None else round(self.event_lag_s, 3),
                "backlog_s": round(self.backlog_s, 3), "backlog_frames": self.backlog_frames,
                "backlog_bytes": self.backlog_bytes}


def queued_frames(ws: Any) -> int:
    """Frames the websocket client has received and not yet handed out (websockets' assembler)."""
    frames = getattr(getattr(ws, "recv_messages", None), "frames", None)
    return len(frames) if frames is not None else 0


def take_queued(ws: Any, cap: int) -> list[bytes]:
    """Up to ``cap`` whole messages already queued in the websocket client, without waiting.

    Reads websockets' (pinned 17.x) assembler queue directly: a message costs no coroutine.
    Stops at the first fragment or non-data frame, which ``recv`` then takes the usual way.
    """
    assembler: Any = getattr(ws, "recv_messages", None)
    queue = getattr(getattr(assembler, "frames", None), "queue", None)
    out: list[bytes] = []
    if queue is None or getattr(assembler, "get_in_progress", True):
        return out
    while queue and len(out) < cap:
        frame = queue[0]
        if not frame.fin or frame.opcode.value not in (_TEXT, _BINARY):
            break
        queue.popleft()
        out.append(bytes(frame.data))
    assembler.maybe_resume()
    return out


def _kernel_unread_bytes(ws: Any) -> int:
    """Bytes the kernel holds for the socket (FIONREAD); 0 where it cannot tell (no fcntl)."""
    with contextlib.suppress(Exception):
        import fcntl
        import termios

        sock = ws.transport.get_extra_info("socket")
        if sock is not None:
            out = fcntl.ioctl(sock.fileno(), termios.FIONREAD, struct.pack("i", 0))
            return int(struct.unpack("i", out)[0])
    return 0


def socket_backlog(ws: Any) -> tuple[int, int]:
    """(frames queued in the client, bytes waiting: queued frames, client buffer, kernel)."""
    frames = getattr(getattr(ws, "recv_messages", None), "frames", None)
    queue = getattr(frames, "queue", ())
    queued_bytes = sum(len(getattr(f, "data", b"")) for f in tuple(queue))
    buffered = getattr(getattr(getattr(ws, "protocol", None), "reader", None), "buffer", b"")
    return len(queue), queued_bytes + len(buffered) + _kernel_unread_bytes(ws)


class ReaderLag:
    """Accumulates one connection's frames over a tick and turns them into a :class:`LagSample`."""

    def __init__(self, started_s: float) -> None:
        self.since_s = started_s
        self.bytes_read = 0
        self.min_event_lag_ms: int | None = None
        self._last_backlog_s = 0.0

    def on_frame(self, n_bytes: int, recv_ms: int, venue_ts_ms: int | None) -> None:
        self.bytes_read += n_bytes
        if venue_ts_ms is not None:
            lag_ms = recv_ms - venue_ts_ms
            if self.min_event_lag_ms is None or lag_ms < self.min_event_lag_ms:
                self.min_event_lag_ms = lag_ms

    def sample(self, now_s: float, backlog_frames: int, backlog_bytes: int) -> LagSample:
        """The tick's lag: max(event-time lag, backlog bytes / bytes drained per second, the
        smaller over this tick and the last); then reset."""
        elapsed_s = max(now_s - self.since_s, 1e-6)
        rate_bps = self.bytes_read / elapsed_s
        if backlog_bytes <= 0:
            backlog_s = 0.0
        elif rate_bps > 0:
            backlog_s = backlog_bytes / rate_bps
        else:  # bytes waited the whole tick and none was read
            backlog_s = elapsed_s
        backlog_s, self._last_backlog_s = min(backlog_s, self._last_backlog_s), backlog_s
        event_lag_s = None if self.min_event_lag_ms is None else max(self.min_event_lag_ms, 0) / 1000
        self.since_s, self.bytes_read, self.min_event_lag_ms = now_s, 0, None
        return LagSample(max(backlog_s, event_lag_s or 0.0), event_lag_s, backlog_s, backlog_frames, backlog_bytes)


def coalesce(keys: Sequence[str | None]) -> tuple[list[int], Counter[str]]:
    """Indices to deliver, in order, and frames shed per key: of the frames with a key (a
    coalescible channel), only the last of each key is kept; frames without one always are."""
    last: dict[str, int] = {}
    for i, key in enumerate(keys):
        if key is not None:
            last[key] = i
    kept: list[int] = []
    shed: Counter[str] = Counter()
    for i, key in enumerate(keys):
        if key is None or last[key] == i:
            kept.append(i)
        else:
            shed[key] += 1
    return kept, shed
