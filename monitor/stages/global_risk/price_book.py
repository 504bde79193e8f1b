"""The global stage's prices: the latest price by key, and the derived ``rate:A/B*C`` keys.

A derived key is a rate feed times another key (RISK_MODEL §1): it is recomputed whenever
its rate or its base moves. Keys that a newly loaded position or account uses wait in
``pending_keys`` for the next evaluation, whether or not their price moves.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from monitor.protocol import PriceSignal

__all__ = ["PriceBook"]


class PriceBook:
    """Latest price by key, derived keys and the keys awaiting an evaluation."""

    def __init__(self, quote_prices_usd: Mapping[str, float]) -> None:
        self.prices: dict[str, float] = dict(quote_prices_usd)
        #: Keys to evaluate at the next event time even if their price does not move.
        self.pending_keys: set[str] = set()
        #: ``rate:A/B*C`` → (rate key, base key)
        self._derived: dict[str, tuple[str, str]] = {}

    def register_derived(self, keys: Iterable[str]) -> None:
        """Remember ``rate:A/B*C`` keys: a rate feed times another key (RISK_MODEL §1)."""
        for key in keys:
            if key.startswith("rate:") and "*" in key and key not in self._derived:
                rate, _, base = key.partition("*")
                self._derived[key] = (rate, base)
                self.pending_keys.add(key)

    def add_keys(self, keys: Iterable[str]) -> None:
        """A newly loaded account's keys: its derived ones registered, all of them evaluated
        at the next event time whether or not their price moves."""
        keys = set(keys)
        self.register_derived(keys)
        self.pending_keys |= keys

    def apply(self, signal: PriceSignal, changed: set[str]) -> float | None:
        """A price signal: the key takes its price and is marked changed; the price, or
        None when it is not one (not finite, or not positive: ignored)."""
        key, price = str(signal["key"]), float(signal["price"])
        if not (math.isfinite(price) and price > 0):
            return None
        self.prices[key] = price
        changed.add(key)
        return price

    def take_changed(self, changed: set[str]) -> None:
        """Add the pending keys to ``changed``, then every derived key they move."""
        changed |= self.pending_keys
        self.pending_keys = set()
        self._derive_keys(changed)

    def _derive_keys(self, changed: set[str]) -> None:
        """Recompute every derived key whose rate or base moved; mark it changed too."""
        prices = self.prices
        for key, (rate, base) in self._derived.items():
            if (rate in changed or base in changed or key in changed) and rate in prices and base in prices:
                price = prices[rate] * prices[base]
                if math.isfinite(price):  # an overflow is not a price
                    prices[key] = price
                    changed.add(key)
