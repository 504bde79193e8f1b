"""Venue-local depegs need independent, fresh witnesses; no alert outlives its data (issue 19).

The cases of the issue, one test each: a source whose data stops, witnesses that are
stale or too few, a venue held at its level by hysteresis compared with the others'
current deviation, a market-wide move seen with a lag, source kinds with their own
staleness windows, thin prints, and assets other than USDe.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from monitor.config import EngineConfig, PegConfig, PegSource
from monitor.events import KIND_QUOTE, MarketEvent
from monitor.ingest.batch import Batch
from monitor.ingest.quotes import QuoteHistory
from monitor.metrics import Metrics
from monitor.models.peg.asset_peg import AssetPeg
from monitor.models.peg.bands import PegRules
from monitor.protocol import Alert
from monitor.stages.engine import Engine

T0 = 1_678_500_000_000  # 11 Mar 2023 02:00 UTC
SEC = 1_000


def new_peg(asset: str = "USDe", **over: object) -> AssetPeg:
    return AssetPeg(asset=asset, rules=PegRules.from_config(PegConfig(**over)), config_hash="test")  # type: ignore[arg-type]


def feed(peg: AssetPeg, points: list[tuple[int, str, float]], depth_usd: float = 1e6) -> list[Alert]:
    out: list[Alert] = []
    for ts, venue, px in points:
        peg.on_price(venue, ts, px, depth_usd, out)
    return out


def kinds(alerts: list[Alert], kind: str, venue: str | None = None) -> list[Alert]:
    return [a for a in alerts if a.kind == kind and (venue is None or a.venue == venue)]


def lone_depeg(seconds: int, witnesses: tuple[str, ...] = ("curve", "uniswap-v3")) -> list[tuple[int, str, float]]:
    """binance-spot at 0.93 while the witnesses hold 0.9998, one print each every 10 s."""
    pts = []
    for s in range(0, seconds + 1, 10):
        for w in witnesses:
            pts.append((T0 + s * SEC, w, 0.9998))
        pts.append((T0 + s * SEC + 1, "binance-spot", 0.93))
    return pts


# -- no alert outlives its data (issue §2) ----------------------------------------------


def test_a_source_whose_data_stops_has_its_alerts_resolved_as_stale() -> None:
    peg = new_peg()
    alerts = feed(peg, lone_depeg(180))
    assert [a.severity for a in kinds(alerts, "venue_local_depeg")] == ["high"]
    last_binance = T0 + 180 * SEC + 1
    # binance-spot goes silent; the witnesses keep pricing for 10 more minutes.
    later = [(T0 + s * SEC, w, 0.9998) for s in range(190, 800, 10) for w in ("curve", "uniswap-v3")]
    alerts = feed(peg, later)
    ended = kinds(alerts, "venue_local_depeg", "binance-spot")
    level = kinds(alerts, "peg_deviation", "binance-spot")
    assert len(ended) == 1 and len(level) == 1
    for alert in (ended[0], level[0]):
        assert alert.evidence["resolved"] is True and alert.evidence["reason"] == "stale"
        # Resolved at the first event after the 5-minute window, not before.
        assert last_binance + 300 * SEC < alert.ts_ms <= last_binance + 310 * SEC
    assert "stale" in ended[0].message and "USDe" in level[0].message
    assert peg.trackers["binance-spot"].level == 0 and not peg.venue_local and not peg.elevated
    index = peg.index_price(T0 + 800 * SEC)
    assert index is not None and index[1] == 2  # binance-spot left the index too


def _market_wide_depeg(seconds: int) -> list[tuple[int, str, float]]:
    """Every source at 0.95 together, one print each every 10 s: levels and index go critical."""
    return [(T0 + s * SEC + k, v, 0.95) for s in range(0, seconds + 1, 10)
            for k, v in enumerate(("binance-spot", "curve", "uniswap-v3"))]


def test_when_every_source_stops_the_stream_time_resolves_their_alerts_and_the_index() -> None:
    """No price of the asset comes at all: only the stream's ticks can expire its sources."""
    peg = new_peg()
    alerts = feed(peg, _market_wide_depeg(600))
    held = {a.venue for a in kinds(alerts, "peg_deviation") if a.evidence.get("level") == "high"}
    assert held == {"binance-spot", "curve", "uniswap-v3", "index"}
    first_stale_ms = T0 + 900 * SEC + 1  # binance-spot's last print + the 5-minute window + 1 ms
    out: list[Alert] = []
    peg.on_time(first_stale_ms - 1, out)  # exactly on the window: still fresh
    assert out == []
    peg.on_time(first_stale_ms, out)  # binance-spot stale, two fresh sources keep the index
    assert [a.venue for a in out] == ["binance-spot"]
    peg.on_time(first_stale_ms + 2, out)
    resolved = kinds(out, "peg_deviation")
    assert {a.venue for a in resolved} == held
    for alert in resolved:
        assert alert.evidence["resolved"] is True and alert.evidence["reason"] == "stale"
        assert "USDe" in alert.message
    assert "every source stale" in kinds(out, "peg_deviation", "index")[0].message
    assert all(t.inert for t in peg.trackers.values())
    later: list[Alert] = []
    peg.on_time(first_stale_ms + 3_600 * SEC, later)
    assert later == []  # resolved once


