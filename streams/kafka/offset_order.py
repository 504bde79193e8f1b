"""Records of a partition handed out in offset order, whatever a fetch returns.

The embedded broker was seen answering a fetch without one record (fetched 2549, expected
2548, on ``risk.signals``). A reader outside the consumer group (the account shards' log
readers, the replay's read-back) keeps, per partition, the offset of the next record it
takes: an earlier record (read again) is passed over; a later one means a record was
skipped, and the partition is sought back to it. A gap found again at the same offset is the
log's own (nothing lives there any more) and is passed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from aiokafka import TopicPartition

__all__ = ["OffsetOrder"]

log = logging.getLogger("liqmon.kafka")


class OffsetOrder:
    """Per partition, the offset of the next record to take (``expected``; absent: from the
    first record fetched) and the offset a skip was already read again from."""

    def __init__(self, seek: Callable[[TopicPartition, int], None],
                 on_skip: Callable[[], None] | None = None) -> None:
        self._seek = seek
        self._on_skip = on_skip
        self.expected: dict[TopicPartition, int] = {}
        self._reread: dict[TopicPartition, int] = {}

    def take(self, tp: TopicPartition, records: Sequence[Any]) -> list[Any]:
        """The records of one fetch from the expected offset on, in order; after a skipped
        record the partition is sought back to it and the rest of the fetch is left."""
        expected = self.expected.get(tp)
        out = []
        for rec in records:
            if expected is not None and rec.offset < expected:
                continue  # read again after a skip: taken already
            if expected is not None and rec.offset > expected and self._reread.get(tp) != expected:
                log.warning("%s: fetched offset %d, expected %d; reading again", tp, rec.offset, expected)
                self._reread[tp] = expected
                if self._on_skip is not None:
                    self._on_skip()
                self._seek(tp, expected)
                break
            out.append(rec)
            expected = rec.offset + 1
        if expected is not None:
            self.expected[tp] = expected
        return out
