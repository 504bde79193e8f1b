"""Unified (cross-margin / portfolio-margin) accounts: equity, maintenance margin, status,
effective leverage and the liquidation engine's forced sells (RISK_MODEL.md §3)."""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from monitor.limits import MAX_INPUT_NUMBER
from monitor.risk_params import (
    ENGINE_MIN_SALE_USD,
    CollateralTiers,
    HyperliquidParams,
    MarginTable,
    PerpTier,
    PerpTierTable,
    RiskParams,
    TieredRate,
    UnifiedVenueParams,
)

__all__ = [
    "STATUSES",
    "STATUS_RANK",
    "VENUE_RATIO_NAMES",
    "Account",
    "AccountModel",
    "AccountResult",
    "AccountStatus",
    "Balance",
    "ForcedSell",
    "Perp",
    "account_status",
    "asset_equity_usd",
    "bracket_for_notional",
    "collateral_tiers",
    "evaluate_account",
    "hyperliquid_margin_table",
    "hyperliquid_mmr",
    "isolated_long_liquidation_price",
    "isolated_short_liquidation_price",
    "liquidate_account",
    "perp_maintenance_margin_usd",
    "perp_tier",
    "tiered_collateral_value_usd",
    "tiered_perp_mm_usd",
]

AccountModel = Literal["binance-pm", "bybit-uta", "okx-mc", "hyperliquid"]
AccountStatus = Literal["normal", "margin_call", "reduce_only", "liquidation"]
#: Account statuses from healthy to liquidated: a status's rank is its index here.
STATUSES: tuple[AccountStatus, ...] = ("normal", "margin_call", "reduce_only", "liquidation")
STATUS_RANK: dict[str, int] = {name: rank for rank, name in enumerate(STATUSES)}

#: Name of the ratio each model's venue publishes (``AccountResult.venue_ratio_name``).
VENUE_RATIO_NAMES: dict[str, str] = {
    "binance-pm": "uni_mmr",
    "bybit-uta": "account_mm_rate",
    "okx-mc": "margin_ratio",
    "hyperliquid": "equity_to_maintenance",
}


class Bracket(Protocol):
    """A tier of a tiered-MM table: notional floor and MM rate (Binance brackets, Hyperliquid
    margin tiers, Bybit risk limits, OKX position tiers all share this shape)."""

    @property
    def floor_usd(self) -> float: ...

    @property
    def mmr_ratio(self) -> float: ...


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class Balance(_Model):
    """Net balance of one asset; negative = borrowed (margin loan)."""

    asset: str = Field(min_length=1)
    amount: float = Field(ge=-MAX_INPUT_NUMBER, le=MAX_INPUT_NUMBER)
    price_key: str = Field(min_length=1)
    loan_mmr: float | None = Field(default=None, ge=0, lt=1)


class Perp(_Model):
    """A perpetual position; negative qty = short."""

    symbol: str = Field(min_length=1)
    qty: float = Field(ge=-MAX_INPUT_NUMBER, le=MAX_INPUT_NUMBER)
    entry_price: float = Field(gt=0, le=MAX_INPUT_NUMBER)
    price_key: str = Field(min_length=1)
    mmr: float | None = Field(default=None, gt=0, lt=1)
    cum: float | None = Field(default=None, ge=0, le=MAX_INPUT_NUMBER)


class Account(_Model):
    """One unified account at one venue."""

    account_id: str = Field(min_length=1)
    venue: str = Field(min_length=1)
    model: AccountModel
    balances: tuple[Balance, ...] = ()
    perps: tuple[Perp, ...] = ()
    collateral_rates: dict[str, CollateralTiers] | None = None

    def price_keys(self) -> set[str]:
        """All price keys this account needs."""
        return {b.price_key for b in self.balances} | {p.price_key for p in self.perps}


class ForcedSell(_Model):
    """One action of the liquidation engine, in USD at the evaluation price."""

    asset: str
    price_key: str
    side: Literal["sell", "buy"]
    usd: float
    kind: Literal["collateral", "perp"]


