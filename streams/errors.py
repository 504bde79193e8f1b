"""Errors the command line reports in one line (kept free of heavy imports)."""

from __future__ import annotations

__all__ = ["KafkaReplayError"]


class KafkaReplayError(RuntimeError):
    """The replay could not be completed: one line saying what is missing."""