def test_engine_ticks_expire_the_sources_of_an_asset_that_went_silent() -> None:
    engine = Engine(EngineConfig())
    batch = Batch("USDe")
    for ts, venue, px in _market_wide_depeg(600):
        batch.add(MarketEvent(KIND_QUOTE, venue, "USDeUSD", "USDe", "USD", ts, ts, px, px, 1e5, 1e5))
    raised = engine.process(batch).alerts
    assert kinds(raised, "peg_deviation")
    silent_until_ms = T0 + 600 * SEC + 300 * SEC  # binance-spot's last print + the 5-minute window
    assert engine.process(Batch.tick(silent_until_ms)).alerts == []
    result = engine.process(Batch.tick(silent_until_ms + 1_000))
    assert {a.evidence.get("reason") for a in result.alerts} == {"stale"}
    assert {a.venue for a in result.alerts} == {"binance-spot", "curve", "uniswap-v3", "index"}
    assert result.state_changed


def test_a_stale_witness_does_not_count() -> None:
    peg = new_peg()
    # The oracle priced once, at par, then nothing: after 5 minutes it is no witness.
    alerts = feed(peg, [(T0 - 400 * SEC, "oracle", 1.0), *lone_depeg(180, ("curve",))])
    assert not kinds(alerts, "venue_local_depeg")
    assert kinds(alerts, "peg_deviation", "binance-spot")[-1].severity == "high"
    assert peg.undetermined() == {"binance-spot": "stale_witnesses"}


def test_one_other_source_is_too_few_by_default_and_enough_when_configured() -> None:
    peg = new_peg()
    assert not kinds(feed(peg, lone_depeg(180, ("curve",))), "venue_local_depeg")
    assert peg.undetermined() == {"binance-spot": "too_few_sources"}
    one = new_peg(min_witnesses=1)
    assert [a.severity for a in kinds(feed(one, lone_depeg(180, ("curve",))), "venue_local_depeg")] == ["high"]
    assert one.undetermined() == {}


def test_the_undetermined_gauge_says_why_and_clears() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    peg = new_peg()
    feed(peg, lone_depeg(180, ("curve",)))
    metrics.set_peg_undetermined("USDe", peg.undetermined())

    def value(reason: str) -> float | None:
        return registry.get_sample_value(
            "liqmon_peg_venue_local_undetermined",
            {"asset": "USDe", "venue": "binance-spot", "reason": reason},
        )

    assert value("too_few_sources") == 1.0 and value("stale_witnesses") is None
    # A second witness arrives: judged again (here: venue-local), the gauge goes to 0.
    feed(peg, [(T0 + 190 * SEC, "uniswap-v3", 0.9998)])
    metrics.set_peg_undetermined("USDe", peg.undetermined())
    assert value("too_few_sources") == 0.0


def test_witnesses_outside_the_band_make_a_broad_depeg_not_undetermined() -> None:
    peg = new_peg()
    pts = [(ts, v, 0.95 if v != "binance-spot" else px) for ts, v, px in lone_depeg(180)]
    assert not kinds(feed(peg, pts), "venue_local_depeg")
    assert peg.undetermined() == {}


# -- like with like (issue §3) ----------------------------------------------------------


