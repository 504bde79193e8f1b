"""Scenario knobs and presets (frozen, unknown keys rejected).

Every number is either a public figure from ../shared/OCT10_FACTS.md (the calibration
targets) or an *assumed* model parameter, marked so, chosen so that the simulated day
lands near those figures.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

#: 10 Oct 2025 20:00:00 UTC in ms.
T0_MS = 1_760_126_400_000
#: Full scenario length: 20:00 → 02:00 (6 h).
FULL_DURATION_S = 6 * 3600


def hhmm(text: str) -> int:
    """Seconds after 20:00 UTC for "HH:MM" (hours < 20 are on 11 Oct)."""
    h, m = (int(x) for x in text.split(":"))
    if h < 20:
        h += 24
    return (h - 20) * 3600 + m * 60


class ScenarioKnobs(BaseModel):
    """What a preset can change; override any field through ``generate(knobs=...)``.
    Sampling intervals, the window and the rates that divide are > 0; populations and
    the other flows ≥ 0 (alts: 3 to the 34 named); numbers finite."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    #: Window simulated, seconds after 20:00 UTC (shorten for fast tests).
    duration_s: int = Field(default=FULL_DURATION_S, gt=0)
    #: The 20:50 tariff shock and everything that follows it; False = calm day.
    shock: bool = True
    #: How Binance unified accounts value USDe/wBETH/BNSOL: own spot book ("venue",
    #: before 14 Oct 2025) or redemption rate ("redemption", Binance's post-fix index).
    binance_collateral_pricing: Literal["venue", "redemption"] = "venue"
    #: Price key Aave uses for USDe collateral ("USDT" as in 2025; "USDe@binance" marks
    #: the loops to Binance's book; "USDe" to the consolidated index).
    aave_usde_price_key: str = "USDT"
    #: Book sampling (s) outside / inside the crash window 20:48–22:45.
    book_interval_s: int = Field(default=5, gt=0)
    crash_book_interval_s: int = Field(default=1, gt=0)
    #: Depth-diff sampling (s) outside / inside the crash window.
    depth_interval_s: int = Field(default=10, gt=0)
    crash_depth_interval_s: int = Field(default=2, gt=0)
    #: Populations (assumed sizes).
    n_alts: int = Field(default=32, ge=3, le=34)  # market makers hold three; 34 alts are named
    n_binance_usde_loopers: int = Field(default=900, ge=0)
    n_binance_whales: int = Field(default=40, ge=0)
    n_binance_market_makers: int = Field(default=60, ge=0)
    n_binance_lst_loopers: int = Field(default=400, ge=0)
    n_aave_usde_loops: int = Field(default=600, ge=0)
    n_aave_eth_loans: int = Field(default=300, ge=0)
    n_perp_positions_per_book: int = Field(default=400, ge=0)
    #: USDe sold on Binance by holders who are not liquidated (panic, loop unwinds)
    #: from 21:36 to 21:46 (20% of it until 22:25), USD per second (assumed, calibrated to the 21:36 leg).
    usde_panic_sell_usd_per_s: float = Field(default=320_000.0, ge=0)
    #: Effective USDe price impact on Binance: USD of unabsorbed sells per 1.00 of price
    #: (assumed; ≈ $89M resting near the peg plus resilience).
    usde_impact_depth_usd: float = Field(default=1_150_000_000.0, gt=0)
    #: Ethena redemption cap ($2M per 12 s block) times the share Binance arbitrageurs
    #: get after gas and withdrawal delays (assumed).
    usde_arb_usd_per_s: float = Field(default=2_000_000 / 12 * 0.45, ge=0)
    #: Forced-sale execution speed of Binance's liquidation engine per asset, USD/s
    #: (assumed).
    engine_usde_usd_per_s: float = Field(default=900_000.0, gt=0)
    engine_wbeth_usd_per_s: float = Field(default=450_000.0, gt=0)
    engine_bnsol_usd_per_s: float = Field(default=200_000.0, gt=0)


PRESETS: dict[str, dict[str, Any]] = {
    "oct10": {},
    "oct10-post-fix-index": {"binance_collateral_pricing": "redemption"},
    "oct10-aave-mtm": {"aave_usde_price_key": "USDe@binance"},
    "calm": {"shock": False},
}


def knobs_for(name: str, overrides: dict[str, Any] | None = None) -> ScenarioKnobs:
    """Preset knobs with user overrides applied (unknown preset or key → ValueError)."""
    if name not in PRESETS:
        names = ", ".join([*PRESETS, "stablecoin-weekend"])
        raise ValueError(f"unknown scenario {name!r}; presets: {names}")
    merged = {**PRESETS[name], **(overrides or {})}
    return ScenarioKnobs(**merged)
