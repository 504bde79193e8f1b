"""RouteAhead: a routed capture read ahead on a thread gives what reading it on the spot
gives, in order, bounded, and stops when told; an error met ahead is raised where it fell.
The routed capture's span is that of the frames taken."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from monitor.config import EngineConfig
from monitor.ingest.frames import Ingest
from monitor.protocol import DeadLetter
from replay.capture import CaptureError, write_capture
from replay.outputs import utc
from replay.routing import ReplayStats, RouteAhead, route_capture


def _items(n: int, fail_at: int | None = None) -> Iterator[tuple[int, Any]]:
    for i in range(n):
        if i == fail_at:
            raise ValueError(f"broken at {i}")
        yield i, f"item-{i}"


def _fill(ahead: RouteAhead, stop: threading.Event | None = None) -> None:
    thread = threading.Thread(target=ahead.fill_until, args=(stop or threading.Event(),))
    thread.start()
    thread.join(timeout=30)


@pytest.mark.parametrize(("n", "limit"), [(0, 4), (3, 4), (4, 4), (50, 4), (50, 1)])
def test_items_read_ahead_then_the_rest_in_order(n: int, limit: int) -> None:
    ahead = RouteAhead(_items(n), limit=limit)
    _fill(ahead)
    assert ahead.waiting == min(n, limit)
    assert list(ahead) == list(_items(n))


def test_a_stop_already_set_reads_nothing_ahead() -> None:
    ahead, stop = RouteAhead(_items(10)), threading.Event()
    stop.set()
    _fill(ahead, stop)
    assert ahead.waiting == 0 and list(ahead) == list(_items(10))


def test_an_error_met_ahead_is_raised_after_the_items_before_it() -> None:
    ahead = RouteAhead(_items(10, fail_at=3))
    _fill(ahead)
    taken: list[tuple[int, Any]] = []
    with pytest.raises(ValueError, match="broken at 3"):
        for item in ahead:
            taken.append(item)
    assert taken == list(_items(3))


def test_a_file_that_is_not_a_capture_is_the_same_error_read_ahead(tmp_path: Path) -> None:
    path = tmp_path / "capture.jsonl"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    with pytest.raises(CaptureError) as on_the_spot:
        list(route_capture(path, Ingest(EngineConfig())))
    ahead = RouteAhead(route_capture(path, Ingest(EngineConfig())))
    _fill(ahead)
    with pytest.raises(CaptureError) as read_ahead:
        list(ahead)
    assert str(read_ahead.value) == str(on_the_spot.value)


def test_the_span_is_that_of_the_frames_taken_for_their_time(tmp_path: Path) -> None:
    """A line received in the year 318857 (or 1970, or seven hours past the stream: six is the default jump) is
    dead-lettered for its time and is outside the replay's span: it made the summary's
    ``last_event_utc`` a traceback ("year 318857 is out of range") at the end of a replay."""
    t0 = 1_760_126_400_000
    ticker = {"u": 1, "s": "BTCUSDT", "b": "100.0", "B": "1", "a": "100.1", "A": "1"}
    path = tmp_path / "capture.jsonl"
    times = [t0, 42, t0 + 1_000, t0 + 7 * 3_600_000, 10**16]
    write_capture(path, [(ts, "binance-spot", "btcusdt@bookTicker", ticker) for ts in times])
    stats = ReplayStats()
    out = [item for _, item in route_capture(path, Ingest(EngineConfig()), stats=stats)]
    assert sorted(d.reason for d in out if isinstance(d, DeadLetter)) == [
        "timestamp_future", "timestamp_out_of_range", "timestamp_out_of_range"]
    assert (stats.first_ts_ms, stats.last_ts_ms) == (t0, t0 + 1_000)
    assert utc(stats.last_ts_ms) == "2025-10-10 20:00:01"
