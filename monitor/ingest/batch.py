"""The wire unit for market data: a small batch of one asset's events (DESIGN "Throughput").

One Kafka record carries the events of one asset, across venues, in arrival order, over
a few hundred milliseconds of event time. Batching per *asset* (not per venue/symbol)
keeps the exact cross-venue order that the venue-local depeg rule depends on, and puts
all of one asset's state in one partition. The record is :class:`monitor.protocol.MarketRecord`:
columnar JSON of plain numbers. simdjson parses a batch once and hands over each column as
a C array that numpy wraps, with no Python number in between; msgspec checks the few other
fields. Any other record, or a batch with a fault, is read by msgspec first
(:class:`monitor.protocol.MarketWire`, naming the field at fault)::

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

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, cast

import msgspec
import numpy as np
import simdjson
from numpy.typing import NDArray

from monitor.events import BOOK_BANDS_BPS, KIND_BOOK, ROW_LENGTHS, MarketEvent
from monitor.protocol import MARKET_VERSION, MarketHead, MarketRecord, RecordError, decode_market, encode

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


#: The known event kinds.
_KINDS = frozenset(ROW_LENGTHS)


class _Parsers(threading.local):
    """One simdjson parser per thread (a parser is reused, never shared between threads)."""

    def __init__(self) -> None:
        self.parser = simdjson.Parser()


_PARSERS = _Parsers()


def _column_buffer(raw: msgspec.Raw, name: str, of_type: Literal["i", "d"]) -> bytes:
    """The numbers of one column's JSON text as a C array: int64 (``i``) or float64 (``d``).

    simdjson refuses anything else in the array (strings, booleans, null, objects; a float
    in an int64 column; an int64 column's number beyond its range; a number too large for
    a float64) and flattens nested arrays, so a column with a second ``[`` is refused first.
    """
    text = bytes(raw)
    flat = bool(text) and text.count(b"[") == 1
    buffer = None
    doc = None
    try:
        doc = _PARSERS.parser.parse(text) if flat else None
        if isinstance(doc, simdjson.Array):
            buffer = doc.as_buffer(of_type=of_type)
    except (TypeError, ValueError, RuntimeError) as exc:  # INCORRECT_TYPE, NUMBER_OUT_OF_RANGE, BIGINT_ERROR …
        kind = "integers" if of_type == "i" else "numbers"
        raise RecordError("invalid_batch", f"column '{name}' is not an array of {kind}: {exc}") from None
    finally:
        del doc  # the parser is reused only once no document of it is alive
    if buffer is None:
        raise RecordError("invalid_batch", f"column '{name}' missing or not a flat array of numbers")
    return buffer


def _int_column(raw: msgspec.Raw, name: str, n: int | None) -> NDArray[np.int64]:
    arr = np.frombuffer(_column_buffer(raw, name, "i"), dtype=np.int64)
    if n is not None and arr.shape[0] != n:
        raise RecordError("invalid_batch", f"column '{name}' missing or of the wrong length")
    return arr


def _finite(arr: NDArray[np.float64], name: str, n: int) -> NDArray[np.float64]:
    if arr.shape[0] != n:
        raise RecordError("invalid_batch", f"column '{name}' missing or of the wrong length")
    if not np.isfinite(arr).all():  # JSON has no NaN or infinity; kept as the arrays' invariant
        raise RecordError("invalid_batch", f"column '{name}' has non-finite values")
    return arr


def decode_record(value: bytes) -> Batch | Control:
    """Decode and validate one market-topic record (vectorised: no per-event Python).

    A plain batch is read in one simdjson pass (:func:`_read_plain_batch`); every other
    record, and any batch that pass does not accept, by :func:`read_record_exact`, which
    gives the same batch or names what is wrong (raises :class:`monitor.protocol.RecordError`).
    """
    batch = _read_plain_batch(value)
    return batch if batch is not None else read_record_exact(value)


def read_record_exact(value: bytes) -> Batch | Control:
    """The reference decoder: :func:`monitor.protocol.decode_market` types the fields (msgspec,
    which names the field at fault), then the columns become arrays (read by simdjson, no
    Python number per value) and are checked against each other."""
    rec = decode_market(value)
    if rec.ctl is not None:
        assert rec.run is not None and rec.partition is not None
        return Control(rec.ctl, rec.run, rec.partition)
    if rec.tick is not None:
        return Batch.tick(rec.tick)
    assert rec.asset is not None and rec.src is not None
    kind = _int_column(rec.k, "k", None)
    n = int(kind.shape[0])
    idx = _int_column(rec.i, "i", n)
    ts = _int_column(rec.t, "t", n)
    rts = _int_column(rec.r, "r", n)
    f = np.frombuffer(_column_buffer(rec.f, "f", "d"), dtype=np.float64)
    x = np.frombuffer(_column_buffer(rec.x, "x", "d"), dtype=np.float64)
    return _batch(rec.asset, rec.src, kind, idx, ts, rts, f, x)


def _batch(asset: str, sources: list[tuple[str, str, str]], kind: NDArray[np.int64], idx: NDArray[np.int64],
           ts: NDArray[np.int64], rts: NDArray[np.int64], f: NDArray[np.float64], x: NDArray[np.float64]) -> Batch:
    """A batch of these columns, checked against each other and the source table."""
    n = int(kind.shape[0])
    # As Python lists: a batch holds tens of events, and a numpy call on so few costs more
    # than a C-level pass over the list.
    kinds = kind.tolist()
    if not _KINDS.issuperset(kinds):
        raise RecordError("invalid_batch", "unknown event kind")
    src_ids = idx.tolist()
    if n and (min(src_ids) < 0 or max(src_ids) >= len(sources)):
        raise RecordError("invalid_batch", "source index out of range")
    n_books = kinds.count(KIND_BOOK)
    cols = Columns(kind=kind, src=idx, ts_ms=ts, recv_ts_ms=rts, f=_finite(f, "f", 4 * n).reshape(n, 4),
                   bands=_finite(x, "x", _N_BANDS * n_books).reshape(n_books, _N_BANDS))
    return Batch(asset=asset, sources=sources, columns=cols)


#: The columns of a batch and the type simdjson reads each as.
_COLUMN_TYPES: dict[str, Literal["i", "d"]] = {"k": "i", "i": "i", "t": "i", "r": "i", "f": "d", "x": "d"}
#: The other fields of a batch.
_BATCH_HEAD = frozenset({"v", "asset", "src"})
_OPEN_BRACKET = ord("[")


def _read_plain_batch(value: bytes) -> Batch | None:
    """A batch record read in one simdjson pass: the columns straight into arrays, the other
    fields checked by msgspec. ``None`` for anything else — a tick, an end marker, a record
    with a fault — which :func:`read_record_exact` then reads (or refuses, naming the fault).

    simdjson flattens nested arrays, so the ``[`` in the record are counted: exactly one per
    column and one per source table entry plus the table's own, or the exact reader decides.
    """
    # numpy counts ~6× faster than bytes.count; no brackets enough: a tick or an end marker
    brackets = int(np.count_nonzero(np.frombuffer(value, dtype=np.uint8) == _OPEN_BRACKET))
    if brackets < len(_COLUMN_TYPES):
        return None
    head: dict[str, object] = {}
    buffers: dict[str, bytes] = {}
    doc = field = None
    try:
        doc = _PARSERS.parser.parse(value)
        if not isinstance(doc, simdjson.Object):
            return None
        for key in doc:
            field = doc[key]
            of_type = _COLUMN_TYPES.get(key)
            if isinstance(field, simdjson.Object):
                return None  # no field of a batch is an object (and no proxy may outlive doc)
            if of_type is None:
                head[key] = field.as_list() if isinstance(field, simdjson.Array) else field
            elif isinstance(field, simdjson.Array):
                buffers[key] = field.as_buffer(of_type=of_type)
        fields = len(doc)  # a repeated key is counted here, not in head or buffers
    except (TypeError, ValueError, RuntimeError):  # not JSON, a wrong type, a number out of range
        return None
    finally:
        del doc, field
    if len(buffers) != len(_COLUMN_TYPES) or not head.keys() <= _BATCH_HEAD or fields != len(head) + len(buffers):
        return None
    try:
        rec = msgspec.convert(head, MarketHead)
    except msgspec.ValidationError:
        return None
    sources = rec.src
    if (rec.v != MARKET_VERSION or rec.asset is None or sources is None
            or brackets != len(_COLUMN_TYPES) + 1 + len(sources)):
        return None
    kind, idx, ts, rts = (np.frombuffer(buffers[k], dtype=np.int64) for k in "kitr")
    n = int(kind.shape[0])
    if idx.shape[0] != n or ts.shape[0] != n or rts.shape[0] != n:
        return None
    try:
        return _batch(rec.asset, sources, kind, idx, ts, rts, np.frombuffer(buffers["f"], dtype=np.float64),
                      np.frombuffer(buffers["x"], dtype=np.float64))
    except RecordError:
        return None


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