class AccountResult(_Model):
    """Evaluation of one account. ``uni_mmr`` is adjusted_equity / MM for every model (higher
    is safer); ``venue_ratio`` is the ratio the venue publishes, named by
    ``venue_ratio_name`` (Bybit's ``account_mm_rate`` is the inverse, MM / equity)."""

    account_id: str
    venue: str
    model: AccountModel
    adjusted_equity_usd: float
    maintenance_margin_usd: float
    uni_mmr: float | None
    venue_ratio_name: str
    venue_ratio: float | None
    status: AccountStatus
    backstop: bool
    gross_notional_usd: float
    effective_leverage: float | None
    effective_leverage_change: float | None
    driving_asset: str | None
    equity_by_asset_usd: dict[str, float]
    forced_sells: tuple[ForcedSell, ...]
    uncovered_shortfall_usd: float


@functools.cache
def _default_params() -> RiskParams:
    return RiskParams()


# --------------------------------------------------------------------------- building blocks


def tiered_collateral_value_usd(amount: float, tiers: TieredRate) -> float:
    """Σ_tier (amount in tier) × rate, tiers as (floor, rate) (tiered collateral rate, §3).

    The amount is in the tiers' basis: USD value for USD floors, coin units for quantity
    floors (then the result is collateral in coin units, to multiply by the price).
    """
    total = 0.0
    for i, (floor, rate) in enumerate(tiers):
        cap = tiers[i + 1][0] if i + 1 < len(tiers) else math.inf
        if amount <= floor:
            break
        total += (min(amount, cap) - floor) * rate
    return total


@functools.lru_cache(maxsize=64)
def _flat_tiers(rate: float) -> CollateralTiers:
    return CollateralTiers(basis="usd", tiers=((0.0, rate),))


def collateral_tiers(asset: str, account: Account, venue: UnifiedVenueParams) -> CollateralTiers:
    """Rate tiers of an asset: account override, else venue table, else unlisted default."""
    if account.collateral_rates and asset in account.collateral_rates:
        return account.collateral_rates[asset]
    if asset in venue.collateral_rates:
        return venue.collateral_rates[asset]
    return _flat_tiers(venue.unlisted_collateral_rate)


def asset_equity_usd(amount: float, price: float, rates: CollateralTiers | TieredRate) -> float:
    """min(bal×px×rate, bal×px); haircut on positive balances only (Binance uniMMR, §3).

    Quantity-based tiers (Bybit collateral value ratio, OKX discount rate) are applied to
    the coin amount, USD-based ones (Binance) to its USD value; a bare tier tuple is USD.
    """
    value = amount * price
    if value <= 0:
        return value
    if isinstance(rates, CollateralTiers):
        if rates.basis == "qty":
            return min(tiered_collateral_value_usd(amount, rates.tiers) * price, value)
        rates = rates.tiers
    return min(tiered_collateral_value_usd(value, rates), value)


def bracket_for_notional(
    notional_usd: float, brackets: Sequence[Bracket]
) -> tuple[float, float]:
    """(MMR, cum) of the bracket; cum_n = cum_(n−1) + floor_n × (MMR_n − MMR_(n−1)) (§3)."""
    cum = 0.0
    mmr = brackets[0].mmr_ratio
    for prev, tier in itertools.pairwise(brackets):
        if notional_usd <= tier.floor_usd:
            break
        cum += tier.floor_usd * (tier.mmr_ratio - prev.mmr_ratio)
        mmr = tier.mmr_ratio
    return mmr, cum


def perp_maintenance_margin_usd(
    notional_usd: float, brackets: Sequence[Bracket]
) -> float:
    """MM = notional × MMR_tier − cum_tier (Binance USDⓈ-M brackets, §3).

    The same formula as Hyperliquid's tiered MM (docs, Trading › Margin tiers:
    maintenance_margin = notional × maintenance_margin_rate − maintenance_deduction, the
    deduction built tier by tier like ``cum``), so it takes a :class:`MarginTable` too.
    """
    mmr, cum = bracket_for_notional(notional_usd, brackets)
    return max(0.0, notional_usd * mmr - cum)


def perp_tier(notional_usd: float, qty: float, table: PerpTierTable) -> PerpTier:
    """The tier holding a position: the first whose cap is ≥ its USD notional (Bybit risk
    limit, "position value of 2,000,000 USDT or below") or coin quantity (OKX position tier,
    ``minSz``–``maxSz``); the last tier above every cap."""
    size = notional_usd if table.basis == "usd" else abs(qty)
    for tier in table.tiers:
        if size <= tier.cap:
            return tier
    return table.tiers[-1]


