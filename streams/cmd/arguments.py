"""argparse types for the commands' numbers and lists: a value out of range is argparse's
one line naming the option, and exit code 2, before anything runs."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence

__all__ = ["count", "port_number", "positive_count", "positive_counts", "positive_number", "section_names"]


def positive_number(text: str) -> float:
    """A finite number > 0 (seconds, rates)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, not {text}")
    return value


def _whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None


def count(text: str) -> int:
    """A whole number ≥ 0."""
    value = _whole(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def positive_count(text: str) -> int:
    """A whole number ≥ 1."""
    value = _whole(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def port_number(text: str) -> int:
    """A TCP port, 0 to 65535 (0: the command's meaning of none, a free one or off)."""
    value = _whole(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"not a TCP port: {value} (0-65535)")
    return value


def positive_counts(text: str) -> tuple[int, ...]:
    """A comma list of whole numbers ≥ 1, at least one."""
    return tuple(positive_count(part.strip()) for part in text.split(","))


def section_names(known: Sequence[str]) -> Callable[[str], tuple[str, ...]]:
    """A type for a comma list of names, each one of ``known``."""

    def names(text: str) -> tuple[str, ...]:
        picked = tuple(part.strip() for part in text.split(","))
        unknown = [name for name in picked if name not in known]
        if unknown:
            listed = ", ".join(map(repr, unknown))
            raise argparse.ArgumentTypeError(f"unknown {listed}; one or more of {','.join(known)}")
        return picked

    return names
