"""The replay report: one self-contained HTML file (``DIR/report.html``) a user opens from disk.

A :class:`ReportRecorder` rides along a replay (inline hooks or the Kafka replayer's
routed batches) and keeps small, event-time-downsampled series; :func:`write_report`
turns them into one HTML page with plotly.js inlined (no network, no CDN, fixed div ids,
no generation timestamp: the same recorded data, title, hash and summary give the same
bytes).

What the recorder derives from market batches. ``on_batch`` is on the replay hot path and
only queues the batch's rows (the native form of replay-side batches; ``Batch.columns()``
would cost ~13 µs per 1–2-event batch) with its sources' ids; every ``chunk_events`` events
the chunk becomes numpy columns in one C-level pass per column and is processed
vectorised (≈ 2.6 µs per batch on the 6-hour synthetic day, ~2% of the replay's own cost):

- USD mid price by (asset, venue) of the peg assets (``config.peg.assets``, USDe) and BTC:
  QUOTE (bid+ask)/2, PRICE f1, BOOK mid, and TRADE prices of sources that never quote;
  converted with ``config.ingest.quote_prices_usd``. Last value per bucket.
- An equal-weight alt index: every asset that is not BTC/ETH (``cascade.macro_assets``),
  a stable or quote currency, a peg asset or in ``cascade.not_alts`` (wBETH, BNSOL, ...).
  Each (asset, venue) is tracked as price / its first price, averaged per asset over its
  venues, then equally over the assets; the series is normalised to 100 at its first
  bucket. Assets that start later enter at their own first price.
- Bid depth within ``liquidity.withdrawal_band_bps`` (200 bps) of mid in USD from BOOK
  events, per (asset, venue, symbol); a BOOK_INVALID event records a gap.
- Liquidation notional in USD (f4, or price × qty) summed per venue per sum bucket
  (6 × the bucket, 60 s by default) and shown per minute.

From alerts (``on_alert``): every alert (time, kind, severity, subject, message), and the
cascade stage over time from ``cascade_stage`` alerts (``alert.stage`` is the highest
active stage after the transition).

Snapshots (``on_snapshot``): periodic dicts from the risk engine. Recognised shapes
(anything else is counted in ``snapshots_ignored`` and otherwise ignored; extra keys are
ignored; count maps may be flat ``{name: n}`` or nested one level ``{group: {name: n}}``,
nested maps are summed over the groups)::

    {"ts_ms": int, "kind": "loops",
     "hf_bands": {"<1": n, "1-1.05": n, ..., ">=1.5": n},    # loop positions per health band
     "ladder": {"5": usd, "10": usd, ...}}                     # USD liquidatable at a price drop of N %
    {"ts_ms": int, "kind": "accounts",
     "status_counts": {"normal": n, "margin_call": n, "reduce_only": n, "liquidation": n}}
    {"ts_ms": int, "kind": "cascade", "stage": int, "active": [int, ...]}   # stage is drawn

``hf_bands``/``status_counts`` are kept as last value per bucket (a band seen before and
missing from a later snapshot counts 0 there); of the ladders, the first, the last and the
one with the largest total are kept. ``set_calibration(rows)`` stores the calibration
table of a synthetic run (:class:`replay.calibration.CalibrationRow`).

Bounded memory: values live in compact ``array`` columns per series, one point per bucket
(``bucket_ms``, 10 s by default). When the replay's event-time span exceeds
``max_buckets`` buckets, the bucket width doubles and every series is re-bucketed, so a
series never holds more than ``max_buckets`` points whatever the replay length; at most
``max_series`` series are created (further ones are counted in ``series_dropped``), at
most ``max_alerts`` alerts kept (``alerts_dropped``; the counts by kind stay exact) and at
most ``chunk_events`` (+ one batch) events wait in the pending chunk. Reading the recorder
(``series``, ``write_report``) flushes the chunk first.
"""

from __future__ import annotations

import html
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import orjson
import plotly.graph_objects as go
import plotly.io as pio
from numpy.typing import NDArray
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots

from monitor.alerts import SEVERITIES
from monitor.config import EngineConfig
from monitor.ingest.batch import Batch
from monitor.models.margin import STATUSES
from monitor.protocol import Alert, RiskSnapshot
from replay.calibration import CalibrationRow
from replay.report.market import MarketRecorder
from replay.report.series import Key, SeriesStore

__all__ = ["IDLE_CHUNK_EVENTS", "NO_DATA", "ReportRecorder", "write_report"]

#: The note a chart without data shows instead of an empty axis.
NO_DATA = "no data in this replay"
#: Events a pending chunk holds before :meth:`ReportRecorder.idle` processes it (a chunk's
#: vectorised processing costs about a millisecond whatever its size: not for a handful).
IDLE_CHUNK_EVENTS = 2_048

_HF_ORDER = ("<1", "1-1.05", "1.05-1.1", "1.1-1.25", "1.25-1.5", ">=1.5")
_HF_COLORS = ("#b2182b", "#ef8a62", "#f4c28f", "#bcd7ea", "#67a9cf", "#2166ac")
_STATUS_COLORS = ("#4daf4a", "#ffd92f", "#ff7f00", "#e41a1c")
_SEV_COLORS = {"info": "#7f8c8d", "warning": "#f39c12", "high": "#e74c3c", "critical": "#7b0000"}
_SEV_SYMBOLS = {"info": "circle", "warning": "diamond", "high": "triangle-up", "critical": "x"}
_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
            "#17becf", "#bcbd22", "#7f7f7f")
