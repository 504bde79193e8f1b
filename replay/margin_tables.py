"""Read venue margin tables from a file: a committed JSON document or the ``margin_tables``
frames a live recording starts with (:mod:`monitor.ingest.venue_tables`, RISK_MODEL §3).

``liqmon stress --margin-tables``, ``liqmon replay`` (a capture's own tables, or
``--margin-tables``) and the worker (``LIQMON_MARGIN_TABLES``) all read them here, so the
replayer and its worker apply the same tables and hash to the same config. Problems raise
:class:`monitor.stages.stress.StressInputError` (file, line, field), one line for any command.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import orjson

from monitor.ingest.frames import CONFIG_CHANNELS
from monitor.ingest.venue_tables import MARGIN_TABLES_CHANNEL, VenueTableError, apply_margin_tables
from monitor.risk_params import RiskParams
from monitor.stages.stress import StressInputError
from replay.capture import BadLine, CaptureError, CaptureLine, iter_capture

__all__ = ["capture_margin_tables", "load_margin_tables"]

#: Frames a live recording starts with; the tables are read from this head only.
_HEAD_CHANNELS = CONFIG_CHANNELS | {MARGIN_TABLES_CHANNEL}


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
        raise StressInputError(str(path), 0, "", str(exc)) from None
    return frames


def _from_capture(path: Path, params: RiskParams) -> RiskParams:
    frames = capture_margin_tables(path)
    if not frames:
        raise StressInputError(str(path), 0, "", "no margin_tables frame at the start of this capture")
    for item in frames:
        # The source label is part of the config hash: it names the frame, not the path.
        source = f"margin_tables frame recorded at ts_ms {item.ts_ms} (line {item.line_no})"
        try:
            params = apply_margin_tables(params, item.raw, source)
        except VenueTableError as exc:
            raise StressInputError(str(path), item.line_no, "raw", str(exc)) from None
    return params


def load_margin_tables(path: Path, params: RiskParams) -> RiskParams:
    """Risk parameters with the tables of ``path`` (a capture, else a JSON document)."""
    if _is_capture(path):
        return _from_capture(path, params)
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise StressInputError(str(path), 0, "", f"cannot read: {exc.strerror or exc}") from None
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise StressInputError(str(path), exc.lineno, "", f"invalid JSON: {exc}") from None
    source = f"margin tables document sha256:{hashlib.sha256(text).hexdigest()[:12]}"
    try:
        return apply_margin_tables(params, doc, source)
    except VenueTableError as exc:
        raise StressInputError(str(path), 0, "", str(exc)) from None
