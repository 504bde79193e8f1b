"""Scenario book ladders: the array form of the best levels equals the scalar one."""

from __future__ import annotations

import numpy as np
import pytest

from replay.scenario.day.wire import Book


@pytest.mark.parametrize(("tick", "qty_step", "contract"), [(0.1, 0.001, 1.0), (0.00001, 1.0, 1.0),
                                                           (0.01, 1.0, 0.1), (0.5, 0.01, 1.0)])
def test_tops_match_top_element_for_element(tick: float, qty_step: float, contract: float) -> None:
    rng = np.random.default_rng(3)
    book = Book("binance-usdm", "XUSDT", tick, qty_step, 40e6, 0.2e6, 0.5, contract_size=contract)
    mid = np.concatenate([rng.uniform(0.05, 120_000, 300), [tick, 2 * tick, 1.0]])
    liq = np.concatenate([rng.uniform(0.0001, 1.0, 300), [0.002, 1e-6, 0.3]])
    assert book.tops(mid, liq) == [book.top(m, lq) for m, lq in zip(mid.tolist(), liq.tolist(), strict=True)]


def test_top_is_the_best_of_the_stored_ladder() -> None:
    book = Book("binance-spot", "BTCUSDT", 0.01, 0.00001, 120e6, 0.4e6, 0.2)
    for mid, liq in ((117_123.45, 0.8), (102_700.0, 0.01), (1.0, 0.002)):
        book.bids, book.asks = book.ladder(mid, liq)
        assert book.top(mid, liq) == book.best()
        assert book.best()[0] == max(book.bids, key=float)
        assert book.best()[2] == min(book.asks, key=float)
