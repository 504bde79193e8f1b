"""What a replay tells a person: the headline facts, then a timeline grouped by minute and kind.

:func:`build_story` is pure (alerts and risk snapshots in, rows out) so it is unit-tested
without a terminal; :func:`print_story` renders it with rich. The headline answers, each
with its time: where the first venue-local depeg happened, the peak cascade stage, how
many unified accounts were liquidated, how many loop positions were at risk, and the
worst withdrawal of bids from a book.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

from monitor.alerts import SEVERITY_RANK, format_alert_line
from monitor.protocol import Alert, RiskSnapshot
from replay.outputs import utc

__all__ = ["Fact", "Story", "TimelineRow", "build_story", "plural", "print_story"]

_SEV_STYLE = {"info": "dim", "warning": "yellow", "high": "bold red", "critical": "bold white on red"}
#: Timeline rows printed before the rest is summarised in one line (every alert: --verbose).
TIMELINE_MAX_ROWS = 120


def plural(n: int, word: str, many: str | None = None) -> str:
    """``1 account``, ``2 accounts``, ``1,400 accounts`` (``many`` for irregular plurals)."""
    return f"{n:,} {word if n == 1 else (many or word + 's')}"


def _usd(value: float) -> str:
    """$4.5M, $1.2B, $830k: the scale a person reads at a glance."""
    for div, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= div:
            return f"${value / div:,.1f}{suffix}"
    return f"${value:,.0f}"


@dataclass(frozen=True)
class Fact:
    """One headline line: what, when (None = it did not happen), the figures."""

    label: str
    ts_ms: int | None
    text: str


@dataclass(frozen=True)
class TimelineRow:
    """Alerts of one kind within one minute."""

    minute_ms: int
    kind: str
    count: int
    severity: str
    what: str


@dataclass(frozen=True)
class Story:
    facts: list[Fact]
    timeline: list[TimelineRow]
    alerts: int


def _first_depeg(alerts: Sequence[Alert]) -> Fact:
    for a in alerts:
        if a.kind == "venue_local_depeg" and not a.evidence.get("resolved"):
            price = a.evidence.get("venue_price_usd")
            dev = a.evidence.get("venue_deviation_bps")
            numbers = isinstance(price, float | int) and isinstance(dev, float | int)
            figures = f" at {price:.4f} USD ({dev:+,.0f} bps)" if numbers else ""
            return Fact("first venue-local depeg", a.ts_ms,
                        f"{a.asset} on {a.venue}{figures} while the other venues held")
    return Fact("first venue-local depeg", None, "none: no venue left the peg on its own")


def _peak_stage(alerts: Sequence[Alert]) -> Fact:
    best: Alert | None = None
    for a in alerts:
        if a.kind == "cascade_stage" and a.stage is not None and (best is None or a.stage > (best.stage or 0)):
            best = a
    if best is None:
        return Fact("peak cascade stage", None, "no cascade stage became active")
    text = _first_clause(best.message)
    if f"stage {best.stage}" not in text:
        text = f"stage {best.stage}: {text}"
    return Fact("peak cascade stage", best.ts_ms, text)


def _accounts(alerts: Sequence[Alert]) -> Fact:
    liquidated = [a for a in alerts if a.kind == "unified_liquidation"]
    called = {str(a.evidence.get("account_id")) for a in alerts if a.kind == "margin_call"}
    if not liquidated:
        return Fact("accounts liquidated", None,
                    f"none ({plural(len(called), 'account')} reached a margin call)")
    ids = {str(a.evidence.get("account_id")) for a in liquidated}
    per_minute = Counter(a.ts_ms // 60_000 for a in liquidated)
    peak_minute, peak_n = min(per_minute.items(), key=lambda kv: (-kv[1], kv[0]))
    return Fact("accounts liquidated", liquidated[0].ts_ms,
                f"{plural(len(ids), 'unified account')} from the first at this time, "
                f"{peak_n:,} in the busiest minute ({(utc(peak_minute * 60_000) or '')[11:16]}); "
                f"{plural(len(called), 'account')} had a margin call")


def _loops(snapshots: Sequence[RiskSnapshot]) -> Fact:
    loaded = [s for s in snapshots if s.hf_bands]
    if not loaded:
        return Fact("loops at risk", None, "no loop positions were loaded")
    worst = max(loaded, key=lambda s: (s.loops_liquidatable, s.loops_liquidatable_usd, -s.ts_ms))
    total = sum(worst.hf_bands.values())
    if not worst.loops_liquidatable:
        near = worst.hf_bands.get("1-1.05", 0)
        return Fact("loops at risk", None, f"none of {plural(total, 'loop position')} fell below HF 1 "
                    f"({near:,} at most between 1 and 1.05)")
    return Fact("loops at risk", worst.ts_ms,
                f"{worst.loops_liquidatable:,} of {plural(total, 'loop position')} below HF 1, "
                f"{_usd(worst.loops_liquidatable_usd)} of collateral")


def _withdrawal(alerts: Sequence[Alert]) -> Fact:
    worst: Alert | None = None
    for a in alerts:
        if a.kind == "liquidity_withdrawal" and a.evidence.get("state") == "withdrawn":
            lost = float(a.evidence.get("depth_lost_usd") or 0.0)
            if worst is None or lost > float(worst.evidence.get("depth_lost_usd") or 0.0):
                worst = a
    if worst is None:
        return Fact("worst book withdrawal", None, "no book's bids were withdrawn")
    ev = worst.evidence
    depth, base = float(ev.get("bid_depth_usd") or 0.0), float(ev.get("baseline_usd") or 0.0)
    ratio = float(ev.get("depth_of_baseline_ratio") or 0.0)
    return Fact("worst book withdrawal", worst.ts_ms,
                f"{worst.venue} {ev.get('symbol')}: bids within {ev.get('band_bps')} bps fell to "
                f"{_usd(depth)}, {ratio:.0%} of {_usd(base)}")


def _forced_and_spiral(snapshots: Sequence[RiskSnapshot]) -> list[Fact]:
    if not snapshots:
        return []
    last = snapshots[-1]
    facts = []
    if last.forced_sell_usd_by_asset:
        top = sorted(last.forced_sell_usd_by_asset.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
        total = sum(last.forced_sell_usd_by_asset.values())
        facts.append(Fact("forced sells", last.ts_ms, f"{_usd(total)} in all by the end, most in "
                          + ", ".join(f"{asset} {_usd(usd)}" for asset, usd in top)))
    peaks = [(max(s.spiral_usd_by_shock.values()), s) for s in snapshots if s.spiral_usd_by_shock]
    if peaks:
        usd, snap = max(peaks, key=lambda p: (p[0], -p[1].ts_ms))
        shock = max(snap.spiral_usd_by_shock.items(), key=lambda kv: (kv[1], kv[0]))[0]
        facts.append(Fact("largest spiral estimate", snap.ts_ms, f"{_usd(usd)} liquidated after shock {shock}"))
    return facts


def _first_clause(message: str) -> str:
    """The message up to its first ';' (the figures after it are in alerts.jsonl)."""
    return message.split(";", 1)[0]


def _what(members: Sequence[Alert]) -> str:
    if all(not (a.asset or a.venue) for a in members):
        return _first_clause(members[-1].message) + (f" ({plural(len(members), 'alert')})" if len(members) > 1 else "")
    if len(members) == 1:
        return _first_clause(members[0].message)
    subjects = Counter("/".join(x for x in (a.asset, a.venue) if x) or "-" for a in members)
    top = sorted(subjects.items(), key=lambda kv: (-kv[1], kv[0]))
    shown = ", ".join(f"{s} ×{n}" if n > 1 else s for s, n in top[:4])
    more = f" and {plural(len(top) - 4, 'other')}" if len(top) > 4 else ""
    return shown + more


def timeline(alerts: Iterable[Alert]) -> list[TimelineRow]:
    """Alerts grouped by (minute, kind), in time order; a group of one shows its message."""
    groups: dict[tuple[int, str], list[Alert]] = {}
    for a in alerts:
        groups.setdefault((a.ts_ms // 60_000 * 60_000, a.kind), []).append(a)
    rows = []
    for (minute, kind), members in sorted(groups.items()):
        worst = max(members, key=lambda a: SEVERITY_RANK[a.severity]).severity
        rows.append(TimelineRow(minute, kind, len(members), worst, _what(members)))
    return rows


def build_story(alerts: Sequence[Alert], snapshots: Sequence[RiskSnapshot] = ()) -> Story:
    """Headline facts and the grouped timeline of a replay (alerts ordered by time)."""
    facts = [_first_depeg(alerts), _peak_stage(alerts), _accounts(alerts), _loops(snapshots),
             _withdrawal(alerts), *_forced_and_spiral(snapshots)]
    return Story(facts=facts, timeline=timeline(alerts), alerts=len(alerts))


def print_story(console: Console, story: Story, alerts: Sequence[Alert] = (), verbose: bool = False) -> None:
    """The headline (what happened, each with its time), then the timeline; every alert with verbose."""
    console.print(f"[bold]liqmon: what happened[/bold] ({plural(story.alerts, 'alert')})", soft_wrap=True)
    for fact in story.facts:
        when = (utc(fact.ts_ms) or "")[11:19] if fact.ts_ms is not None else "   —    "
        console.print(f"  {when}  [bold]{fact.label}[/bold]: {fact.text}", highlight=False, soft_wrap=True)
    if not story.timeline:
        return
    table = Table(title="timeline (UTC, alerts grouped by minute and kind)", title_justify="left",
                  show_edge=False, pad_edge=False, expand=False)
    table.add_column("minute", no_wrap=True, min_width=11)
    table.add_column("kind", no_wrap=True, min_width=20)
    table.add_column("n", justify="right", no_wrap=True, min_width=5)
    table.add_column("worst", no_wrap=True, min_width=8)
    # one line per row: the other columns keep their width, the description is cut short
    table.add_column("what", no_wrap=True, overflow="ellipsis", max_width=max(console.width - 60, 20))
    for row in story.timeline[:TIMELINE_MAX_ROWS]:
        table.add_row((utc(row.minute_ms) or "")[5:16], row.kind, f"{row.count:,}",
                      f"[{_SEV_STYLE[row.severity]}]{row.severity}[/]", row.what)
    console.print()
    console.print(table, highlight=False)
    hidden = len(story.timeline) - TIMELINE_MAX_ROWS
    if hidden > 0:
        console.print(f"… {plural(hidden, 'more row')}; --verbose prints every alert (all are in alerts.jsonl)")
    if verbose:
        console.print(f"\n[bold]every alert ({len(alerts):,})[/bold]")
        for alert in alerts:
            console.print(format_alert_line(alert), markup=False, highlight=False)
