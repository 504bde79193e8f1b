"""Effective-leverage quantiles that merge over account shards: a log-bucketed sketch.

The sketch is DDSketch's (Masson, Rim & Lee, "DDSketch: A Fast and Fully-Mergeable
Quantile Sketch with Relative-Error Guarantees", PVLDB 12(12), 2019, §2.1): with
γ = (1 + α)/(1 − α), bucket i counts the values x with γ^(i−1) < x ≤ γ^i, i = ⌈log_γ x⌉, and
a quantile that falls in bucket i reads 2γ^i/(γ + 1), within a relative α of the sample it
stands for. Values at or below :data:`MIN_INDEXED` (no gross position) share the zero
bucket and read 0. Counts add, so one stage and any number of shards export the same
quantiles; the sample a quantile stands for is the lower one, as ``levs[int(q·(n − 1))]``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable

import numpy as np
import numpy.typing as npt
from msgspec import Struct

__all__ = ["LEVERAGE_RELATIVE_ACCURACY", "MIN_INDEXED", "LeverageSketch", "leverage_sketch", "merge_sketches"]

#: α: a quantile read from the sketch is within this relative error of the sample.
LEVERAGE_RELATIVE_ACCURACY = 0.005
#: Leverage at or below this counts as none (the zero bucket).
MIN_INDEXED = 1e-9
#: Leverage above this is counted as this (a vanishing equity; keeps the bucket index finite).
MAX_INDEXED = 1e15
_GAMMA = (1.0 + LEVERAGE_RELATIVE_ACCURACY) / (1.0 - LEVERAGE_RELATIVE_ACCURACY)
_LOG_GAMMA = math.log(_GAMMA)


class LeverageSketch(Struct, frozen=True, array_like=True):
    """Counts of effective leverage: ``zeros`` at or below :data:`MIN_INDEXED`, then
    (bucket index, count) pairs in index order, non-empty buckets only."""

    zeros: int = 0
    buckets: tuple[tuple[int, int], ...] = ()

    @property
    def count(self) -> int:
        return self.zeros + sum(c for _, c in self.buckets)

    def quantile(self, q: float) -> float | None:
        """The q-quantile (lower sample, rank ⌊q·(n − 1)⌋) within a relative α; None if empty."""
        n = self.count
        if n == 0:
            return None
        rank = int(q * (n - 1))
        if rank < self.zeros:
            return 0.0
        seen = self.zeros
        for index, count in self.buckets:
            seen += count
            if rank < seen:
                return 2.0 * _GAMMA**index / (_GAMMA + 1.0)
        raise AssertionError("rank beyond the counts")  # pragma: no cover - rank < n


def leverage_sketch(leverage: npt.NDArray[np.float64]) -> LeverageSketch:
    """The sketch of ``leverage`` (NaN: no equity, left out). One log and one bincount."""
    levs = leverage[~np.isnan(leverage)]
    indexed = levs > MIN_INDEXED
    zeros = int(levs.size - np.count_nonzero(indexed))
    if zeros == levs.size:
        return LeverageSketch(zeros, ())
    index = np.ceil(np.log(np.minimum(levs[indexed], MAX_INDEXED)) / _LOG_GAMMA).astype(np.int64)
    low = int(index.min())
    counts = np.bincount(index - low)
    present = np.flatnonzero(counts)
    return LeverageSketch(zeros, tuple(zip((present + low).tolist(), counts[present].tolist(), strict=True)))


def merge_sketches(parts: Iterable[LeverageSketch]) -> LeverageSketch:
    """The sketch of the union: counts added bucket by bucket."""
    zeros = 0
    buckets: Counter[int] = Counter()
    for part in parts:
        zeros += part.zeros
        for index, count in part.buckets:
            buckets[index] += count
    return LeverageSketch(zeros, tuple(sorted(buckets.items())))