def test_a_level_held_by_hysteresis_is_not_compared_with_current_deviations() -> None:
    """All three venues at −120 bps (warning everywhere), then the venue eases to −64 bps
    and the others to −45 bps: the venue is still `warning` (hysteresis) but not alone."""
    peg = new_peg()
    pts = []
    for s in range(0, 91, 5):
        for v in ("binance-spot", "curve", "uniswap-v3"):
            pts.append((T0 + s * SEC, v, 0.988))
    for s in range(95, 200, 5):
        pts.append((T0 + s * SEC, "binance-spot", 0.9936))
        pts.append((T0 + s * SEC, "curve", 0.9955))
        pts.append((T0 + s * SEC, "uniswap-v3", 0.9955))
    alerts = feed(peg, pts)
    assert kinds(alerts, "peg_deviation", "binance-spot")[0].severity == "warning"
    assert peg.trackers["binance-spot"].level == 2  # held by hysteresis
    assert not kinds(alerts, "venue_local_depeg")


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from((1.0, 0.9996, 0.996, 0.994, 0.988, 0.97, 0.9, 0.87)), st.integers(30, 400)),
        min_size=1,
        max_size=12,
    ),
    st.lists(st.tuples(st.integers(0, 20), st.integers(1, 10)), min_size=3, max_size=4),
)
def test_one_price_path_seen_with_a_bounded_lag_never_makes_a_venue_local_depeg(
    segments: list[tuple[float, int]], lags: list[tuple[int, int]]
) -> None:
    """Every source follows the same price path, each with its own lag (≤ 20 s) and
    sampling interval (≤ 10 s): together less than the venue-local band's 60 s duration,
    so whatever the path, no source is ever alone (issue §3's property)."""
    path: list[tuple[int, float]] = []  # (start s, price)
    start = 0
    for price, length_s in segments:
        path.append((start, price))
        start += length_s
    end_s = start + 300

    def price_at(t_s: int) -> float:
        current = 1.0
        for seg_start, price in path:
            if seg_start <= t_s:
                current = price
        return current

    events: list[tuple[int, str, float]] = []
    for k, (lag_s, every_s) in enumerate(lags):
        for t in range(0, end_s, every_s):
            events.append((T0 + t * SEC + k, f"venue-{k}", price_at(t - lag_s)))
    events.sort()
    alerts = feed(new_peg(), events)
    assert not kinds(alerts, "venue_local_depeg")


# -- source kinds, freshness per kind (issue §1) ----------------------------------------


def test_an_oracle_is_fresh_within_its_heartbeat_and_a_book_only_for_seconds() -> None:
    sources = (
        PegSource(venue="chainlink", kind="oracle", stale_after_ms=3_600_000),
        PegSource(venue="curve", kind="pool"),
        PegSource(venue="kraken", kind="book"),
    )
    peg = new_peg(sources=sources)
    # The oracle updated 20 minutes ago at par (inside its 1 h heartbeat: a witness); the
    # kraken book 40 s ago (past a book's 30 s: stale, no witness).
    pre = [(T0 - 1_200 * SEC, "chainlink", 1.0), (T0 - 40 * SEC, "kraken", 0.9999)]
    alerts = feed(peg, [*pre, *lone_depeg(180, ("curve",))])
    local = kinds(alerts, "venue_local_depeg")
    assert [a.severity for a in local] == ["high"]
    assert local[0].evidence["reference_venues"] == ["chainlink", "curve", "kraken"]
    # The book alone beside curve: stale after its 30 s, so one witness only.
    book_only = new_peg(sources=sources)
    assert not kinds(feed(book_only, [pre[1], *lone_depeg(180, ("curve",))]), "venue_local_depeg")
    assert book_only.undetermined() == {"binance-spot": "stale_witnesses"}
    # Without the declarations the oracle is stale after the default 5 minutes.
    plain = new_peg()
    assert not kinds(feed(plain, [pre[0], *lone_depeg(180, ("curve",))]), "venue_local_depeg")


# -- depth counts (issue §5) ------------------------------------------------------------


def test_thin_prints_never_move_a_level() -> None:
    """Two small prints (212 and 15 USD) on a thin venue in a calm week change nothing."""
    sources = (PegSource(venue="thin-dex", kind="trade", min_depth_usd=1_000.0),)
    peg = new_peg(sources=sources)
    out: list[Alert] = []
    for s in range(0, 400, 10):
        peg.on_price("curve", T0 + s * SEC, 1.0, 1e6, out)
        peg.on_price("uniswap-v3", T0 + s * SEC, 1.0, 1e6, out)
        peg.on_price("thin-dex", T0 + s * SEC + 1, 0.9, 212.0 if s % 20 else 15.0, out)
    assert out == []
    assert "thin-dex" not in peg.prices
    # The same prints with enough notional do move it.
    plain = new_peg()
    for s in range(0, 400, 10):
        plain.on_price("curve", T0 + s * SEC, 1.0, 1e6, out)
        plain.on_price("uniswap-v3", T0 + s * SEC, 1.0, 1e6, out)
        plain.on_price("thin-dex", T0 + s * SEC + 1, 0.9, 212.0, out)
    assert kinds(out, "peg_deviation", "thin-dex")


def test_the_time_of_a_thin_print_still_expires_stale_sources() -> None:
    sources = (PegSource(venue="thin-dex", kind="trade", min_depth_usd=1_000.0),)
    peg = new_peg(sources=sources)
    feed(peg, lone_depeg(180))
    assert peg.venue_local
    out: list[Alert] = []
    peg.on_price("thin-dex", T0 + 900 * SEC, 0.9, 15.0, out)  # everything else went silent
    assert {(a.kind, a.venue, a.evidence["reason"]) for a in out} == {
        ("venue_local_depeg", "binance-spot", "stale"),
        ("peg_deviation", "binance-spot", "stale"),
    }
    assert "thin-dex" not in peg.prices and not peg.venue_local


