"""The scenario's child-process feed: results in order, inline or forked; failures surface."""

from __future__ import annotations

import multiprocessing

import pytest

from replay.scenario.day.feed import BLOCK, ForkedFeed


def _square(t: int) -> int:
    return t * t


@pytest.mark.parametrize("forked", [True, False])
def test_results_come_back_in_order(forked: bool) -> None:
    n = 3 * BLOCK + 5
    assert list(ForkedFeed(_square, n, forked=forked)) == [t * t for t in range(n)]


def _fail_late(t: int) -> int:
    if t == BLOCK + 1:
        raise ValueError("boom")
    return t


def test_a_failed_child_is_reported() -> None:
    feed = ForkedFeed(_fail_late, 2 * BLOCK + 1)
    got: list[int] = []
    with pytest.raises(RuntimeError, match="ended early"):
        got.extend(feed)
    assert got == list(range(BLOCK))


def test_closing_early_stops_the_child() -> None:
    feed = ForkedFeed(_square, 100 * BLOCK)
    first = next(iter(feed))
    feed.close()
    assert first == 0
    assert not multiprocessing.active_children()


def test_ready_once_a_block_is_in() -> None:
    inline = ForkedFeed(_square, 5, forked=False)
    assert inline.ready()
    feed = ForkedFeed(_square, 2 * BLOCK)
    results = iter(feed)
    assert next(results) == 0
    assert feed.ready()  # the rest of the first block is already here
    assert list(results)[-1] == (2 * BLOCK - 1) ** 2
