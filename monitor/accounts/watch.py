"""Unified accounts in the global stage (RISK_MODEL §3): evaluated when their prices move,
sorted into stressed and liquidating sets, and alerted once per escalation (latched).

:class:`AccountWatch` is the piece of :class:`monitor.stages.global_risk.risk.GlobalRisk` that owns the
accounts; pure, time comes with the signals.
"""

from __future__ import annotations

from collections.abc import Container, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from monitor.accounts.lines import plain_account
from monitor.alerts import make_alert
from monitor.config import EngineConfig
from monitor.models.margin import STATUS_RANK, Account, AccountResult, evaluate_account, liquidate_account
from monitor.protocol import Alert
from monitor.risk_params import UnifiedVenueParams

__all__ = [
    "AccountWatch",
    "AlertLatches",
    "ResultColumns",
    "account_alert",
    "account_document",
    "account_from_raw",
    "default_balance_price_key",
    "price_key_units",
    "status_slack_usd",
]



@dataclass(frozen=True)
class ResultColumns:
    """The latest evaluation of every evaluated account, as columns (any order): venue (a
    code into ``venue_names``), status code (rank in :data:`monitor.models.margin.STATUSES`),
    adjusted equity, MM and effective leverage (NaN: none), USD."""

    venue_names: list[str]
    venue_code: npt.NDArray[np.int64]
    status: npt.NDArray[np.int8]
    adjusted_equity_usd: npt.NDArray[np.float64]
    maintenance_margin_usd: npt.NDArray[np.float64]
    effective_leverage: npt.NDArray[np.float64]


def price_key_units(account: Account) -> dict[str, float]:
    """Σ|amount| of balances and Σ|qty| of perps per price key of an account."""
    units: dict[str, float] = {}
    for b in account.balances:
        units[b.price_key] = units.get(b.price_key, 0.0) + abs(b.amount)
    for p in account.perps:
        units[p.price_key] = units.get(p.price_key, 0.0) + abs(p.qty)
    return units


def status_slack_usd(equity_usd: float, mm_usd: float, venue: UnifiedVenueParams) -> float:
    """USD price move (Σ units × |Δprice|) below which an account's status cannot change.

    Every component of adjusted equity and of MM (RISK_MODEL §3: haircut tiers with rates
    ≤ 1, loans, perp PnL, bracket MM with rates ≤ 1) moves by at most units × |Δprice|, so a
    move D changes equity and MM by at most D each. A ratio E/MM on one side of a
    threshold t stays there while D < |E − t·MM| / (1 + t); the sign of E holds while
    D < |E|. Below the smallest of these bounds the status is provably unchanged.
    """
    slack = abs(equity_usd)
    if mm_usd > 0:
        for t in (venue.margin_call_ratio, venue.reduce_only_ratio, venue.liquidation_ratio):
            slack = min(slack, abs(equity_usd - t * mm_usd) / (1.0 + t))
    return slack


def default_balance_price_key(asset: str, venue: str, ts_ms: int, config: EngineConfig) -> str:
    """Price key of a balance given without one (RISK_MODEL §1: venue-marked assets)."""
    prefix = venue.split("-", 1)[0]
    for marked in config.signals.venue_marked_assets:
        if marked.asset == asset and marked.venue == prefix and (
            marked.until_ts_ms is None or ts_ms < marked.until_ts_ms
        ):
            return f"{asset}@{marked.venue}"
    return asset


def _normalised(raw: Mapping[str, Any], now_ms: int, config: EngineConfig) -> dict[str, Any]:
    """An account record with its balances' default price keys filled in; balances that
    are not a list are left as they are, for the model to refuse by name."""
    data = dict(raw)
    given = data.get("balances", ())
    if not isinstance(given, list | tuple):
        return data
    venue = str(data.get("venue", ""))
    balances = []
    for bal in given:
        if isinstance(bal, dict) and "price_key" not in bal and "asset" in bal:
            key = default_balance_price_key(str(bal["asset"]), venue, now_ms, config)
            bal = {**bal, "price_key": key}  # noqa: PLW2901
        balances.append(bal)
    data["balances"] = balances
    return data


def account_from_raw(raw: Mapping[str, Any], now_ms: int, config: EngineConfig) -> Account:
    """An account record validated; balances without a price key get their default one."""
    return Account.model_validate(_normalised(raw, now_ms, config))


