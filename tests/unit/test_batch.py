"""The columnar wire unit and the vectorised calm-peg path (exactly the per-event result)."""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.config import EngineConfig
from monitor.events import BOOK_BANDS_BPS, KIND_BOOK, KIND_PRICE, KIND_QUOTE, KIND_TRADE, MarketEvent
from monitor.ingest.batch import MAX_BATCH_VALUES, Batch, Batcher, decode_record
from monitor.models.peg.asset_peg import AssetPeg
from monitor.models.peg.bands import PegRules
from monitor.protocol import Alert
from monitor.stages.engine import Engine

T0 = 1_760_130_000_000
VENUES = ("binance-spot", "bybit-spot", "curve")


def quote_event(venue: str, ts: int, mid: float, kind: int = KIND_QUOTE) -> MarketEvent:
    if kind == KIND_PRICE:
        return MarketEvent(KIND_PRICE, venue, "USDe/USDT", "USDe", "USDT", ts, ts, mid, 2e7, 0.0, 0.0)
    return MarketEvent(kind, venue, "USDEUSDT", "USDe", "USDT", ts, ts + 3, mid - 1e-4, mid + 1e-4, 5e4, 6e4)


def test_round_trip_with_every_kind() -> None:
    batch = Batch(asset="BTC")
    batch.add(MarketEvent(KIND_QUOTE, "binance-spot", "BTCUSDT", "BTC", "USDT", T0, T0 + 1, 1.0, 2.0, 3.0, 4.0))
    bands = tuple(float(i) for i in range(2 * len(BOOK_BANDS_BPS)))
    batch.add(MarketEvent(KIND_BOOK, "okx", "BTC-USDT", "BTC", "USDT", T0 + 5, T0 + 6, 1.0, 2.0, 1.5, 6.6, bands))
    batch.add(MarketEvent(KIND_TRADE, "binance-spot", "BTCUSDT", "BTC", "USDT", T0 + 7, T0 + 8, 1.5, 0.1, -1.0, 0.0))
    decoded = decode_record(batch.encode())
    assert isinstance(decoded, Batch)
    assert decoded == batch
    assert list(decoded.events()) == list(batch.events())
    assert decoded.columns().bands.shape == (1, 10)
    assert decoded.first_ts_ms == T0 and decoded.last_ts_ms == T0 + 7


def reference_alerts(events: list[MarketEvent]) -> tuple[list[Alert], dict[str, object]]:
    """Every event through AssetPeg.on_price, one by one: the semantics the fast path must keep."""
    cfg = EngineConfig()
    peg = AssetPeg(asset="USDe", rules=PegRules.from_config(cfg.peg), config_hash=cfg.config_hash)
    out: list[Alert] = []
    for ev in events:
        if ev.kind == KIND_QUOTE:
            peg.on_price(ev.venue, ev.ts_ms, (ev.f1 + ev.f2) * 0.5, ev.f1 * ev.f3 + ev.f2 * ev.f4, out)
        else:
            peg.on_price(ev.venue, ev.ts_ms, ev.f1, ev.f2, out)
    return out, peg.to_state()


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(VENUES),
            st.integers(0, 20_000),
            st.one_of(st.floats(0.9990, 1.0010), st.floats(0.90, 1.10)),
            st.sampled_from((KIND_QUOTE, KIND_PRICE)),
        ),
        min_size=1,
        max_size=300,
    ),
    st.integers(1, 64),
)
def test_calm_batches_equal_event_by_event(steps: list[tuple[str, int, float, int]], max_events: int) -> None:
    ts = T0
    events = []
    for venue, gap_ms, mid, kind in steps:
        ts += gap_ms
        events.append(quote_event(venue, ts, mid, kind if venue == "curve" else KIND_QUOTE))
    expected_alerts, expected_state = reference_alerts(events)
    engine = Engine(EngineConfig())
    batcher = Batcher(max_events, 1_000)
    alerts: list[Alert] = []
    for ev in events:
        for batch in batcher.add(ev):
            alerts += engine.process(decode_record(batch.encode())).alerts  # type: ignore[arg-type]
    for batch in batcher.flush():
        alerts += engine.process(decode_record(batch.encode())).alerts  # type: ignore[arg-type]
    assert [a.to_json() for a in alerts] == [a.to_json() for a in expected_alerts]
    assert orjson.dumps(engine.pegs["USDe"].to_state()) == orjson.dumps(expected_state)


def test_batches_close_on_wire_numbers_and_fit_kafkas_default_message_size() -> None:
    """Book events carry their bands: a batch of them closes before max_events, under 1 MB."""
    batcher = Batcher(10_000, 60_000)
    bands = tuple(123_456_789.123456 + i for i in range(2 * len(BOOK_BANDS_BPS)))
    closed: list[Batch] = []
    for k in range(5_000):
        ev = MarketEvent(KIND_BOOK, "okx", "BTC-USDT", "BTC", "USDT", T0 + k, T0 + k + 1,
                         116_800.123456789, 116_800.234567891, 116_800.17, 12.345678912, bands)
        closed += batcher.add(ev)
    assert closed, "a batch of book events must close on its numbers, not only on max_events"
    for batch in closed:
        assert batch.n_values <= MAX_BATCH_VALUES
        assert len(batch.encode()) < 1_000_000
    assert {len(b) for b in closed} == {MAX_BATCH_VALUES // (8 + 2 * len(BOOK_BANDS_BPS))}