_BAND_FILLS = ("rgba(46,204,113,0.16)", "rgba(241,196,15,0.16)", "rgba(230,126,34,0.14)",
               "rgba(231,76,60,0.10)", "rgba(123,0,0,0.08)")
#: Summary keys shown first, in this order (the rest follow sorted).
_SUMMARY_ORDER = ("mode", "capture", "first_event_utc", "last_event_utc", "event_span_s", "frames", "events",
                  "batches", "alerts", "deadletters")
#: Summary keys measured on the wall clock: left out so the page is a function of the events.
_WALL_CLOCK_KEYS = frozenset({"wall_s", "events_per_s", "generation_s", "phase_s"})
#: Summary keys with a section of their own (not repeated among the cards).
_SECTION_KEYS = frozenset({"calibration"})
_DEPTH_VISIBLE = 8  # books drawn by default (the rest are one legend click away)



@dataclass(frozen=True)
class _AlertPoint:
    ts_ms: int
    kind: str
    severity: str
    subject: str
    message: str


def _flat_counts(value: Any) -> dict[str, float] | None:
    """{name: n} or {group: {name: n}} (summed over groups); None if nothing numeric."""
    if not isinstance(value, Mapping):
        return None
    out: dict[str, float] = {}
    for name, n in value.items():
        if isinstance(n, Mapping):
            for sub, m in n.items():
                if isinstance(m, int | float) and not isinstance(m, bool):
                    out[str(sub)] = out.get(str(sub), 0.0) + float(m)
        elif isinstance(n, int | float) and not isinstance(n, bool):
            out[str(name)] = out.get(str(name), 0.0) + float(n)
    return out or None


def _ladder(value: Any) -> tuple[tuple[float, float], ...] | None:
    """{"5": usd, ...} → ((5.0, usd), ...) ascending by drop; None if unrecognised."""
    counts = _flat_counts(value)
    if counts is None:
        return None
    steps: list[tuple[float, float]] = []
    for k, usd in counts.items():
        try:
            steps.append((float(k.rstrip("%")), usd))
        except ValueError:
            continue
    return tuple(sorted(steps)) or None


