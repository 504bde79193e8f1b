"""The wire unit for market data: a small batch of one asset's events (DESIGN "Throughput").

One Kafka record carries the events of one asset, across venues, in arrival order, over
a few hundred milliseconds of event time. Batching per *asset* (not per venue/symbol)
keeps the exact cross-venue order that the venue-local depeg rule depends on, and puts
all of one asset's state in one partition. The record is :class:`monitor.protocol.MarketRecord`:
columnar JSON of plain numbers, which msgspec decodes into typed lists at millions of
numbers per second and numpy turns into arrays without a per-event Python loop::

    {"v": 2, "asset": "USDe",
     "src": [["binance-spot", "USDEUSDT", "USDT"], ["uniswap-v3", "USDe/USDT", "USDT"]],
     "k": [kind, ...], "i": [source index, ...], "t": [ts_ms, ...], "r": [recv_ts_ms, ...],
     "f": [f1, f2, f3, f4, f1, ...],          # four per event
     "x": [bands of each book event, ...]}     # 2 × len(BOOK_BANDS_BPS) per book event

A control record ``{"v": 2, "ctl": "end", "run": "<id>", "partition": p}`` marks the end
of a replay on one partition (the worker acknowledges it once everything before it is
processed). :class:`Batcher` is the deterministic grouping used by the replayer and the
live feeds alike, so the Kafka path and the inline path see the same batches.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import cast

import numpy as np
from numpy.typing import NDArray

from monitor.events import BOOK_BANDS_BPS, KIND_BOOK, ROW_LENGTHS, MarketEvent
from monitor.protocol import MARKET_VERSION, MarketRecord, RecordError, decode_market, encode

__all__ = [
    "MAX_BATCH_VALUES",
    "Batch",
    "Batcher",
    "Columns",
    "Control",
    "decode_record",
]

_N_BANDS = 2 * len(BOOK_BANDS_BPS)
#: Numbers one batch record may carry (8 per event, plus the bands of book events): about
#: 650 KB of JSON at most, well inside Kafka's default 1 MB message limit whatever the
#: event mix (4,096 quotes, or about 1,800 book events).
MAX_BATCH_VALUES = 32_768
#: Numbers in the largest event row (a book event with its bands).
_ROW_VALUES_MAX = 8 + _N_BANDS


@dataclass(frozen=True, slots=True)
class Columns:
    """A batch as arrays (the decoded wire form): one entry per event, in order."""

    kind: NDArray[np.int64]
    src: NDArray[np.int64]
    ts_ms: NDArray[np.int64]
    recv_ts_ms: NDArray[np.int64]
    #: f1..f4 per event, shape (n, 4).
    f: NDArray[np.float64]
    #: Band depths of the book events only, shape (n_books, 2 × len(BOOK_BANDS_BPS)).
    bands: NDArray[np.float64]

    def __len__(self) -> int:
        return int(self.kind.shape[0])


class Batch:
    """Events of one asset in arrival order; ``sources`` is the (venue, symbol, quote) table.

    Built row by row on the ingest side (:meth:`add`), decoded column-wise on the worker
    side (:func:`decode_record`); ``rows`` and :meth:`columns` give either view.
    """

    __slots__ = ("_cols", "_rows", "_src_index", "asset", "n_values", "sources", "tick_ms")

    def __init__(
        self,
        asset: str,
        sources: list[tuple[str, str, str]] | None = None,
        rows: list[list[float]] | None = None,
        columns: Columns | None = None,
    ) -> None:
        self.asset = asset
        self.sources: list[tuple[str, str, str]] = sources if sources is not None else []
        self._rows = rows if rows is not None or columns is not None else []
        self._cols = columns
        self._src_index = {key: i for i, key in enumerate(self.sources)}
        #: Numbers the batch carries on the wire (:data:`MAX_BATCH_VALUES`), counted by add().
        self.n_values = 0
        #: Set on a *tick*: no events, only "event time on this stream has reached tick_ms"
        #: (see :class:`monitor.ingest.frames.Ingest`); idle partitions advance their watermark.
        self.tick_ms: int | None = None

    @classmethod
    def tick(cls, ts_ms: int) -> Batch:
        """A tick batch: event time has reached ``ts_ms`` for every partition."""
        batch = cls(asset="")
        batch.tick_ms = ts_ms
        return batch

    def add(self, ev: MarketEvent) -> None:
        key = (ev.venue, ev.symbol, ev.quote)
        idx = self._src_index.get(key)
        if idx is None:
            idx = len(self.sources)
            self._src_index[key] = idx
            self.sources.append(key)
        row: list[float] = [ev.kind, idx, ev.ts_ms, ev.recv_ts_ms, ev.f1, ev.f2, ev.f3, ev.f4]
        if ev.bands:
            row.extend(ev.bands)
        self.rows.append(row)
        self.n_values += len(row)
        self._cols = None

    @property
    def rows(self) -> list[list[float]]:
        """Row view: ``[kind, source, ts_ms, recv_ts_ms, f1, f2, f3, f4, *bands]`` per event."""
        if self._rows is None:
            assert self._cols is not None
            c = self._cols
            f = c.f.tolist()
            bands = iter(c.bands.tolist())
            rows: list[list[float]] = []
            for k, i, t, r, ff in zip(c.kind.tolist(), c.src.tolist(), c.ts_ms.tolist(),
                                      c.recv_ts_ms.tolist(), f, strict=True):
                row = [k, i, t, r, *ff]
                if k == KIND_BOOK:
                    row.extend(next(bands))
                rows.append(row)
            self._rows = rows
        return self._rows

    def columns(self) -> Columns:
        """Column view (built once from the rows when the batch was made row by row)."""
        if self._cols is None:
            rows = self.rows
            n = len(rows)
            kind = np.fromiter((r[0] for r in rows), dtype=np.int64, count=n)
            self._cols = Columns(
                kind=kind,
                src=np.fromiter((r[1] for r in rows), dtype=np.int64, count=n),
                ts_ms=np.fromiter((r[2] for r in rows), dtype=np.int64, count=n),
                recv_ts_ms=np.fromiter((r[3] for r in rows), dtype=np.int64, count=n),
                f=np.array([r[4:8] for r in rows], dtype=np.float64).reshape(n, 4),
                bands=np.array([r[8:] for r in rows if r[0] == KIND_BOOK], dtype=np.float64).reshape(
                    -1, _N_BANDS
                ),
            )
        return self._cols

    def __len__(self) -> int:
        if self._rows is not None:
            return len(self._rows)
        assert self._cols is not None
        return len(self._cols)

    @property
    def first_ts_ms(self) -> int:
        return int(self.rows[0][2]) if self._rows is not None else int(self.columns().ts_ms[0])

    @property
    def last_ts_ms(self) -> int:
        return int(self.rows[-1][2]) if self._rows is not None else int(self.columns().ts_ms[-1])

    def encode(self) -> bytes:
        """The batch's :class:`monitor.protocol.MarketRecord` (see the module docstring)."""
        if self.tick_ms is not None:
            return encode(MarketRecord(v=MARKET_VERSION, tick=self.tick_ms))
        rows = self.rows
        return encode(MarketRecord(
            v=MARKET_VERSION,
            asset=self.asset,
            src=self.sources,
            k=cast(list[int], [r[0] for r in rows]),  # ints, as add() put them
            i=cast(list[int], [r[1] for r in rows]),  # ints, as add() put them
            t=cast(list[int], [r[2] for r in rows]),  # ints, as add() put them
            r=cast(list[int], [r[3] for r in rows]),  # ints, as add() put them
            f=[x for r in rows for x in r[4:8]],
            x=[x for r in rows if r[0] == KIND_BOOK for x in r[8:]],
        ))

    def events(self) -> Iterator[MarketEvent]:
        """The batch's events as MarketEvent records (tests, tooling)."""
        for row in self.rows:
            kind, idx, ts, rts, f1, f2, f3, f4 = row[:8]
            venue, symbol, quote = self.sources[int(idx)]
            yield MarketEvent(
                int(kind), venue, symbol, self.asset, quote, int(ts), int(rts), f1, f2, f3, f4,
                tuple(row[8:]),
            )

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Batch)
            and other.asset == self.asset
            and other.sources == self.sources
            and other.rows == self.rows
        )

    __hash__ = None  # type: ignore[assignment]  # mutable: compared by value, never hashed

    def __repr__(self) -> str:
        return f"Batch(asset={self.asset!r}, sources={self.sources!r}, events={len(self)})"


