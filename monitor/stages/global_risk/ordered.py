"""Stage 2's clock: signal records through the reorder buffer, one event time at a time.

The global stage and each account shard (:mod:`monitor.stages.global_risk.shards`) read the
same ordered log of stage-1 records. Both release the same signals at the same event times
from it, and both decide when the unified accounts are evaluated by the same rule
(:class:`AccountCadence`), so a shard's evaluations line up with the global stage's one for
one. Pure: no I/O, no clock.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable

from monitor.protocol import Alert, Signal, SignalPayload, SignalRecord
from monitor.signals import ReorderBuffer

__all__ = ["AccountCadence", "OrderedStage"]

#: Kind of the reader's own signal that evaluates newly loaded accounts (:meth:`OrderedStage.wake`).
WAKE = "wake"


class AccountCadence:
    """When the unified accounts are evaluated: at an event time at least ``interval_ms``
    after the last evaluation (``signals.account_eval_interval_ms``), once a price key moved
    or an account was loaded since then; and at the end of a run if either is pending.

    The rule reads only what every reader of the log sees (prices, and that some account
    was added or replaced), never which accounts a reader holds, so every shard evaluates
    at the same event times as one global stage would.
    """

    __slots__ = ("dirty", "interval_ms", "keys", "last_ms", "seen")

    def __init__(self, interval_ms: int) -> None:
        self.interval_ms = interval_ms
        #: Price keys moved since the last evaluation (counted once an account was seen).
        self.keys: set[str] = set()
        #: An account was added or replaced since the last evaluation.
        self.dirty = False
        self.last_ms: int | None = None
        #: Some account was ever added (the accounts' clock runs from then on).
        self.seen = False

    def loaded(self) -> None:
        """An account was added or replaced (a deletion moves nothing)."""
        self.seen = self.dirty = True

    def moved(self, changed: set[str]) -> None:
        """Price keys moved at one event time."""
        if self.seen:
            self.keys |= changed

    @property
    def pending(self) -> bool:
        """Whether an evaluation has anything to look at."""
        return self.seen and (bool(self.keys) or self.dirty)

    def due(self, ts_ms: int) -> bool:
        """Whether the accounts are evaluated at ``ts_ms`` (after :meth:`moved`)."""
        last = self.last_ms
        return self.pending and (last is None or ts_ms - last >= self.interval_ms)

    def wake_ms(self, now_ms: int) -> int:
        """The event time at which an account loaded at ``now_ms`` is evaluated if nothing
        moves: the first after now once ``interval_ms`` has passed since the last evaluation."""
        after = now_ms + 1
        return after if self.last_ms is None else max(after, self.last_ms + self.interval_ms)

    def take(self, ts_ms: int) -> set[str]:
        """The keys moved since the last evaluation; the evaluation happens at ``ts_ms``."""
        keys, self.keys = self.keys, set()
        self.dirty = False
        self.last_ms = ts_ms
        return keys


class OrderedStage(ABC):
    """Signal records in, through the reorder buffer; each released event time applied and
    then evaluated (:meth:`_apply`, :meth:`_evaluate`); a run's end evaluated last."""

    #: The event time of the latest wake-up scheduled, and how many were (class defaults:
    #: a stage restored from a checkpoint written before wake-ups has none pending).
    wake_at_ms: int | None = None
    wakes = 0

    def __init__(self, partitions: int) -> None:
        self.buffer = ReorderBuffer(partitions)
        #: The run whose last end marker the latest push() brought in (else None).
        self.finished_run: str | None = None
        self.now_ms = 0
        self.alerts_emitted = 0

    def push(self, rec: SignalRecord) -> list[Alert]:
        """Buffer one record; process what the watermarks release (everything at run end)."""
        buffer = self.buffer
        buffer.push(rec)
        finished = rec.end is not None and buffer.run_ended(rec.end)
        self.finished_run = rec.end if finished else None
        if rec.end is not None and finished:
            buffer.reset_run(rec.end)
        # A finished run releases everything, unless another run is part-way through its
        # end markers (a redelivered run interleaved with the next): then watermarks rule.
        flush = finished and not buffer.runs_in_progress
        out = self.process(buffer.release(flush=flush))
        if finished:
            self._finish_run(out)
        return out

    def wake(self, cadence: AccountCadence) -> None:
        """An account was loaded: once the market runs, evaluate it at the first event time
        the cadence allows after now (:meth:`AccountCadence.wake_ms`) even if no price moves
        (a quiet market may move none for hours). The wake-up is a signal of the reader's
        own in the reorder buffer, released once every watermark passed it, so every reader
        of the log wakes at the same event time, whatever records the signals came in.
        Accounts loaded before the market (as replays load them) are evaluated with the
        first prices: nothing is scheduled before an event time was released."""
        if self.now_ms <= 0:
            return
        at = cadence.wake_ms(self.now_ms)
        if at == self.wake_at_ms:
            return  # a burst of accounts: one wake-up
        self.wake_at_ms = at
        self.wakes += 1
        self.buffer.schedule(at, WAKE, self.wakes)

    def flush(self) -> list[Alert]:
        """Process every buffered signal (end of an inline run)."""
        out = self.process(self.buffer.release(flush=True))
        self._finish_run(out)
        return out

    def process(self, signals: Iterable[Signal]) -> list[Alert]:
        """Apply ordered signals, evaluating after each distinct event time."""
        out: list[Alert] = []
        changed: set[str] = set()
        current: int | None = None
        for ts, asset, _seq, kind, payload in signals:
            if current is not None and ts != current:
                self._evaluate(current, changed, out)
                changed = set()
            current = ts
            self.now_ms = max(self.now_ms, ts)
            self._apply(ts, asset, kind, payload, changed, out)
        if current is not None:
            self._evaluate(current, changed, out)
        self.alerts_emitted += len(out)
        return out

    @abstractmethod
    def _apply(self, ts: int, asset: str, kind: str, p: SignalPayload, changed: set[str],
               out: list[Alert]) -> None:
        """One signal (its fields were checked when its record was decoded)."""

    @abstractmethod
    def _evaluate(self, ts: int, changed: set[str], out: list[Alert]) -> None:
        """After the signals of event time ``ts``: ``changed`` holds the price keys they moved."""

    @abstractmethod
    def _finish_run(self, out: list[Alert]) -> None:
        """Every partition ended a run (or an inline run is flushed)."""
