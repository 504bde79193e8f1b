"""The global risk stage (stage 2): prices by key, loops, unified accounts, vacuum, cascade, spiral.

One instance sees every signal of every market partition, in the deterministic order of
:class:`monitor.signals.ReorderBuffer`, plus the lending positions (``positions.loops``)
and unified accounts (``accounts.unified``). Signals are applied one event time at a
time; after each time the positions and accounts that use a price key that moved are
re-evaluated (RISK_MODEL §2, §3), the breadth of liquidity withdrawal is checked (§4), the
cascade detector steps (§6) and, on its event-time timer, the spiral estimate runs for the
standard shocks (§7). Pure: no I/O, no clock.

A facade over its pieces: the prices (:mod:`monitor.stages.global_risk.price_book`), the unified accounts
(:mod:`monitor.accounts.watch`), the loop positions (:mod:`monitor.stages.global_risk.loop_watch`), the
liquidity vacuum (:mod:`monitor.stages.global_risk.vacuum_watch`) and the spiral estimate on its event-time
timer (:mod:`monitor.stages.global_risk.spiral_clock`); the cascade detector sees what each of them finds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from monitor.accounts.vector_margin import status_counts
from monitor.accounts.watch import default_balance_price_key, price_key_units, status_slack_usd
from monitor.config import EngineConfig
from monitor.models.cascade import CascadeDetector
from monitor.models.loops.lending import Position
from monitor.models.margin import STATUSES, AccountResult
from monitor.protocol import (
    Alert,
    BookSignal,
    DepthSignal,
    FlowSignal,
    LiqSignal,
    PegSignal,
    PriceSignal,
    RiskSnapshot,
    SignalPayload,
)
from monitor.snapshots import DEFAULT_SNAPSHOT_INTERVAL_MS, SnapshotClock
from monitor.stages.global_risk.account_book import BookWatch
from monitor.stages.global_risk.loop_watch import LoopWatch
from monitor.stages.global_risk.ordered import AccountCadence, OrderedStage
from monitor.stages.global_risk.price_book import PriceBook
from monitor.stages.global_risk.shards import SHORTFALLS_SHOWN, ShardedAccounts, VenueFigures, venue_figures
from monitor.stages.global_risk.spiral_clock import SpiralClock
from monitor.stages.global_risk.spiral_gate import SpiralGate
from monitor.stages.global_risk.vacuum_watch import VacuumWatch
from monitor.stages.spiral import SpiralResult

__all__ = [
    "GlobalRisk",
    "RiskFigures",
    "default_balance_price_key",
    "price_key_units",
    "status_slack_usd",
]


@dataclass
class RiskFigures:
    """Aggregates for metrics and snapshots (not part of the alert stream)."""

    loops: list[dict[str, Any]] = field(default_factory=list)
    hf_bands: dict[tuple[str, str], int] = field(default_factory=dict)
    accounts_by_status: dict[tuple[str, str], int] = field(default_factory=dict)
    leverage_quantiles: dict[tuple[str, str], float] = field(default_factory=dict)
    shortfalls: dict[tuple[str, str], float] = field(default_factory=dict)
    withdrawn_ratio: float = 0.0
    stage: int = 0
    active_stages: list[int] = field(default_factory=list)
    spiral_liquidated_usd: dict[str, float] = field(default_factory=dict)


class GlobalRisk(OrderedStage):
    """Stage 2: apply ordered signals; evaluate loops and accounts; cascade; spiral.

    With ``account_shards`` > 0 it is the aggregation stage of a sharded global stage
    (:mod:`monitor.stages.global_risk.sharded`): the accounts live on that many shards and
    their evaluations arrive as the shards' reports, merged."""

    def __init__(
        self, config: EngineConfig, partitions: int,
        snapshot_interval_ms: int = DEFAULT_SNAPSHOT_INTERVAL_MS, account_shards: int = 0,
    ) -> None:
        super().__init__(partitions)
        self.config = config
        self.config_hash = config.config_hash
        self.params = config.risk
        self.price_book = PriceBook(config.ingest.quote_prices_usd)
        #: Unified accounts on a columnar book: evaluation, status sets, latched alerts
        #: (monitor/stages/global_risk/account_book.py; the scalar reference is monitor/accounts/watch.py).
        self.watch = BookWatch(config)
        #: Loop positions and their book (monitor/stages/global_risk/loop_watch.py).
        self.loops = LoopWatch(self.params)
        #: When the accounts are evaluated (the same rule on every account shard).
        self.cadence = AccountCadence(config.signals.account_eval_interval_ms)
        #: The account shards' merged reports (None: the accounts are evaluated here).
        self.shard_reports = ShardedAccounts(account_shards) if account_shards else None
        self.vacuum = VacuumWatch(config.liquidity, self.config_hash)
        run = config.spiral_run
        self.spiral_clock = SpiralClock(self.params, run.interval_ms, run.tolerance_ratio, run.threads)
        self.cascade = CascadeDetector(
            config.cascade,
            self.config_hash,
            excluded_assets=frozenset(config.peg.assets) | frozenset(config.ingest.quote_prices_usd),
            peg_assets=config.peg.assets,
        )
        #: Risk snapshots on an event-time interval (see :meth:`take_snapshots`).
        self.snapshot_clock = SnapshotClock(snapshot_interval_ms)
        self._snapshots: list[RiskSnapshot] = []

    # -- positions and accounts ----------------------------------------------------------
    @property
    def prices(self) -> dict[str, float]:
        """Latest price by key (monitor/stages/global_risk/price_book.py)."""
        return self.price_book.prices

    @property
    def positions(self) -> dict[str, Position]:
        """Loop positions by id (monitor/stages/global_risk/loop_watch.py)."""
        return self.loops.positions

    def upsert_position(self, raw: Mapping[str, Any]) -> None:
        """Add, replace (same id) or delete (``{"position_id", "delete": true}``) a position."""
        new, repaid = self.loops.upsert(raw, self.prices)
        if new is not None:
            self.price_book.register_derived(new.price_keys())
        if repaid > 0:
            self.cascade.on_deleverage(self.now_ms, repaid)

    def upsert_account(self, raw: Mapping[str, Any]) -> None:
        """Add, replace or delete a unified account; balances without a price key get one.
        (Sharded: the account lives on its shard; here the accounts' clock hears of it and,
        unless ``spiral_run.copy_sharded_accounts`` is false, the spirals' copy takes it.)"""
        if "account_id" not in raw:  # refused by every reader alike
            raise KeyError("account_id")
        if not raw.get("delete"):
            self.cadence.loaded()  # before the account is checked, as every shard hears of it
            self.wake(self.cadence)
        if self.shard_reports is None:
            keys = self.watch.upsert(raw, self.now_ms)
        elif self.config.spiral_run.copy_sharded_accounts:
            keys = self._copy_account(raw)
        else:
            return
        if keys is not None:
            self.price_book.add_keys(keys)

    def _copy_account(self, raw: Mapping[str, Any]) -> frozenset[str] | None:
        """Sharded: the aggregation's copy of an account, for the spirals only (never
        evaluated here). A record the account's shard refuses (and dead-letters) is refused
        here alike, silently: any earlier version is gone on both."""
        try:
            return self.watch.upsert(raw, self.now_ms)
        except (KeyError, TypeError, ValueError):
            return None

    @property
    def account_count(self) -> int:
        """Unified accounts held (here, or over the shards)."""
        if self.shard_reports is not None:
            return self.shard_reports.accounts
        return len(self.watch.accounts)

    @property
    def accounts_left_out_of_spirals(self) -> int | None:
        """Sharded without the aggregation's copy of the accounts
        (``spiral_run.copy_sharded_accounts`` false): the accounts the spirals leave out,
        all of them; else None (the spirals cover every priced account)."""
        if self.shard_reports is None or self.config.spiral_run.copy_sharded_accounts:
            return None
        return self.account_count

    @property
    def has_accounts(self) -> bool:
        """Whether any unified account is held (here or on the shards)."""
        return self.account_count > 0

    @property
    def accounts(self) -> dict[str, bytes]:
        """Unified accounts by id, each as its checked JSON document."""
        return self.watch.accounts

    def account_result(self, account_id: str) -> AccountResult | None:
        """The latest evaluation of one account (None: unknown or not evaluated yet)."""
        return self.watch.result(account_id)

    def alert_latches(self) -> dict[str, int]:
        """Per account, the highest status rank already alerted (1 margin call … 3 liquidation)."""
        return self.watch.latches.export()

    def take_latch_changes(self) -> dict[str, int | None]:
        """Latches changed since the last call: account id → rank, or None when released."""
        return self.watch.latches.take_changes()

    def restore_alert_latches(self, latches: Mapping[str, int]) -> None:
        """Reinstate exported latches (after the accounts): a restart does not re-alert."""
        self.watch.restore_alert_latches(latches)

    def _evaluate_accounts(self, ts: int, out: list[Alert]) -> None:
        changed = self.cadence.take(ts)
        shards = self.shard_reports
        if shards is not None:
            merged = shards.take(ts)
            if merged.sets_changed or merged.jump > 0.0:
                self.cascade.on_accounts(ts, merged.stressed, merged.liquidating, merged.jump)
            return
        sets_changed, jump = self.watch.evaluate(ts, changed, self.prices, out)
        if sets_changed or jump > 0.0:
            self.cascade.on_accounts(ts, self.watch.stressed_set(), self.watch.liquidating_set(), jump)

    # -- signals -----------------------------------------------------------------------
    def _finish_run(self, out: list[Alert]) -> None:
        """Evaluate the accounts whose prices moved since their last (throttled) evaluation."""
        if self.cadence.pending:
            self._evaluate_accounts(self.now_ms, out)
            self.cascade.step(self.now_ms, out)
        if self.positions or self.has_accounts:
            self._snapshots.append(self.snapshot())

    def _apply(
        self, ts: int, asset: str, kind: str, p: SignalPayload, changed: set[str],
        out: list[Alert],
    ) -> None:
        """One signal, by kind (its fields were checked when its record was decoded)."""
        if kind == "price":
            moved = cast(PriceSignal, p)
            price = self.price_book.apply(moved, changed)
            if price is not None and moved["key"] == asset:
                self.cascade.on_index_price(ts, asset, price)
        elif kind == "peg":
            peg = cast(PegSignal, p)
            self.cascade.on_peg_level(ts, asset, str(peg["venue"]), int(peg["level"]), float(peg["dev_bps"]))
        elif kind == "book":
            active, books, share = self.vacuum.on_book(ts, cast(BookSignal, p), out)
            self.cascade.on_vacuum(ts, active, books, share)
        elif kind == "depth":
            self.spiral_clock.on_depth(cast(DepthSignal, p))
        elif kind == "liq":
            liq = cast(LiqSignal, p)
            self.cascade.on_liquidations(ts, float(liq["long_usd"]) + float(liq["short_usd"]))
        elif kind == "flow":
            self.cascade.on_sell_flow(ts, asset, float(cast(FlowSignal, p)["net_sell_usd"]))

    # -- evaluation --------------------------------------------------------------------
    def _evaluate(self, ts: int, changed: set[str], out: list[Alert]) -> None:
        self.price_book.take_changed(changed)
        if self.positions:
            self.cascade.on_loops(ts, *self.loops.evaluate(changed, self.prices))
        self.cadence.moved(changed)
        if self.cadence.due(ts):
            self._evaluate_accounts(ts, out)
        self.cascade.step(ts, out)
        held = bool(self.positions) or self.has_accounts
        if self.spiral_clock.interval_ms and held and self.spiral_clock.due(ts):
            self.run_standard_shocks()
        if held and self.snapshot_clock.due(ts):
            self._snapshots.append(self.snapshot())

    # -- spiral (RISK_MODEL §7) ----------------------------------------------------------
    @property
    def spiral_results(self) -> dict[str, SpiralResult]:
        """The latest result of each standard shock (monitor/stages/global_risk/spiral_clock.py)."""
        return self.spiral_clock.spiral_results

    def spiral(self, shocks: Mapping[str, float]) -> SpiralResult:
        """Spiral estimate on the live state for one shock (on demand)."""
        return self.spiral_clock.spiral(self.positions, self.watch.on_book(self.prices), self.prices, shocks)

    @property
    def spiral_gate(self) -> SpiralGate:
        """Whether the last standard-shock run re-ran, and why (``decision``)."""
        return self.spiral_clock.gate

    def run_standard_shocks(self) -> dict[str, SpiralResult]:
        """The configured standard shocks whose price keys are known (others are skipped), when
        their inputs moved beyond the tolerance since the last run (else that run's results)."""
        return self.spiral_clock.run_standard_shocks(
            self.positions, self.accounts, lambda: self.watch.on_book(self.prices), self.prices, self.now_ms
        )

    def spiral_liquidated_usd(self) -> dict[str, float]:
        """Notional liquidated (all stages) of the latest run of each standard shock, USD."""
        return self.spiral_clock.liquidated_usd()

    # -- snapshots ---------------------------------------------------------------------
    def snapshot(self) -> RiskSnapshot:
        """The figures of the report at the latest event time (vectorised over loop positions)."""
        hf_bands, ladder, at_risk_usd = self.loops.snapshot_figures()
        shards = self.shard_reports
        if shards is not None:
            counts, forced_sell_usd = shards.status_counts(), shards.forced_sell_usd()
        else:
            counts = status_counts(self.watch.result_columns().status)
            forced_sell_usd = self.watch.forced_sell_usd
        statuses = {STATUSES[code]: n for code, n in enumerate(counts) if n}
        return RiskSnapshot(
            ts_ms=self.now_ms,
            hf_bands=hf_bands,
            ladder_usd=ladder,
            loops_liquidatable=len(self.loops.loops_liquidatable),
            loops_liquidatable_usd=at_risk_usd,
            accounts_by_status=dict(sorted(statuses.items())),
            forced_sell_usd_by_asset=dict(sorted(forced_sell_usd.items())),
            spiral_usd_by_shock=self.spiral_liquidated_usd(),
            stage=self.cascade.highest,
            active_stages=tuple(self.cascade.active(self.now_ms)),
            withdrawn_ratio=self.vacuum.withdrawn_ratio(),
        )

    def take_snapshots(self) -> list[RiskSnapshot]:
        """Snapshots taken since the last call, oldest first (the caller forwards them)."""
        taken, self._snapshots = self._snapshots, []
        return taken

    # -- figures -----------------------------------------------------------------------
    def figures(self) -> RiskFigures:
        """Aggregates for metrics (closed label sets: protocol, asset, venue, bands, ranks).
        With account shards, the accounts' per-venue figures are merged from the shards'
        (the same figures: every one of them merges exactly)."""
        fig = RiskFigures()
        fig.loops, fig.hf_bands = self.loops.figures(self.prices)
        shards = self.shard_reports
        if shards is not None:
            for vf in shards.venues():
                _add_venue(fig, vf)
        else:
            for vf in venue_figures(self.watch.result_columns()):
                _add_venue(fig, vf)
        fig.withdrawn_ratio = self.vacuum.withdrawn_ratio()
        fig.stage = self.cascade.highest
        fig.active_stages = self.cascade.active(self.now_ms)
        fig.spiral_liquidated_usd = self.spiral_liquidated_usd()
        return fig


def _add_venue(fig: RiskFigures, vf: VenueFigures) -> None:
    """One venue's accounts by status, its largest effective leverage, its median and 0.9
    quantile from the sketch (within a relative 0.5 %, ``leverage_sketch``) and its five
    largest shortfalls max(MM − adjusted equity, 0) (RISK_MODEL §3; 0 for ranks beyond its
    accounts)."""
    for code, n in enumerate(vf.by_status):
        if n:
            fig.accounts_by_status[(vf.venue, STATUSES[code])] = n
    if vf.leverage_max is not None:
        fig.leverage_quantiles[(vf.venue, "max")] = vf.leverage_max
    for q in ("0.5", "0.9"):
        value = vf.leverage.quantile(float(q))
        if value is not None:
            fig.leverage_quantiles[(vf.venue, q)] = value
    for rank in range(SHORTFALLS_SHOWN):
        fig.shortfalls[(vf.venue, str(rank + 1))] = vf.shortfalls_usd[rank] if rank < len(vf.shortfalls_usd) else 0.0