@dataclass(frozen=True, slots=True)
class Control:
    """A control record: ``end`` of a run on one partition."""

    ctl: str
    run: str
    partition: int

    def encode(self) -> bytes:
        return encode(MarketRecord(v=MARKET_VERSION, ctl=self.ctl, run=self.run, partition=self.partition))


#: ``_KIND_OK[k]`` is True for a known event kind (kinds are small non-negative ints).
_KIND_OK = np.zeros(max(ROW_LENGTHS) + 1, dtype=np.bool_)
_KIND_OK[sorted(ROW_LENGTHS)] = True


def _int_column(values: list[int] | None, name: str, n: int | None) -> NDArray[np.int64]:
    if values is None or (n is not None and len(values) != n):
        raise RecordError("invalid_batch", f"column '{name}' missing or of the wrong length")
    try:  # fromiter: the lists are typed by the decoder, and it is faster than asarray on them
        return np.fromiter(values, dtype=np.int64, count=len(values))
    except OverflowError:
        raise RecordError("invalid_batch", f"column '{name}' is out of range") from None


def _float_column(values: list[float] | None, name: str, n: int) -> NDArray[np.float64]:
    if values is None or len(values) != n:
        raise RecordError("invalid_batch", f"column '{name}' missing or of the wrong length")
    arr = np.fromiter(values, dtype=np.float64, count=n)
    if not np.isfinite(arr).all():
        raise RecordError("invalid_batch", f"column '{name}' has non-finite values")
    return arr