class ReportRecorder:
    """Downsampled series of a replay for :func:`write_report` (see the module docstring).

    A facade: the series live in a :class:`replay.report.series.SeriesStore`, what market
    batches give is derived by a :class:`replay.report.market.MarketRecorder`; alerts,
    risk snapshots and the calibration table are kept here.
    """

    def __init__(
        self,
        config: EngineConfig | None = None,
        *,
        bucket_ms: int = 10_000,
        max_buckets: int = 2_880,
        max_series: int = 1_000,
        max_alerts: int = 100_000,
        chunk_events: int = 16_384,
    ) -> None:
        if bucket_ms <= 0 or max_buckets < 2 or max_series < 1 or max_alerts < 0 or chunk_events < 1:
            raise ValueError("need bucket_ms > 0, max_buckets >= 2, max_series >= 1, max_alerts >= 0, "
                             "chunk_events >= 1")
        cfg = config if config is not None else EngineConfig()
        self.store = SeriesStore(bucket_ms, max_buckets, max_series)
        self.market = MarketRecorder(cfg, self.store, chunk_events)
        self.max_alerts = max_alerts
        self.peg_assets: tuple[str, ...] = tuple(cfg.peg.assets)
        self.peg_usd = cfg.peg.peg_usd
        self.peg_bands: tuple[tuple[str, float], ...] = tuple(
            (b.severity, b.threshold_bps) for b in cfg.peg.bands
        )
        self.depth_band_bps = cfg.liquidity.withdrawal_band_bps
        # alerts
        self.alerts: list[_AlertPoint] = []
        self.alerts_dropped = 0
        self.alert_counts: Counter[tuple[str, str]] = Counter()
        self.stage_changes: list[tuple[int, int]] = []
        # snapshots
        self.snapshots = 0
        self.snapshots_ignored = 0
        self._hf_seen: set[str] = set()
        self._status_seen: set[str] = set()
        self.ladder_first: tuple[int, tuple[tuple[float, float], ...]] | None = None
        self.ladder_last: tuple[int, tuple[tuple[float, float], ...]] | None = None
        self.ladder_peak: tuple[int, tuple[tuple[float, float], ...]] | None = None
        self.calibration: list[CalibrationRow] | None = None

    # -- the store's and the market's figures ----------------------------------------
    @property
    def bucket_ms(self) -> int:
        return self.store.bucket_ms

    @property
    def sum_bucket_ms(self) -> int:
        return self.store.sum_bucket_ms

    @property
    def first_ts_ms(self) -> int | None:
        return self.store.first_ts_ms

    @property
    def last_ts_ms(self) -> int | None:
        return self.store.last_ts_ms

    @property
    def series_dropped(self) -> int:
        return self.store.series_dropped

    @property
    def batches(self) -> int:
        return self.market.batches

    @property
    def events(self) -> int:
        return self.market.events

    # -- feeding ---------------------------------------------------------------------
    def on_batch(self, batch: Batch) -> None:
        """Queue one routed market batch; every ``chunk_events`` events are processed at once."""
        if self.market.queue(batch):
            self.flush()

    def idle(self) -> bool:
        """Process the pending chunk early when it holds at least :data:`IDLE_CHUNK_EVENTS`
        events (a replay calls this while it waits for its input; the series do not depend
        on where chunks are cut). True when it did."""
        if self.market.pending_events() < IDLE_CHUNK_EVENTS:
            return False
        self.flush()
        return True

    def flush(self) -> None:
        """Process the pending chunk (called automatically; reading the recorder flushes)."""
        chunk = self.market.take_chunk()
        if chunk is None:
            return
        self._touch(int(chunk.ts.min()), int(chunk.ts.max()))
        self.market.process(chunk)

    def _touch(self, tmin: int, tmax: int) -> None:
        if self.store.touch(tmin, tmax):
            self.market.align(self.store.bucket_ms)

    def on_alert(self, alert: Alert) -> None:
        """Record one alert; ``cascade_stage`` alerts also give the stage over time."""
        self._touch(alert.ts_ms, alert.ts_ms)
        self.alert_counts[(alert.kind, alert.severity)] += 1
        if len(self.alerts) < self.max_alerts:
            subject = "/".join(x for x in (alert.asset, alert.venue) if x) or "-"
            self.alerts.append(_AlertPoint(alert.ts_ms, alert.kind, alert.severity, subject, alert.message))
        else:
            self.alerts_dropped += 1
        if alert.kind == "cascade_stage":
            stage = alert.stage
            if stage is None:
                raw = alert.evidence.get("highest_stage")
                stage = raw if isinstance(raw, int) else None
            if stage is not None and len(self.stage_changes) < self.max_alerts:
                self.stage_changes.append((alert.ts_ms, stage))

    def on_snapshot(self, snapshot: Mapping[str, Any]) -> None:
        """Record a risk snapshot of a recognised kind (loops, accounts, cascade)."""
        ts = snapshot.get("ts_ms")
        kind = snapshot.get("kind")
        if not isinstance(ts, int) or isinstance(ts, bool):
            self.snapshots_ignored += 1
            return
        used = False
        if kind == "loops":
            used = self._loops(ts, _flat_counts(snapshot.get("hf_bands")), _ladder(snapshot.get("ladder")))
        elif kind == "accounts":
            used = self._statuses(ts, _flat_counts(snapshot.get("status_counts")))
        elif kind == "cascade":
            stage = snapshot.get("stage")
            if isinstance(stage, int) and not isinstance(stage, bool):
                self._touch(ts, ts)
                self.store.put(("stage",), ts, float(stage))
                used = True
        if used:
            self.snapshots += 1
        else:
            self.snapshots_ignored += 1

    def on_risk_snapshot(self, snapshot: RiskSnapshot) -> None:
        """Record one snapshot of the global risk stage (both replay paths forward them)."""
        ts = snapshot.ts_ms
        self._touch(ts, ts)
        ladder = _ladder(snapshot.ladder_usd)
        self._loops(ts, {k: float(v) for k, v in snapshot.hf_bands.items()} or None, ladder)
        self._statuses(ts, {k: float(v) for k, v in snapshot.accounts_by_status.items()} or None)
        for asset, usd in snapshot.forced_sell_usd_by_asset.items():
            self.store.put(("forced", asset), ts, usd)
        for shock, usd in snapshot.spiral_usd_by_shock.items():
            self.store.put(("spiral", shock), ts, usd)
        self.snapshots += 1

    def _loops(self, ts: int, hf: dict[str, float] | None, ladder: tuple[tuple[float, float], ...] | None) -> bool:
        if hf is not None or ladder is not None:
            self._touch(ts, ts)
        if hf is not None:
            self._counts("hf", hf, self._hf_seen, ts)
        if ladder is not None:
            entry = (ts, ladder)
            if self.ladder_first is None:
                self.ladder_first = entry
            self.ladder_last = entry
            total = sum(v for _, v in ladder)
            if self.ladder_peak is None or total > sum(v for _, v in self.ladder_peak[1]):
                self.ladder_peak = entry
        return hf is not None or ladder is not None

    def _statuses(self, ts: int, counts: dict[str, float] | None) -> bool:
        if counts is None:
            return False
        self._touch(ts, ts)
        self._counts("accounts", counts, self._status_seen, ts)
        return True

    def set_calibration(self, rows: Iterable[CalibrationRow]) -> None:
        """The calibration table of a synthetic run (shown when set)."""
        self.calibration = list(rows)

    # -- reading ---------------------------------------------------------------------
    def series_keys(self) -> list[Key]:
        """Keys of the last-value and sum series, sorted."""
        self.flush()
        return self.store.keys()

    def series(self, key: Key) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
        """(bucket start ms, value) of one series; the alt index includes its open bucket."""
        self.flush()
        s = self.store.find(key)
        t, v = s.arrays() if s is not None else (np.empty(0, np.int64), np.empty(0, np.float64))
        open_alt = self.market.open_alt_point() if key == ("alt_index",) else None
        if open_alt is not None:
            alt_bucket, alt_open = open_alt
            if not t.size or t[-1] < alt_bucket:
                t = np.r_[t, alt_bucket].astype(np.int64)
                v = np.r_[v, alt_open]
            elif t[-1] == alt_bucket:
                v[-1] = alt_open
        return t, v

    def points(self) -> int:
        """Stored points over all series (the recorder's memory, besides alerts)."""
        return self.store.points()

    def max_series_points(self) -> int:
        return self.store.max_series_points()

    def pending_events(self) -> int:
        """Events queued and not yet processed (at most ``chunk_events`` + one batch)."""
        return self.market.pending_events()

    def _counts(self, prefix: str, counts: dict[str, float], seen: set[str], ts: int) -> None:
        seen.update(counts)
        for name in sorted(seen):
            self.store.put((prefix, name), ts, counts.get(name, 0.0))


# ------------------------------------------------------------------------------ writing