def tiered_perp_mm_usd(notional_usd: float, qty: float, table: PerpTierTable) -> float:
    """MM = notional × MMR_tier − deduction_tier (RISK_MODEL §3).

    Bybit: "Maintenance Margin = Position Value × Maintenance Margin Rate − Maintenance
    Margin Deduction", deduction_n = cap_(n−1) × (MMR_n − MMR_(n−1)) + deduction_(n−1)
    (bybit-tr.com/en-TR/announcement-info/margin-parameters; API ``mmDeduction``, GET
    /v5/market/risk-limit). OKX: "Maintenance Margin = ∑(Position value × Tier maintenance
    rate)" (okx.com/help/iv-multi-currency-margin-mode-cross-margin-trading), no deduction.
    """
    tier = perp_tier(notional_usd, qty, table)
    return max(0.0, notional_usd * tier.mmr_ratio - tier.mm_deduction_usd)


def isolated_long_liquidation_price(
    entry_price: float, leverage: float, qty: float, mmr: float, cum: float = 0.0
) -> float:
    """Isolated long: (EP × (1 − 1/L) − cum/Q) / (1 − MMR) (RISK_MODEL §3)."""
    return (entry_price * (1.0 - 1.0 / leverage) - cum / qty) / (1.0 - mmr)


def isolated_short_liquidation_price(
    entry_price: float, leverage: float, qty: float, mmr: float, cum: float = 0.0
) -> float:
    """Isolated short, mirror of the long formula: (EP × (1 + 1/L) + cum/Q) / (1 + MMR)."""
    return (entry_price * (1.0 + 1.0 / leverage) + cum / abs(qty)) / (1.0 + mmr)


def _hl_coin(symbol: str) -> str:
    base = symbol.split("-", maxsplit=1)[0].split("/", maxsplit=1)[0]
    for quote in ("USDT", "USDC", "USD", "PERP"):
        if base.upper().endswith(quote) and len(base) > len(quote):
            return base[: -len(quote)]
    return base


def hyperliquid_margin_table(symbol: str, params: HyperliquidParams) -> MarginTable:
    """Margin tiers of a perp's coin (``BTC``, ``ETH-PERP``, ``kPEPE``) (Hyperliquid meta)."""
    return params.margin_table(_hl_coin(symbol))


def hyperliquid_mmr(symbol: str, params: HyperliquidParams, notional_usd: float = 0.0) -> float:
    """MM rate of the tier holding the notional: 1 / (2 × its max leverage) (BTC 40x → 1.25%).

    Hyperliquid docs, Trading › Margin tiers; the MM itself also subtracts the tier's
    deduction (:func:`perp_maintenance_margin_usd`).
    """
    mmr, _ = bracket_for_notional(notional_usd, hyperliquid_margin_table(symbol, params))
    return mmr


def _perp_mm(perp: Perp, notional: float, account: Account, params: RiskParams) -> float:
    if perp.mmr is not None:
        return max(0.0, notional * perp.mmr - (perp.cum or 0.0))
    if account.model == "hyperliquid":
        table = hyperliquid_margin_table(perp.symbol, params.unified.hyperliquid)
        return perp_maintenance_margin_usd(notional, table)
    venue = params.unified.venue(account.model)
    tiers = venue.perp_table(perp.symbol)
    if tiers is not None:
        return tiered_perp_mm_usd(notional, perp.qty, tiers)
    brackets = venue.perp_brackets.get(perp.symbol, venue.default_perp_brackets)
    return perp_maintenance_margin_usd(notional, brackets)


def account_status(
    ratio: float | None, adjusted_equity_usd: float, venue: UnifiedVenueParams
) -> AccountStatus:
    """Status from equity/MM and the venue's lines (Binance ≤1.5 call, ≤1.2 reduce-only, §3).

    A ratio exactly on a line takes the worse status when the venue's lines are inclusive
    (Binance, Bybit, OKX), the better one when they are not (Hyperliquid: "falls below").
    Negative adjusted equity is liquidation whatever the ratio (Binance FAQ).
    """
    if adjusted_equity_usd < 0:
        return "liquidation"
    if ratio is None:
        return "normal"
    lines: tuple[tuple[float, AccountStatus], ...] = (
        (venue.liquidation_ratio, "liquidation"),
        (venue.reduce_only_ratio, "reduce_only"),
        (venue.margin_call_ratio, "margin_call"),
    )
    for line, status in lines:
        if ratio < line or (venue.lines_inclusive and ratio == line):
            return status
    return "normal"


