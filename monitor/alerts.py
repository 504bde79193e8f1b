"""Alerts: the deterministic id, the severity order and the one-line form for a human.

The record itself is :class:`monitor.protocol.Alert` (README "Alert")."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from monitor.protocol import Alert, Severity

__all__ = ["SEVERITIES", "SEVERITY_RANK", "alert_id", "format_alert_line", "make_alert"]

#: The severities in rising order: the one definition every module ranks by.
SEVERITIES: tuple[Severity, ...] = ("info", "warning", "high", "critical")
#: Rank of a severity (info 0 … critical 3).
SEVERITY_RANK: dict[str, int] = {name: rank for rank, name in enumerate(SEVERITIES)}


def alert_id(config_hash: str, kind: str, venue: str | None, asset: str | None, identity: str) -> str:
    """sha256 over the alert's subject and transition; re-delivery keeps the id."""
    text = f"{config_hash}|{kind}|{venue or ''}|{asset or ''}|{identity}"
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def make_alert(
    *,
    kind: str,
    ts_ms: int,
    severity: Severity,
    venue: str | None,
    asset: str | None,
    message: str,
    evidence: dict[str, Any],
    config_hash: str,
    identity: str,
    stage: int | None = None,
) -> Alert:
    """Build an alert whose id is derived from ``identity`` (the transition it reports)."""
    return Alert(
        alert_id=alert_id(config_hash, kind, venue, asset, f"{ts_ms}|{identity}"),
        ts_ms=ts_ms,
        kind=kind,
        severity=severity,
        venue=venue,
        asset=asset,
        stage=stage,
        message=message,
        evidence=evidence,
        config_hash=config_hash,
    )


def format_alert_line(alert: Alert | Mapping[str, Any]) -> str:
    """One line for a human: UTC time, severity, kind [stage], venue/asset [RESOLVED]: message.

    Takes the alert record or its JSON dict (what the sinks receive); a field missing from a
    dict prints as ``?`` or is left out, never raises.
    """
    fields: Mapping[str, Any] = alert.as_dict() if isinstance(alert, Alert) else alert
    ts_ms = fields.get("ts_ms")
    when = (
        datetime.fromtimestamp(ts_ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"
        if isinstance(ts_ms, int) and not isinstance(ts_ms, bool)
        else "?"
    )
    severity = str(fields.get("severity", "?")).upper()
    where = "/".join(str(part) for part in (fields.get("venue"), fields.get("asset")) if part) or "-"
    stage = fields.get("stage")
    stage_text = f" stage {stage}" if isinstance(stage, int) and not isinstance(stage, bool) else ""
    evidence = fields.get("evidence")
    state = " RESOLVED" if isinstance(evidence, Mapping) and evidence.get("resolved") is True else ""
    message = " ".join(str(fields.get("message", "")).split())
    return f"{when} {severity:<8} {fields.get('kind', '')}{stage_text} {where}{state}: {message}"
