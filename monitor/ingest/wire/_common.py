"""Shared field checks for the wire parsers: every failure is a WireError with a reason."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from monitor.events import MarketEvent
from monitor.limits import MAX_INPUT_NUMBER, MIN_INPUT_PRICE

__all__ = [
    "MAX_TS_MS",
    "MAX_WIRE_NUMBER",
    "MIN_TS_MS",
    "MIN_WIRE_PRICE",
    "PartialWireError",
    "WireError",
    "field",
    "finite_float",
    "positive_price",
    "split_symbol",
    "timestamp_ms",
]

#: Largest magnitude of a price, size or contract value read from the wire: every input's
#: bound (:data:`monitor.limits.MAX_INPUT_NUMBER`).
MAX_WIRE_NUMBER = MAX_INPUT_NUMBER
#: Smallest price read from the wire: every input's (:data:`monitor.limits.MIN_INPUT_PRICE`),
#: so a value settled in an asset and divided by its price stays finite.
MIN_WIRE_PRICE = MIN_INPUT_PRICE
#: 2009-01-01 and 2100-01-01 in ms: anything outside is not a market timestamp.
MIN_TS_MS = 1_230_768_000_000
MAX_TS_MS = 4_102_444_800_000


class WireError(ValueError):
    """A frame that cannot become an event; ``reason`` is a short stable label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class PartialWireError(WireError):
    """Some items of a multi-item frame cannot become events; ``events`` holds the others.

    The frame is dead-lettered with ``reason`` and the events of its valid items go on,
    so one unusable instrument does not hide the rest of the frame.
    """

    def __init__(self, reason: str, detail: str, events: list[MarketEvent]) -> None:
        super().__init__(reason, detail)
        self.events = events


def field(obj: Mapping[str, Any], name: str) -> Any:
    """``obj[name]`` or a ``missing_field`` error."""
    try:
        return obj[name]
    except KeyError:
        raise WireError("missing_field", f"field '{name}' is missing") from None


#: The exact types a JSON parser gives numbers and strings (bool is not int here).
_PLAIN_NUMERIC = frozenset((str, float, int))


def finite_float(value: Any, name: str) -> float:
    """A finite float from a JSON number or numeric string (venues send both)."""
    if type(value) in _PLAIN_NUMERIC:  # the common case, in one test; NaN and ±inf fail the range
        try:
            out = float(value)
        except (ValueError, OverflowError):
            pass  # judged below, with its error
        else:
            if -MAX_WIRE_NUMBER <= out <= MAX_WIRE_NUMBER:
                return out
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise WireError("wrong_type", f"field '{name}' must be a number, got {type(value).__name__}")
    try:
        out = float(value)
    except ValueError:
        raise WireError("wrong_type", f"field '{name}' is not numeric: {value!r:.40}") from None
    except OverflowError:  # an integer past a float's range
        raise WireError("out_of_range", f"field '{name}' is beyond ±{MAX_WIRE_NUMBER:.0e}") from None
    if not math.isfinite(out):
        raise WireError("non_finite", f"field '{name}' is {value!r}")
    if abs(out) > MAX_WIRE_NUMBER:
        raise WireError("out_of_range", f"field '{name}' is {out:.3g}, beyond ±{MAX_WIRE_NUMBER:.0e}")
    return out


def positive_price(value: Any, name: str) -> float:
    """A finite price > 0, at least :data:`MIN_WIRE_PRICE`."""
    out = finite_float(value, name)
    if out <= 0.0:
        raise WireError("non_positive_price", f"field '{name}' is {out}")
    if out < MIN_WIRE_PRICE:
        raise WireError("out_of_range", f"field '{name}' is {out:.3g}, below {MIN_WIRE_PRICE:.0e}")
    return out


def non_negative(value: Any, name: str) -> float:
    """A finite quantity ≥ 0."""
    out = finite_float(value, name)
    if out < 0.0:
        raise WireError("negative_quantity", f"field '{name}' is {out}")
    return out


def timestamp_ms(value: Any, name: str, recv_ts_ms: int, max_future_skew_ms: int) -> int:
    """An integer ms timestamp within sane bounds and not far after receive time."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise WireError("wrong_type", f"timestamp '{name}' must be an integer, got {value!r:.40}")
    if not MIN_TS_MS <= value <= MAX_TS_MS:
        raise WireError("timestamp_out_of_range", f"timestamp '{name}' = {value}")
    if value - recv_ts_ms > max_future_skew_ms:
        raise WireError(
            "timestamp_future",
            f"timestamp '{name}' is {(value - recv_ts_ms) / 1000:.0f} s after receive time",
        )
    return value


def side_sign(obj: Mapping[str, Any], name: str, plus: str, minus: str, reason: str = "wrong_value") -> float:
    """+1.0 when ``obj[name]`` is ``plus``, −1.0 when it is ``minus``; anything else is an error."""
    side = field(obj, name)
    if side == plus:
        return 1.0
    if side == minus:
        return -1.0
    raise WireError(reason, f"field '{name}' must be {plus} or {minus}, got {side!r:.20}")


def print_fields(
    item: Mapping[str, Any], side: tuple[str, str, str], price: str, qty: str, ts: str,
    recv_ts_ms: int, max_future_skew_ms: int,
) -> tuple[float, float, float, int]:
    """A trade or liquidation print's (side sign, price, quantity, ts_ms).

    ``side`` is (field, value for +1, value for −1); the other arguments name the fields.
    """
    return (
        side_sign(item, *side),
        positive_price(field(item, price), price),
        non_negative(field(item, qty), qty),
        timestamp_ms(field(item, ts), ts, recv_ts_ms, max_future_skew_ms),
    )


_QUOTES = ("FDUSD", "USDT", "USDC", "BUSD", "TUSD", "USD", "BTC", "ETH", "BNB", "EUR")


def split_symbol(symbol: str, aliases: Mapping[str, str]) -> tuple[str, str]:
    """Split an exchange ticker ('USDEUSDT', 'BTC-USDT', 'ETH_USDC') into (base, quote)."""
    sym = symbol.upper()
    for sep in ("-", "_", "/"):
        if sep in sym:
            base, quote = sym.split(sep)[:2]
            return aliases.get(base, base), quote
    for quote in _QUOTES:
        if sym.endswith(quote) and len(sym) > len(quote):
            base = sym[: -len(quote)]
            return aliases.get(base, base), quote
    raise WireError("unknown_symbol", f"cannot split symbol {symbol!r} into base and quote")