# --------------------------------------------------------------------------- evaluation


class _Figures:
    __slots__ = ("by_asset", "equity", "gross", "haircut", "mm", "perp_mm")

    def __init__(self) -> None:
        self.equity = 0.0
        self.mm = 0.0
        self.gross = 0.0
        self.by_asset: dict[str, float] = {}
        self.haircut: dict[str, float] = {}
        self.perp_mm: list[float] = []


def _figures(account: Account, prices: Mapping[str, float], params: RiskParams) -> _Figures:
    venue = params.unified.venue(account.model)
    f = _Figures()
    for b in account.balances:
        px = prices[b.price_key]
        eq = asset_equity_usd(b.amount, px, collateral_tiers(b.asset, account, venue))
        f.equity += eq
        f.by_asset[b.asset] = f.by_asset.get(b.asset, 0.0) + eq
        if b.amount > 0:
            f.haircut[b.asset] = f.haircut.get(b.asset, 0.0) + b.amount * px - eq
        else:
            loan = -b.amount * px
            mmr = b.loan_mmr if b.loan_mmr is not None else venue.margin_loan_mmr_ratio
            f.mm += loan * mmr
            f.gross += loan
    for p in account.perps:
        px = prices[p.price_key]
        notional = abs(p.qty) * px
        f.equity += p.qty * (px - p.entry_price)
        mm = _perp_mm(p, notional, account, params)
        f.perp_mm.append(mm)
        f.mm += mm
        f.gross += notional
    return f


def evaluate_account(
    account: Account,
    prices: Mapping[str, float],
    params: RiskParams | None = None,
    previous: AccountResult | None = None,
    *,
    with_forced_sells: bool = True,
) -> AccountResult:
    """uniMMR-style evaluation of one account (RISK_MODEL §3), forced sells when liquidating.

    ``with_forced_sells=False`` skips running the liquidation engine (the costly part) for
    callers that only need the ratio and status; they call :func:`liquidate_account` when
    they need the sell list.

    Bybit's account MM rate (MM / (margin balance − haircut loss)) is reported as
    ``venue_ratio``; ``uni_mmr`` is always adjusted_equity / MM for comparability.
    """
    p = params or _default_params()
    venue = p.unified.venue(account.model)
    f = _figures(account, prices, p)
    ratio = f.equity / f.mm if f.mm > 0 else None
    status = account_status(ratio, f.equity, venue)
    if account.model == "bybit-uta":
        venue_ratio = f.mm / f.equity if f.equity > 0 else None
    else:
        venue_ratio = ratio
    # Hyperliquid docs, Trading › Liquidations: backstop when equity "drops below 2/3 of
    # the maintenance margin" (strictly below; compared as a ratio so the line is exact).
    backstop = (
        account.model == "hyperliquid"
        and ratio is not None
        and ratio < p.unified.hyperliquid.backstop_equity_of_mm_ratio
    )
    leverage = f.gross / f.equity if f.equity > 0 else None
    change = None
    if leverage is not None and previous is not None and previous.effective_leverage is not None:
        change = leverage - previous.effective_leverage
    driver: str | None = None
    if previous is not None:
        drops = {
            a: previous.equity_by_asset_usd.get(a, 0.0) - v
            for a, v in f.by_asset.items()
            if v > 0 or previous.equity_by_asset_usd.get(a, 0.0) > 0
        }
        positive = {a: d for a, d in drops.items() if d > 0}
        if positive:
            driver = max(sorted(positive), key=lambda a: positive[a])
    if driver is None and f.haircut:
        driver = max(sorted(f.haircut), key=lambda a: f.haircut[a])
    sells: tuple[ForcedSell, ...] = ()
    uncovered = 0.0
    if status == "liquidation" and with_forced_sells:
        _, sell_list, uncovered = liquidate_account(account, prices, p)
        sells = tuple(sell_list)
    # Every figure is computed here from validated inputs: construct without re-validating.
    return AccountResult.model_construct(
        account_id=account.account_id,
        venue=account.venue,
        model=account.model,
        adjusted_equity_usd=f.equity,
        maintenance_margin_usd=f.mm,
        uni_mmr=ratio,
        venue_ratio_name=VENUE_RATIO_NAMES[account.model],
        venue_ratio=venue_ratio,
        status=status,
        backstop=backstop,
        gross_notional_usd=f.gross,
        effective_leverage=leverage,
        effective_leverage_change=change,
        driving_asset=driver,
        equity_by_asset_usd=f.by_asset,
        forced_sells=sells,
        uncovered_shortfall_usd=uncovered,
    )


