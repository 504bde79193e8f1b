"""What a replay writes: ``alerts.jsonl``, ``summary.json``, and the printed timeline."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from monitor.protocol import Alert, RiskSnapshot

if TYPE_CHECKING:  # the replayer (the engine, aiokafka) is not needed to write its outputs
    from replay.replayer import ReplayStats

__all__ = ["ordered_alerts", "write_alerts", "write_snapshots", "write_summary"]



def ordered_alerts(alerts: Iterable[Alert]) -> list[Alert]:
    """De-duplicated by alert_id and ordered by (event time, id): byte-stable output."""
    unique = {a.alert_id: a for a in alerts}
    return sorted(unique.values(), key=lambda a: (a.ts_ms, a.alert_id))


def write_alerts(path: Path, alerts: Iterable[Alert]) -> list[Alert]:
    ordered = ordered_alerts(alerts)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        for alert in ordered:
            fh.write(alert.to_json())
            fh.write(b"\n")
    return ordered


def write_snapshots(path: Path, snapshots: Iterable[RiskSnapshot]) -> int:
    """The global stage's risk snapshots, one JSON line each, in the order taken.

    A snapshot equal to one already written (a re-delivery, or nothing changed between the
    last interval and the end of the run) is written once, so both replay paths give the
    same file. Returns the number of lines.
    """
    seen: set[bytes] = set()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        for snap in snapshots:
            line = snap.encode()
            if line not in seen:
                seen.add(line)
                fh.write(line + b"\n")
    return len(seen)


def utc(ts_ms: int | None) -> str | None:
    if ts_ms is None:
        return None
    return dt.datetime.fromtimestamp(ts_ms / 1000, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def write_summary(
    path: Path,
    *,
    capture: Path,
    mode: str,
    config_hash: str,
    stats: ReplayStats,
    alerts: list[Alert],
    worker_deadletters: int = 0,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    by_kind = Counter(f"{a.kind}:{a.severity}" for a in alerts)
    deadletters = sum(stats.deadletters.values()) + worker_deadletters
    summary: dict[str, Any] = {
        "capture": str(capture),
        "mode": mode,
        "config_hash": config_hash,
        "frames": stats.frames,
        "events": stats.events,
        "batches": stats.batches,
        "events_by_source": dict(sorted(stats.events_by_source.items())),
        "deadletters": deadletters,
        "deadletters_by_reason": dict(sorted(stats.deadletters.items())),
        "worker_deadletters": worker_deadletters,
        "foreign_records": stats.foreign_records,
        "alerts": len(alerts),
        "alerts_by_kind_severity": dict(sorted(by_kind.items())),
        "first_event_utc": utc(stats.first_ts_ms),
        "last_event_utc": utc(stats.last_ts_ms),
        "event_span_s": None
        if stats.first_ts_ms is None or stats.last_ts_ms is None
        else (stats.last_ts_ms - stats.first_ts_ms) / 1000,
        "wall_s": round(stats.wall_s, 3),
        "events_per_s": round(stats.events / stats.wall_s, 1) if stats.wall_s > 0 else None,
        "interrupted": stats.interrupted,
    }
    if extra:
        summary.update(extra)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")
    return summary
