"""Account shards: which shard holds an account, what a shard reports, and the merge.

The unified accounts of a sharded global stage are split by id over a fixed number of
shards (:func:`shard_of`). Each shard (:class:`monitor.stages.global_risk.account_shard.AccountShard`)
reads the whole ordered log, evaluates its own accounts at the event times every reader
agrees on (:class:`monitor.stages.global_risk.ordered.AccountCadence`), emits their alerts
and reports each evaluation (:class:`AccountReport`). The aggregation stage merges the
reports of one evaluation (:class:`ShardedAccounts`) into what one global stage would have
seen: sizes add up, first ids merge in id order, the leverage jump is the largest. Exact,
whatever the shard count; only the snapshots' forced-sell sums are added shard by shard.
"""

from __future__ import annotations

import heapq
import itertools
import zlib
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec
import numpy as np
import numpy.typing as npt
from msgspec import Struct

from monitor.accounts.vector_margin import status_counts
from monitor.accounts.watch import ResultColumns
from monitor.models.cascade import ACCOUNTS_SHOWN, AccountSet
from monitor.models.margin import STATUSES
from monitor.protocol import RecordError
from monitor.stages.global_risk.leverage_sketch import LeverageSketch, leverage_sketch, merge_sketches

__all__ = [
    "STEP_RECORD_BYTES",
    "AccountReport",
    "MergedReport",
    "ShardFigures",
    "ShardJoin",
    "ShardStep",
    "ShardStepRecord",
    "ShardedAccounts",
    "VenueFigures",
    "decode_steps",
    "merge_sets",
    "merge_venue_figures",
    "shard_of",
    "step_records",
    "venue_figures",
]


def shard_of(account_id: str, shards: int) -> int:
    """The shard of an account: CRC-32 of its id's UTF-8 bytes modulo the shard count
    (the same in every process and on every run, unlike ``hash``)."""
    return zlib.crc32(account_id.encode()) % shards


#: Shortfalls kept per venue (the metrics' ranks 1-5).
SHORTFALLS_SHOWN = 5


class VenueFigures(Struct, frozen=True, array_like=True):
    """One venue's evaluated accounts: per status code, the largest effective leverage
    (None: none has one), the largest shortfalls max(MM − adjusted equity, 0), USD,
    largest first (RISK_MODEL §3), and the sketch of their effective leverage. All four
    merge exactly over shards."""

    venue: str
    by_status: tuple[int, ...]
    leverage_max: float | None
    shortfalls_usd: tuple[float, ...]
    leverage: LeverageSketch = LeverageSketch()


def venue_figures(results: ResultColumns) -> tuple[VenueFigures, ...]:
    """Each venue's figures from the latest evaluations, in venue order. The accounts are
    grouped by venue with one stable sort; each figure is of the group as a multiset."""
    code, n = results.venue_code, len(results.venue_names)
    status, leverage = results.status, results.effective_leverage
    short = np.maximum(results.maintenance_margin_usd - results.adjusted_equity_usd, 0.0)
    if code.size and code.min() == code.max():  # one venue (a venue's own book): no grouping
        bounds = [0] * (int(code[0]) + 1) + [code.size] * (n - int(code[0]))
    else:  # as int16 numpy's stable sort is a radix sort (a quarter of the time for few venues)
        small = code.astype(np.int16) if n < 2**15 else code
        order = np.argsort(small, kind="stable")
        bounds = np.searchsorted(small[order], np.arange(n + 1)).tolist()
        status, leverage, short = status[order], leverage[order], short[order]
    out = []
    for v, venue in enumerate(results.venue_names):
        lo, hi = bounds[v], bounds[v + 1]
        if lo == hi:
            continue
        counts = tuple(status_counts(status[lo:hi]))
        levs = leverage[lo:hi]
        sketch = leverage_sketch(levs)
        lev_max = float(np.nanmax(levs)) if sketch.count else None
        top = _largest(short[lo:hi], SHORTFALLS_SHOWN)
        out.append(VenueFigures(venue, counts, lev_max, tuple(top.tolist()), sketch))
    return tuple(sorted(out, key=lambda v: v.venue))


