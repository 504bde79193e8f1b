"""Read venue margin tables from a file: a committed JSON document or the ``margin_tables``
frames a live recording starts with (:mod:`monitor.venue_tables`, RISK_MODEL §3).

``liqmon stress --margin-tables``, ``liqmon replay`` (a capture's own tables, or
``--margin-tables``) and the worker (``LIQMON_MARGIN_TABLES``) all read them here, so the
replayer and its worker apply the same tables and hash to the same config.
"""

from __future__ import annotations

from pathlib import Path

import orjson

from monitor.ingest import CONFIG_CHANNELS
from monitor.risk_params import RiskParams
from monitor.venue_tables import MARGIN_TABLES_CHANNEL, VenueTableError, apply_margin_tables
from replay.capture import BadLine, CaptureError, CaptureLine, iter_capture

__all__ = ["MarginTablesFileError", "capture_margin_tables", "load_margin_tables"]

#: Frames a live recording starts with; the tables are read from this head only.
_HEAD_CHANNELS = CONFIG_CHANNELS | {MARGIN_TABLES_CHANNEL}


class MarginTablesFileError(ValueError):
    """A tables file that cannot be used, located by path, line (0 = whole file) and field."""

    def __init__(self, path: str, line: int, field: str, message: str) -> None:
        self.path = path
        self.line = line
        self.field = field
        self.message = message
        where = f"{path}:{line}" if line else path
        super().__init__(f"{where}: {field}: {message}" if field else f"{where}: {message}")


def _is_capture(path: Path) -> bool:
    return path.name.endswith((".jsonl", ".jsonl.gz"))


def capture_margin_tables(path: Path) -> list[CaptureLine]:
    """The ``margin_tables`` frames at the head of a capture (before its first market frame)."""
    frames: list[CaptureLine] = []
    try:
        for item in iter_capture(path):
            if isinstance(item, BadLine) or item.channel not in _HEAD_CHANNELS:
                break
            if item.channel == MARGIN_TABLES_CHANNEL:
                frames.append(item)
    except CaptureError as exc:
        raise MarginTablesFileError(str(path), 0, "", str(exc)) from None
    return frames


def _from_capture(path: Path, params: RiskParams) -> RiskParams:
    frames = capture_margin_tables(path)
    if not frames:
        raise MarginTablesFileError(str(path), 0, "", "no margin_tables frame at the start of this capture")
    for item in frames:
        source = f"{path}:{item.line_no} (margin_tables recorded at ts_ms {item.ts_ms})"
        try:
            params = apply_margin_tables(params, item.raw, source)
        except VenueTableError as exc:
            raise MarginTablesFileError(str(path), item.line_no, "raw", str(exc)) from None
    return params


def load_margin_tables(path: Path, params: RiskParams) -> RiskParams:
    """Risk parameters with the tables of ``path`` (a capture, else a JSON document)."""
    if _is_capture(path):
        return _from_capture(path, params)
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise MarginTablesFileError(str(path), 0, "", f"cannot read: {exc.strerror or exc}") from None
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise MarginTablesFileError(str(path), exc.lineno, "", f"invalid JSON: {exc}") from None
    try:
        return apply_margin_tables(params, doc, str(path))
    except VenueTableError as exc:
        raise MarginTablesFileError(str(path), 0, "", str(exc)) from None