def _iso(ms: Sequence[int] | NDArray[np.int64], unit: Literal["s", "ms"] = "s") -> list[str]:
    """UTC ISO-8601 text of epoch milliseconds (what plotly parses as a date axis)."""
    arr: NDArray[np.datetime64] = np.asarray(ms, dtype=np.int64).astype("datetime64[ms]")
    out: list[str] = np.datetime_as_string(arr, unit=unit).tolist()
    return out


def _color(i: int) -> str:
    return _PALETTE[i % len(_PALETTE)]


def _nan_to_none(values: NDArray[np.float64]) -> list[float | None]:
    return [v if np.isfinite(v) else None for v in values.tolist()]


@dataclass
class _Section:
    anchor: str
    title: str
    caption: str
    figure: Any | None  # a plotly Figure, or None = no data
    no_data_hint: str = ""
    html_body: str = ""


def _base_layout(fig: Any, span: tuple[str, str] | None, height: int = 420, **kw: Any) -> None:
    fig.update_layout(
        template="plotly_white",
        height=height,
        margin={"l": 70, "r": 40, "t": 30, "b": 45},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.01, "xanchor": "left", "x": 0},
        hovermode="closest",
        font={"family": "Helvetica, Arial, sans-serif", "size": 12},
        **kw,
    )
    if span is not None:
        fig.update_xaxes(range=list(span), title_text="UTC")


def _peg_section(rec: ReportRecorder, asset: str, span: tuple[str, str] | None) -> _Section:
    keys = [k for k in rec.series_keys() if k[:2] == ("price", asset)]
    bands = rec.peg_bands
    legend = ", ".join(f"±{bps:g} {sev}" for sev, bps in bands)
    caption = (f"USD mid of {asset} per venue (last value per {rec.bucket_ms // 1000} s). Shaded: peg "
               f"bands in bps from config ({legend}).")
    title = f"{asset} price by venue"
    anchor = f"peg-{asset.lower()}"
    if not keys:
        return _Section(anchor, title, caption, None, f"no {asset} quotes, prices or books were replayed")
    fig = go.Figure()
    lo, hi = np.inf, -np.inf
    for i, key in enumerate(keys):
        t, v = rec.series(key)
        lo, hi = min(lo, float(np.nanmin(v))), max(hi, float(np.nanmax(v)))
        fig.add_trace(go.Scatter(x=_iso(t), y=v, mode="lines", name=key[2], line={"color": _color(i), "width": 1.6},
                                 hovertemplate="%{x}<br>%{y:.4f} USD<extra>" + html.escape(key[2]) + "</extra>"))
    peg = rec.peg_usd
    first = bands[0][1] / 10_000 * peg
    lo, hi = min(lo, peg - 2 * first), max(hi, peg + 2 * first)
    pad = (hi - lo) * 0.05
    lo, hi = lo - pad, hi + pad
    # zone k: |deviation| in [edge k, edge k+1): normal, then one zone per band (the last unbounded)
    edges = [0.0, *(b / 10_000 * peg for _, b in bands), max(peg - lo, hi - peg) + 1.0]
    for k in range(len(edges) - 1):
        inner, outer = edges[k], edges[k + 1]
        zones = [(peg - outer, peg + outer)] if k == 0 else [(peg - outer, peg - inner), (peg + inner, peg + outer)]
        for z0, z1 in zones:
            y0, y1 = max(z0, lo), min(z1, hi)
            if y1 > y0:
                fig.add_hrect(y0=y0, y1=y1, fillcolor=_BAND_FILLS[min(k, len(_BAND_FILLS) - 1)],
                              line_width=0, layer="below")
    labelled: list[float] = []
    for sev, bps in bands:
        for sign in (-1, 1):
            y = peg * (1 + sign * bps / 10_000)
            if lo < y < hi:
                fig.add_hline(y=y, line={"color": _SEV_COLORS[sev], "width": 0.6, "dash": "dot"})
                if sign < 0 and all(abs(y - o) > 0.04 * (hi - lo) for o in labelled):
                    labelled.append(y)
                    fig.add_annotation(x=1, xref="paper", xanchor="right", y=y, yanchor="top", showarrow=False,
                                       text=f"−{bps:g} bps {sev}", font={"size": 10, "color": _SEV_COLORS[sev]})
    _base_layout(fig, span, yaxis={"title": {"text": "USD"}, "range": [lo, hi], "tickformat": ".3f"})
    return _Section(anchor, title, caption, fig)


def _macro_section(rec: ReportRecorder, span: tuple[str, str] | None) -> _Section:
    keys = [k for k in rec.series_keys() if k[:2] == ("price", "BTC")]
    t_alt, v_alt = rec.series(("alt_index",))
    caption = ("BTC USD mid per venue (left axis) and the equal-weight alt index, 100 at the first bucket "
               "(right axis): every asset but BTC, ETH, stables, peg assets, wBETH and BNSOL.")
    if not keys and not t_alt.size:
        return _Section("macro", "BTC and the alt index", caption, None, "no BTC and no alt prices were replayed")
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    for i, key in enumerate(keys):
        t, v = rec.series(key)
        fig.add_trace(go.Scatter(x=_iso(t), y=v, mode="lines", name=f"BTC {key[2]}",
                                 line={"color": _color(i), "width": 1.6},
                                 hovertemplate="%{x}<br>%{y:,.0f} USD<extra>BTC " + html.escape(key[2]) + "</extra>"),
                      secondary_y=False)
    if t_alt.size:
        v_alt = v_alt / v_alt[0] * 100.0 if v_alt[0] > 0 else v_alt
        fig.add_trace(go.Scatter(x=_iso(t_alt), y=v_alt, mode="lines", name="alt index (right)",
                                 line={"color": "#222222", "width": 2, "dash": "dash"},
                                 hovertemplate="%{x}<br>%{y:.1f}<extra>alt index</extra>"),
                      secondary_y=True)
    else:
        fig.add_annotation(text=f"alt index: {NO_DATA}", xref="paper", yref="paper", x=0.99, y=0.02,
                           showarrow=False, font={"color": "#888"})
    if not keys:
        fig.add_annotation(text=f"BTC: {NO_DATA}", xref="paper", yref="paper", x=0.01, y=0.02,
                           showarrow=False, font={"color": "#888"})
    _base_layout(fig, span)
    fig.update_yaxes(title_text="BTC, USD", tickformat=",.0f", secondary_y=False)
    fig.update_yaxes(title_text="alt index", secondary_y=True, showgrid=False)
    return _Section("macro", "BTC and the alt index", caption, fig)


