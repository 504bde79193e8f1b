"""The report's bounded series: one point per event-time bucket, the width doubling as needed.

Values live in compact ``array`` columns per series (last value per bucket, or a sum per
sum bucket of ``SUM_FACTOR`` × the bucket). When the event-time span seen exceeds
``max_buckets`` buckets the width doubles and every series is re-bucketed, so a series never
holds more than ``max_buckets`` points; at most ``max_series`` series are created (further
ones are counted in ``series_dropped``). Used by :class:`replay.report.recorder.ReportRecorder`.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

__all__ = ["SUM_FACTOR", "Key", "Series", "SeriesStore"]

SUM_FACTOR = 6  # liquidation sum bucket = 6 × the bucket (60 s at the default 10 s)

Key = tuple[str, ...]


class Series:
    """One downsampled series: bucket starts (ms) and values, ascending by bucket."""

    __slots__ = ("t", "v")

    def __init__(self) -> None:
        self.t: array[int] = array("q")
        self.v: array[float] = array("d")

    def put(self, bucket_ms: int, value: float, add: bool) -> None:
        t = self.t
        if not t or bucket_ms > t[-1]:
            t.append(bucket_ms)
            self.v.append(value)
            return
        i = len(t) - 1 if bucket_ms == t[-1] else bisect_left(t, bucket_ms)
        if t[i] == bucket_ms:
            self.v[i] = self.v[i] + value if add else value
        else:
            t.insert(i, bucket_ms)
            self.v.insert(i, value)

    def rebucket(self, width_ms: int, add: bool) -> None:
        """Merge into buckets of ``width_ms``: last value (or sum) per new bucket."""
        if not self.t:
            return
        tb = np.frombuffer(self.t, dtype=np.int64) // width_ms * width_ms
        vb = np.frombuffer(self.v, dtype=np.float64)
        ends = np.flatnonzero(np.r_[tb[1:] != tb[:-1], True])
        if add:
            starts = np.r_[0, ends[:-1] + 1]
            values = np.add.reduceat(vb, starts)
        else:
            values = vb[ends]
        self.t = array("q", tb[ends].astype(np.int64).tobytes())
        self.v = array("d", np.ascontiguousarray(values, dtype=np.float64).tobytes())

    def arrays(self) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
        return (np.frombuffer(self.t, dtype=np.int64).copy(),
                np.frombuffer(self.v, dtype=np.float64).copy())

    def __len__(self) -> int:
        return len(self.t)


class SeriesStore:
    """Last-value and sum series by key, over the event-time span seen so far."""

    def __init__(self, bucket_ms: int, max_buckets: int, max_series: int) -> None:
        self.bucket_ms = bucket_ms
        self.max_buckets = max_buckets
        self.max_series = max_series
        self.series: dict[Key, Series] = {}
        self.sums: dict[Key, Series] = {}
        self.first_ts_ms: int | None = None
        self.last_ts_ms: int | None = None
        self.series_dropped = 0

    @property
    def sum_bucket_ms(self) -> int:
        return self.bucket_ms * SUM_FACTOR

    def touch(self, tmin: int, tmax: int) -> bool:
        """Widen the span seen to [tmin, tmax]; True when that doubled the bucket width."""
        if self.first_ts_ms is None or tmin < self.first_ts_ms:
            self.first_ts_ms = tmin
        if self.last_ts_ms is None or tmax > self.last_ts_ms:
            self.last_ts_ms = tmax
        assert self.first_ts_ms is not None and self.last_ts_ms is not None
        coarsened = False
        # a span under (max_buckets - 1) widths touches at most max_buckets aligned buckets
        while self.last_ts_ms - self.first_ts_ms >= (self.max_buckets - 1) * self.bucket_ms:
            self._coarsen()
            coarsened = True
        return coarsened

    def _coarsen(self) -> None:
        self.bucket_ms *= 2
        for s in self.series.values():
            s.rebucket(self.bucket_ms, add=False)
        for s in self.sums.values():
            s.rebucket(self.sum_bucket_ms, add=True)

    def get(self, key: Key, sums: bool) -> Series | None:
        """The series of ``key`` (created on first use), or None past ``max_series``."""
        store = self.sums if sums else self.series
        s = store.get(key)
        if s is None:
            if len(self.series) + len(self.sums) >= self.max_series:
                self.series_dropped += 1
                return None
            s = store[key] = Series()
        return s

    def put(self, key: Key, ts_ms: int, value: float) -> None:
        """The last value of ``key`` in the bucket of ``ts_ms``."""
        s = self.get(key, sums=False)
        if s is not None:
            s.put(ts_ms // self.bucket_ms * self.bucket_ms, value, add=False)

    def record(
        self,
        codes: NDArray[np.int64],
        ts: NDArray[np.int64],
        values: NDArray[np.float64],
        add: bool,
        key_of: Callable[[int], Key],
    ) -> None:
        """Last value (or sum) per (code, bucket), in arrival order, into the series key_of(code)."""
        width = self.sum_bucket_ms if add else self.bucket_ms
        b = ts // width
        b0 = int(b.min())
        span = int(b.max()) - b0 + 1
        key = codes * span + (b - b0)
        if add:
            u, inv = np.unique(key, return_inverse=True)
            vals = np.bincount(inv, weights=values)
        else:
            u, first_rev = np.unique(key[::-1], return_index=True)
            vals = values[key.size - 1 - first_rev]
        for k, val in zip(u.tolist(), vals.tolist(), strict=True):
            code, off = divmod(k, span)
            s = self.get(key_of(code), sums=add)
            if s is not None:
                s.put((b0 + off) * width, val, add)

    def keys(self) -> list[Key]:
        """Keys of the last-value and sum series, sorted."""
        return sorted([*self.series, *self.sums])

    def find(self, key: Key) -> Series | None:
        """The last-value or sum series of ``key``, if any."""
        return self.series.get(key) or self.sums.get(key)

    def points(self) -> int:
        """Stored points over all series."""
        return sum(len(s) for s in self.series.values()) + sum(len(s) for s in self.sums.values())

    def max_series_points(self) -> int:
        return max((len(s) for s in (*self.series.values(), *self.sums.values())), default=0)
