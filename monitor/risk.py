"""The global risk stage (stage 2): prices by key, loops, unified accounts, vacuum, cascade, spiral.

One instance sees every signal of every market partition, in the deterministic order of
:class:`monitor.signals.ReorderBuffer`, plus the lending positions (``positions.loops``)
and unified accounts (``accounts.unified``). Signals are applied one event time at a
time; after each time the positions and accounts that use a price key that moved are
re-evaluated (RISK_MODEL §2, §3), the breadth of liquidity withdrawal is checked (§4), the
cascade detector steps (§6) and, on its event-time timer, the spiral estimate runs for the
standard shocks (§7). Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from monitor.account_watch import AccountWatch, default_balance_price_key, price_key_units, status_slack_usd
from monitor.alerts import Alert, make_alert
from monitor.cascade import CascadeDetector
from monitor.config import EngineConfig
from monitor.lending import LoopBook, Position, health_factor
from monitor.margin import Account, AccountResult
from monitor.signals import ReorderBuffer, Signal, SignalRecord
from monitor.snapshots import DEFAULT_SNAPSHOT_INTERVAL_MS, RiskSnapshot, SnapshotClock
from monitor.spiral import SpiralResult, run_spiral
from monitor.spiral_gate import SpiralGate, SpiralInputs

__all__ = [
    "HF_BANDS",
    "GlobalRisk",
    "RiskFigures",
    "default_balance_price_key",
    "price_key_units",
    "status_slack_usd",
]

#: Health-factor bands of the ``liqmon_loops_positions`` metric.
HF_BANDS: tuple[tuple[str, float], ...] = (
    ("<1", 1.0), ("1-1.05", 1.05), ("1.05-1.1", 1.1), ("1.1-1.25", 1.25), ("1.25-1.5", 1.5),
    (">=1.5", float("inf")),
)
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


class GlobalRisk:
    """Stage 2: apply ordered signals; evaluate loops and accounts; cascade; spiral."""

    def __init__(
        self, config: EngineConfig, partitions: int,
        snapshot_interval_ms: int = DEFAULT_SNAPSHOT_INTERVAL_MS,
    ) -> None:
        self.config = config
        self.config_hash = config.config_hash
        self.params = config.risk
        self.buffer = ReorderBuffer(partitions)
        #: The run whose last end marker the latest push() brought in (else None).
        self.finished_run: str | None = None
        self.prices: dict[str, float] = dict(config.ingest.quote_prices_usd)
        self.positions: dict[str, Position] = {}
        #: Unified accounts: evaluation, status sets, latched alerts (monitor/account_watch.py).
        self.watch = AccountWatch(config)
        self.loop_book: LoopBook | None = None
        self._book_dirty = False
        self._pending_keys: set[str] = set()
        #: Price keys moved since the accounts were last evaluated, and when that was.
        self._account_keys: set[str] = set()
        #: ``rate:A/B*C`` → (rate key, base key)
        self._derived: dict[str, tuple[str, str]] = {}
        self._last_account_eval_ms: int | None = None
        self.loops_liquidatable: set[str] = set()
        self._loops_notional = 0.0
        self._book_ids: list[str] = []
        self.monitored_books: set[str] = set()
        self.withdrawn_books: set[str] = set()
        self.vacuum_active = False
        self.ladders: dict[str, list[list[float]]] = {}
        self.spiral_results: dict[str, SpiralResult] = {}
        self.next_spiral_ms: int | None = None
        self.spiral_gate = SpiralGate(config.spiral_run.tolerance_ratio)
        self.now_ms = 0
        self.cascade = CascadeDetector(
            config.cascade,
            self.config_hash,
            excluded_assets=frozenset(config.peg.assets) | frozenset(config.ingest.quote_prices_usd),
            peg_assets=config.peg.assets,
        )
        self.alerts_emitted = 0
        #: Risk snapshots on an event-time interval (see :meth:`take_snapshots`).
        self.snapshot_clock = SnapshotClock(snapshot_interval_ms)
        self._snapshots: list[RiskSnapshot] = []

    # -- positions and accounts ----------------------------------------------------------
    def upsert_position(self, raw: Mapping[str, Any]) -> None:
        """Add, replace (same id) or delete (``{"position_id", "delete": true}``) a position."""
        pid = str(raw["position_id"])
        old = self.positions.get(pid)
        if raw.get("delete"):
            self.positions.pop(pid, None)
            new = None
        else:
            new = self.positions[pid] = Position.model_validate(raw)
            self._register_derived(new.price_keys())
        self._book_dirty = True
        if old is not None:
            repaid = self._debt_usd(old) - (self._debt_usd(new) if new is not None else 0.0)
            if repaid > 0:
                self.cascade.on_deleverage(self.now_ms, repaid)

    def _debt_usd(self, position: Position) -> float:
        """Debt of a position at the latest prices (unpriced legs count as zero)."""
        return sum(d.amount * self.prices.get(d.price_key, 0.0) for d in position.debt)

    def upsert_account(self, raw: Mapping[str, Any]) -> None:
        """Add, replace or delete a unified account; balances without a price key get one."""
        account = self.watch.upsert(raw, self.now_ms)
        if account is not None:
            self._register_derived(account.price_keys())
            self._pending_keys.update(account.price_keys())

    @property
    def accounts(self) -> dict[str, Account]:
        return self.watch.accounts

    @property
    def account_results(self) -> dict[str, AccountResult]:
        return self.watch.results

    def alert_latches(self) -> dict[str, int]:
        """Per account, the highest status rank already alerted (1 margin call … 3 liquidation)."""
        return self.watch.alert_latches()

    def take_latch_changes(self) -> dict[str, int | None]:
        """Latches changed since the last call: account id → rank, or None when released."""
        return self.watch.take_latch_changes()

    def restore_alert_latches(self, latches: Mapping[str, int]) -> None:
        """Reinstate exported latches (after the accounts): a restart does not re-alert."""
        self.watch.restore_alert_latches(latches)

    def _evaluate_accounts(self, ts: int, changed: set[str], out: list[Alert]) -> None:
        sets_changed, jump = self.watch.evaluate(ts, changed, self.prices, out)
        if sets_changed or jump > 0.0:
            self.cascade.on_accounts(ts, self.watch.stressed(), self.watch.liquidating(), jump)

    # -- derived price keys --------------------------------------------------------------
    def _register_derived(self, keys: Iterable[str]) -> None:
        """Remember ``rate:A/B*C`` keys: a rate feed times another key (RISK_MODEL §1)."""
        for key in keys:
            if key.startswith("rate:") and "*" in key and key not in self._derived:
                rate, _, base = key.partition("*")
                self._derived[key] = (rate, base)
                self._pending_keys.add(key)

    def _derive_keys(self, changed: set[str]) -> None:
        """Recompute every derived key whose rate or base moved; mark it changed too."""
        prices = self.prices
        for key, (rate, base) in self._derived.items():
            if (rate in changed or base in changed or key in changed) and rate in prices and base in prices:
                prices[key] = prices[rate] * prices[base]
                changed.add(key)

    # -- signals -----------------------------------------------------------------------
    def push(self, rec: SignalRecord) -> list[Alert]:
        """Buffer one record; process what the watermarks release (everything at run end)."""
        buffer = self.buffer
        buffer.push(rec)
        finished = rec.end is not None and buffer.run_ended(rec.end)
        self.finished_run = rec.end if finished else None
        if rec.end is not None and finished:
            buffer.reset_run(rec.end)
        # A finished run releases everything, unless another run is part-way through its
        # end markers (a redelivered run interleaved with the next): then watermarks rule.
        flush = finished and not buffer.runs_in_progress
        out = self.process(buffer.release(flush=flush))
        if finished:
            self._finish_run(out)
        return out

    def flush(self) -> list[Alert]:
        """Process every buffered signal (end of an inline run)."""
        out = self.process(self.buffer.release(flush=True))
        self._finish_run(out)
        return out

    def _finish_run(self, out: list[Alert]) -> None:
        """Evaluate the accounts whose prices moved since their last (throttled) evaluation."""
        if self.accounts and self._account_keys:
            self._evaluate_accounts(self.now_ms, self._account_keys, out)
            self._account_keys = set()
            self._last_account_eval_ms = self.now_ms
            self.cascade.step(self.now_ms, out)
        if self.positions or self.accounts:
            self._snapshots.append(self.snapshot())

    def process(self, signals: Iterable[Signal]) -> list[Alert]:
        """Apply ordered signals, evaluating after each distinct event time."""
        out: list[Alert] = []
        changed: set[str] = set()
        current: int | None = None
        for ts, asset, _seq, kind, payload in signals:
            if current is not None and ts != current:
                self._evaluate(current, changed, out)
                changed = set()
            current = ts
            self._apply(ts, asset, kind, payload, changed, out)
        if current is not None:
            self._evaluate(current, changed, out)
        self.alerts_emitted += len(out)
        return out

    def _apply(
        self, ts: int, asset: str, kind: str, p: dict[str, Any], changed: set[str],
        out: list[Alert],
    ) -> None:
        self.now_ms = max(self.now_ms, ts)
        if kind == "price":
            key, price = str(p["key"]), float(p["price"])
            if price > 0:
                self.prices[key] = price
                changed.add(key)
                if key == asset:
                    self.cascade.on_index_price(ts, asset, price)
        elif kind == "peg":
            self.cascade.on_peg_level(ts, asset, str(p["venue"]), int(p["level"]),
                                      float(p["dev_bps"]))
        elif kind == "book":
            self._on_book(ts, asset, p, out)
        elif kind == "depth":
            mid = float(p["mid"])
            levels: list[list[float]] = []
            prev = 0.0
            for bps, cum in zip(
                (10, 50, 100, 200, 500), (float(x) for x in p["bid_usd"]), strict=False
            ):
                px = mid * (1.0 - bps / 10_000.0)
                if cum > prev and px > 0:
                    levels.append([px, (cum - prev) / px])
                    prev = cum
            self.ladders[str(p["key"])] = levels
        elif kind == "liq":
            self.cascade.on_liquidations(ts, float(p["long_usd"]) + float(p["short_usd"]))
        elif kind == "flow":
            self.cascade.on_sell_flow(ts, asset, float(p["net_sell_usd"]))

    def _on_book(self, ts: int, asset: str, p: dict[str, Any], out: list[Alert]) -> None:
        name = f"{p['venue']}:{p['symbol']}"
        state = p["state"]
        if state == "warm":
            self.monitored_books.add(name)
        elif state == "withdrawn":
            self.monitored_books.add(name)
            self.withdrawn_books.add(name)
        elif state == "restored":
            self.withdrawn_books.discard(name)
        elif state == "invalid":
            self.monitored_books.discard(name)
            self.withdrawn_books.discard(name)
        lq = self.config.liquidity
        n = len(self.monitored_books)
        share = len(self.withdrawn_books) / n if n else 0.0
        active = n >= lq.vacuum_min_books and share >= lq.vacuum_share_ratio
        books = sorted(self.withdrawn_books)
        if active != self.vacuum_active:
            self.vacuum_active = active
            out.append(make_alert(
                kind="liquidity_vacuum",
                ts_ms=ts,
                severity="critical" if active else "info",
                venue=None,
                asset=None,
                message=(
                    f"liquidity vacuum: bids withdrawn on {len(books)} of {n} monitored books"
                    if active else f"liquidity vacuum over: {len(books)} of {n} books withdrawn"
                ),
                evidence={"withdrawn_books": books, "monitored_books": n,
                          "withdrawn_ratio": round(share, 4)},
                config_hash=self.config_hash,
                identity="on" if active else "off",
            ))
        self.cascade.on_vacuum(ts, active, books, share)

    # -- evaluation --------------------------------------------------------------------
    def _evaluate(self, ts: int, changed: set[str], out: list[Alert]) -> None:
        changed |= self._pending_keys
        self._pending_keys = set()
        self._derive_keys(changed)
        if self.positions:
            self._evaluate_loops(ts, changed)
        if self.accounts:
            self._account_keys |= changed
            last = self._last_account_eval_ms
            if self._account_keys and (
                last is None or ts - last >= self.config.signals.account_eval_interval_ms
            ):
                self._evaluate_accounts(ts, self._account_keys, out)
                self._account_keys = set()
                self._last_account_eval_ms = ts
        self.cascade.step(ts, out)
        interval = self.config.spiral_run.interval_ms
        if interval and (self.positions or self.accounts):
            if self.next_spiral_ms is None:
                self.next_spiral_ms = (ts // interval + 1) * interval
            elif ts >= self.next_spiral_ms:
                self.run_standard_shocks()
                self.next_spiral_ms = (ts // interval + 1) * interval
        if (self.positions or self.accounts) and self.snapshot_clock.due(ts):
            self._snapshots.append(self.snapshot())

    def _evaluate_loops(self, ts: int, changed: set[str]) -> None:
        book = self.loop_book
        if self._book_dirty or book is None:
            priced = [
                p for _, p in sorted(self.positions.items())
                if all(k in self.prices for k in p.price_keys())
            ]
            self._book_ids = [p.position_id for p in priced]
            self.loop_book = book = (
                LoopBook.from_positions(priced, self.prices, self.params) if priced else None
            )
            self._book_dirty = len(priced) < len(self.positions)
        elif changed:
            known = set(book.keys)
            for key in sorted(changed & known):
                book.update_price(key, self.prices[key])
        if book is None:
            self.loops_liquidatable = set()
            self.cascade.on_loops(ts, 0, 0.0)
            return
        count = book.liquidatable_count()
        notional = 0.0
        if count:
            now = set(book.liquidatable_ids())
            if now != self.loops_liquidatable:
                coll, _ = book.position_values()
                self._loops_notional = float(
                    sum(float(coll[i]) for i, pid in enumerate(self._book_ids) if pid in now)
                )
            self.loops_liquidatable = now
            notional = self._loops_notional
        else:
            self.loops_liquidatable = set()
        self.cascade.on_loops(ts, count, notional)

    # -- spiral (RISK_MODEL §7) ----------------------------------------------------------
    def spiral(self, shocks: Mapping[str, float]) -> SpiralResult:
        """Spiral estimate on the live state for one shock (on demand)."""
        keys = set(self.prices)
        positions = [p for _, p in sorted(self.positions.items()) if p.price_keys() <= keys]
        accounts = [a for _, a in sorted(self.accounts.items()) if a.price_keys() <= keys]
        return run_spiral(
            positions, accounts, self.prices, self.ladders, shocks=dict(shocks), params=self.params
        )

    def run_standard_shocks(self) -> dict[str, SpiralResult]:
        """The configured standard shocks whose price keys are known (others are skipped),
        when the inputs moved beyond the tolerance since the last run; else that run's
        results (``spiral_gate.decision`` says which, and why)."""
        inputs = SpiralInputs.of(self.prices, self.ladders, self.positions, self.accounts)
        if not self.spiral_gate.check(inputs).rerun:
            return dict(self.spiral_gate.results)
        ran: dict[str, SpiralResult] = {}
        for shock in self.params.spiral.standard_shocks:
            if all(k in self.prices for k in shock.moves):
                ran[shock.name] = self.spiral_results[shock.name] = self.spiral(shock.moves)
        self.spiral_gate.ran(inputs, self.now_ms, ran)
        return ran

    def spiral_liquidated_usd(self) -> dict[str, float]:
        """Notional liquidated (all stages) of the latest run of each standard shock, USD."""
        return {
            name: sum(r.liquidated_usd_by_stage.values()) for name, r in self.spiral_results.items()
        }

    # -- snapshots ---------------------------------------------------------------------
    def snapshot(self) -> RiskSnapshot:
        """The figures of the report at the latest event time (vectorised over loop positions)."""
        hf_bands: dict[str, int] = {}
        ladder: dict[str, float] = {}
        at_risk_usd = 0.0
        book = self.loop_book
        if book is not None and len(book):
            if self.loops_liquidatable:  # at today's prices (the cascade keeps the value at entry)
                coll, _ = book.position_values()
                at_risk_usd = float(sum(float(coll[i]) for i, pid in enumerate(self._book_ids)
                                        if pid in self.loops_liquidatable))
            uppers = np.array([upper for _, upper in HF_BANDS])
            band_of = np.searchsorted(uppers, book.health_factors(), side="right")
            counts = np.bincount(band_of, minlength=len(HF_BANDS))
            hf_bands = {name: int(counts[i]) for i, (name, _) in enumerate(HF_BANDS)}
            for row in book.aggregates():
                for step in row["ladder"]:
                    pct = f"{step['move_pct']:g}"
                    ladder[pct] = ladder.get(pct, 0.0) + float(step["additional_collateral_usd"])
        statuses: dict[str, int] = {}
        for r in self.account_results.values():
            statuses[r.status] = statuses.get(r.status, 0) + 1
        n_books = len(self.monitored_books)
        return RiskSnapshot(
            ts_ms=self.now_ms,
            hf_bands=hf_bands,
            ladder_usd=ladder,
            loops_liquidatable=len(self.loops_liquidatable),
            loops_liquidatable_usd=at_risk_usd,
            accounts_by_status=dict(sorted(statuses.items())),
            forced_sell_usd_by_asset=dict(sorted(self.watch.forced_sell_usd.items())),
            spiral_usd_by_shock=self.spiral_liquidated_usd(),
            stage=self.cascade.highest,
            active_stages=tuple(self.cascade.active(self.now_ms)),
            withdrawn_ratio=len(self.withdrawn_books) / n_books if n_books else 0.0,
        )

    def take_snapshots(self) -> list[RiskSnapshot]:
        """Snapshots taken since the last call, oldest first (the caller forwards them)."""
        taken, self._snapshots = self._snapshots, []
        return taken

    # -- figures -----------------------------------------------------------------------
    def figures(self) -> RiskFigures:
        """Aggregates for metrics (closed label sets: protocol, asset, venue, bands, ranks)."""
        fig = RiskFigures()
        book = self.loop_book
        if book is not None and len(book):
            fig.loops = book.aggregates()
            for pid in self._book_ids:
                pos = self.positions.get(pid)
                if pos is None:
                    continue
                hf = health_factor(pos, self.prices, self.params)
                band = next(name for name, upper in HF_BANDS if hf < upper)
                k = (pos.protocol, band)
                fig.hf_bands[k] = fig.hf_bands.get(k, 0) + 1
        by_venue: dict[str, list[AccountResult]] = {}
        for r in self.account_results.values():
            by_venue.setdefault(r.venue, []).append(r)
            k2 = (r.venue, r.status)
            fig.accounts_by_status[k2] = fig.accounts_by_status.get(k2, 0) + 1
        for venue, results in by_venue.items():
            levs = sorted(r.effective_leverage for r in results if r.effective_leverage is not None)
            if levs:
                fig.leverage_quantiles[(venue, "0.5")] = levs[(len(levs) - 1) // 2]
                fig.leverage_quantiles[(venue, "0.9")] = levs[int(0.9 * (len(levs) - 1))]
                fig.leverage_quantiles[(venue, "max")] = levs[-1]
            shortfalls = sorted(
                (max(r.maintenance_margin_usd - r.adjusted_equity_usd, 0.0) for r in results),
                reverse=True,
            )
            for rank in range(5):
                fig.shortfalls[(venue, str(rank + 1))] = (
                    shortfalls[rank] if rank < len(shortfalls) else 0.0
                )
        n = len(self.monitored_books)
        fig.withdrawn_ratio = len(self.withdrawn_books) / n if n else 0.0
        fig.stage = self.cascade.highest
        fig.active_stages = self.cascade.active(self.now_ms)
        fig.spiral_liquidated_usd = self.spiral_liquidated_usd()
        return fig