def _stacked_counts(rec: ReportRecorder, prefix: str, order: Sequence[str], colors: Sequence[str]) -> Any | None:
    keys = [k for k in rec.series_keys() if k[0] == prefix]
    if not keys:
        return None
    names = [n for n in order if (prefix, n) in keys] + sorted(k[1] for k in keys if k[1] not in order)
    times = sorted({int(x) for k in keys for x in rec.series(k)[0].tolist()})
    fig = go.Figure()
    for i, name in enumerate(names):
        t, v = rec.series((prefix, name))
        lookup = dict(zip(t.tolist(), v.tolist(), strict=True))
        y = [lookup.get(x, 0.0) for x in times]
        color = colors[order.index(name)] if name in order else _color(i)
        fig.add_trace(go.Scatter(x=_iso(times), y=y, mode="lines", name=name, stackgroup="one",
                                 line={"width": 0.5, "color": color}, fillcolor=color,
                                 hovertemplate="%{x}<br>%{y:,.0f}<extra>" + html.escape(name) + "</extra>"))
    return fig


def _loops_sections(rec: ReportRecorder, span: tuple[str, str] | None) -> list[_Section]:
    hint = "no loop snapshots: the risk engine reports loop health when positions are loaded (--positions)"
    fig = _stacked_counts(rec, "hf", _HF_ORDER, _HF_COLORS)
    if fig is not None:
        _base_layout(fig, span, yaxis={"title": {"text": "loop positions"}})
    out = [_Section("loops", "Loop health distribution", "Loop positions per health-factor band over time "
                    "(risk snapshots; last per bucket).", fig, hint)]
    ladders = [(label, e) for label, e in (("first", rec.ladder_first), ("peak", rec.ladder_peak),
                                           ("last", rec.ladder_last)) if e is not None]
    lfig = None
    if ladders:
        lfig = go.Figure()
        colors = {"first": "#95a5a6", "peak": "#c0392b", "last": "#2980b9"}
        for label, (ts, steps) in ladders:
            when = _iso([ts])[0].replace("T", " ")
            lfig.add_trace(go.Bar(x=[f"-{d:g}%" for d, _ in steps], y=[v for _, v in steps],
                                  name=f"{label} ({when})", marker_color=colors[label],
                                  hovertemplate="price drop %{x}<br>%{y:$,.0f}<extra>" + label + "</extra>"))
        _base_layout(lfig, None, barmode="group", xaxis={"title": {"text": "price drop"}},
                     yaxis={"title": {"text": "USD liquidatable"}, "tickformat": "$,.3s"})
    out.append(_Section("ladder", "Liquidation ladder", "USD of loop collateral liquidatable at each price drop: "
                        "first snapshot, the snapshot with the largest total, last snapshot.", lfig, hint))
    return out


def _accounts_section(rec: ReportRecorder, span: tuple[str, str] | None) -> _Section:
    fig = _stacked_counts(rec, "accounts", STATUSES, _STATUS_COLORS)
    if fig is not None:
        _base_layout(fig, span, yaxis={"title": {"text": "accounts"}})
    return _Section("accounts", "Unified accounts by status", "Unified (portfolio-margin) accounts per status "
                    "over time (risk snapshots; last per bucket).", fig,
                    "no account snapshots: the risk engine reports statuses when accounts are loaded (--accounts)")


def _usd_lines(rec: ReportRecorder, prefix: str, span: tuple[str, str] | None, stacked: bool) -> Any | None:
    """One line (or stacked area) per series of ``prefix``, largest final value first."""
    keys = [k for k in rec.series_keys() if k[0] == prefix]
    if not keys:
        return None
    data = []
    for key in keys:
        t, v = rec.series(key)
        data.append((-float(v[-1]) if v.size else 0.0, key[1], t, v))
    data.sort(key=lambda d: (d[0], d[1]))
    fig = go.Figure()
    for i, (_, name, t, v) in enumerate(data):
        fig.add_trace(go.Scatter(x=_iso(t), y=v, mode="lines", name=name, line={"color": _color(i), "width": 1.6},
                                 stackgroup="one" if stacked else None,
                                 hovertemplate="%{x}<br>%{y:$,.3s}<extra>" + html.escape(name) + "</extra>"))
    _base_layout(fig, span, yaxis={"title": {"text": "USD"}, "tickformat": "$,.2s"})
    return fig


