"""The venues' liquidation engines of the simulated day: Binance portfolio margin and perps.

:class:`MarginEngine` values every unified account each second (collateral at its price
key, Binance uniMMR, RISK_MODEL.md §3), liquidates accounts below 1.05 and queues their
collateral for forced sale; :class:`PerpDesk` liquidates the leveraged perp traders whose
liquidation price the venue's price crosses, and frames those liquidations. Both append
their ground-truth rows to the simulation's list of liquidations.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from replay.scenario.day import wire
from replay.scenario.day.actors import (
    ALT_COLLATERAL_RATE,
    ALT_PERP_MMR,
    COLLATERAL_RATE,
    LOAN_MMR,
    PERP_MMR,
    Collateral,
    PerpBook,
    Population,
)

FloatArray = npt.NDArray[np.float64]
Frame = tuple[int, str, str, Any]
#: A perp position the margin engine closed: (USD-M symbol, signed qty, mark price).
Forced = tuple[str, float, float]


class MarginEngine:
    """Binance's liquidation engine over the unified accounts (state: who is alive)."""

    def __init__(self, pop: Population, coll: dict[str, Collateral], exo_px: FloatArray,
                 marks: FloatArray, liquidations: list[dict[str, Any]]) -> None:
        """``exo_px``: per second, the Binance prices of the assets after the three
        collateral assets (majors, then alts); ``marks``: per second, the USD-M marks of
        the population's perp symbols."""
        self.pop = pop
        self.coll = coll
        self.liquidations = liquidations
        self._exo_px = exo_px
        self._marks = marks
        self._rates = np.array([COLLATERAL_RATE.get(a, ALT_COLLATERAL_RATE) for a in pop.assets])
        self._mmrs = np.array([PERP_MMR.get(s, ALT_PERP_MMR) for s in pop.perp_syms])
        #: Accounts holding perps (the others' perp PnL is a sum of zeros).
        self._perp_rows = np.flatnonzero((pop.perp_qty != 0).any(axis=1))
        self._perp_qty = pop.perp_qty[self._perp_rows]
        self._perp_entry = pop.perp_entry[self._perp_rows]
        self._abs_perp_qty = np.abs(pop.perp_qty)
        self._loan_mm = pop.debt_usdt * LOAN_MMR

    def step(self, t: int, ts: int, valuation: Callable[[], Sequence[float]],
             sell_prices: Callable[[], FloatArray]) -> list[Forced]:
        """Value the accounts at second t and liquidate those below 1.05 uniMMR.

        ``valuation()`` gives the three collateral assets' valuation prices, and
        ``sell_prices()`` the spot price vector non-collateral assets are sold at (both
        asked for only when needed). Returns the perp positions closed.
        """
        pop = self.pop
        if not np.count_nonzero(pop.alive):
            return []
        prices = np.empty(self._exo_px.shape[1] + 3)
        prices[:3] = valuation()
        prices[3:] = self._exo_px[t]
        marks = self._marks[t].copy()
        equity = pop.balance @ (prices * self._rates) - pop.debt_usdt
        equity[self._perp_rows] += (self._perp_qty * (marks[None, :] - self._perp_entry)).sum(axis=1)
        mm = self._loan_mm + self._abs_perp_qty @ (marks * self._mmrs)
        hits = np.flatnonzero(pop.alive & ((equity < 1.05 * mm) | (equity < 0)))
        if not hits.size:
            return []
        sell_px = sell_prices()
        forced: list[Forced] = []
        for a in hits:
            pop.alive[a] = False
            self._sell_collateral(int(a), ts, sell_px)
            for j, sym in enumerate(pop.perp_syms):
                q = float(pop.perp_qty[a, j])
                if q != 0:
                    forced.append((f"{sym}USDT", q, float(marks[j])))
                    self.liquidations.append({
                        "ts_ms": ts, "venue": "binance-usdm", "kind": "perp",
                        "account_id": pop.ids[a], "account_kind": pop.kinds[a],
                        "symbol": f"{sym}USDT", "qty": round(q, 6),
                        "notional_usd": round(abs(q) * float(marks[j]), 2),
                        "avg_price": round(float(marks[j]), 6), "started_ms": ts,
                    })
            self.liquidations.append({
                "ts_ms": ts, "venue": "binance", "kind": "account", "account_id": pop.ids[a],
                "account_kind": pop.kinds[a], "uni_mmr": round(float(equity[a] / mm[a]), 4)
                if mm[a] > 0 else None,
            })
        return forced

    def _sell_collateral(self, a: int, ts: int, sell_px: FloatArray) -> None:
        """Queue account a's collateral assets for forced sale; sell the others at once."""
        pop = self.pop
        for j, asset in enumerate(pop.assets):
            q = float(pop.balance[a, j])
            if q <= 0:
                continue
            if asset in self.coll:
                self.coll[asset].queue.append([float(a), q])
            else:
                self.liquidations.append({
                    "ts_ms": ts, "venue": "binance", "kind": "collateral",
                    "account_id": pop.ids[a], "account_kind": pop.kinds[a], "asset": asset,
                    "qty": round(q, 6), "notional_usd": round(q * float(sell_px[j]), 2),
                    "avg_price": round(float(sell_px[j]), 8), "started_ms": ts,
                })

    def record_sale(self, asset: str, a: int, ts: int) -> None:
        """Record account a's forced sale of ``asset`` (done or, at the end, partial)."""
        c = self.coll[asset]
        qty = c.sold_qty.pop(a)
        usd = c.sold_usd.pop(a)
        self.liquidations.append({
            "ts_ms": ts, "venue": "binance", "kind": "collateral", "account_id": self.pop.ids[a],
            "account_kind": self.pop.kinds[a], "asset": asset, "qty": round(qty, 6),
            "notional_usd": round(usd, 2), "avg_price": round(usd / qty, 6) if qty else 0.0,
            "started_ms": c.started_ms.pop(a),
        })


