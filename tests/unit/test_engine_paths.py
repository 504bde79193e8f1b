"""The partition engine's two paths give the same results: batches of quotes, prices and
books (an alt's books, a peg asset's quotes, a quote currency's moves between them) through
an engine that vectorises what it can (batches of 24 events or more, of quotes and prices
only) and one held to the row loop. Compared with ``==``: alerts, signals, counts, books
touched, watermarks, then every book state and mid."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

import monitor.stages.engine as engine_module
from monitor.config import EngineConfig, IngestConfig, LiquidityConfig
from monitor.events import BOOK_BANDS_BPS, KIND_BOOK, KIND_PRICE, KIND_QUOTE, MarketEvent
from monitor.ingest.batch import Batch, decode_record
from monitor.stages.engine import Engine

T0 = 1_760_126_400_000
#: Books warm after 3 updates and a thin baseline, so transitions happen in a short test.
CFG = EngineConfig(liquidity=LiquidityConfig(warmup_ms=0, warmup_updates=3, min_baseline_usd=0.0,
                                             withdrawal_min_duration_ms=0),
                   ingest=IngestConfig(quote_prices_usd={"USDT": 1.0, "USD": 1.0}))
N_BANDS = 2 * len(BOOK_BANDS_BPS)
ETH_SOURCES = (("binance-spot", "ETHUSDT", "USDT"), ("okx", "ETH-USDT-SWAP", "USDT"),
               ("bybit-linear", "ETHUSDT", "USDT"), ("coinbase", "ETH-USD", "USD"))


@st.composite
def event(draw: st.DrawFn, asset: str, ts: int) -> MarketEvent:
    venue, symbol, quote = draw(st.sampled_from(ETH_SOURCES))
    level = draw(st.floats(0.5, 2.0)) * (3_000.0 if asset == "ETH" else 1.0)
    kind = draw(st.sampled_from([KIND_QUOTE, KIND_PRICE, KIND_BOOK] if asset == "ETH" else [KIND_QUOTE, KIND_PRICE]))
    if kind == KIND_QUOTE:
        return MarketEvent(kind, venue, symbol, asset, quote, ts, ts, level * 0.999, level * 1.001,
                           draw(st.floats(0.0, 50.0)), draw(st.floats(0.0, 50.0)))
    if kind == KIND_PRICE:
        return MarketEvent(kind, venue, symbol, asset, quote, ts, ts, level, draw(st.floats(0.0, 1e6)), 0.0, 0.0)
    depth = draw(st.floats(0.0, 1e7))  # deep, thin, or swept: withdrawals start and end
    bands = tuple(depth * (k + 1) for k in range(N_BANDS))
    return MarketEvent(kind, venue, symbol, asset, quote, ts, ts, level * 0.999, level * 1.001, level, 2.0, bands)


@st.composite
def batches(draw: st.DrawFn) -> list[Batch]:
    """A few seconds of ETH (quotes, prices, books on four sources), USDe quotes and USDT
    moves, in batches of 1–60 events (the vector path starts at 24)."""
    out, ts = [], T0
    for _ in range(draw(st.integers(1, 12))):
        asset = draw(st.sampled_from(["ETH", "ETH", "USDe", "USDT"]))
        batch = Batch(asset=asset)
        for _ in range(draw(st.integers(1, 60))):
            ts += draw(st.integers(0, 30_000))
            if asset == "USDT":
                px = draw(st.floats(0.98, 1.02))
                batch.add(MarketEvent(KIND_QUOTE, "kraken", "USDTUSD", "USDT", "USD", ts, ts, px, px, 1.0, 1.0))
            else:
                batch.add(draw(event(asset, ts)))
        out.append(batch)
    return out


def _run(batches: list[Batch], vector: bool) -> tuple[list[Any], Engine]:
    smallest = engine_module._MIN_VECTOR_EVENTS
    engine_module._MIN_VECTOR_EVENTS = smallest if vector else 10**9
    engine, out = Engine(CFG), []
    try:
        for b in batches:
            r = engine.process(b)
            out.append((r.alerts, r.signals, dict(r.events_by_source), sorted(r.books_touched), r.unpriced,
                         r.state_changed, r.watermark_ms))
    finally:
        engine_module._MIN_VECTOR_EVENTS = smallest
    return out, engine


@settings(max_examples=150, deadline=None)
@given(runs=batches(), decoded=st.booleans())
def test_the_vector_path_gives_the_row_loop_results(runs: list[Batch], decoded: bool) -> None:
    if decoded:  # as a worker reads them: columns, not rows
        runs = [b2 for b in runs if isinstance(b2 := decode_record(b.encode()), Batch)]
    rows, by_rows = _run(runs, False)
    vec, by_vec = _run(runs, True)
    assert vec == rows
    assert by_vec.mids_usd == by_rows.mids_usd
    assert by_vec.liquidity.books == by_rows.liquidity.books  # BookState: a dataclass, every field
    assert list(by_vec.liquidity.books) == list(by_rows.liquidity.books)
