"""Whether a worker's in-memory global risk stage still continues its input partition.

The global stage (``risk.signals`` partition 0) lives on one worker at a time. A
rebalance revokes every partition and may hand that one back to the same worker or to
another. So: when it is revoked the worker stops exporting the stage's figures (someone
else may own them next; Prometheus rules sum them over workers); when the new assignment
does not include it, the in-memory state is dropped; when it does, the state is kept only
if the first record read afterwards is the one right after the last record the state has
seen. Anything else (another worker processed records in between, or records are
delivered again) means the state is rebuilt from the changelog-backed table.
"""

from __future__ import annotations

from collections.abc import Set

from faust.types import TP

__all__ = ["PartitionContinuity"]


class PartitionContinuity:
    """Tracks one partition across rebalances; each method says whether to act."""

    def __init__(self, tp: TP) -> None:
        self.tp = tp
        #: Offset of the last record the in-memory state has seen (None: nothing yet).
        self.last_offset: int | None = None
        self._rebalanced = False

    def on_revoked(self, revoked: Set[TP]) -> bool:
        """True when the partition is revoked: stop exporting its figures."""
        if self.tp not in revoked:
            return False
        self._rebalanced = True
        return True

    def on_assigned(self, assigned: Set[TP]) -> bool:
        """True when the partition was revoked and went elsewhere: drop the state."""
        if self.tp in assigned:
            return False
        lost = self._rebalanced
        self._rebalanced = False
        self.last_offset = None
        return lost

    def on_record(self, offset: int) -> bool:
        """True when the state must be rebuilt before this record is applied."""
        stale = (
            self._rebalanced and self.last_offset is not None and offset != self.last_offset + 1
        )
        self._rebalanced = False
        self.last_offset = offset
        return stale