class PerpDesk:
    """The perp books' liquidation engines: pointers into each book's sorted traders."""

    def __init__(self, books: list[PerpBook], n: int, liquidations: list[dict[str, Any]],
                 trade_ids: Iterator[int]) -> None:
        self.books = books
        self.liquidations = liquidations
        self.trade_ids = trade_ids
        self._due = self._checks(n)

    def _checks(self, n: int) -> dict[int, list[PerpBook]]:
        """Seconds at which a perp book can liquidate, and the books (in book order).

        After second s every long left has its liquidation price below the price at s and
        every short above it, so a book can only liquidate at a new low or high of its path
        (or at the first second).
        """
        due = np.zeros((n, len(self.books)), dtype=bool)
        for i, b in enumerate(self.books):
            low = np.minimum.accumulate(b.path)
            high = np.maximum.accumulate(b.path)
            due[1:, i] = (b.path[1:] < low[:-1]) | (b.path[1:] > high[:-1])
            due[0, i] = True
        out: dict[int, list[PerpBook]] = {}
        for t, i in np.argwhere(due).tolist():
            out.setdefault(t, []).append(self.books[i])
        return out

    def liquidate(self, t: int, ts: int, forced: list[Forced]) -> list[Frame]:
        """Second t's liquidations and their frames; ``forced``: positions the margin
        engine closed (streamed as the symbol's liquidation when the book has none)."""
        frames: list[Frame] = []
        force = {sym: (q, p) for sym, q, p in forced}
        for b in self._due.get(t, ()):
            price = float(b.path[t])
            events: list[tuple[str, float, float]] = []
            while b.li < b.long_liq.size and b.long_liq[b.li] >= price:
                events.append(("long", float(b.long_qty[b.li]), float(b.long_liq[b.li])))
                b.li += 1
            while b.si < b.short_liq.size and b.short_liq[b.si] <= price:
                events.append(("short", float(b.short_qty[b.si]), float(b.short_liq[b.si])))
                b.si += 1
            if not events:
                continue
            for side, q, bk in events:
                self.liquidations.append({
                    "ts_ms": ts, "venue": b.venue, "kind": "perp", "symbol": b.symbol,
                    "side": side, "qty": round(q, 6), "notional_usd": round(q * price, 2),
                    "avg_price": round(price, 6), "bankruptcy_price": round(bk, 6),
                })
            frames += wire.liquidation_frames(b, ts, price, events, self.trade_ids)
            if b.venue == "binance-usdm":
                force.pop(b.symbol, None)
        for sym, (q, p) in force.items():
            b = next(x for x in self.books if x.venue == "binance-usdm" and x.symbol == sym)
            frames += wire.liquidation_frames(b, ts, p, [("long" if q > 0 else "short", abs(q), p)],
                                             self.trade_ids)
        return frames


class AaveMarket:
    """Aave v3 loop positions, checked once per Ethereum block: a position whose health
    factor HF = collateral × price × LT / debt falls below 1 is liquidated (half the debt
    repaid above HF 0.95, all of it below; the liquidator seizes debt / price × (1 + bonus)
    of the collateral, Aave v3's close factor and liquidation bonus)."""

    def __init__(self, positions: list[dict[str, Any]], liquidations: list[dict[str, Any]]) -> None:
        self.positions = positions
        self.alive = np.ones(len(positions), dtype=bool)
        self.liquidations = liquidations
        self._coll = np.array([pos["coll"] for pos in positions])
        self._lt = np.array([pos["lt"] for pos in positions])
        self._debt = np.array([pos["debt"] for pos in positions])
        self._usde = np.array([pos["coll_asset"] == "USDe" for pos in positions])

    def check(self, ts: int, p_usde: float, p_eth: float) -> list[float]:
        """Liquidate what is under water at these prices; the USD each USDe seizure adds to
        the on-chain sell flow, in order (2% of the seized value)."""
        health = self._coll * np.where(self._usde, p_usde, p_eth) * self._lt / self._debt
        flows_usd: list[float] = []
        for i in np.flatnonzero(self.alive & (health < 1.0)).tolist():
            pos = self.positions[i]
            p = p_usde if pos["coll_asset"] == "USDe" else p_eth
            hf = float(health[i])
            self.alive[i] = False
            repaid = pos["debt"] * (0.5 if hf > 0.95 else 1.0)
            seized = min(pos["coll"], repaid / p * (1 + pos["bonus"]))
            if pos["coll_asset"] == "USDe":
                flows_usd.append(seized * p * 0.02)
            self.liquidations.append({
                "ts_ms": ts, "venue": "aave-v3", "kind": pos["kind"],
                "position_id": pos["position_id"], "asset": pos["coll_asset"],
                "qty": round(seized, 6), "notional_usd": round(seized * p, 2),
                "avg_price": round(p, 6), "health_factor": round(hf, 4),
            })
        return flows_usd
