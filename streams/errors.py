"""Errors the command line reports in one line (kept free of heavy imports)."""

from __future__ import annotations

__all__ = ["KafkaReplayError", "UsageError"]


class KafkaReplayError(RuntimeError):
    """The replay could not be completed: one line saying what is missing."""


class UsageError(Exception):
    """A user error worth one line and exit code 2."""