def _largest(values: npt.NDArray[np.float64], k: int) -> npt.NDArray[np.float64]:
    """The ``k`` largest of ``values`` (shortfalls: ≥ 0, mostly 0), largest first: equal to
    ``np.sort(values)[::-1][:k]``, in linear time (the positive ones partitioned, then
    zeros to make up k, or the size). NaN sorts last, so first here: the sort then."""
    if np.isnan(values).any():
        return np.sort(values)[::-1][:k]
    positive = values[values > 0.0]
    if positive.size > k:
        positive = np.partition(positive, positive.size - k)[positive.size - k:]
    top = np.sort(positive)[::-1]
    fill = min(k, values.size) - top.size
    return np.concatenate([top, np.zeros(fill)]) if fill > 0 else top


def merge_venue_figures(parts: Sequence[tuple[VenueFigures, ...]]) -> tuple[VenueFigures, ...]:
    """The venues' figures over shards: counts added, the largest leverage, the largest
    shortfalls, the leverage sketches' counts added."""
    by_venue: dict[str, list[VenueFigures]] = {}
    for part in parts:
        for vf in part:
            by_venue.setdefault(vf.venue, []).append(vf)
    out = []
    for venue, vfs in sorted(by_venue.items()):
        counts = tuple(sum(c) for c in zip(*(v.by_status for v in vfs), strict=True))
        levs = [v.leverage_max for v in vfs if v.leverage_max is not None]
        short = sorted((x for v in vfs for x in v.shortfalls_usd), reverse=True)[:SHORTFALLS_SHOWN]
        sketch = merge_sketches(v.leverage for v in vfs)
        out.append(VenueFigures(venue, counts, max(levs) if levs else None, tuple(short), sketch))
    return tuple(out)


class ShardFigures(Struct, frozen=True, array_like=True):
    """A shard's figures for the snapshots and metrics: accounts held, the forced sells of
    its liquidation alerts (USD by asset) and its venues' figures (their counts by status
    are the shard's)."""

    accounts: int
    forced_sell_usd: tuple[tuple[str, float], ...]
    venues: tuple[VenueFigures, ...] = ()


class AccountReport(Struct, frozen=True, array_like=True):
    """One shard's evaluation of its accounts at ``ts_ms``: whether its status sets changed,
    its largest effective-leverage jump, its sets (None: unchanged since its last report)
    and its figures after the evaluation."""

    shard: int
    ts_ms: int
    sets_changed: bool
    jump: float
    stressed: AccountSet | None
    liquidating: AccountSet | None
    figures: ShardFigures


class ShardStep(Struct, frozen=True, array_like=True):
    """What one shard made of the log record at ``offset``: its evaluations, its figures
    when one of its accounts was loaded or deleted, and the alerts it sent. A step too
    large for one record goes in ``parts`` parts (:func:`step_records`): part ``part``
    holds the next of its evaluations, the last part its figures and alerts."""

    offset: int
    reports: tuple[AccountReport, ...] = ()
    figures: ShardFigures | None = None
    alerts: int = 0
    part: int = 0
    parts: int = 1


class ShardStepRecord(Struct, frozen=True, kw_only=True):
    """A shard's steps on the reports topic: every log record up to ``through`` is done;
    ``steps`` lists those it had something to say about."""

    shard: int
    through: int
    steps: list[ShardStep]

    def encode(self) -> bytes:
        return _ENCODER.encode(self)


_ENCODER = msgspec.json.Encoder()
_STEPS = msgspec.json.Decoder(ShardStepRecord)
#: Bytes of a steps record beyond its steps' own (the envelope, separators), a bound.
_ENVELOPE_BYTES = 64
#: Largest steps record a shard sends: well inside Kafka's default 1 MB message size (a
#: record of a thousand log records, each spanning minutes of event time, can reach MBs).
STEP_RECORD_BYTES = 512 * 1024


def step_records(shard: int, through: int, steps: Sequence[ShardStep], max_bytes: int) -> list[bytes]:
    """A shard's steps on the log records up to ``through`` as encoded reports-topic records
    of at most ``max_bytes`` each (but a lone evaluation larger than that, which goes
    alone): one record when they fit, else steps in order, a large step cut into parts by
    its evaluations. A record that ends inside a cut step is through the record before that
    step; the others are through their last step, the last record through ``through``. The
    same steps give the same records."""
    whole = _ENCODER.encode(ShardStepRecord(shard=shard, through=through, steps=list(steps)))
    if len(whole) <= max_bytes:
        return [whole]
    out: list[bytes] = []
    batch: list[ShardStep] = []
    size = _ENVELOPE_BYTES
    for step in steps:
        for piece, n in _parts(step, max_bytes):
            if batch and size + n > max_bytes:
                last = batch[-1]
                done = last.offset if last.part == last.parts - 1 else last.offset - 1
                out.append(_ENCODER.encode(ShardStepRecord(shard=shard, through=done, steps=batch)))
                batch, size = [], _ENVELOPE_BYTES
            batch.append(piece)
            size += n
    out.append(_ENCODER.encode(ShardStepRecord(shard=shard, through=through, steps=batch)))
    return out


