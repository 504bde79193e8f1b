"""Generate the liqmon Grafana dashboards (stdlib only).

    python deploy/grafana/build_dashboards.py          # rewrite deploy/grafana/dashboards/
    python deploy/grafana/build_dashboards.py --check  # exit 1 if the committed JSON differs

Every panel is declared once here so layout, datasource and units stay consistent; the
JSON in deploy/grafana/dashboards/ is generated and committed (Grafana provisions it).
Queries use only metric names from the liqmon catalogue or recording rules in
deploy/prometheus/rules.yml; tests/unit/test_deploy_static.py enforces that.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DATASOURCE: dict[str, str] = {"type": "prometheus", "uid": "liqmon-prometheus"}
OUT_DIR = Path(__file__).resolve().parent / "dashboards"
GRID_WIDTH = 24
SCHEMA_VERSION = 39

# Peg bands from RISK_MODEL.md section 5 (normal ±50, warning 100, high 300, critical 1000).
PEG_THRESHOLDS_BPS: list[tuple[float | None, str]] = [
    (None, "red"),
    (-1000, "orange"),
    (-300, "yellow"),
    (-100, "green"),
    (100, "yellow"),
    (300, "orange"),
    (1000, "red"),
]
PEG_LEVEL_MAPPINGS: list[tuple[int, str, str]] = [
    (0, "normal", "green"),
    (1, "info", "blue"),
    (2, "warning", "yellow"),
    (3, "high", "orange"),
    (4, "critical", "red"),
]
CASCADE_STAGES: list[tuple[int, str]] = [
    (0, "calm"),
    (1, "macro shock"),
    (2, "risk-off"),
    (3, "loop unwind"),
    (4, "peg asset depeg"),
    (5, "on-chain liquidations"),
    (6, "margin stress"),
    (7, "unified liquidations"),
    (8, "liquidity withdrawal"),
    (9, "alt crash"),
]


@dataclass(frozen=True)
class Target:
    """One PromQL query of a panel."""

    expr: str
    legend: str = ""
    instant: bool = False


@dataclass(frozen=True)
class Panel:
    """One panel; width/height in Grafana grid units."""

    title: str
    kind: str  # timeseries | stat | bargauge | table | state-timeline | barchart
    targets: tuple[Target, ...]
    unit: str = "short"
    width: int = 12
    height: int = 8
    description: str = ""
    stacked: bool = False
    thresholds: tuple[tuple[float | None, str], ...] = ((None, "green"),)
    threshold_lines: bool = False
    mappings: tuple[tuple[int, str, str], ...] = ()
    minimum: float | None = None
    maximum: float | None = None


@dataclass(frozen=True)
class Variable:
    """A query template variable: label values of one metric."""

    name: str
    label: str
    metric: str
    multi: bool = False
    default: str = ""


@dataclass(frozen=True)
class Dashboard:
    """A dashboard: uid (also the file name), title, variables and panels in rows."""

    uid: str
    title: str
    description: str
    panels: tuple[Panel, ...]
    variables: tuple[Variable, ...] = ()
    tags: tuple[str, ...] = field(default=("liqmon",))


def _thresholds(steps: tuple[tuple[float | None, str], ...]) -> dict[str, Any]:
    return {
        "mode": "absolute",
        "steps": [{"color": color, "value": value} for value, color in steps],
    }


def _mappings(mappings: tuple[tuple[int, str, str], ...]) -> list[dict[str, Any]]:
    if not mappings:
        return []
    options = {
        str(value): {"index": index, "text": text, "color": color}
        for index, (value, text, color) in enumerate(mappings)
    }
    return [{"type": "value", "options": options}]


def _target(target: Target, ref: str) -> dict[str, Any]:
    return {
        "datasource": DATASOURCE,
        "expr": target.expr,
        "instant": target.instant,
        "range": not target.instant,
        "legendFormat": target.legend or "__auto",
        "refId": ref,
    }


def _panel(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "unit": panel.unit,
        "thresholds": _thresholds(panel.thresholds),
        "mappings": _mappings(panel.mappings),
        "color": {
            "mode": "thresholds" if panel.kind in ("stat", "bargauge") else "palette-classic"
        },
    }
    if panel.minimum is not None:
        defaults["min"] = panel.minimum
    if panel.maximum is not None:
        defaults["max"] = panel.maximum
    options: dict[str, Any] = {}
    if panel.kind == "timeseries":
        defaults["custom"] = {
            "drawStyle": "line",
            "lineWidth": 1,
            "fillOpacity": 20 if panel.stacked else 0,
            "stacking": {"mode": "normal" if panel.stacked else "none", "group": "A"},
            "thresholdsStyle": {"mode": "line+area" if panel.threshold_lines else "off"},
            "spanNulls": False,
        }
        options = {
            "legend": {
                "displayMode": "table",
                "placement": "bottom",
                "calcs": ["lastNotNull", "max"],
            },
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
    elif panel.kind == "stat":
        options = {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "background",
            "graphMode": "area",
            "textMode": "auto",
        }
    elif panel.kind == "bargauge":
        options = {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "displayMode": "gradient",
            "orientation": "horizontal",
            "showUnfilled": True,
        }
    elif panel.kind == "state-timeline":
        options = {
            "showValue": "never",
            "mergeValues": True,
            "rowHeight": 0.8,
            "legend": {"displayMode": "list", "placement": "bottom"},
        }
    elif panel.kind == "table":
        options = {"showHeader": True, "sortBy": [{"displayName": "Value", "desc": True}]}
    elif panel.kind == "barchart":
        options = {
            "orientation": "vertical",
            "showValue": "auto",
            "legend": {"displayMode": "list", "placement": "bottom"},
        }
    result: dict[str, Any] = {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"x": x, "y": y, "w": panel.width, "h": panel.height},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": options,
        "targets": [_target(t, chr(ord("A") + i)) for i, t in enumerate(panel.targets)],
    }
    if panel.kind == "table":
        result["transformations"] = [
            {"id": "merge", "options": {}},
            {"id": "organize", "options": {"excludeByName": {"Time": True}}},
        ]
    return result


def _variable(variable: Variable) -> dict[str, Any]:
    query = f"label_values({variable.metric}, {variable.label})"
    current: dict[str, Any] = (
        {"selected": True, "text": variable.default, "value": variable.default}
        if variable.default
        else {}
    )
    return {
        "name": variable.name,
        "label": variable.label,
        "type": "query",
        "datasource": DATASOURCE,
        "query": {"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
        "definition": query,
        "refresh": 2,
        "sort": 1,
        "multi": variable.multi,
        "includeAll": variable.multi,
        "allValue": ".*" if variable.multi else None,
        "current": current,
        "options": [],
        "hide": 0,
    }


def render(dashboard: Dashboard) -> dict[str, Any]:
    """Lay panels out left to right, wrapping at the 24-column grid."""
    panels: list[dict[str, Any]] = []
    x = y = row_height = 0
    for panel_id, panel in enumerate(dashboard.panels, start=1):
        if x + panel.width > GRID_WIDTH:
            x, y, row_height = 0, y + row_height, 0
        panels.append(_panel(panel, panel_id, x, y))
        x += panel.width
        row_height = max(row_height, panel.height)
    return {
        "uid": dashboard.uid,
        "title": dashboard.title,
        "description": dashboard.description,
        "tags": list(dashboard.tags),
        "timezone": "utc",
        "editable": False,
        "graphTooltip": 1,
        "refresh": "10s",
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "annotations": {"list": []},
        "links": [
            {
                "type": "dashboards",
                "tags": ["liqmon"],
                "asDropdown": True,
                "title": "liqmon",
                "includeVars": False,
                "keepTime": True,
            }
        ],
        "templating": {"list": [_variable(v) for v in dashboard.variables]},
        "panels": panels,
    }


def _cascade() -> Dashboard:
    return Dashboard(
        uid="liqmon-cascade",
        title="liqmon / Cascade overview",
        description="Which stage of the liquidation cascade the market is in, and why.",
        panels=(*_cascade_stat_panels(), *_cascade_chart_panels()),
    )


def _cascade_stat_panels() -> tuple[Panel, ...]:
    """The headline figures: stage, worst depeg, accounts in liquidation, books withdrawn."""
    return (
        Panel(
            "Cascade stage",
            "stat",
            (Target("liqmon:cascade_stage:max", "stage", instant=True),),
            width=6,
            thresholds=((None, "green"), (3, "yellow"), (5, "orange"), (7, "red")),
            mappings=tuple((v, name, "") for v, name in CASCADE_STAGES),
            description="Highest stage reached (RISK_MODEL.md section 6).",
        ),
        Panel(
            "Worst venue deviation per peg asset",
            "stat",
            (Target("liqmon:peg_deviation_bps:max_abs_by_asset", "{{asset}}"),),
            unit="bps",
            width=6,
            thresholds=((None, "green"), (100, "yellow"), (300, "orange"), (1000, "red")),
        ),
        Panel(
            "Unified accounts in liquidation",
            "stat",
            (Target('sum(liqmon:unified_accounts:sum_by_venue_status{status="liquidation"})'),),
            width=6,
            thresholds=((None, "green"), (1, "red")),
        ),
        Panel(
            "Books withdrawn",
            "stat",
            (Target("max(liqmon_books_withdrawn_ratio)"),),
            unit="percentunit",
            width=6,
            thresholds=((None, "green"), (0.25, "yellow"), (0.5, "red")),
            minimum=0,
            maximum=1,
        ),
    )


def _cascade_chart_panels() -> tuple[Panel, ...]:
    """The stage over time and the charts that explain it."""
    return (
        Panel(
            "Stage over time",
            "timeseries",
            (Target("liqmon:cascade_stage:max", "stage"),),
            width=12,
            minimum=0,
            maximum=9,
            thresholds=((None, "green"), (5, "red")),
            threshold_lines=True,
        ),
        Panel(
            "Active stages",
            "state-timeline",
            (Target("max by (stage) (liqmon_cascade_stage_active)", "stage {{stage}}"),),
            width=12,
            thresholds=((None, "transparent"), (1, "red")),
            mappings=((0, "inactive", "transparent"), (1, "active", "red")),
        ),
        Panel(
            "Alerts emitted (last hour)",
            "table",
            (
                Target(
                    "sum by (kind, severity) (increase(liqmon_alerts_total[1h])) > 0",
                    instant=True,
                ),
            ),
            width=12,
            description="Alerts emitted by liqmon in the last hour, by kind and severity.",
        ),
        Panel(
            "Alert rate by kind",
            "timeseries",
            (Target("sum by (kind) (liqmon:alerts:rate5m)", "{{kind}}"),),
            unit="ops",
            width=12,
        ),
        Panel(
            "Spiral estimate: liquidations by shock",
            "bargauge",
            (
                Target(
                    "max by (shock) (liqmon_spiral_liquidated_usd)", "{{shock}}", instant=True
                ),
            ),
            unit="currencyUSD",
            width=24,
            description="Estimated liquidations if the named shock happened now "
            "(RISK_MODEL.md section 7).",
        ),
    )


def _peg() -> Dashboard:
    asset = 'asset="$asset"'
    return Dashboard(
        uid="liqmon-peg",
        title="liqmon / Peg",
        description="Stablecoin peg by venue against the consolidated index.",
        variables=(Variable("asset", "asset", "liqmon_peg_deviation_bps", default="USDe"),),
        panels=(
            Panel(
                "$asset deviation by venue",
                "timeseries",
                (Target(f"max by (venue) (liqmon_peg_deviation_bps{{{asset}}})", "{{venue}}"),),
                unit="bps",
                width=24,
                height=10,
                thresholds=tuple(PEG_THRESHOLDS_BPS),
                threshold_lines=True,
                description="deviation_bps = (mid_usd - 1) x 10,000; bands 100/300/1000 bps.",
            ),
            Panel(
                "Peg level by venue",
                "state-timeline",
                (Target(f"max by (venue) (liqmon_peg_level{{{asset}}})", "{{venue}}"),),
                width=24,
                thresholds=((None, "green"), (2, "yellow"), (3, "orange"), (4, "red")),
                mappings=tuple(PEG_LEVEL_MAPPINGS),
            ),
            Panel(
                "Venue spread (max - min deviation)",
                "timeseries",
                (Target(f"liqmon:peg_deviation_bps:venue_spread{{{asset}}}", "spread"),),
                unit="bps",
                width=12,
                description="Wide spread with a calm index = a venue-local depeg.",
            ),
            Panel(
                "Index deviation",
                "timeseries",
                (
                    Target(
                        f'max by (asset) (liqmon_peg_deviation_bps{{{asset}, venue="index"}})',
                        "index",
                    ),
                ),
                unit="bps",
                width=12,
                thresholds=tuple(PEG_THRESHOLDS_BPS),
                threshold_lines=True,
            ),
        ),
    )


def _loops() -> Dashboard:
    protocol = 'protocol=~"$protocol"'
    return Dashboard(
        uid="liqmon-loops",
        title="liqmon / Loops",
        description="Recursive lending loops: health, liquidation ladder, collateral illusion.",
        variables=(Variable("protocol", "protocol", "liqmon_loops_positions", multi=True),),
        panels=(
            Panel(
                "Positions by health-factor band",
                "bargauge",
                (
                    Target(
                        f"sum by (hf_band) (liqmon_loops_positions{{{protocol}}})",
                        "HF {{hf_band}}",
                        instant=True,
                    ),
                ),
                width=8,
                thresholds=((None, "blue"),),
            ),
            Panel(
                "Health distribution over time",
                "timeseries",
                (
                    Target(
                        f"sum by (hf_band) (liqmon_loops_positions{{{protocol}}})",
                        "HF {{hf_band}}",
                    ),
                ),
                width=16,
                stacked=True,
            ),
            Panel(
                "Liquidation ladder (notional liquidated per price drop)",
                "barchart",
                (
                    Target(
                        f"sum by (drop_pct) (liqmon_loops_ladder_usd{{{protocol}}})",
                        "{{drop_pct}}%",
                        instant=True,
                    ),
                ),
                unit="currencyUSD",
                width=12,
            ),
            Panel(
                "Liquidatable now",
                "timeseries",
                (
                    Target(
                        f"sum by (protocol, asset) (liqmon_loops_liquidatable_usd{{{protocol}}})",
                        "{{protocol}} {{asset}}",
                    ),
                ),
                unit="currencyUSD",
                width=12,
            ),
            Panel(
                "Collateral illusion ratio",
                "timeseries",
                (
                    Target(
                        "max by (protocol, asset) "
                        f"(liqmon_loops_collateral_illusion_ratio{{{protocol}}})",
                        "{{protocol}} {{asset}}",
                    ),
                ),
                width=24,
                thresholds=((None, "green"), (2, "yellow"), (3, "red")),
                threshold_lines=True,
                description="Collateral value the protocol reports over what it would fetch "
                "after haircut and price fall (RISK_MODEL.md section 3).",
            ),
        ),
    )


def _unified() -> Dashboard:
    venue = 'venue=~"$venue"'
    return Dashboard(
        uid="liqmon-unified",
        title="liqmon / Unified accounts",
        description="Exchange unified (cross-margin) accounts: status, leverage, shortfalls.",
        variables=(Variable("venue", "venue", "liqmon_unified_accounts", multi=True),),
        panels=(
            Panel(
                "Accounts by status",
                "timeseries",
                (
                    Target(
                        f"sum by (status) (liqmon:unified_accounts:sum_by_venue_status{{{venue}}})",
                        "{{status}}",
                    ),
                ),
                width=12,
                stacked=True,
            ),
            Panel(
                "Accounts in liquidation by venue",
                "bargauge",
                (
                    Target(
                        "sum by (venue) (liqmon:unified_accounts:sum_by_venue_status"
                        f'{{{venue}, status="liquidation"}})',
                        "{{venue}}",
                        instant=True,
                    ),
                ),
                width=12,
                thresholds=((None, "green"), (1, "red")),
            ),
            Panel(
                "Effective leverage",
                "timeseries",
                (
                    Target(
                        f"max by (venue, quantile) (liqmon_unified_effective_leverage{{{venue}}})",
                        "{{venue}} q{{quantile}}",
                    ),
                ),
                unit="x",
                width=12,
            ),
            Panel(
                "Top shortfalls",
                "table",
                (
                    Target(
                        f"max by (venue, rank) (liqmon_unified_shortfall_usd{{{venue}}})",
                        instant=True,
                    ),
                ),
                unit="currencyUSD",
                width=12,
                description="Largest margin shortfalls (rank 1 = largest); account ids are in "
                "the accounts.unified and risk.snapshots topics, never in labels.",
            ),
        ),
    )


def _liquidity() -> Dashboard:
    symbol = 'symbol=~"$symbol"'
    return Dashboard(
        uid="liqmon-liquidity",
        title="liqmon / Liquidity",
        description="Order-book depth by band, withdrawn books, spreads.",
        variables=(
            Variable("symbol", "symbol", "liqmon_book_depth_usd", multi=True),
            Variable("band", "band_bps", "liqmon_book_depth_usd", default="200"),
        ),
        panels=(
            Panel(
                "Withdrawn books",
                "timeseries",
                (Target("max(liqmon_books_withdrawn_ratio)", "withdrawn"),),
                unit="percentunit",
                width=8,
                minimum=0,
                maximum=1,
                thresholds=((None, "green"), (0.5, "red")),
                threshold_lines=True,
            ),
            Panel(
                "Bid depth within $band bps",
                "timeseries",
                (
                    Target(
                        "sum by (venue, symbol) (liqmon_book_depth_usd"
                        f'{{{symbol}, side="bid", band_bps="$band"}})',
                        "{{venue}} {{symbol}}",
                    ),
                ),
                unit="currencyUSD",
                width=16,
            ),
            Panel(
                "Depth by band (all venues)",
                "timeseries",
                (
                    Target(
                        "sum by (side, band_bps) (liqmon:book_depth_usd:sum_by_venue_side_band)",
                        "{{side}} {{band_bps}} bps",
                    ),
                ),
                unit="currencyUSD",
                width=12,
            ),
            Panel(
                "Spread",
                "timeseries",
                (
                    Target(
                        f"max by (venue, symbol) (liqmon_book_spread_bps{{{symbol}}})",
                        "{{venue}} {{symbol}}",
                    ),
                ),
                unit="bps",
                width=12,
            ),
        ),
    )


def _pipeline() -> Dashboard:
    return Dashboard(
        uid="liqmon-pipeline",
        title="liqmon / Pipeline",
        description="Throughput, lag, latency, dead letters and feed health.",
        panels=(*_pipeline_panels(), *_feed_panels()),
    )


def _pipeline_panels() -> tuple[Panel, ...]:
    """Workers, throughput, consumer lag, latency, dead letters, the account shards' wait."""
    return (
        Panel(
            "Workers up",
            "stat",
            (Target("sum(liqmon_worker_up)", "workers"),),
            width=6,
            thresholds=((None, "red"), (1, "green")),
        ),
        Panel(
            "Events in by source",
            "timeseries",
            (Target("liqmon:events:rate1m", "{{source}}"),),
            unit="ops",
            width=9,
        ),
        Panel(
            "Topic records",
            "timeseries",
            (Target("liqmon:topic_records:rate1m", "{{topic}} {{direction}}"),),
            unit="ops",
            width=9,
        ),
        Panel(
            "Consumer lag",
            "timeseries",
            (Target("liqmon:consumer_lag:sum_by_topic", "{{topic}}"),),
            width=12,
        ),
        Panel(
            "Processing latency p50 / p99",
            "timeseries",
            (
                Target("liqmon:processing_latency_seconds:p50", "{{agent}} p50"),
                Target("liqmon:processing_latency_seconds:p99", "{{agent}} p99"),
            ),
            unit="s",
            width=12,
        ),
        Panel(
            "Dead letters by reason",
            "timeseries",
            (Target("liqmon:deadletter:rate5m", "{{reason}}"),),
            unit="ops",
            width=12,
        ),
        Panel(
            "Agent last event",
            "table",
            (
                Target(
                    "max by (agent) (liqmon_agent_last_event_timestamp_seconds) * 1000",
                    instant=True,
                ),
            ),
            unit="dateTimeAsIso",
            width=12,
        ),
        Panel(
            "Account shards: waited for",
            "timeseries",
            (
                Target("max by (shard) (liqmon_shard_behind_records)", "shard {{shard}} records behind"),
                Target("sum(rate(liqmon_shard_wait_seconds_total[1m]))", "global stage waiting (s/s)"),
            ),
            width=12,
            description="With LIQMON_ACCOUNT_SHARDS: log records each shard had yet to report while the "
            "global stage waited for it, and the share of time it waited. Empty without shards.",
        ),
    )