def decode_record(value: bytes) -> Batch | Control:
    """Decode and validate one market-topic record (vectorised: no per-event Python).

    :func:`monitor.protocol.decode_market` types the fields; here the columns become arrays
    and are checked against each other (raises :class:`monitor.protocol.RecordError`).
    """
    rec = decode_market(value)
    if rec.ctl is not None:
        assert rec.run is not None and rec.partition is not None
        return Control(rec.ctl, rec.run, rec.partition)
    if rec.tick is not None:
        return Batch.tick(rec.tick)
    assert rec.asset is not None and rec.src is not None
    sources = rec.src
    kind = _int_column(rec.k, "k", None)
    n = int(kind.shape[0])
    if n and (int(kind.min()) < 0 or int(kind.max()) >= len(_KIND_OK) or not _KIND_OK[kind].all()):
        raise RecordError("invalid_batch", "unknown event kind")
    idx = _int_column(rec.i, "i", n)
    if n and (idx.min() < 0 or idx.max() >= len(sources)):
        raise RecordError("invalid_batch", "source index out of range")
    ts = _int_column(rec.t, "t", n)
    rts = _int_column(rec.r, "r", n)
    f = _float_column(rec.f, "f", 4 * n).reshape(n, 4)
    n_books = int(np.count_nonzero(kind == KIND_BOOK))
    bands = _float_column(rec.x, "x", _N_BANDS * n_books).reshape(n_books, _N_BANDS)
    cols = Columns(kind=kind, src=idx, ts_ms=ts, recv_ts_ms=rts, f=f, bands=bands)
    return Batch(asset=rec.asset, sources=sources, columns=cols)


class Batcher:
    """Groups events per asset; a batch closes on size (events, or numbers on the wire:
    :data:`MAX_BATCH_VALUES`) or event-time span.

    ``add`` returns the batches it closed (at most one). ``flush`` closes everything,
    in first-event order, which keeps the output a pure function of the input order.
    """

    def __init__(self, max_events: int, max_span_ms: int) -> None:
        self.max_events = max_events
        self.max_span_ms = max_span_ms
        self._open: dict[str, Batch] = {}

    def add(self, ev: MarketEvent) -> list[Batch]:
        closed: list[Batch] = []
        batch = self._open.get(ev.base)
        if batch is not None and ev.ts_ms - batch.first_ts_ms > self.max_span_ms:
            closed.append(self._open.pop(ev.base))
            batch = None
        if batch is None:
            batch = Batch(asset=ev.base)
            self._open[ev.base] = batch
        batch.add(ev)
        if len(batch) >= self.max_events or batch.n_values > MAX_BATCH_VALUES - _ROW_VALUES_MAX:
            closed.append(self._open.pop(ev.base))
        return closed

    def flush(self) -> list[Batch]:
        out = list(self._open.values())
        self._open.clear()
        return out

    def expire(self, before_ms: int) -> list[Batch]:
        """Close the batches whose first event is older than ``before_ms`` (first-event order)."""
        out = [b for b in self._open.values() if b.first_ts_ms < before_ms]
        for b in out:
            del self._open[b.asset]
        return out

    def __len__(self) -> int:
        return sum(len(b) for b in self._open.values())