def _parts(step: ShardStep, max_bytes: int) -> list[tuple[ShardStep, int]]:
    """The step whole when it fits in ``max_bytes``, else its evaluations cut into parts that
    do (as many each as fit; figures and alerts in the last part); each with its encoded
    size and a separator."""
    size = len(_ENCODER.encode(step)) + 1
    if size + _ENVELOPE_BYTES <= max_bytes or len(step.reports) < 2:
        return [(step, size)]
    cuts: list[list[AccountReport]] = [[]]
    size = _ENVELOPE_BYTES
    for report in step.reports:
        n = len(_ENCODER.encode(report)) + 1
        if cuts[-1] and size + n > max_bytes // 2:  # half: the last part carries the figures too
            cuts.append([])
            size = _ENVELOPE_BYTES
        cuts[-1].append(report)
        size += n
    k = len(cuts)
    parts = [ShardStep(step.offset, tuple(cut), step.figures if i == k - 1 else None,
                       step.alerts if i == k - 1 else 0, i, k) for i, cut in enumerate(cuts)]
    return [(part, len(_ENCODER.encode(part)) + 1) for part in parts]


def decode_steps(value: bytes) -> ShardStepRecord:
    """A shard's steps from the reports topic (:class:`RecordError` when they are not)."""
    try:
        return _STEPS.decode(value)
    except msgspec.DecodeError as exc:
        raise RecordError("invalid_shard_steps", str(exc)) from exc


@dataclass(frozen=True, slots=True)
class MergedReport:
    """One evaluation of every shard's accounts, as one global stage would have made it."""

    ts_ms: int
    sets_changed: bool
    jump: float
    stressed: AccountSet
    liquidating: AccountSet


def merge_sets(sets: list[AccountSet]) -> AccountSet:
    """The union of disjoint account sets: sizes added, first ids merged in id order."""
    first = itertools.islice(heapq.merge(*(s.first for s in sets)), ACCOUNTS_SHOWN)
    return AccountSet(sum(s.size for s in sets), list(first))


class ShardedAccounts:
    """The aggregation side of the shards: their reports queued per evaluation, merged when
    the aggregation stage reaches that evaluation; the latest sets and figures per shard."""

    def __init__(self, shards: int) -> None:
        self.shards = shards
        self._queue: deque[list[AccountReport]] = deque()
        empty = AccountSet(0, [])
        self._stressed = [empty] * shards
        self._liquidating = [empty] * shards
        self._figures = [ShardFigures(0, ())] * shards

    def put(self, reports: list[AccountReport]) -> None:
        """Every shard's report of one evaluation, one per shard."""
        if sorted(r.shard for r in reports) != list(range(self.shards)) or len({r.ts_ms for r in reports}) != 1:
            raise ValueError(f"an evaluation needs one report per shard at one time, got {reports!r}")
        self._queue.append(sorted(reports, key=lambda r: r.shard))

    def set_figures(self, shard: int, figures: ShardFigures) -> None:
        """A shard's figures after an account was loaded or deleted."""
        self._figures[shard] = figures

    def apply(self, steps: Sequence[ShardStep]) -> int:
        """Every shard's step on one log record (in shard order): figures noted, evaluations
        queued one per shard; the alerts the shards sent for it."""
        for shard, step in enumerate(steps):
            if step.figures is not None:
                self.set_figures(shard, step.figures)
        if len({len(step.reports) for step in steps}) > 1:
            counts = [len(step.reports) for step in steps]
            raise ValueError(f"the shards evaluated a different number of times on log record "
                             f"{steps[0].offset}: {counts}")
        for reports in zip(*(step.reports for step in steps), strict=True):
            self.put(list(reports))
        return sum(step.alerts for step in steps)

    def take(self, ts_ms: int) -> MergedReport:
        """The next evaluation's reports, merged; it must be the evaluation at ``ts_ms``."""
        if not self._queue or self._queue[0][0].ts_ms != ts_ms:
            have = self._queue[0][0].ts_ms if self._queue else None
            raise ValueError(f"the shards have not reported the evaluation at {ts_ms} (next: {have})")
        reports = self._queue.popleft()
        for r in reports:
            if r.stressed is not None:
                self._stressed[r.shard] = r.stressed
            if r.liquidating is not None:
                self._liquidating[r.shard] = r.liquidating
            self._figures[r.shard] = r.figures
        return MergedReport(ts_ms, any(r.sets_changed for r in reports), max(r.jump for r in reports),
                            merge_sets(self._stressed), merge_sets(self._liquidating))

    @property
    def waiting(self) -> int:
        """Evaluations reported but not yet taken."""
        return len(self._queue)

    @property
    def accounts(self) -> int:
        """Accounts held over all shards."""
        return sum(f.accounts for f in self._figures)

    def status_counts(self) -> list[int]:
        """Evaluated accounts per status code, over all shards."""
        counts = [0] * len(STATUSES)
        for venue in self.venues():
            counts = [a + b for a, b in zip(counts, venue.by_status, strict=True)]
        return counts

    def venues(self) -> tuple[VenueFigures, ...]:
        """The venues' figures over all shards."""
        return merge_venue_figures([f.venues for f in self._figures])

    def forced_sell_usd(self) -> dict[str, float]:
        """Forced sells of the liquidation alerts, USD by asset: each shard's, added in shard order."""
        total: dict[str, float] = {}
        for f in self._figures:
            for asset, usd in f.forced_sell_usd:
                total[asset] = total.get(asset, 0.0) + usd
        return total