def _forced_section(rec: ReportRecorder, span: tuple[str, str] | None) -> _Section:
    fig = _usd_lines(rec, "forced", span, stacked=True)
    return _Section("forced", "Forced sells by asset", "USD the liquidation engines sell per asset, cumulative "
                    "since the start (forced-sell lists of the unified accounts that reached liquidation; risk "
                    "snapshots).", fig,
                    "no forced sells: no unified account reached liquidation (or no accounts were loaded)")


def _spiral_section(rec: ReportRecorder, span: tuple[str, str] | None) -> _Section:
    fig = _usd_lines(rec, "spiral", span, stacked=False)
    return _Section("spiral", "Spiral estimate over time", "Notional the spiral would liquidate after each "
                    "standard shock, run on the live state on its event-time timer (risk snapshots).", fig,
                    "no spiral estimate: it runs when positions or accounts are loaded and the shocked prices "
                    "are known")


def _depth_section(rec: ReportRecorder, span: tuple[str, str] | None) -> _Section:
    keys = [k for k in rec.series_keys() if k[0] == "depth"]
    caption = (f"Bid depth within {rec.depth_band_bps} bps of mid per book, USD, log scale (book summaries; "
               f"gaps = invalid book). The {_DEPTH_VISIBLE} deepest books are drawn; click the legend for the rest.")
    if not keys:
        return _Section("depth", "Bid depth of the monitored books", caption, None,
                        "no order-book summaries were replayed")
    data = []
    for key in keys:
        t, v = rec.series(key)
        peak = float(np.nanmax(v)) if np.isfinite(v).any() else 0.0
        data.append((-peak, key, t, v))
    data.sort(key=lambda d: (d[0], d[1]))
    fig = go.Figure()
    for i, (_, key, t, v) in enumerate(data):
        venue, _, symbol = key[2].partition("|")
        name = f"{key[1]} {venue} {symbol}"
        fig.add_trace(go.Scatter(x=_iso(t), y=_nan_to_none(v), mode="lines", name=name,
                                 line={"color": _color(i), "width": 1.5}, connectgaps=False,
                                 visible=True if i < _DEPTH_VISIBLE else "legendonly",
                                 hovertemplate="%{x}<br>%{y:$,.3s}<extra>" + html.escape(name) + "</extra>"))
    _base_layout(fig, span, yaxis={"title": {"text": "USD"}, "type": "log", "tickformat": "$,.2s"})
    return _Section("depth", "Bid depth of the monitored books", caption, fig)


def _liquidations_section(rec: ReportRecorder, span: tuple[str, str] | None) -> _Section:
    keys = [k for k in rec.series_keys() if k[0] == "liq"]
    minutes = rec.sum_bucket_ms / 60_000
    caption = (f"Liquidation notional per minute by venue, USD (venue prints, lower bounds; "
               f"{rec.sum_bucket_ms // 1000} s buckets).")
    if not keys:
        return _Section("liquidations", "Liquidations per minute", caption, None, "no liquidation prints were replayed")
    fig = go.Figure()
    for i, key in enumerate(keys):
        t, v = rec.series(key)
        fig.add_trace(go.Bar(x=_iso(t), y=v / minutes, name=key[1], marker_color=_color(i),
                             hovertemplate="%{x}<br>%{y:$,.3s}/min<extra>" + html.escape(key[1]) + "</extra>"))
    _base_layout(fig, span, barmode="stack", bargap=0,
                 yaxis={"title": {"text": "USD per minute"}, "tickformat": "$,.2s"})
    return _Section("liquidations", "Liquidations per minute", caption, fig)


def _wrap(text: str, width: int = 90) -> str:
    words, lines, line = text.split(), [], ""
    for w in words:
        if line and len(line) + 1 + len(w) > width:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}" if line else w
    if line:
        lines.append(line)
    return "<br>".join(html.escape(x) for x in lines)


def _cascade_section(rec: ReportRecorder, span: tuple[str, str] | None) -> _Section:
    caption = ("Highest active cascade stage (step line, from cascade_stage alerts and risk snapshots) with every "
               "alert as a marker at the stage of its time; hover for kind, severity and message.")
    changes = sorted(rec.stage_changes)
    t_snap, v_snap = rec.series(("stage",))
    if not rec.alerts and not changes and not t_snap.size:
        return _Section("cascade", "Cascade stage and alerts", caption, None, "no alerts and no cascade snapshots")
    points = sorted([*changes, *zip(t_snap.tolist(), [int(x) for x in v_snap.tolist()], strict=True)])
    start = rec.first_ts_ms if rec.first_ts_ms is not None else (points[0][0] if points else 0)
    end = rec.last_ts_ms if rec.last_ts_ms is not None else start
    steps: list[tuple[int, int]] = [(start, 0)]
    for ts, stage in points:
        steps.append((ts, stage))
    steps.append((max(end, steps[-1][0]), steps[-1][1]))
    step_t = [s[0] for s in steps]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=_iso(step_t, "ms"), y=[s[1] for s in steps], mode="lines", name="cascade stage",
                             line={"shape": "hv", "color": "#34495e", "width": 2},
                             hovertemplate="%{x}<br>stage %{y}<extra></extra>"))

    def stage_at(ts: int) -> int:
        i = bisect_right(step_t, ts) - 1
        return steps[i][1] if i >= 0 else 0

    groups: dict[tuple[str, int], list[_AlertPoint]] = {}
    for a in rec.alerts:
        groups.setdefault((a.severity, a.ts_ms), []).append(a)
    for sev in SEVERITIES:
        items = sorted((ts, g) for (s, ts), g in groups.items() if s == sev)
        if not items:
            continue
        texts = []
        for ts, group in items:
            when = _iso([ts], "ms")[0].replace("T", " ")
            body = "<br>".join(
                f"<b>{html.escape(a.kind)}</b> · {html.escape(a.severity)} · {html.escape(a.subject)}"
                f"<br>{_wrap(a.message)}"
                for a in group[:6]
            )
            more = f"<br>… and {len(group) - 6} more" if len(group) > 6 else ""
            texts.append(f"{when} UTC<br>{body}{more}")
        fig.add_trace(go.Scatter(
            x=_iso([ts for ts, _ in items], "ms"), y=[stage_at(ts) for ts, _ in items], mode="markers",
            name=f"{sev} alerts", hovertext=texts, hoverinfo="text",
            marker={"color": _SEV_COLORS[sev], "symbol": _SEV_SYMBOLS[sev],
                    "size": [min(8 + 2 * (len(g) - 1), 18) for _, g in items],
                    "line": {"width": 1, "color": "white"}},
        ))
    top = max([s for _, s in steps] + [1])
    _base_layout(fig, span, yaxis={"title": {"text": "stage"}, "range": [-0.5, max(top, 9) + 0.5], "dtick": 1},
                 hoverlabel={"align": "left"})
    return _Section("cascade", "Cascade stage and alerts", caption, fig)