# --------------------------------------------------------------------------- liquidation engine


class _EngineRun:
    """One account under the venue's liquidation engine (§3): balances as they are sold down."""

    def __init__(self, account: Account, prices: Mapping[str, float], venue: UnifiedVenueParams, f: _Figures) -> None:
        self.venue = venue
        self.target = venue.target_ratio
        self.equity, self.mm = f.equity, f.mm
        self.bal = [b.amount for b in account.balances]
        self.keys = [b.price_key for b in account.balances]
        self.assets = [b.asset for b in account.balances]
        self.px = [prices[k] for k in self.keys]
        bal, px, assets = self.bal, self.px, self.assets
        order_rank = {a: i for i, a in enumerate(venue.sell_order)}
        coll_idx = sorted(
            # a holding whose USD value underflows to 0 cannot be sold (and has no rate)
            (i for i, a in enumerate(bal) if a > 0 and px[i] > 0 and a * px[i] > 0),
            key=lambda i: (order_rank.get(assets[i], len(order_rank)), -bal[i] * px[i], i),
        )
        if not venue.sells_collateral:
            coll_idx = [i for i in coll_idx if assets[i] == venue.settlement_asset]
        self.coll_idx = coll_idx
        self.rate = {
            i: asset_equity_usd(bal[i], px[i], collateral_tiers(assets[i], account, venue)) / (bal[i] * px[i])
            for i in coll_idx
        }
        self.mmr_of: dict[int, float] = {
            i: b.loan_mmr if b.loan_mmr is not None else venue.margin_loan_mmr_ratio
            for i, b in enumerate(account.balances)
        }
        self.sold: dict[int, float] = {}

    def repay(self, liab: list[int], until_target: bool) -> None:
        """Sell collateral into the liabilities: each USD adds (1 − rate) equity, frees loan_mmr × T MM."""
        bal, px, target = self.bal, self.px, self.target
        for c in self.coll_idx:
            for j in liab:
                if until_target and self.equity >= target * self.mm:
                    return
                if bal[c] <= 0 or bal[j] >= 0 or c == j:
                    continue
                s = min(bal[c] * px[c], -bal[j] * px[j])
                mmr_j = self.mmr_of[j]
                gain = (1.0 - self.rate[c]) + target * mmr_j
                if until_target:
                    if gain <= 0:
                        continue
                    s = min(s, (target * self.mm - self.equity) / gain)
                if s <= ENGINE_MIN_SALE_USD:  # rounding, not a sale
                    continue
                bal[c] -= s / px[c]
                bal[j] += s / px[j]
                self.equity += s * (1.0 - self.rate[c])
                self.mm -= s * mmr_j
                if self.assets[c] != self.assets[j]:
                    self.sold[c] = self.sold.get(c, 0.0) + s

    def close_fractions(self, perp_mm: list[float]) -> list[float]:
        """Still below T: close perps, largest MM first, by the MM left to free."""
        target, equity = self.target, self.equity
        need = self.mm - max(equity, 0.0) / target if equity < target * self.mm else 0.0
        close_frac = [0.0] * len(perp_mm)
        for i in sorted(range(len(perp_mm)), key=lambda i: (-perp_mm[i], i)):
            if need <= ENGINE_MIN_SALE_USD or perp_mm[i] <= 0:  # MM left to free: rounding
                continue
            frac = 1.0 if equity <= 0 else min(1.0, need / perp_mm[i])
            close_frac[i] = frac
            need -= frac * perp_mm[i]
            self.mm -= frac * perp_mm[i]
        return close_frac

    def settle(self, realised: float, prices: Mapping[str, float]) -> None:
        """Realised perp PnL to the settlement asset; a debt there is repaid by selling collateral."""
        settle = self.venue.settlement_asset
        if settle in self.assets:
            j = self.assets.index(settle)
        else:
            self.assets.append(settle)
            self.keys.append(settle)
            self.px.append(prices.get(settle, 1.0))
            self.bal.append(0.0)
            self.mmr_of[len(self.bal) - 1] = self.venue.margin_loan_mmr_ratio
            j = len(self.bal) - 1
        self.bal[j] += realised / self.px[j]
        if self.bal[j] < 0:
            self.repay([j], until_target=False)

    def collateral_sells(self) -> list[ForcedSell]:
        return [
            ForcedSell(asset=self.assets[c], price_key=self.keys[c], side="sell", usd=self.sold[c], kind="collateral")
            for c in self.coll_idx
            if self.sold.get(c, 0.0) > 0
        ]

    def balances(self, account: Account) -> tuple[Balance, ...]:
        """The balances after the run: figures derived from a checked account, beyond the
        input bounds a :class:`Balance` is read with (a settled PnL can be larger than any
        input), so built without them."""
        return tuple(
            Balance.model_construct(
                asset=self.assets[i],
                amount=self.bal[i],
                price_key=self.keys[i],
                loan_mmr=account.balances[i].loan_mmr if i < len(account.balances) else None,
            )
            for i in range(len(self.bal))
        )