def account_document(raw: Mapping[str, Any], now_ms: int, config: EngineConfig) -> tuple[bytes, frozenset[str]]:
    """An account record checked, as a JSON document that ``Account.model_validate`` turns
    into the model :func:`account_from_raw` gives, and its price keys. A record of the plain
    shape (:func:`monitor.accounts.lines.plain_account`) is checked field by field and kept
    as it is; any other goes through the model (raising on a bad one) and is kept as the
    model dumps it."""
    data = _normalised(raw, now_ms, config)
    if plain_account(data):
        keys = frozenset([b["price_key"] for b in data["balances"]] + [p["price_key"] for p in data.get("perps", ())])
    else:
        account = Account.model_validate(data)
        data, keys = account.model_dump(mode="json"), frozenset(account.price_keys())
    # A copy: orjson's own buffer keeps its 4 KiB of capacity, 12× a typical document.
    return bytes(memoryview(orjson.dumps(data))), keys


def account_alert(
    ts: int, r: AccountResult, kind: str, severity: Any, account: Account,
    prices: Mapping[str, float], config_hash: str,
) -> Alert:
    """A ``margin_call`` or ``unified_liquidation`` alert of one account (id: account|status)."""
    ratio = "n/a" if r.venue_ratio is None else f"{r.venue_ratio:.3f}"
    keys = sorted(account.price_keys())
    evidence: dict[str, Any] = {
        "account_id": r.account_id,
        "model": r.model,
        "status": r.status,
        "venue_ratio_name": r.venue_ratio_name,
        "venue_ratio": r.venue_ratio,
        "uni_mmr": r.uni_mmr,
        "adjusted_equity_usd": round(r.adjusted_equity_usd, 2),
        "maintenance_margin_usd": round(r.maintenance_margin_usd, 2),
        "effective_leverage": r.effective_leverage,
        "effective_leverage_change": r.effective_leverage_change,
        "driving_asset": r.driving_asset,
        "price_keys": {k: prices.get(k) for k in keys},
    }
    if kind == "unified_liquidation":
        evidence["forced_sells"] = [s.model_dump(mode="json") for s in r.forced_sells]
        evidence["uncovered_shortfall_usd"] = round(r.uncovered_shortfall_usd, 2)
    return make_alert(
        kind=kind,
        ts_ms=ts,
        severity=severity,
        venue=r.venue,
        asset=r.driving_asset,
        message=(
            f"{r.venue} account {r.account_id}: {r.venue_ratio_name} {ratio} → {r.status}"
            + (f", engine sells {len(r.forced_sells)} holdings" if r.forced_sells else "")
        ),
        evidence=evidence,
        config_hash=config_hash,
        identity=f"{r.account_id}|{r.status}",
    )


class AlertLatches:
    """Per account, the highest status rank already alerted (1 margin call … 3 liquidation):
    one alert per escalation, re-armed only back at normal, so an account hovering around a
    threshold does not page on every wobble. Also the latches set or released since they
    were last taken (the caller persists them and restores them after a restart)."""

    def __init__(self) -> None:
        self.rank: dict[str, int] = {}
        self._changes: dict[str, int | None] = {}

    def get(self, aid: str) -> int:
        return self.rank.get(aid, 0)

    def set(self, aid: str, rank: int) -> None:
        self.rank[aid] = rank
        self._changes[aid] = rank

    def release(self, aid: str) -> None:
        if self.rank.pop(aid, None) is not None:
            self._changes[aid] = None

    def export(self) -> dict[str, int]:
        """Per account, the highest status rank already alerted."""
        return dict(self.rank)

    def take_changes(self) -> dict[str, int | None]:
        """Latches changed since the last call: account id → rank, or None when released."""
        changes, self._changes = self._changes, {}
        return changes

    def restore(self, latches: Mapping[str, int], known: Container[str]) -> None:
        """Reinstate exported latches (after the accounts): a restart does not re-alert.
        Latches of unknown accounts or outside ranks 1..3 are ignored."""
        top = max(STATUS_RANK.values())
        for aid, rank in latches.items():
            if aid in known and 0 < rank <= top:
                self.rank[aid] = rank
                self._changes.pop(aid, None)