def _calibration_section(rec: ReportRecorder) -> _Section | None:
    rows = rec.calibration
    if rows is None:
        return None
    if not rows:
        return _Section("calibration", "Calibration", "", None, "the calibration table is empty")
    body = []
    for r in rows:
        cls = "pass" if r.passed else "fail"
        body.append(
            f"<tr><td>{html.escape(r.figure)}</td><td>{html.escape(r.target)}</td><td>{html.escape(r.tolerance)}</td>"
            f"<td>{html.escape(r.value)}</td><td class=\"{cls}\">{'PASS' if r.passed else 'FAIL'}</td></tr>"
        )
    passed = sum(r.passed for r in rows)
    table = ("<table class=\"calib\"><thead><tr><th>figure</th><th>public</th><th>tolerance</th><th>this run</th>"
             "<th>ok</th></tr></thead><tbody>" + "".join(body) + "</tbody></table>"
             f"<p class=\"caption\">{passed}/{len(rows)} within tolerance</p>")
    return _Section("calibration", "Calibration against the public figures",
                    "Each public figure of 10 Oct 2025, this run's figure and whether it is within tolerance.",
                    None, html_body=table)


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return html.escape(str(value).lower() if isinstance(value, bool) else "—")
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.3f}".rstrip("0").rstrip(".")
    return html.escape(str(value))


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _summary_html(summary: Mapping[str, Any], config_hash: str, rec: ReportRecorder) -> str:
    """Cards of the scalar figures, small tables of flat maps; lists and nested data are left out."""
    scalars: list[str] = [f"<div><dt>config hash</dt><dd><code>{html.escape(config_hash)}</code></dd></div>"]
    tables: list[str] = []
    for key in sorted(summary, key=lambda k: (_SUMMARY_ORDER.index(k) if k in _SUMMARY_ORDER else 99, k)):
        if key in _WALL_CLOCK_KEYS or key in _SECTION_KEYS or key == "config_hash":
            continue
        value = summary[key]
        label = html.escape(key.replace("_", " "))
        if isinstance(value, Mapping):
            items = [(k, v) for k, v in value.items() if _is_scalar(v) and k not in _WALL_CLOCK_KEYS]
            if not items:
                continue
            rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{_fmt(v)}</td></tr>" for k, v in items)
            tables.append(f"<table class=\"kv\"><caption>{label}</caption>{rows}</table>")
        elif _is_scalar(value):
            scalars.append(f"<div><dt>{label}</dt><dd>{_fmt(value)}</dd></div>")
    sev = Counter[str]()
    for (_, s), n in rec.alert_counts.items():
        sev[s] += n
    chips = "".join(f"<span class=\"chip\" style=\"background:{_SEV_COLORS[s]}\">{s} {sev[s]:,}</span>"
                    for s in SEVERITIES if sev[s])
    return (f"<dl class=\"summary\">{''.join(scalars)}</dl>"
            + (f"<p class=\"chips\">alerts: {chips}</p>" if chips else "")
            + (f"<div class=\"tables\">{''.join(tables)}</div>" if tables else ""))


_CSS = """
body{font-family:Helvetica,Arial,sans-serif;margin:0;color:#222;background:#f6f7f9}
header{background:#1d2733;color:#fff;padding:18px 28px}
header h1{margin:0 0 6px 0;font-size:22px}
header .sub{color:#b8c4d0;font-size:13px}
main{padding:10px 28px 40px 28px;max-width:1600px}
section{background:#fff;border:1px solid #e1e4e8;border-radius:6px;margin:16px 0;padding:12px 16px}
section h2{font-size:17px;margin:4px 0 2px 0}
.caption{color:#555;font-size:12.5px;margin:2px 0 8px 0}
.no-data{border:1px dashed #bbb;border-radius:4px;color:#666;padding:28px;text-align:center;background:#fafafa}
.no-data b{display:block;font-size:15px;color:#444;margin-bottom:4px}
dl.summary{display:grid;grid-template-columns:repeat(auto-fill,minmax(190px,1fr));gap:6px 14px;margin:8px 0}
dl.summary div{background:#fff;border:1px solid #e1e4e8;border-radius:4px;padding:6px 9px}
dl.summary dt{font-size:11px;color:#666;text-transform:uppercase;letter-spacing:.03em}
dl.summary dd{margin:2px 0 0 0;font-size:14px;font-weight:600;word-break:break-all}
.tables{display:flex;flex-wrap:wrap;gap:14px;align-items:flex-start}
table.kv{border-collapse:collapse;font-size:12px;background:#fff}
table.kv caption{text-align:left;font-weight:600;font-size:12px;color:#444;padding:2px 0}
table.kv td{border:1px solid #e1e4e8;padding:2px 8px}
table.kv td:last-child{text-align:right}
table.calib{border-collapse:collapse;font-size:13px;width:100%}
table.calib th,table.calib td{border:1px solid #e1e4e8;padding:4px 8px;text-align:left}
table.calib th{background:#f0f2f5}
td.pass{color:#1e8449;font-weight:700} td.fail{color:#c0392b;font-weight:700}
.chips .chip{color:#fff;border-radius:10px;padding:2px 9px;margin-right:6px;font-size:12px}
nav{font-size:13px;margin:10px 0} nav a{margin-right:12px;color:#2471a3;text-decoration:none}
footer{color:#777;font-size:12px;padding:0 28px 28px 28px}
"""