def _close_perps(
    perps: Sequence[Perp], close_frac: list[float], prices: Mapping[str, float]
) -> tuple[list[ForcedSell], list[Perp], float]:
    """The engine's perp closes at mark: (actions, perps left, realised PnL in USD)."""
    actions: list[ForcedSell] = []
    new_perps: list[Perp] = []
    realised = 0.0
    for i, perp in enumerate(perps):
        frac = close_frac[i]
        if frac > 0:
            ppx = prices[perp.price_key]
            realised += frac * perp.qty * (ppx - perp.entry_price)
            actions.append(
                ForcedSell(
                    asset=perp.symbol,
                    price_key=perp.price_key,
                    side="sell" if perp.qty > 0 else "buy",
                    usd=frac * abs(perp.qty) * ppx,
                    kind="perp",
                )
            )
        if frac < 1.0:
            new_perps.append(perp.model_copy(update={"qty": perp.qty * (1.0 - frac)}) if frac > 0 else perp)
    return actions, new_perps, realised


def liquidate_account(
    account: Account, prices: Mapping[str, float], params: RiskParams | None = None
) -> tuple[Account, list[ForcedSell], float]:
    """Engine model (§3): sell any liquid collateral, then close perps, to reach the target.

    1. Sell collateral (venue order, else largest USD holding first) to repay margin loans;
       each USD sold adds (1 − rate) of equity and frees loan_mmr × T of MM.
    2. If still below target ratio T, close perps (largest MM first) by the MM to free.
    3. Realised perp losses become a settlement-asset debt, repaid by selling collateral.
    Returns (account after the engine, actions, uncovered shortfall in USD). Rates of tiered
    assets are taken at their average over the holding (an approximation).
    """
    p = params or _default_params()
    venue = p.unified.venue(account.model)
    f = _figures(account, prices, p)
    run = _EngineRun(account, prices, venue, f)
    loans = sorted((i for i, a in enumerate(run.bal) if a < 0), key=lambda i: (-run.mmr_of[i], i))
    run.repay(loans, until_target=True)
    perp_actions, new_perps, realised = _close_perps(account.perps, run.close_fractions(f.perp_mm), prices)
    if realised != 0.0:
        run.settle(realised, prices)
    actions = run.collateral_sells() + perp_actions
    after = account.model_copy(update={"balances": run.balances(account), "perps": tuple(new_perps)})
    fa = _figures(after, {**prices, **dict(zip(run.keys, run.px, strict=True))}, p)
    # negative equity after the engine is bad debt left to the insurance fund
    uncovered = -fa.equity if fa.equity < 0 else max(0.0, run.target * fa.mm - fa.equity)
    return after, actions, uncovered