def test_source_weight_multiplies_its_depth_in_the_index() -> None:
    peg = new_peg(sources=(PegSource(venue="deep", weight=3.0),))
    out: list[Alert] = []
    peg.on_price("a", T0, 0.99, 1e6, out)
    peg.on_price("b", T0, 0.995, 1e6, out)
    peg.on_price("deep", T0, 1.0, 1e6, out)
    assert peg.prices["deep"].depth_usd == 3e6
    index = peg.index_price(T0)
    assert index is not None and index[0] == 1.0  # 3 of 5 units of weight at 1.0


# -- any asset (issue §6) ---------------------------------------------------------------


def test_messages_name_the_configured_asset() -> None:
    for asset in ("USDC", "PYUSD", "USDe"):
        peg = new_peg(asset)
        peg.venue_keys = {"binance-spot": "binance"}
        alerts = feed(peg, lone_depeg(180))
        assert alerts and all(a.asset == asset for a in alerts)
        assert all(asset in a.message for a in alerts)
        others = {"USDC", "PYUSD", "USDe"} - {asset}
        assert not any(o in a.message for a in alerts for o in others)
        local = kinds(alerts, "venue_local_depeg")
        assert local[0].evidence["price_key"] == f"{asset}@binance"


# -- conversion at the book's own time (issue §4) ---------------------------------------


def _quote_batch(asset: str, venue: str, quote: str, points: list[tuple[int, float]]) -> Batch:
    batch = Batch(asset)
    for ts, px in points:
        batch.add(MarketEvent(KIND_QUOTE, venue, f"{asset}{quote}", asset, quote, ts, ts, px, px, 1e5, 1e5))
    return batch


@pytest.mark.parametrize("n_events", [1, 40])  # the row loop, and the vectorised path
def test_a_lagging_book_converts_with_the_quote_price_of_its_own_time(n_events: int) -> None:
    engine = Engine(EngineConfig())
    # USDT/USD: par at T0, a 1% premium from T0 + 60 s.
    engine.process(_quote_batch("USDT", "kraken", "USD", [(T0, 1.0), (T0 + 60 * SEC, 1.01)]))
    # A USDe/USDT book that lags: its frames are from T0 + 30 s, read after the premium.
    lagging = [(T0 + 30 * SEC + k, 0.99) for k in range(n_events)]
    engine.process(_quote_batch("USDe", "binance-spot", "USDT", lagging))
    assert engine.pegs["USDe"].prices["binance-spot"].price_usd == 0.99  # × 1.0, not × 1.01
    # A frame after the premium converts with it.
    engine.process(_quote_batch("USDe", "binance-spot", "USDT", [(T0 + 61 * SEC + k, 0.99) for k in range(n_events)]))
    assert engine.pegs["USDe"].prices["binance-spot"].price_usd == 0.99 * 1.01
    # The venue is known now (the vectorised path takes whole batches): lagging again.
    engine.process(_quote_batch("USDe", "binance-spot", "USDT", [(T0 + 40 * SEC + k, 0.98) for k in range(n_events)]))
    assert engine.pegs["USDe"].prices["binance-spot"].price_usd == 0.98


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 10_000), st.sampled_from((0.99, 1.0, 1.01, 1.02))), min_size=1, max_size=30),
    st.lists(st.integers(-1_000, 12_000), min_size=1, max_size=30),
)
def test_quote_history_as_of_is_the_last_price_at_or_before(
    updates: list[tuple[int, float]], lookups: list[int]
) -> None:
    history = QuoteHistory(window_ms=4_000)
    for ts, usd in updates:
        history.update("USDT", ts, usd)
    newest = max(ts for ts, _ in updates)
    times = history.series["USDT"][0]
    assert times == sorted(times) and times[-1] == newest
    assert len(times) == 1 or times[1] > newest - 4_000  # at most one kept beyond the window
    kept = sorted(updates, key=lambda u: u[0])  # stable: same-time updates in arrival order
    for ts in lookups:
        before = [usd for t, usd in kept if t <= ts and t >= times[0]]
        want = before[-1] if before else history.series["USDT"][1][0]
        assert history.as_of("USDT", ts) == want
    ts_arr = np.array(lookups, dtype=np.int64)
    rows = history.as_of_rows(["USDT"], np.zeros(len(lookups), dtype=np.int64), ts_arr, np.full(len(lookups), 7.0))
    assert rows.tolist() == [history.as_of("USDT", t) if t < newest else 7.0 for t in lookups]