class AccountWatch:
    """The accounts of stage 2, their latest evaluation and their alert latches."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.config_hash = config.config_hash
        self.params = config.risk
        self.accounts: dict[str, Account] = {}
        self.results: dict[str, AccountResult] = {}
        self._by_key: dict[str, set[str]] = {}
        self._stressed: set[str] = set()
        self._liquidating: set[str] = set()
        #: Highest status rank already alerted per account (reset when back to normal).
        self.latches = AlertLatches()
        #: Per account: units exposed to each price key, prices at its last evaluation, and
        #: the USD move that could change its status (skip re-evaluation below that).
        self._units: dict[str, dict[str, float]] = {}
        self._eval_prices: dict[str, dict[str, float]] = {}
        self._slack_usd: dict[str, float] = {}
        #: USD of the forced-sell lists of accounts that reached liquidation, per asset.
        self.forced_sell_usd: dict[str, float] = {}

    def stressed(self) -> list[str]:
        return sorted(self._stressed)

    def liquidating(self) -> list[str]:
        return sorted(self._liquidating)

    def upsert(self, raw: Mapping[str, Any], now_ms: int) -> Account | None:
        """Add, replace or delete a unified account (None: deleted); balances without a price key get one."""
        aid = str(raw["account_id"])
        old = self.accounts.pop(aid, None)
        if old is not None:
            for key in old.price_keys():
                self._by_key.get(key, set()).discard(aid)
        self.results.pop(aid, None)
        self._stressed.discard(aid)
        self._liquidating.discard(aid)
        self.latches.release(aid)
        self._eval_prices.pop(aid, None)
        self._slack_usd.pop(aid, None)
        self._units.pop(aid, None)
        if raw.get("delete"):
            return None
        account = account_from_raw(raw, now_ms, self.config)
        self.accounts[aid] = account
        for key in account.price_keys():
            self._by_key.setdefault(key, set()).add(aid)
        self._units[aid] = price_key_units(account)
        return account

    def evaluate(
        self, ts: int, changed: set[str], prices: Mapping[str, float], out: list[Alert]
    ) -> tuple[bool, float]:
        """Re-evaluate the accounts on moved keys; alert escalations. (sets changed, leverage jump)"""
        todo: set[str] = set()
        for key in changed:
            todo |= self._by_key.get(key, set())
        sets_changed = False
        jump = 0.0
        for aid in sorted(todo):
            account = self.accounts[aid]
            if not all(k in prices for k in account.price_keys()):
                continue
            previous = self.results.get(aid)
            seen = self._eval_prices.get(aid)
            if seen is not None and previous is not None:
                moved_usd = sum(u * abs(prices[k] - seen[k]) for k, u in self._units[aid].items())
                if moved_usd < self._slack_usd[aid]:
                    continue  # provably still in the same status (see status_slack_usd)
            result = evaluate_account(account, prices, self.params, previous, with_forced_sells=False)
            self._eval_prices[aid] = {k: prices[k] for k in self._units[aid]}
            self._slack_usd[aid] = status_slack_usd(
                result.adjusted_equity_usd, result.maintenance_margin_usd,
                self.params.unified.venue(account.model),
            )
            self.results[aid] = result
            jump = max(jump, result.effective_leverage_change or 0.0)
            rank = STATUS_RANK[result.status]
            was_stressed = aid in self._stressed
            if (rank > 0) != was_stressed:
                sets_changed = True
                (self._stressed.add if rank > 0 else self._stressed.discard)(aid)
            if (rank == 3) != (aid in self._liquidating):
                sets_changed = True
                (self._liquidating.add if rank == 3 else self._liquidating.discard)(aid)
            # Latched alerts: one alert per escalation; re-armed only back at normal, so an
            # account hovering around a threshold does not page on every wobble.
            latched = self.latches.get(aid)
            if rank == 0:
                self.latches.release(aid)
            elif rank > latched:
                self.latches.set(aid, rank)
                if rank == 3:
                    _, sells, uncovered = liquidate_account(account, prices, self.params)
                    for sell in sells:
                        if sell.side == "sell":
                            self.forced_sell_usd[sell.asset] = self.forced_sell_usd.get(sell.asset, 0.0) + sell.usd
                    result = result.model_copy(
                        update={"forced_sells": tuple(sells), "uncovered_shortfall_usd": uncovered}
                    )
                    self.results[aid] = result
                    out.append(self._alert(ts, result, "unified_liquidation", "critical", prices))
                else:
                    sev = "high" if result.status == "reduce_only" else "warning"
                    out.append(self._alert(ts, result, "margin_call", sev, prices))
        return sets_changed, jump

    def result_columns(self) -> ResultColumns:
        """The latest evaluation of each evaluated account (for snapshots and metrics)."""
        results = list(self.results.values())
        names = list(dict.fromkeys(r.venue for r in results))
        return ResultColumns(
            venue_names=names,
            venue_code=np.array([names.index(r.venue) for r in results], dtype=np.int64),
            status=np.array([STATUS_RANK[r.status] for r in results], dtype=np.int8),
            adjusted_equity_usd=np.array([r.adjusted_equity_usd for r in results], dtype=np.float64),
            maintenance_margin_usd=np.array([r.maintenance_margin_usd for r in results], dtype=np.float64),
            effective_leverage=np.array([np.nan if r.effective_leverage is None else r.effective_leverage
                                         for r in results], dtype=np.float64),
        )

    def restore_alert_latches(self, latches: Mapping[str, int]) -> None:
        """Reinstate exported latches of known accounts (see :meth:`AlertLatches.restore`)."""
        self.latches.restore(latches, self.accounts)

    def _alert(
        self, ts: int, r: AccountResult, kind: str, severity: Any, prices: Mapping[str, float]
    ) -> Alert:
        return account_alert(ts, r, kind, severity, self.accounts[r.account_id], prices, self.config_hash)
