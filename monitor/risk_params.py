"""Risk-model parameters (RISK_MODEL.md sections 2, 3 and 7) as frozen, strict config models.

Every default is the public figure quoted in RISK_MODEL.md. Where no public figure was found
the default is *assumed*; the dotted path of each such default is listed in
``ASSUMED_DEFAULTS`` so a run report can say which assumed numbers it used.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from monitor.limits import SHOCK_RANGE, shock_move_allowed

__all__ = [
    "ASSUMED_DEFAULTS",
    "BYBIT_RISK_LIMITS_SOURCE",
    "ENGINE_MIN_SALE_USD",
    "HYPERLIQUID_TABLES_SOURCE",
    "OKX_POSITION_TIERS_SOURCE",
    "AaveV3Params",
    "BracketTier",
    "CollateralTiers",
    "EModeParams",
    "HyperliquidParams",
    "LadderParams",
    "MarginTable",
    "MarginTier",
    "MorphoBlueParams",
    "PerpTier",
    "PerpTierTable",
    "RiskParams",
    "ShockSpec",
    "SpiralParams",
    "TieredRate",
    "UnifiedAccountParams",
    "UnifiedVenueParams",
    "check_collateral_tiers",
    "check_continuous_deductions",
    "check_margin_table",
    "qty_tiers",
    "usd_tiers",
]

AccountModel = Literal["binance-pm", "bybit-uta", "okx-mc", "hyperliquid"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class EModeParams(_Frozen):
    """One Aave v3 efficiency-mode category (RISK_MODEL §2)."""

    ltv_ratio: float = Field(ge=0, le=1)
    liquidation_threshold_ratio: float = Field(gt=0, le=1)
    liquidation_bonus_ratio: float = Field(ge=0, le=1)


class AaveV3Params(_Frozen):
    """Aave v3 (Ethereum, 2025) e-modes and close-factor rules (RISK_MODEL §2)."""

    e_modes: dict[str, EModeParams] = Field(
        default_factory=lambda: {
            "usde-stablecoin": EModeParams(
                ltv_ratio=0.90, liquidation_threshold_ratio=0.93, liquidation_bonus_ratio=0.02
            ),
            "susde-stablecoins": EModeParams(
                ltv_ratio=0.90, liquidation_threshold_ratio=0.92, liquidation_bonus_ratio=0.04
            ),
        }
    )
    usde_outside_emode: EModeParams = EModeParams(
        ltv_ratio=0.72, liquidation_threshold_ratio=0.75, liquidation_bonus_ratio=0.085
    )
    protocol_fee_of_bonus_ratio: float = Field(default=0.10, ge=0, le=1)
    close_factor_ratio: float = Field(default=0.5, gt=0, le=1)
    full_close_health_factor: float = Field(default=0.95, gt=0)
    full_close_reserve_usd: float = Field(default=2_000.0, ge=0)
    # *assumed*: bonus for positions that give none and are in no known e-mode
    default_liquidation_bonus_ratio: float = Field(default=0.05, ge=0, le=1)


class MorphoBlueParams(_Frozen):
    """Morpho Blue liquidation incentive LIF = min(max, 1 / (cursor × LLTV + 1 − cursor))."""

    max_lif: float = Field(default=1.15, ge=1)
    lif_cursor: float = Field(default=0.3, gt=0, lt=1)


TieredRate = tuple[tuple[float, float], ...]
"""Collateral-rate tiers ((floor, rate), ...): the amount above each floor gets that rate."""


class CollateralTiers(_Frozen):
    """Collateral-rate tiers of one asset with the basis their floors are set in.

    ``basis = "usd"``: floors are USD value (Binance's tiered collateral rate, §3);
    ``"qty"``: floors are coin quantity (Bybit's tiered collateral value ratio, Bybit API
    ``GET /v5/spot-margin-trade/collateral`` ``minQty``/``maxQty`` "in coin"; OKX's
    discount-rate tiers, set per "Max. Collateral" in the coin). A JSON list
    ``[[floor, rate], …]`` is read as USD floors; ``{"basis": "qty", "tiers": [...]}``
    names the basis.
    """

    basis: Literal["usd", "qty"] = "usd"
    tiers: TieredRate

    @model_validator(mode="before")
    @classmethod
    def _from_list(cls, data: Any) -> Any:
        if isinstance(data, list | tuple):
            return {"basis": "usd", "tiers": data}
        if not isinstance(data, dict | CollateralTiers):
            raise ValueError('expected [[floor, rate], ...] or {"basis": "usd"|"qty", "tiers": ...}')
        return data

    @model_validator(mode="after")
    def _check(self) -> CollateralTiers:
        check_collateral_tiers(self.tiers)
        return self


def check_collateral_tiers(tiers: TieredRate) -> None:
    """Raise ValueError unless floors start at 0 and increase and rates are within [0, 1]."""
    floors = [f for f, _ in tiers]
    if not tiers or floors[0] != 0 or floors != sorted(floors):
        raise ValueError("floors must start at 0 and increase")
    if any(not 0 <= r <= 1 for _, r in tiers):
        raise ValueError("rates must be within [0, 1]")


def usd_tiers(*rows: tuple[float, float]) -> CollateralTiers:
    """Tiers with USD-value floors (Binance's basis)."""
    return CollateralTiers(basis="usd", tiers=rows)


def qty_tiers(*rows: tuple[float, float]) -> CollateralTiers:
    """Tiers with coin-quantity floors (Bybit's and OKX's basis)."""
    return CollateralTiers(basis="qty", tiers=rows)


class BracketTier(_Frozen):
    """One USDⓈ-M leverage bracket: notional floor and maintenance-margin rate."""

    floor_usd: float = Field(ge=0)
    mmr_ratio: float = Field(gt=0, lt=1)


def _brackets(rows: Sequence[tuple[float, float]]) -> tuple[BracketTier, ...]:
    return tuple(BracketTier(floor_usd=f, mmr_ratio=m) for f, m in rows)


# RISK_MODEL §3, exactly.
_BTCUSDT: list[tuple[float, float]] = [
    (0, 0.004), (50_000, 0.005), (600_000, 0.0065), (3_000_000, 0.01), (12_000_000, 0.02),
    (70_000_000, 0.025), (100_000_000, 0.05), (230_000_000, 0.10), (480_000_000, 0.125),
    (600_000_000, 0.15), (800_000_000, 0.25), (1_200_000_000, 0.50),
]
# *assumed* (shape of Binance's published tables, not copied from them)
_ETHUSDT: list[tuple[float, float]] = [
    (0, 0.005), (50_000, 0.0065), (600_000, 0.01), (3_000_000, 0.02), (12_000_000, 0.025),
    (50_000_000, 0.05), (100_000_000, 0.10), (200_000_000, 0.125), (400_000_000, 0.15),
    (600_000_000, 0.25), (800_000_000, 0.50),
]
_ALT: list[tuple[float, float]] = [
    (0, 0.01), (10_000, 0.015), (50_000, 0.02), (250_000, 0.05), (1_000_000, 0.10),
    (5_000_000, 0.125), (10_000_000, 0.15), (20_000_000, 0.25), (50_000_000, 0.50),
]


class PerpTier(_Frozen):
    """One tier of a venue's perp maintenance-margin table: positions up to ``cap`` take MM
    rate ``mmr_ratio`` on the whole notional, less ``mm_deduction_usd``.

    ``cap`` is in the table's basis: USD notional (Bybit ``riskLimitValue``) or coin quantity
    (OKX ``maxSz`` contracts × ``ctVal``). A tier holds the positions above the previous cap
    up to and including its own (Bybit ">1,000 - 2,000"; OKX ``minSz``/``maxSz``).
    """

    cap: float = Field(gt=0)
    mmr_ratio: float = Field(gt=0, lt=1)
    mm_deduction_usd: float = Field(default=0.0, ge=0)


class PerpTierTable(_Frozen):
    """A Bybit risk-limit or OKX position-tier table of one perp (RISK_MODEL §3).

    MM = notional × MMR_tier − deduction_tier, the tier chosen by USD notional
    (``basis="usd"``) or by coin quantity (``"qty"``). Bybit publishes the deduction
    (``mmDeduction``), which keeps MM continuous across tier bounds; OKX applies the tier's
    rate to the whole position without one ("Maintenance Margin = ∑(Position value × Tier
    maintenance rate)", OKX help "Multi-currency margin mode: cross margin trading"), so
    its MM steps up at each bound. Above the last cap the last tier applies (the venue
    refuses larger positions).
    """

    basis: Literal["usd", "qty"]
    tiers: tuple[PerpTier, ...]

    @model_validator(mode="after")
    def _check(self) -> PerpTierTable:
        caps = [t.cap for t in self.tiers]
        rates = [t.mmr_ratio for t in self.tiers]
        if not self.tiers or caps != sorted(set(caps)):
            raise ValueError("tier caps must increase")
        if rates != sorted(rates):
            raise ValueError("tier MM rates must not fall as positions grow")
        if self.basis == "usd":
            check_continuous_deductions(self.tiers)
        return self


def check_continuous_deductions(tiers: Sequence[PerpTier]) -> None:
    """Raise ValueError unless deduction_n = deduction_(n−1) + cap_(n−1) × (MMR_n − MMR_(n−1))
    (Bybit "Margin Parameters"), deduction_1 = 0: MM continuous at every USD bound.

    The account re-evaluation skip (:func:`monitor.stages.global_risk.risk.status_slack_usd`) needs MM to move
    by at most units × |Δprice|; a jump at a USD bound would break that. Quantity bounds
    do not move with the price, so whole-position tiers (OKX) are checked by basis, not here.
    """
    expected = 0.0
    for prev, tier in zip((None, *tiers), tiers, strict=False):
        if prev is not None:
            expected += prev.cap * (tier.mmr_ratio - prev.mmr_ratio)
        if not math.isclose(tier.mm_deduction_usd, expected, rel_tol=1e-6, abs_tol=1e-6 * tier.cap):
            raise ValueError(f"tier up to {tier.cap:g}: mm deduction {tier.mm_deduction_usd:g} "
                             f"leaves MM discontinuous (continuous: {expected:g})")


def _tier_table(basis: Literal["usd", "qty"], *rows: tuple[float, float, float]) -> PerpTierTable:
    return PerpTierTable(basis=basis, tiers=tuple(
        PerpTier(cap=c, mmr_ratio=m, mm_deduction_usd=d) for c, m, d in rows))


#: The liquidation engine's smallest step (RISK_MODEL §3), USD: no collateral sale of this or
#: less, and no perp close while the MM left to free is this or less. Below a millionth of
#: a dollar what is left is the rounding of the steps before (the target reached to the
#: last bit leaves 1e-12 "to sell"), not a trade: venues' minimum order sizes are dollars.
#: Without it an account "sells" 1e-12 USD again on a later pass, and a spiral counts
#: that as a round of its own.
ENGINE_MIN_SALE_USD = 1e-6


BYBIT_RISK_LIMITS_SOURCE = (
    "Bybit help 'Maintenance Margin (USDT Contract)' (bybit.com/en/help-center/article/"
    "Maintenance-Margin-USDT-Contract, 2025-09-05): BTCUSDT up to 2,000,000 USDT at 0.5%, "
    "to 2,600,000 USDT at 0.56%; deduction by Bybit's 'Margin Parameters' formula "
    "(bybit-tr.com/en-TR/announcement-info/margin-parameters); tiers above 2,600,000 USDT "
    "not found (*assumed*: the last tier continues)"
)
OKX_POSITION_TIERS_SOURCE = (
    "OKX GET /api/v5/public/position-tiers?instType=SWAP&instFamily=BTC-USDT, first five "
    "of 99 tiers as recorded on 2026-08-31 (public code, stored copy), contracts × ctVal "
    "0.01 BTC; formula from OKX help 'Tiered maintenance margin ratio rules' "
    "(okx.com/help/v-tiered-maintenance-margin-ratio-rules); tiers above 600 BTC not found "
    "(*assumed*: the last tier continues)"
)


def _bybit_risk_limits() -> dict[str, PerpTierTable]:
    """Built-in fallback: BYBIT_RISK_LIMITS_SOURCE (USD notional caps, MMR, mmDeduction)."""
    # deduction_2 = 2,000,000 × (0.56% − 0.5%) = 1,200 (Bybit's formula; the API's value)
    return {"BTCUSDT": _tier_table("usd", (2_000_000, 0.005, 0.0), (2_600_000, 0.0056, 1_200.0))}


def _okx_position_tiers() -> dict[str, PerpTierTable]:
    """Built-in fallback: OKX_POSITION_TIERS_SOURCE (caps in BTC = maxSz × 0.01)."""
    return {"BTC-USDT": _tier_table(
        "qty", (10, 0.004, 0.0), (50, 0.005, 0.0), (200, 0.0075, 0.0), (400, 0.0125, 0.0),
        (600, 0.0175, 0.0))}


class UnifiedVenueParams(_Frozen):
    """Thresholds, haircuts and brackets of one unified/cross-margin account model (§3).

    Ratios are always adjusted_equity / maintenance_margin (higher is safer); a venue that
    publishes the inverse (Bybit's account MM rate) is converted. ``lines_inclusive``: a
    ratio exactly on a threshold takes the worse status (the venue says "reaches", "equal
    to or less than", "≤"); otherwise only a ratio strictly below it does ("falls below").
    """

    margin_call_ratio: float = Field(gt=0)
    reduce_only_ratio: float = Field(gt=0)
    liquidation_ratio: float = Field(gt=0)
    lines_inclusive: bool = True
    target_ratio: float = Field(gt=0)
    collateral_rates: dict[str, CollateralTiers] = Field(default_factory=dict)
    unlisted_collateral_rate: float = Field(default=0.10, ge=0, le=1)
    margin_loan_mmr_ratio: float = Field(default=0.05, ge=0, lt=1)
    perp_brackets: dict[str, tuple[BracketTier, ...]] = Field(default_factory=dict)
    #: The venue's own perp tier tables (Bybit risk limits by symbol, OKX position tiers by
    #: instrument family); a perp without one uses ``perp_brackets``/``default_perp_brackets``.
    perp_tables: dict[str, PerpTierTable] = Field(default_factory=dict)
    perp_tables_source: str = ""
    default_perp_brackets: tuple[BracketTier, ...] = Field(default_factory=lambda: _brackets(_ALT))
    sell_order: tuple[str, ...] = ()
    settlement_asset: str = "USDT"
    sells_collateral: bool = True

    @model_validator(mode="after")
    def _check(self) -> UnifiedVenueParams:
        if not (self.margin_call_ratio >= self.reduce_only_ratio >= self.liquidation_ratio):
            raise ValueError("need margin_call_ratio >= reduce_only_ratio >= liquidation_ratio")
        for name, br in {**self.perp_brackets, "default": self.default_perp_brackets}.items():
            floors = [b.floor_usd for b in br]
            if not br or floors[0] != 0 or floors != sorted(floors):
                raise ValueError(f"brackets {name}: floors must start at 0 and increase")
        return self

    def perp_table(self, symbol: str) -> PerpTierTable | None:
        """The venue's tier table of a perp: by symbol (``BTCUSDT``), else by instrument
        family (OKX ``BTC-USDT-SWAP`` → ``BTC-USDT``)."""
        key = symbol.upper()
        table = self.perp_tables.get(key)
        if table is None and key.count("-") >= 1:
            table = self.perp_tables.get("-".join(key.split("-")[:2]))
        return table


def _binance() -> UnifiedVenueParams:
    return UnifiedVenueParams(
        # Binance FAQ "Binance Portfolio Margin Pro Maintenance Margin Ratio Calculation":
        # 120% < uniMMR ≤ 150% margin call, 105% < uniMMR ≤ 120% reduce-only,
        # uniMMR ≤ 105% liquidation: every line belongs to the worse status.
        margin_call_ratio=1.5,
        reduce_only_ratio=1.2,
        liquidation_ratio=1.05,
        lines_inclusive=True,
        target_ratio=1.2,  # *assumed*: engine stops selling once out of reduce-only
        collateral_rates={  # USD-value floors, Binance's basis (RISK_MODEL §3)
            "USDT": usd_tiers((0, 1.0)),
            "USDC": usd_tiers((0, 1.0)),
            "BTC": usd_tiers((0, 0.95), (5_000_000, 0.9), (20_000_000, 0.8)),  # *assumed*
            "ETH": usd_tiers((0, 0.95), (5_000_000, 0.9), (20_000_000, 0.8)),  # *assumed*
            "BNB": usd_tiers((0, 0.95), (1_000_000, 0.8)),  # *assumed*
            "SOL": usd_tiers((0, 0.9), (1_000_000, 0.7)),  # *assumed*
            "USDe": usd_tiers((0, 0.9), (200_000, 0.8), (1_000_000, 0.5)),  # *assumed*
            "BNSOL": usd_tiers((0, 0.9), (200_000, 0.8), (1_000_000, 0.5)),  # *assumed*
            "WBETH": usd_tiers((0, 0.9), (200_000, 0.8), (1_000_000, 0.5)),  # *assumed*
        },
        unlisted_collateral_rate=0.10,
        margin_loan_mmr_ratio=0.05,  # *assumed*
        perp_brackets={"BTCUSDT": _brackets(_BTCUSDT), "ETHUSDT": _brackets(_ETHUSDT)},
        default_perp_brackets=_brackets(_ALT),  # *assumed*
        sell_order=(),  # *assumed*: largest USD holding first
    )


def _bybit() -> UnifiedVenueParams:
    return UnifiedVenueParams(
        margin_call_ratio=1.0 / 0.7,  # *assumed*: warn at account MM rate 70%
        reduce_only_ratio=1.0 / 0.9,  # *assumed*
        # Bybit help "Trading Rules: Liquidation Process (Unified Trading Account)":
        # "Liquidation is triggered when the account's MMR reaches 100%" (MM / margin
        # balance ≥ 1, i.e. equity / MM ≤ 1).
        liquidation_ratio=1.0,
        lines_inclusive=True,
        target_ratio=1.0 / 0.9,  # *assumed*
        # Coin-quantity floors, Bybit's basis (help "Understanding Collateral Value Ratios
        # in Unified Trading Account", updated 2025-09-18: "Tier (Quantity)"); the figures
        # are *assumed* (the former $10M bounds at BTC 100,000 and ETH 4,000).
        collateral_rates={
            "USDT": qty_tiers((0, 1.0)),
            "USDC": qty_tiers((0, 1.0)),
            "BTC": qty_tiers((0, 0.95), (100, 0.9)),
            "ETH": qty_tiers((0, 0.95), (2_500, 0.9)),
            "USDe": qty_tiers((0, 0.9), (1_000_000, 0.7)),
        },
        unlisted_collateral_rate=0.0,  # *assumed*: unlisted coins give no margin
        margin_loan_mmr_ratio=0.05,  # *assumed*
        perp_brackets={"ETHUSDT": _brackets(_ETHUSDT)},  # *assumed*
        perp_tables=_bybit_risk_limits(),
        perp_tables_source=BYBIT_RISK_LIMITS_SOURCE,
    )


def _okx() -> UnifiedVenueParams:
    return UnifiedVenueParams(
        margin_call_ratio=3.0,  # *assumed*: OKX warns at margin ratio 300%
        reduce_only_ratio=1.5,  # *assumed*
        # OKX help "Tiered maintenance margin ratio rules" (updated 16 May 2025): forced
        # liquidation "when your margin ratio falls to 100%, meaning your account equity is
        # equal to or less than the required maintenance margin".
        liquidation_ratio=1.0,
        lines_inclusive=True,
        target_ratio=1.5,  # *assumed*
        # Coin-quantity floors, OKX's basis for discount-rate tiers (OKX announcements
        # "OKX to adjust position tiers of margins and discount rates": tiers per "Max.
        # Collateral" in the coin). BTC's first two tiers are OKX's: 0–20 BTC 0.98
        # (OKX help "Multi-currency margin mode: cross margin trading", okx.com/help/
        # iv-multi-currency-margin-mode-cross-margin-trading, updated 2024-09-01, and the
        # API v5 example of GET /api/v5/public/discount-rate-interest-free-quota), 20–25 BTC
        # 0.9775 (the same API example); above 25 BTC and every other figure *assumed*.
        collateral_rates={
            "USDT": qty_tiers((0, 1.0)),
            "USDC": qty_tiers((0, 1.0)),
            "BTC": qty_tiers((0, 0.98), (20, 0.9775), (25, 0.95)),
            "ETH": qty_tiers((0, 0.98), (1_250, 0.95)),
            "USDe": qty_tiers((0, 0.9), (1_000_000, 0.6)),
        },
        unlisted_collateral_rate=0.0,  # *assumed*
        margin_loan_mmr_ratio=0.05,  # *assumed*
        perp_tables=_okx_position_tiers(),
        perp_tables_source=OKX_POSITION_TIERS_SOURCE,
    )


class MarginTier(_Frozen):
    """One Hyperliquid margin tier: from ``lower_bound_usd`` of notional, at most ``max_leverage``.

    Its maintenance-margin rate is half the initial margin rate at that leverage,
    1 / (2 × max_leverage) (Hyperliquid docs, Trading › Margin tiers: 20x → 2.5%).
    """

    lower_bound_usd: float = Field(ge=0)
    max_leverage: float = Field(ge=1)

    @property
    def floor_usd(self) -> float:
        """Notional from which the tier applies (the bracket floor of §3's MM formula)."""
        return self.lower_bound_usd

    @property
    def mmr_ratio(self) -> float:
        """MM rate = initial margin rate at max leverage / 2 (Hyperliquid docs, Margin tiers)."""
        return 0.5 / self.max_leverage


MarginTable = tuple[MarginTier, ...]
"""A Hyperliquid margin table: tiers by rising lower bound and falling max leverage."""

HYPERLIQUID_TABLES_SOURCE = (
    "Hyperliquid docs, Trading > Margin tiers "
    "(hyperliquid.gitbook.io/hyperliquid-docs/trading/margin-tiers), mainnet tables as "
    "published on 2026-12-04"
)


def _hl_table(*rows: tuple[float, float]) -> MarginTable:
    return tuple(MarginTier(lower_bound_usd=b, max_leverage=lev) for b, lev in rows)


def _hl_tables() -> dict[str, MarginTable]:
    """Built-in fallback: the mainnet margin tiers of HYPERLIQUID_TABLES_SOURCE."""
    tables = {
        "BTC": _hl_table((0, 40), (150_000_000, 20)),
        "ETH": _hl_table((0, 25), (100_000_000, 15)),
        "SOL": _hl_table((0, 20), (70_000_000, 10)),
        "XRP": _hl_table((0, 20), (40_000_000, 10)),
    }
    for coin in (
        "DOGE", "kPEPE", "SUI", "WLD", "TRUMP", "LTC", "ENA", "POPCAT", "WIF", "AAVE", "kBONK",
        "LINK", "CRV", "AVAX", "ADA", "UNI", "NEAR", "TIA", "APT", "BCH", "HYPE", "FARTCOIN",
    ):
        tables[coin] = _hl_table((0, 10), (20_000_000, 5))
    for coin in (
        "OP", "ARB", "LDO", "TON", "MKR", "ONDO", "JUP", "INJ", "kSHIB", "SEI", "TRX", "BNB", "DOT",
    ):
        tables[coin] = _hl_table((0, 10), (3_000_000, 5))
    return tables


def check_margin_table(name: str, table: MarginTable) -> None:
    """Raise ValueError unless bounds start at 0 and rise and max leverage never rises."""
    bounds = [t.lower_bound_usd for t in table]
    levs = [t.max_leverage for t in table]
    if not table or bounds[0] != 0 or bounds != sorted(set(bounds)):
        raise ValueError(f"margin table {name}: lower bounds must start at 0 and increase")
    if levs != sorted(levs, reverse=True):
        raise ValueError(f"margin table {name}: max leverage must not rise with notional")


class HyperliquidParams(_Frozen):
    """Hyperliquid cross margin: MM from the asset's margin table; backstop below 2/3 of MM (§3).

    ``margin_tables`` maps a coin (Hyperliquid's name: ``BTC``, ``kPEPE``) to its tiers;
    ``margin_tables_source`` names where they come from (the built-in fallback's source and
    date, or the recorded ``meta`` response that replaced it). A coin without a table gets
    one tier at ``default_max_leverage``.
    """

    margin_tables: dict[str, MarginTable] = Field(default_factory=_hl_tables)
    margin_tables_source: str = HYPERLIQUID_TABLES_SOURCE
    default_max_leverage: float = Field(default=10.0, ge=1)  # *assumed*
    backstop_equity_of_mm_ratio: float = Field(default=2.0 / 3.0, gt=0, le=1)
    venue: UnifiedVenueParams = Field(
        default_factory=lambda: UnifiedVenueParams(
            margin_call_ratio=1.5,  # *assumed*
            reduce_only_ratio=1.0,
            # Hyperliquid docs, Trading › Liquidations: liquidated when "the account equity
            # falls below the maintenance margin"; equity exactly at MM is not liquidated.
            liquidation_ratio=1.0,
            lines_inclusive=False,
            target_ratio=1.0,
            collateral_rates={"USDC": usd_tiers((0, 1.0))},
            unlisted_collateral_rate=0.0,  # only USDC backs perp margin
            margin_loan_mmr_ratio=0.0,
            settlement_asset="USDC",
            sells_collateral=False,  # the engine closes perps; it does not sell spot
        )
    )

    @model_validator(mode="after")
    def _check(self) -> HyperliquidParams:
        for coin, table in self.margin_tables.items():
            check_margin_table(coin, table)
        return self

    def margin_table(self, coin: str) -> MarginTable:
        """The coin's tiers, else one tier at the default max leverage (*assumed*)."""
        table = self.margin_tables.get(coin) or self.margin_tables.get(coin.upper())
        if table is None:
            return (MarginTier(lower_bound_usd=0.0, max_leverage=self.default_max_leverage),)
        return table


class UnifiedAccountParams(_Frozen):
    """Per-model parameters of unified accounts (RISK_MODEL §3)."""

    binance_pm: UnifiedVenueParams = Field(default_factory=_binance)
    bybit_uta: UnifiedVenueParams = Field(default_factory=_bybit)
    okx_mc: UnifiedVenueParams = Field(default_factory=_okx)
    hyperliquid: HyperliquidParams = Field(default_factory=HyperliquidParams)

    def venue(self, model: str) -> UnifiedVenueParams:
        """Venue parameters for an account model id (binance-pm, bybit-uta, ...)."""
        if model == "binance-pm":
            return self.binance_pm
        if model == "bybit-uta":
            return self.bybit_uta
        if model == "okx-mc":
            return self.okx_mc
        if model == "hyperliquid":
            return self.hyperliquid.venue
        raise ValueError(f"unknown account model {model!r}")


class LadderParams(_Frozen):
    """Adverse moves (in %) at which liquidation ladders are reported."""

    steps_pct: tuple[float, ...] = (1, 2, 3, 5, 7, 10, 15, 20, 25, 30, 40, 50)

    @model_validator(mode="after")
    def _check(self) -> LadderParams:
        s = list(self.steps_pct)
        if not s or s != sorted(set(s)) or s[0] <= 0 or s[-1] >= 100:
            raise ValueError("steps_pct must be strictly increasing within (0, 100)")
        return self


class ShockSpec(_Frozen):
    """A named shock: price key -> relative move (−0.05 = −5%)."""

    name: str
    moves: dict[str, float]

    @model_validator(mode="after")
    def _check(self) -> ShockSpec:
        if not all(map(shock_move_allowed, self.moves.values())):
            raise ValueError(f"a {SHOCK_RANGE}")
        return self


class SpiralParams(_Frozen):
    """Spiral estimate (RISK_MODEL §7)."""

    max_rounds: int = Field(default=25, ge=1)
    # Liquidators sell the seized collateral at once (*assumed*: worst case for the book).
    liquidator_sell_ratio: float = Field(default=1.0, ge=0, le=1)
    standard_shocks: tuple[ShockSpec, ...] = (
        ShockSpec(name="usde-binance-local-depeg", moves={"USDe@binance": -0.35}),
        ShockSpec(name="usde-depeg-5pct", moves={"USDe": -0.05}),
        ShockSpec(name="eth-minus-10pct", moves={"ETH": -0.10}),
        ShockSpec(name="btc-minus-10pct", moves={"BTC": -0.10}),
        ShockSpec(name="macro-minus-20pct", moves={"BTC": -0.20, "ETH": -0.20, "SOL": -0.25}),
    )


class RiskParams(_Frozen):
    """All risk-maths parameters; nested in the app config as ``risk``."""

    aave_v3: AaveV3Params = Field(default_factory=AaveV3Params)
    morpho_blue: MorphoBlueParams = Field(default_factory=MorphoBlueParams)
    unified: UnifiedAccountParams = Field(default_factory=UnifiedAccountParams)
    ladder: LadderParams = Field(default_factory=LadderParams)
    spiral: SpiralParams = Field(default_factory=SpiralParams)

    def config_id(self) -> str:
        """Stable 16-hex-digit id of these parameters (sha256 of the canonical JSON)."""
        raw = self.model_dump_json().encode()
        return hashlib.sha256(raw).hexdigest()[:16]


ASSUMED_DEFAULTS: tuple[str, ...] = (
    "aave_v3.default_liquidation_bonus_ratio",
    "unified.binance_pm.target_ratio",
    "unified.binance_pm.collateral_rates.{BTC,ETH,BNB,SOL,USDe,BNSOL,WBETH}",
    "unified.binance_pm.margin_loan_mmr_ratio",
    "unified.binance_pm.perp_brackets.ETHUSDT",
    "unified.binance_pm.default_perp_brackets",
    "unified.binance_pm.sell_order (largest USD holding first)",
    "unified.bybit_uta (all but liquidation_ratio and perp_tables)",
    "unified.bybit_uta.perp_tables.BTCUSDT above 2,600,000 USDT (last published tier continues)",
    "unified.okx_mc (all but liquidation_ratio, perp_tables and BTC collateral up to 25 BTC)",
    "unified.okx_mc.perp_tables.BTC-USDT above 600 BTC (last recorded tier continues)",
    "unified.hyperliquid.default_max_leverage (coins without a margin table)",
    "unified.hyperliquid.venue.margin_call_ratio",
    "spiral.liquidator_sell_ratio",
)