def _feed_panels() -> tuple[Panel, ...]:
    """The live feeds' health: staleness, lag and shedding, gaps and reconnects."""
    return (
        Panel(
            "Feed staleness",
            "timeseries",
            (Target("liqmon:feed_last_event_age_seconds:max", "{{venue}} {{channel}}"),),
            unit="s",
            width=12,
            thresholds=((None, "green"), (30, "red")),
            threshold_lines=True,
        ),
        Panel(
            "Feed gaps, resyncs, reconnects (5m)",
            "timeseries",
            (
                Target(
                    "sum by (venue) (increase(liqmon_feed_gaps_total[5m]))", "{{venue}} gaps"
                ),
                Target(
                    "sum by (venue) (increase(liqmon_feed_resyncs_total[5m]))",
                    "{{venue}} resyncs",
                ),
                Target(
                    "sum by (venue) (increase(liqmon_feed_reconnects_total[5m]))",
                    "{{venue}} reconnects",
                ),
            ),
            width=12,
        ),
        Panel(
            "Feed lag and frames shed",
            "timeseries",
            (
                Target("liqmon:feed_lag_seconds:max", "{{venue}} lag (s)"),
                # 0 per live venue while nothing is shed (the counter starts at the first shed frame)
                Target(
                    "sum by (venue) (liqmon:feed_shed_frames:rate5m)"
                    " or sum by (venue) (liqmon_feed_lag_seconds) * 0",
                    "{{venue}} shed frames/s",
                ),
            ),
            width=24,
            thresholds=((None, "green"), (2, "yellow"), (10, "red")),
            threshold_lines=True,
            description="Live reader behind its venue (event-time lag or socket backlog) and "
            "the book/quote frames it coalesced away; trades and liquidations are never shed.",
        ),
        Panel(
            "Live publishing and recording",
            "timeseries",
            (
                Target("max(liqmon_publish_backlog_items)", "waiting for the broker"),
                Target("sum by (kind) (increase(liqmon_publish_dropped_total[5m]))", "{{kind}} not published (5m)"),
                Target("max(liqmon_recording_failed)", "recording stopped (1)"),
            ),
            width=24,
            description="What liqmon live holds for the broker (grows while it is away, up to "
            "[live] publish_backlog_items), what never reached it, and whether its --record file "
            "stopped (a full disk). The recording holds what was not published.",
        ),
    )


def dashboards() -> list[Dashboard]:
    """All liqmon dashboards, in menu order."""
    return [_cascade(), _peg(), _loops(), _unified(), _liquidity(), _pipeline()]


def rendered() -> dict[str, str]:
    """File name -> JSON text, exactly as committed."""
    return {
        f"{d.uid}.json": json.dumps(render(d), indent=2, sort_keys=True) + "\n"
        for d in dashboards()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="fail if committed JSON differs")
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    args = parser.parse_args(argv)
    out: Path = args.out
    files = rendered()
    if args.check:
        stale = [
            name
            for name, text in files.items()
            if not (out / name).exists() or (out / name).read_text(encoding="utf-8") != text
        ]
        extra = sorted(p.name for p in out.glob("*.json") if p.name not in files)
        for name in stale:
            print(f"out of date: {out / name}", file=sys.stderr)
        for name in extra:
            print(f"not generated by this script: {out / name}", file=sys.stderr)
        return 1 if stale or extra else 0
    out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (out / name).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