#: Nothing may be fetched: scripts, styles, images and fonts are all inline.
_CSP = ("default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval'; style-src 'unsafe-inline'; "
        "img-src data:; font-src data:")
_PLOT_CONFIG = {"displaylogo": False, "responsive": True, "modeBarButtonsToRemove": ["sendDataToCloud"]}


def _script_safe(json_text: str) -> str:
    """JSON text made safe inside a <script> element."""
    return json_text.replace("</", "<\\/").replace("<!--", "<\\!--")


def _script_json(obj: Any) -> str:
    """A value as JSON safe inside a <script> element."""
    return _script_safe(orjson.dumps(obj).decode())


def write_report(
    recorder: ReportRecorder, path: Path, *, title: str, config_hash: str, summary: Mapping[str, Any]
) -> None:
    """Write the report as one self-contained HTML file (plotly.js inlined, no network)."""
    rec = recorder
    rec.flush()  # the pending chunk moves the event-time span
    span = None
    if rec.first_ts_ms is not None and rec.last_ts_ms is not None:
        span = (_iso([rec.first_ts_ms])[0], _iso([max(rec.last_ts_ms, rec.first_ts_ms + 1000)])[0])
    sections: list[_Section] = [_peg_section(rec, a, span) for a in rec.peg_assets]
    sections.append(_macro_section(rec, span))
    sections.extend(_loops_sections(rec, span))
    sections.append(_accounts_section(rec, span))
    sections.append(_forced_section(rec, span))
    sections.append(_spiral_section(rec, span))
    sections.append(_depth_section(rec, span))
    sections.append(_liquidations_section(rec, span))
    sections.append(_cascade_section(rec, span))
    calib = _calibration_section(rec)
    if calib is not None:
        sections.append(calib)

    parts: list[str] = []
    scripts: list[str] = []
    for sec in sections:
        parts.append(f"<section id=\"{sec.anchor}\"><h2>{html.escape(sec.title)}</h2>")
        if sec.caption:
            parts.append(f"<p class=\"caption\">{html.escape(sec.caption)}</p>")
        if sec.html_body:
            parts.append(sec.html_body)
        elif sec.figure is None:
            hint = f"<span>{html.escape(sec.no_data_hint)}</span>" if sec.no_data_hint else ""
            parts.append(f"<div class=\"no-data\" data-chart=\"{sec.anchor}\"><b>{NO_DATA}</b>{hint}</div>")
        else:
            div_id = f"chart-{sec.anchor}"
            parts.append(f"<div id=\"{div_id}\" class=\"chart\"></div>")
            fig_json = pio.to_json(sec.figure, validate=True, pretty=False, remove_uids=True, engine="json")
            scripts.append(f"draw({_script_json(div_id)},{_script_safe(fig_json)});")
        parts.append("</section>")

    nav = "".join(f"<a href=\"#{s.anchor}\">{html.escape(s.title)}</a>" for s in sections)
    first = _iso([rec.first_ts_ms])[0].replace("T", " ") if rec.first_ts_ms is not None else "—"
    last = _iso([rec.last_ts_ms])[0].replace("T", " ") if rec.last_ts_ms is not None else "—"
    footer = (f"Event time {first} → {last} UTC; {rec.bucket_ms // 1000} s buckets; {rec.events:,} events in "
              f"{rec.batches:,} batches recorded; {rec.snapshots:,} risk snapshots"
              + (f"; {rec.series_dropped:,} series over the limit dropped" if rec.series_dropped else "")
              + (f"; {rec.alerts_dropped:,} alerts not drawn (limit)" if rec.alerts_dropped else "") + ".")
    doc = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{_CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>{_CSS}</style>
<script>{get_plotlyjs()}</script>
</head><body>
<header><h1>{html.escape(title)}</h1>
<div class="sub">liqmon replay report · config <code>{html.escape(config_hash)}</code> ·
event time {first} → {last} UTC</div></header>
<main>
{_summary_html(summary, config_hash, rec)}
<nav>{nav}</nav>
{"".join(parts)}
</main>
<footer>{html.escape(footer)}</footer>
<script>
var PLOT_CONFIG = {_script_json(_PLOT_CONFIG)};
function draw(id, fig) {{ Plotly.newPlot(id, fig.data, fig.layout, PLOT_CONFIG); }}
{chr(10).join(scripts)}
</script>
</body></html>
"""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(doc, encoding="utf-8")