class ShardJoin:
    """The shards' steps as they arrive (any order, again after a shard restarts), handed
    out one log record at a time once every shard has done it."""

    def __init__(self, shards: int) -> None:
        self.shards = shards
        #: Per shard, the last log record it has done.
        self.through = [-1] * shards
        #: Per log record, per shard, the parts of its step by part number.
        self._pending: dict[int, dict[int, dict[int, ShardStep]]] = {}
        #: Offset of the next record to read from the reports topic (the join holds all before).
        self.reports_next = 0

    def add(self, record: ShardStepRecord, reports_offset: int) -> None:
        """A shard's steps; the ones already held (sent again) change nothing."""
        if not 0 <= record.shard < self.shards:
            raise RecordError("invalid_shard_steps", f"shard {record.shard} is not one of {self.shards}")
        done = self.through[record.shard]
        for step in record.steps:
            if step.offset > done:
                self._pending.setdefault(step.offset, {}).setdefault(record.shard, {})[step.part] = step
        self.through[record.shard] = max(done, record.through)
        self.reports_next = max(self.reports_next, reports_offset + 1)

    def skip(self, reports_offset: int) -> None:
        """A record of the reports topic that is not a shard's steps (dead-lettered)."""
        self.reports_next = max(self.reports_next, reports_offset + 1)

    def ready(self, offset: int) -> bool:
        """Whether every shard has done log record ``offset``."""
        return min(self.through) >= offset

    def lagging(self, offset: int) -> list[int]:
        """The shards that have not done log record ``offset`` yet."""
        return [k for k, done in enumerate(self.through) if done < offset]

    def take(self, offset: int, incomplete: list[RecordError] | None = None) -> list[ShardStep]:
        """Every shard's step on log record ``offset``, in shard order (an empty step for a
        shard with nothing to say); steps of earlier records are dropped. A step that lacks
        some of its parts (a part's record did not decode and was dead-lettered) raises
        :class:`RecordError`; given ``incomplete``, the error is appended there instead and
        the shard's step is empty (its reports are lost; the stage goes on)."""
        for old in [o for o in self._pending if o < offset]:
            del self._pending[old]
        mine = self._pending.pop(offset, {})
        steps: list[ShardStep] = []
        for k in range(self.shards):
            try:
                steps.append(_whole(offset, mine.get(k, {})))
            except RecordError as exc:
                if incomplete is None:
                    raise
                incomplete.append(RecordError(exc.reason, f"shard {k}: {exc.detail}"))
                steps.append(ShardStep(offset))
        return steps


def _whole(offset: int, parts: dict[int, ShardStep]) -> ShardStep:
    """One shard's step on log record ``offset`` from its parts (none: an empty step)."""
    if not parts:
        return ShardStep(offset)
    last = parts[max(parts)]
    if sorted(parts) != list(range(last.parts)):
        raise RecordError("invalid_shard_steps", f"the step on log record {offset} lacks parts: "
                                                 f"has {sorted(parts)} of {last.parts}")
    if last.parts == 1:
        return last
    reports = tuple(r for i in range(last.parts) for r in parts[i].reports)
    return ShardStep(offset, reports, last.figures, last.alerts)
