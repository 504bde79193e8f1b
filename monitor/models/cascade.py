"""Cascade stage detector (RISK_MODEL §6) over the other processors' outputs.

Each of the nine stages has a condition evaluated on event time; a stage is *active* while
its condition holds and for ``hold_ms`` after it last held. The detector reports the
highest active stage, the active set and evidence per stage, and emits ``cascade_stage``
alerts when the highest stage rises (escalation) or falls (de-escalation). Stages may
appear out of the seed articles' order (in October the alt crash and the BTC bottom came
before the deep USDe depeg): the alert names the stages that are active or were reached
in this episode while an earlier stage never was, instead of pretending the chain is
complete. An episode ends when no stage is active.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from monitor.alerts import make_alert
from monitor.config import CascadeConfig
from monitor.protocol import Alert, Severity

__all__ = ["ACCOUNTS_SHOWN", "STAGE_NAMES", "AccountSet", "CascadeDetector", "WindowMax"]

#: Account ids a stage's evidence lists (the first in id order).
ACCOUNTS_SHOWN = 20


class AccountSet(NamedTuple):
    """A set of accounts as the cascade sees it: how many, and the first ids in id order
    (at most :data:`ACCOUNTS_SHOWN`)."""

    size: int
    first: list[str]

STAGE_NAMES: dict[int, str] = {
    1: "macro shock",
    2: "risk-off",
    3: "loop unwind",
    4: "USDe depeg",  # the default peg asset; CascadeDetector names the configured ones
    5: "on-chain liquidations",
    6: "margin stress",
    7: "unified liquidations",
    8: "liquidity withdrawal",
    9: "alt crash",
}


class WindowMax:
    """Maximum of a price over a trailing event-time window (monotone deque, O(1) amortised)."""

    __slots__ = ("_q", "window_ms")

    def __init__(self, window_ms: int) -> None:
        self.window_ms = window_ms
        self._q: deque[tuple[int, float]] = deque()

    def push(self, ts_ms: int, value: float) -> float:
        """Add a sample; return the window maximum including it."""
        q = self._q
        while q and q[-1][1] <= value:
            q.pop()
        q.append((ts_ms, value))
        cutoff = ts_ms - self.window_ms
        while q[0][0] < cutoff:
            q.popleft()
        return q[0][1]


def _decay(value: float, dt_ms: float, tau_ms: float) -> float:
    return value * pow(2.718281828459045, -dt_ms / tau_ms) if dt_ms > 0 else value


@dataclass
class _Flow:
    """Decayed flow over a window and its slow EWMA baseline (both event time)."""

    window_ms: int
    baseline_half_life_ms: int
    value: float = 0.0
    baseline: float = 0.0
    ts_ms: int = 0

    def add(self, ts_ms: int, amount: float) -> None:
        dt = ts_ms - self.ts_ms if self.ts_ms else 0
        self.value = _decay(self.value, dt, self.window_ms)
        # baseline follows |flow| slowly (RISK_MODEL §6 "above baseline")
        w = 1.0 - pow(2.0, -dt / self.baseline_half_life_ms) if dt > 0 else 0.0
        self.baseline += w * (abs(self.value) - self.baseline)
        self.value += amount
        self.ts_ms = max(self.ts_ms, ts_ms)

    def now(self, ts_ms: int) -> float:
        return _decay(self.value, ts_ms - self.ts_ms, self.window_ms)


@dataclass
class CascadeDetector:
    """Stage conditions and the highest-stage state machine."""

    cfg: CascadeConfig
    config_hash: str
    excluded_assets: frozenset[str] = frozenset()
    #: The peg monitor's assets: stage 4 is named after them ("USDC depeg").
    peg_assets: tuple[str, ...] = ("USDe",)
    last_true_ms: dict[int, int] = field(default_factory=dict)
    evidence: dict[int, dict[str, Any]] = field(default_factory=dict)
    highest: int = 0
    episode_reached: list[int] = field(default_factory=list)
    episode_start_ms: int | None = None
    highs: dict[str, WindowMax] = field(default_factory=dict)
    prices: dict[str, float] = field(default_factory=dict)
    references: dict[str, float] = field(default_factory=dict)
    liq_flow: _Flow | None = None
    sell_flow: _Flow | None = None
    peg_levels: dict[str, int] = field(default_factory=dict)
    conditions: dict[int, bool] = field(default_factory=dict)
    #: Stage 3 has two signals: net sell flow, and loop deleveraging.
    _stage3: dict[str, tuple[bool, dict[str, Any]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        c = self.cfg
        self.liq_flow = _Flow(c.flow_window_ms, c.flow_baseline_half_life_ms)
        self.sell_flow = _Flow(c.flow_window_ms, c.flow_baseline_half_life_ms)
        self.delever_flow = _Flow(c.flow_window_ms, c.flow_baseline_half_life_ms)

    # -- inputs ------------------------------------------------------------------------
    def on_index_price(self, ts_ms: int, asset: str, price: float) -> None:
        """A consolidated ``ASSET`` price: stage 1 (macro), 2 (alt drawdown), 9 (alt crash)."""
        wm = self.highs.get(asset)
        if wm is None:
            wm = self.highs[asset] = WindowMax(self.cfg.window_ms)
        high = wm.push(ts_ms, price)
        self.prices[asset] = price
        if self.episode_start_ms is not None and asset not in self.references:
            self.references[asset] = high
        c = self.cfg
        if asset in c.macro_assets:
            drops = {
                a: 100.0 * (1 - self.prices[a] / self.highs[a].push(ts_ms, self.prices[a]))
                for a in c.macro_assets if a in self.prices
            }
            worst = max(drops.values()) if drops else 0.0
            hit = worst >= c.macro_drop_pct
            self._set(1, ts_ms, hit, {"drop_pct_60m": {a: round(d, 2) for a, d in sorted(drops.items())}})
        elif self._is_alt(asset):
            self._alt_breadth(ts_ms)

    def _is_alt(self, asset: str) -> bool:
        return asset not in self.cfg.macro_assets and asset not in self.cfg.not_alts and (
            asset not in self.excluded_assets
        )

    #: (len(prices) when it was built, the alts among the priced assets in price order).
    _alts_seen: tuple[int, list[str]] = (-1, [])

    def _alts(self) -> list[str]:
        """The priced assets that are alts, in the order they were first priced (assets are
        only ever added to ``prices``, so its length dates the list)."""
        seen, alts = self._alts_seen
        if seen != len(self.prices):
            alts = [a for a in self.prices if self._is_alt(a)]
            self._alts_seen = (len(self.prices), alts)
        return alts

    def _alt_breadth(self, ts_ms: int) -> None:
        """Stage 2's alt drawdown share and stage 9's crashed alts (RISK_MODEL §6): every alt's
        price against its trailing-window high, each high pushed again at ``ts_ms``."""
        c = self.cfg
        alts = self._alts()
        if not alts:
            return
        prices, highs, limit_pct = self.prices, self.highs, c.alt_drawdown_pct
        down = []
        for a in alts:
            price = prices[a]
            if 100.0 * (1 - price / highs[a].push(ts_ms, price)) >= limit_pct:
                down.append(a)
        down.sort()
        share = len(down) / len(alts)
        self._alt_share = (share, down)
        self._stage2(ts_ms)
        refs, crash_pct = self.references, c.alt_crash_pct
        crashed = sorted(
            a for a in alts
            if a in refs and 100.0 * (1 - prices[a] / refs[a]) >= crash_pct
        )
        self._set(9, ts_ms, bool(crashed), {
            "assets": crashed,
            "drop_pct": {
                a: round(100.0 * (1 - self.prices[a] / self.references[a]), 2) for a in crashed
            },
        })

    _alt_share: tuple[float, list[str]] = (0.0, [])

    def _stage2(self, ts_ms: int) -> None:
        c = self.cfg
        share, down = self._alt_share
        assert self.liq_flow is not None
        flow = self.liq_flow.now(ts_ms)
        base = self.liq_flow.baseline
        flow_hit = flow >= c.min_liquidation_flow_usd and flow >= c.liquidation_flow_ratio * base
        hit = share >= c.alt_breadth_ratio or flow_hit
        self._set(2, ts_ms, hit, {
            "alts_in_drawdown": down,
            "alt_drawdown_share": round(share, 4),
            "liquidation_flow_usd": round(flow, 2),
            "liquidation_flow_baseline_usd": round(base, 2),
        })

    def on_liquidations(self, ts_ms: int, usd: float) -> None:
        assert self.liq_flow is not None
        self.liq_flow.add(ts_ms, usd)
        self._stage2(ts_ms)

    def on_sell_flow(self, ts_ms: int, asset: str, net_sell_usd: float) -> None:
        """Net seller-initiated flow of the flow assets (stage 3, loop unwind)."""
        c = self.cfg
        assert self.sell_flow is not None
        self.sell_flow.add(ts_ms, net_sell_usd)
        flow = self.sell_flow.now(ts_ms)
        base = self.sell_flow.baseline
        hit = flow >= c.min_sell_flow_usd and flow >= c.sell_flow_ratio * base
        self._stage3["sell"] = (hit, {
            "asset": asset, "net_sell_flow_usd": round(flow, 2), "baseline_usd": round(base, 2),
        })
        self._update_stage3(ts_ms)

    def on_deleverage(self, ts_ms: int, repaid_usd: float) -> None:
        """Debt repaid by loop positions (stage 3: loops deleveraging, RISK_MODEL §6)."""
        self.delever_flow.add(ts_ms, repaid_usd)
        repaid = self.delever_flow.now(ts_ms)
        hit = repaid >= self.cfg.min_deleverage_usd
        self._stage3["deleverage"] = (hit, {"loop_debt_repaid_usd": round(repaid, 2)})
        self._update_stage3(ts_ms)

    def _update_stage3(self, ts_ms: int) -> None:
        parts = [self._stage3[k] for k in sorted(self._stage3)]
        evidence: dict[str, Any] = {}
        for _, ev in parts:
            evidence.update(ev)
        self._set(3, ts_ms, any(hit for hit, _ in parts), evidence)

    def on_peg_level(self, ts_ms: int, asset: str, venue: str, level: int, dev_bps: float) -> None:
        self.peg_levels[f"{asset}@{venue}"] = level
        bad = {k: v for k, v in sorted(self.peg_levels.items()) if v >= self.cfg.depeg_min_level}
        self._set(4, ts_ms, bool(bad), {"venues_at_level": bad, "last_dev_bps": {venue: dev_bps}})

    def on_loops(self, ts_ms: int, count: int, notional_usd: float) -> None:
        self._set(5, ts_ms, count > 0, {
            "liquidatable_positions": count, "liquidatable_collateral_usd": round(notional_usd, 2),
        })

    def on_accounts(
        self, ts_ms: int, stressed: AccountSet, liquidating: AccountSet, leverage_jump: float
    ) -> None:
        self._set(6, ts_ms, stressed.size > 0, {
            "accounts_below_margin_call": stressed.size, "accounts": stressed.first[:ACCOUNTS_SHOWN],
            "max_effective_leverage_jump": round(leverage_jump, 3),
        })
        self._set(7, ts_ms, liquidating.size > 0, {
            "accounts_liquidating": liquidating.size, "accounts": liquidating.first[:ACCOUNTS_SHOWN],
        })

    def on_vacuum(self, ts_ms: int, active: bool, books: list[str], share: float) -> None:
        self._set(8, ts_ms, active, {"withdrawn_books": books, "withdrawn_ratio": round(share, 4)})

    # -- state -------------------------------------------------------------------------
    def _set(self, stage: int, ts_ms: int, hit: bool, evidence: dict[str, Any]) -> None:
        self.conditions[stage] = hit
        if hit:
            self.last_true_ms[stage] = ts_ms
            self.evidence[stage] = evidence

    def active(self, ts_ms: int) -> list[int]:
        hold = self.cfg.hold_ms
        return sorted(
            s for s, t in self.last_true_ms.items()
            if self.conditions.get(s) or ts_ms - t <= hold
        )

    def step(self, ts_ms: int, out: list[Alert]) -> None:
        """Re-evaluate the highest stage at ``ts_ms``; append an alert when it changed."""
        active = self.active(ts_ms)
        for s in active:
            if s not in self.episode_reached:
                self.episode_reached.append(s)
        if active and self.episode_start_ms is None:
            self.episode_start_ms = ts_ms
            for a, wm in self.highs.items():
                if a in self.prices:
                    self.references[a] = wm.push(ts_ms, self.prices[a])
        highest = active[-1] if active else 0
        if highest == self.highest:
            if not active and self.episode_start_ms is not None:
                self._end_episode()
            return
        previous, self.highest = self.highest, highest
        out.append(self._alert(ts_ms, previous, highest, active))
        if not active:
            self._end_episode()

    def _end_episode(self) -> None:
        self.episode_start_ms = None
        self.episode_reached = []
        self.references = {}
        self.last_true_ms = {}

    def out_of_order(self) -> list[int]:
        """Stages reached in this episode while some earlier stage never was."""
        reached = set(self.episode_reached)
        return sorted(s for s in reached if any(e not in reached for e in range(1, s)))

    def stage_name(self, stage: int) -> str:
        """A stage's name; stage 4 names the configured peg assets."""
        if stage == 4 and self.peg_assets:
            return f"{'/'.join(self.peg_assets)} depeg"
        return STAGE_NAMES[stage]

    def _alert(self, ts_ms: int, previous: int, highest: int, active: list[int]) -> Alert:
        escalation = highest > previous
        severity: Severity
        if not escalation:
            severity = "info"
        elif highest >= 7:
            severity = "critical"
        elif highest >= 4:
            severity = "high"
        else:
            severity = "warning"
        ooo = self.out_of_order()
        name = self.stage_name(highest) if highest else "none"
        verb = "escalated" if escalation else "de-escalated"
        message = f"cascade {verb} to stage {highest} ({name}); active {active or 'none'}"
        if ooo:
            message += (
                f"; out of the seed order: stage(s) {ooo} reached before earlier stage(s) "
                f"{sorted({e for s in ooo for e in range(1, s)} - set(self.episode_reached))}"
            )
        evidence = {
            "previous_stage": previous,
            "highest_stage": highest,
            "active_stages": active,
            "reached_order": list(self.episode_reached),
            "out_of_order_stages": ooo,
            "stages": {
                str(s): {"name": self.stage_name(s), **self.evidence.get(s, {})} for s in active
            },
        }
        return make_alert(
            kind="cascade_stage",
            ts_ms=ts_ms,
            severity=severity,
            venue=None,
            asset=None,
            message=message,
            evidence=evidence,
            config_hash=self.config_hash,
            identity=f"{previous}->{highest}",
            stage=highest,
        )
