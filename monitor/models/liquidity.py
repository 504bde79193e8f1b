"""Order-book liquidity per (venue, symbol) (RISK_MODEL §4).

Per book: mid, spread, cumulative bid/ask depth in USD within each of
:data:`monitor.events.BOOK_BANDS_BPS`, imbalance, last update time, and an event-time EWMA
baseline of the bid depth within the withdrawal band. A *liquidity withdrawal* is that
depth below ``withdrawal_ratio`` × baseline for ``withdrawal_min_duration_ms`` while the
seller-initiated trade volume (decayed over ``trade_window_ms``) is below
``fill_share_ratio`` × the depth lost: the bids were cancelled, not filled. It clears
when the depth is back above ``recover_ratio`` × baseline. The baseline is frozen while a
book is below the threshold, so a long withdrawal does not become the new normal.

A book whose feed reported a sequence gap (KIND_BOOK_INVALID) feeds nothing — no
baseline, no price, no alert — until its next valid summary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from monitor.alerts import make_alert
from monitor.config import LiquidityConfig
from monitor.events import BOOK_BANDS_BPS
from monitor.protocol import Alert

__all__ = ["BOOK_TRANSITIONS", "TRANSITION_INVALID", "BookState", "LiquidityMonitor", "ewma_weight", "imbalance_ratio"]

N_BANDS = len(BOOK_BANDS_BPS)
#: A book's state transitions by code (:meth:`LiquidityMonitor.on_book` returns 0–3; a book
#: that lost its sequence is code 4): the ``state`` of its stage-2 ``book`` signal.
BOOK_TRANSITIONS: tuple[str, ...] = ("", "warm", "withdrawn", "restored", "invalid")
TRANSITION_INVALID = 4


def ewma_weight(dt_ms: float, half_life_ms: float) -> float:
    """Event-time EWMA weight of a new sample: 1 − 2^(−Δt / half-life) (RISK_MODEL §4 baselines)."""
    if dt_ms <= 0:
        return 0.0
    return 1.0 - math.pow(2.0, -dt_ms / half_life_ms)


def imbalance_ratio(bid_usd: float, ask_usd: float) -> float:
    """Book imbalance (bid − ask) / (bid + ask) within one band, in [−1, 1] (RISK_MODEL §4)."""
    total = bid_usd + ask_usd
    return (bid_usd - ask_usd) / total if total > 0 else 0.0


@dataclass(slots=True)
class BookState:
    """Liquidity state of one (venue, symbol) book."""

    venue: str
    symbol: str
    asset: str
    valid: bool = True
    last_ts_ms: int = 0
    mid_usd: float = 0.0
    spread_bps: float = 0.0
    bid_usd: tuple[float, ...] = ()
    ask_usd: tuple[float, ...] = ()
    baseline_usd: float | None = None
    baseline_ts_ms: int = 0
    first_ts_ms: int | None = None
    updates: int = 0
    sell_usd: float = 0.0
    sell_ts_ms: int = 0
    below_since_ms: int | None = None
    withdrawn: bool = False
    withdrawn_since_ms: int | None = None
    warm: bool = False
    last_depth_signal_ms: int | None = None

    def decayed_sell_usd(self, ts_ms: int, window_ms: int) -> float:
        """Seller-initiated volume decayed with time constant ``window_ms`` to ``ts_ms``."""
        dt = ts_ms - self.sell_ts_ms
        return self.sell_usd * math.exp(-dt / window_ms) if dt > 0 else self.sell_usd

    def imbalance(self, band_index: int) -> float:
        if not self.bid_usd:
            return 0.0
        return imbalance_ratio(self.bid_usd[band_index], self.ask_usd[band_index])

    def to_state(self) -> dict[str, Any]:
        return {
            "asset": self.asset,
            "baseline_usd": self.baseline_usd,
            "baseline_ts_ms": self.baseline_ts_ms,
            "first_ts_ms": self.first_ts_ms,
            "updates": self.updates,
            "withdrawn": self.withdrawn,
            "withdrawn_since_ms": self.withdrawn_since_ms,
            "warm": self.warm,
        }

    @classmethod
    def from_state(cls, venue: str, symbol: str, state: dict[str, Any]) -> BookState:
        return cls(
            venue=venue,
            symbol=symbol,
            asset=str(state["asset"]),
            baseline_usd=state["baseline_usd"],
            baseline_ts_ms=int(state["baseline_ts_ms"]),
            first_ts_ms=state["first_ts_ms"],
            updates=int(state["updates"]),
            withdrawn=bool(state["withdrawn"]),
            withdrawn_since_ms=state["withdrawn_since_ms"],
            warm=bool(state["warm"]),
        )


class LiquidityMonitor:
    """All books of the assets one engine owns; alerts and state transitions per book."""

    def __init__(self, config: LiquidityConfig, config_hash: str) -> None:
        self.cfg = config
        self.config_hash = config_hash
        self.band_index = BOOK_BANDS_BPS.index(config.withdrawal_band_bps)
        self.books: dict[tuple[str, str], BookState] = {}

    def book(self, venue: str, symbol: str, asset: str) -> BookState:
        key = (venue, symbol)
        st = self.books.get(key)
        if st is None:
            st = self.books[key] = BookState(venue=venue, symbol=symbol, asset=asset)
        return st

    def on_invalid(self, st: BookState, ts_ms: int) -> None:
        """Sequence gap: the book feeds nothing until its next valid summary."""
        st.valid = False
        st.below_since_ms = None
        st.last_ts_ms = max(st.last_ts_ms, ts_ms)

    def on_trade(self, st: BookState, ts_ms: int, notional_usd: float, side: float) -> None:
        """A trade print: seller-initiated volume counts as fills against the bids."""
        if side >= 0:
            return
        window = self.cfg.trade_window_ms
        st.sell_usd = st.decayed_sell_usd(ts_ms, window) + notional_usd
        st.sell_ts_ms = max(st.sell_ts_ms, ts_ms)

    def on_book(
        self, st: BookState, ts_ms: int, row: list[float], usd: float, out: list[Alert]
    ) -> int:
        """A book summary (prices and depths in quote units × ``usd``).

        Returns a transition code: 0 none, 1 became warm, 2 withdrawal started,
        3 withdrawal ended.
        """
        cfg = self.cfg
        st.valid = True
        st.last_ts_ms = ts_ms
        st.mid_usd = row[6] * usd
        st.spread_bps = row[7]
        bands = row[8:]
        st.bid_usd = tuple(x * usd for x in bands[:N_BANDS])
        st.ask_usd = tuple(x * usd for x in bands[N_BANDS:])
        depth = st.bid_usd[self.band_index]
        st.updates += 1
        if st.first_ts_ms is None:
            st.first_ts_ms = ts_ms
        base = st.baseline_usd
        if base is None:
            st.baseline_usd = base = depth
            st.baseline_ts_ms = ts_ms
        elif st.below_since_ms is None and not st.withdrawn:
            base += ewma_weight(ts_ms - st.baseline_ts_ms, cfg.baseline_half_life_ms) * (depth - base)
            st.baseline_usd = base
            st.baseline_ts_ms = max(st.baseline_ts_ms, ts_ms)
        code = 0
        if not st.warm:
            if (
                st.updates >= cfg.warmup_updates
                and ts_ms - st.first_ts_ms >= cfg.warmup_ms
                and base >= cfg.min_baseline_usd
            ):
                st.warm = True
                code = 1
            else:
                return 0
        lost = base - depth
        below = (
            depth < cfg.withdrawal_ratio * base
            and st.decayed_sell_usd(ts_ms, cfg.trade_window_ms) < cfg.fill_share_ratio * lost
        )
        if below:
            if st.below_since_ms is None:
                st.below_since_ms = ts_ms
            if not st.withdrawn and ts_ms - st.below_since_ms >= cfg.withdrawal_min_duration_ms:
                st.withdrawn = True
                st.withdrawn_since_ms = st.below_since_ms
                out.append(self._alert(st, ts_ms, depth, base, started=True))
                return 2
            return code
        st.below_since_ms = None
        if st.withdrawn and depth >= cfg.recover_ratio * base:
            st.withdrawn = False
            out.append(self._alert(st, ts_ms, depth, base, started=False))
            st.withdrawn_since_ms = None
            return 3
        return code

    def _alert(
        self, st: BookState, ts_ms: int, depth: float, base: float, *, started: bool
    ) -> Alert:
        band = self.cfg.withdrawal_band_bps
        ratio = depth / base if base > 0 else 0.0
        sells = st.decayed_sell_usd(ts_ms, self.cfg.trade_window_ms)
        evidence = {
            "symbol": st.symbol,
            "band_bps": band,
            "bid_depth_usd": round(depth, 2),
            "baseline_usd": round(base, 2),
            "depth_of_baseline_ratio": round(ratio, 4),
            "sell_volume_usd": round(sells, 2),
            "depth_lost_usd": round(max(base - depth, 0.0), 2),
            "spread_bps": round(st.spread_bps, 2),
            "mid_usd": st.mid_usd,
            "since_ts_ms": st.withdrawn_since_ms,
            "state": "withdrawn" if started else "restored",
        }
        if started:
            message = (
                f"{st.venue} {st.symbol}: bid depth within {band} bps {depth / 1e6:,.2f}M USD = "
                f"{ratio:.0%} of baseline {base / 1e6:,.2f}M with sell volume {sells / 1e6:,.2f}M "
                "(cancels, not fills)"
            )
        else:
            message = (
                f"{st.venue} {st.symbol}: bid depth within {band} bps back to "
                f"{ratio:.0%} of baseline"
            )
        return make_alert(
            kind="liquidity_withdrawal",
            ts_ms=ts_ms,
            severity="high" if started else "info",
            venue=st.venue,
            asset=st.asset,
            message=message,
            evidence=evidence,
            config_hash=self.config_hash,
            identity=f"{st.symbol}|{'on' if started else 'off'}",
        )
