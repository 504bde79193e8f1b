"""The Kafka client's own log, said once per interval per message rather than once per attempt.

While a broker is away, aiokafka logs every reconnection attempt and every failed produce
(about a hundred lines a second against the embedded broker): an outage of an hour would
bury the terminal and fill a disk with the same two lines. Each of its messages (by its
template, before the values are put in) goes through at most once per
:data:`INTERVAL_S`, followed by how many like it were held back meanwhile.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter
from collections.abc import Callable

__all__ = ["INTERVAL_S", "OncePerInterval", "quiet_client_logs"]

#: Seconds between two lines of the same message.
INTERVAL_S = 30.0
_CLIENT_LOGGER = "aiokafka"


class OncePerInterval(logging.Filter):
    """Passes a record when no record of the same logger and template passed in the last
    ``interval_s``; the one passed after a quiet spell says how many were held back."""

    def __init__(self, interval_s: float = INTERVAL_S, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.interval_s = interval_s
        self._clock = clock
        self._passed: dict[tuple[str, str], float] = {}
        self._held: Counter[tuple[str, str]] = Counter()

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg))
        now = self._clock()
        last = self._passed.get(key)
        if last is not None and now - last < self.interval_s:
            self._held[key] += 1
            return False
        self._passed[key] = now
        held = self._held.pop(key, 0)
        if held:
            record.msg = f"{record.msg} [{held} more like it in the last {self.interval_s:.0f} s]"
        return True


def quiet_client_logs(interval_s: float = INTERVAL_S) -> None:
    """Route the Kafka client's warnings and errors to stderr through :class:`OncePerInterval`
    (once: a second call changes nothing)."""
    client = logging.getLogger(_CLIENT_LOGGER)
    if any(isinstance(f, OncePerInterval) for h in client.handlers for f in h.filters):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    handler.addFilter(OncePerInterval(interval_s))
    client.addHandler(handler)
    client.propagate = False
