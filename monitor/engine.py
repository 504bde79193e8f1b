"""The partition engine: ``process(batch) -> BatchResult``, the pure core a worker calls.

A worker (or the inline replayer) owns one Engine per process; it holds the state of
the assets whose partitions it owns. State that must survive a restart is exposed as
plain-JSON snapshots (:meth:`Engine.snapshot` / :meth:`Engine.restore`) which the faust
agent keeps in a changelog-backed table. No I/O and no clock: time comes with events.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from monitor.alerts import Alert
from monitor.batch import Batch
from monitor.config import EngineConfig
from monitor.events import KIND_PRICE, KIND_QUOTE
from monitor.peg import AssetPeg, PegRules

__all__ = ["BatchResult", "Engine"]


@dataclass(slots=True)
class BatchResult:
    """What one batch produced."""

    alerts: list[Alert] = field(default_factory=list)
    events_by_source: Counter[str] = field(default_factory=Counter)
    #: Events whose quote currency has no USD price (counted, not silently dropped).
    unpriced: int = 0
    #: True when a discrete state changed and the snapshot should be persisted.
    state_changed: bool = False


class Engine:
    """Stateful, deterministic processor of market batches for the assets it owns."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.config_hash = config.config_hash
        self.rules = PegRules.from_config(config.peg)
        self.peg_assets = frozenset(config.peg.assets)
        self.quote_usd: dict[str, float] = dict(config.ingest.quote_prices_usd)
        self.pegs: dict[str, AssetPeg] = {}
        #: Latest USD mid per (asset, venue) for assets without a peg (later processors).
        self.mids_usd: dict[tuple[str, str], float] = {}

    # -- state -----------------------------------------------------------------------
    def has_asset(self, asset: str) -> bool:
        return asset in self.pegs

    def snapshot(self, asset: str) -> dict[str, Any] | None:
        peg = self.pegs.get(asset)
        return None if peg is None else peg.to_state()

    def restore(self, asset: str, state: dict[str, Any]) -> None:
        self.pegs[asset] = AssetPeg.from_state(asset, self.rules, self.config_hash, state)

    def _peg(self, asset: str) -> AssetPeg:
        peg = self.pegs.get(asset)
        if peg is None:
            peg = AssetPeg(asset=asset, rules=self.rules, config_hash=self.config_hash)
            self.pegs[asset] = peg
        return peg

    # -- processing ------------------------------------------------------------------
    def is_quote_asset(self, asset: str) -> bool:
        return asset in self.config.ingest.quote_prices_usd

    def process(self, batch: Batch) -> BatchResult:
        """Run every event of ``batch`` through the processors, in order."""
        result = BatchResult()
        asset = batch.asset
        venues = [s[0] for s in batch.sources]
        quotes = [s[2] for s in batch.sources]
        counts = [0] * len(venues)
        if self.is_quote_asset(asset):
            self._process_quote_asset(batch, counts, result)
        elif asset in self.peg_assets:
            peg = self._peg(asset)
            quote_usd = [self.quote_usd.get(q) for q in quotes]
            out = result.alerts
            on_price = peg.on_price
            for row in batch.rows:
                kind, idx, ts, _rts, f1, f2, f3, f4 = row[:8]
                i = int(idx)
                counts[i] += 1
                q = quote_usd[i]
                if q is None:
                    result.unpriced += 1
                    continue
                if kind == KIND_QUOTE:
                    on_price(venues[i], int(ts), (f1 + f2) * 0.5 * q, (f1 * f3 + f2 * f4) * q, out)
                elif kind == KIND_PRICE:
                    on_price(venues[i], int(ts), f1 * q, f2 * q, out)
            result.state_changed = peg.dirty
            peg.dirty = False
        else:
            self._track_mids(batch, counts, result)
        for i, n in enumerate(counts):
            if n:
                result.events_by_source[venues[i]] += n
        return result

    def _process_quote_asset(self, batch: Batch, counts: list[int], result: BatchResult) -> None:
        # A quote currency's own feed (e.g. USDT/USD): its USD price converts every quote.
        for row in batch.rows:
            kind, idx, f1 = row[0], int(row[1]), row[4]
            i = idx
            counts[i] += 1
            quote = batch.sources[i][2]
            q = 1.0 if quote == "USD" else self.quote_usd.get(quote)
            if q is None or quote == batch.asset:
                result.unpriced += 1
                continue
            if kind == KIND_QUOTE:
                self.quote_usd[batch.asset] = (f1 + row[5]) * 0.5 * q
                result.state_changed = True
            elif kind == KIND_PRICE:
                self.quote_usd[batch.asset] = f1 * q
                result.state_changed = True

    def _track_mids(self, batch: Batch, counts: list[int], result: BatchResult) -> None:
        for row in batch.rows:
            kind, i, f1, f2 = row[0], int(row[1]), row[4], row[5]
            counts[i] += 1
            venue, _symbol, quote = batch.sources[i]
            q = self.quote_usd.get(quote)
            if q is None:
                result.unpriced += 1
                continue
            if kind == KIND_QUOTE:
                self.mids_usd[(batch.asset, venue)] = (f1 + f2) * 0.5 * q
            elif kind == KIND_PRICE:
                self.mids_usd[(batch.asset, venue)] = f1 * q
