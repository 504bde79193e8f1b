"""A capture routed: every line through :class:`monitor.ingest.frames.Ingest` into the
batches, dead letters and feed alerts both replay paths consume, and the counts of a replay."""

from __future__ import annotations

import threading
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from monitor.ingest.frames import CONFIG_CHANNELS, Ingest, IngestOutput, IngestStats
from replay.capture import BadLine, iter_capture

__all__ = ["ROUTE_AHEAD_ITEMS", "ReplayStats", "RouteAhead", "route_capture"]

#: At most this many routed items wait in a :class:`RouteAhead` (the synthetic day routes
#: ~70k items in all, ~5k a second; a batch item holds a few KB of columns).
ROUTE_AHEAD_ITEMS = 32_768


@dataclass
class ReplayStats:
    """What a replay read, routed and produced."""

    frames: int = 0
    events: int = 0
    batches: int = 0
    deadletters: Counter[str] = field(default_factory=Counter)
    events_by_source: Counter[str] = field(default_factory=Counter)
    first_ts_ms: int | None = None
    last_ts_ms: int | None = None
    wall_s: float = 0.0
    interrupted: bool = False
    #: Records read back from the workers' topics that are not liqmon's (Kafka path; skipped, logged).
    foreign_records: int = 0
    #: Frames of the capture outside ``--from``/``--to`` (not replayed), and their span.
    outside_frames: int = 0
    outside_first_ts_ms: int | None = None
    outside_last_ts_ms: int | None = None

    def outside(self, ts_ms: int) -> None:
        """A frame at ``ts_ms`` was outside the window."""
        self.outside_frames += 1
        if self.outside_first_ts_ms is None or ts_ms < self.outside_first_ts_ms:
            self.outside_first_ts_ms = ts_ms
        if self.outside_last_ts_ms is None or ts_ms > self.outside_last_ts_ms:
            self.outside_last_ts_ms = ts_ms

    def take_span(self, other: ReplayStats) -> None:
        """The span of frames taken and of frames outside the window, as ``other`` (a routing's) saw them."""
        self.first_ts_ms, self.last_ts_ms = other.first_ts_ms, other.last_ts_ms
        self.outside_frames = other.outside_frames
        self.outside_first_ts_ms, self.outside_last_ts_ms = other.outside_first_ts_ms, other.outside_last_ts_ms

    def absorb(self, ingest: IngestStats) -> None:
        """The ingest's counts of frames, events and dead letters, as the replay's."""
        self.frames = ingest.frames
        self.events = ingest.events
        self.deadletters = Counter(ingest.deadletters)
        self.events_by_source = Counter(ingest.events_by_source)


def route_capture(
    path: Path,
    ingest: Ingest,
    from_ms: int | None = None,
    to_ms: int | None = None,
    stats: ReplayStats | None = None,
) -> Iterator[tuple[int, IngestOutput]]:
    """Yield (receive_ts_ms, routed batch, dead letter or feed alert) for every line of a capture.

    Configuration frames before ``from_ms`` (``session``, ``contract_values``) still apply:
    they configure what follows.
    Raises :class:`replay.capture.CaptureError` before yielding anything when the file is
    not a capture.
    """
    last_ts = 0
    for item in iter_capture(path):
        if isinstance(item, BadLine):
            yield last_ts, ingest.reject(item.reason, item.detail, item.raw_bytes, item.line_no)
            continue
        ts = item.ts_ms
        if from_ms is not None and ts < from_ms:
            if item.channel in CONFIG_CHANNELS:
                for out in ingest.feed(item.venue, item.channel, item.raw, ts, item.raw_bytes, item.line_no):
                    yield ts, out
            if stats is not None:
                stats.outside(ts)
            continue
        if to_ms is not None and ts >= to_ms:
            if stats is not None:
                stats.outside(ts)
            continue
        if stats is not None and ingest.time_refusal(ts) is None:  # the span of frames taken
            if stats.first_ts_ms is None:
                stats.first_ts_ms = ts
            stats.last_ts_ms = max(stats.last_ts_ms or ts, ts)
        last_ts = ts
        for out in ingest.feed(item.venue, item.channel, item.raw, ts, item.raw_bytes, item.line_no):
            yield ts, out
    for routed in ingest.finish():
        yield last_ts, routed


class RouteAhead:
    """A routed capture that can be read ahead while its consumer is not ready yet.

    The Kafka replay waits seconds for its worker to join the group and load the
    population; :meth:`fill_until` routes the capture meanwhile, on a thread of its own.
    Iterating gives the items read ahead, then the rest of the capture, in the order
    :func:`route_capture` gives them. An error met while reading ahead (a file that is not a
    capture, say) is raised by the iteration, where the items before it end.
    """

    def __init__(self, routed: Iterator[tuple[int, IngestOutput]], limit: int = ROUTE_AHEAD_ITEMS) -> None:
        self._routed = routed
        self._ahead: deque[tuple[int, IngestOutput]] = deque()
        self._limit = limit
        self._exhausted = False
        self._error: BaseException | None = None

    @property
    def waiting(self) -> int:
        """Items read ahead and not taken yet."""
        return len(self._ahead)

    def fill_until(self, stop: threading.Event) -> None:
        """Route ahead until ``stop`` is set, the limit is reached or the capture ends.

        Call it on one thread at a time, and iterate only once it has returned.
        """
        try:
            while not self._exhausted and len(self._ahead) < self._limit and not stop.is_set():
                item = next(self._routed, None)
                if item is None:
                    self._exhausted = True
                else:
                    self._ahead.append(item)
        except BaseException as exc:
            self._error, self._exhausted = exc, True

    def __iter__(self) -> Iterator[tuple[int, IngestOutput]]:
        while self._ahead:
            yield self._ahead.popleft()
        if self._error is not None:
            raise self._error
        if not self._exhausted:
            yield from self._routed
