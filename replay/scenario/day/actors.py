"""The day's actors: market makers, collateral books, perp traders, accounts, loans.

Their state (dataclasses) and how each population is drawn from the seed, plus the rows
the accounts and loans are written as. The simulation (:mod:`replay.scenario.day.sim`) steps
them.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from replay.scenario.config import ScenarioKnobs
from replay.scenario.day.market import PERP_ALTS, AltSpec

FloatArray = npt.NDArray[np.float64]

WBETH_RATE = 1.07  # wBETH/ETH exchange rate (assumed, ≈ Oct 2025)
BNSOL_RATE = 1.05  # BNSOL/SOL exchange rate (assumed)
COLLATERAL = ("USDe", "wBETH", "BNSOL")
#: Binance collateral rates (haircuts), assumed: public tiers for these were not found.
COLLATERAL_RATE = {"USDe": 0.95, "wBETH": 0.95, "BNSOL": 0.95, "BTC": 0.95, "ETH": 0.95,
                   "SOL": 0.9}
ALT_COLLATERAL_RATE = 0.7
LOAN_MMR = 0.05  # margin-loan maintenance rate (assumed)
PERP_MMR = {"BTC": 0.004, "ETH": 0.005, "SOL": 0.01}
ALT_PERP_MMR = 0.02


@dataclass
class MarketMakers:
    """A family of market makers with individual risk limits on one stress signal."""

    threshold: FloatArray
    cooldown_s: FloatArray
    lag_s: FloatArray
    floor: float
    return_when_stable: bool = False
    active: npt.NDArray[np.bool_] = field(init=False)
    breach_since: FloatArray = field(init=False)
    cancelled_at: FloatArray = field(init=False)
    _all_active: bool = field(init=False)
    _lowest_limit: float = field(init=False)

    def __post_init__(self) -> None:
        n = self.threshold.size
        self.active = np.ones(n, dtype=bool)
        self.breach_since = np.full(n, np.inf)
        self.cancelled_at = np.full(n, -np.inf)
        self._all_active = True
        self._lowest_limit = float(self.threshold.min())

    def step(self, t: int, stress: float, rising: bool = True) -> float:
        """Update who quotes; return the liquidity factor floor + (1 − floor) × share.

        A maker cancels once stress has exceeded its limit for its reaction lag, and
        quotes again after its cooldown when stress is back under a third of its limit
        or (``return_when_stable``) is no longer rising. With everyone quoting and stress
        within every limit nothing can change (the fast path of the calm hours).
        """
        if self._all_active and stress <= self._lowest_limit:
            self.breach_since.fill(np.inf)
            return self.floor + (1.0 - self.floor)
        over = stress > self.threshold
        self.breach_since = np.where(over, np.minimum(self.breach_since, t), np.inf)
        cancel = self.active & over & (t - self.breach_since >= self.lag_s)
        self.active[cancel] = False
        self.cancelled_at[cancel] = t
        calm = stress < self.threshold / 3
        if self.return_when_stable and not rising:
            calm = np.ones_like(self.active)
        back = (~self.active) & calm & (t - self.cancelled_at >= self.cooldown_s)
        self.active[back] = True
        self.breach_since[back] = t
        self._all_active = bool(self.active.all())
        share = float(self.active.mean())
        return self.floor + (1.0 - self.floor) * share


@dataclass
class Collateral:
    """Binance book of a collateral asset priced by sell overhang over quoted depth."""

    name: str
    depth_usd: float
    engine_usd_per_s: float
    mm_absorb_per_s: float
    arb_usd_per_s: float
    #: Value buyers: resting bids around this price/fair ratio, up to this USD per second.
    value_level: float = 0.0
    value_usd_per_s: float = 0.0
    overhang_usd: float = 0.0
    dev: float = 0.0
    queue: deque[list[float]] = field(default_factory=deque)  # [account, qty left]
    sold_qty: dict[int, float] = field(default_factory=dict)
    sold_usd: dict[int, float] = field(default_factory=dict)
    started_ms: dict[int, int] = field(default_factory=dict)
    executed_usd_now: float = 0.0


@dataclass
class PerpBook:
    """Leveraged traders on one perp book: sorted liquidation prices, pointers advance."""

    venue: str
    symbol: str
    coin: str
    long_liq: FloatArray  # descending
    long_qty: FloatArray
    short_liq: FloatArray  # ascending
    short_qty: FloatArray
    #: The venue's price path of the coin.
    path: FloatArray
    li: int = 0
    si: int = 0


@dataclass
class Population:
    """Binance unified (portfolio-margin) accounts in matrix form."""

    ids: list[str]
    kinds: list[str]
    assets: list[str]
    balance: FloatArray  # accounts × assets, positive holdings
    debt_usdt: FloatArray
    perp_syms: list[str]
    perp_qty: FloatArray  # accounts × perps
    perp_entry: FloatArray
    alive: npt.NDArray[np.bool_]


def running_max(x: FloatArray, window: int) -> FloatArray:
    """The highest value of x over the last ``window`` seconds, at every second."""
    out = np.empty_like(x)
    dq: deque[int] = deque()
    for i, v in enumerate(x):
        while dq and x[dq[-1]] <= v:
            dq.pop()
        dq.append(i)
        if dq[0] <= i - window:
            dq.popleft()
        out[i] = x[dq[0]]
    return out


def make_makers(
    rng: np.random.Generator,
    thr: tuple[float, float],
    cool: tuple[int, int],
    lag: tuple[int, int],
    floor: float,
    stable: bool = False,
    n: int = 40,
) -> MarketMakers:
    """``n`` market makers with limits, cooldowns and lags drawn uniformly from the ranges."""
    return MarketMakers(
        threshold=rng.uniform(*thr, n),
        cooldown_s=rng.uniform(*cool, n),
        lag_s=rng.uniform(*lag, n),
        floor=floor,
        return_when_stable=stable,
    )


def build_population(
    k: ScenarioKnobs, alts: list[AltSpec], perp_px: dict[str, FloatArray], px0: FloatArray,
    rng: np.random.Generator,
) -> Population:
    """Binance unified accounts: USDe and LST loopers, whales with perps, market makers.

    ``px0`` is the Binance spot price vector at the first second (collateral assets, the
    majors, then the alts).
    """
    assets = ["USDe", "wBETH", "BNSOL", "BTC", "ETH", "SOL"] + [s.base for s in alts]
    perp_syms = ["BTC", "ETH", "SOL"] + [s.base for s in alts if s.base in PERP_ALTS]
    col = {a: i for i, a in enumerate(assets)}
    pcol = {a: i for i, a in enumerate(perp_syms)}
    rows: list[tuple[str, str, dict[str, float], float, dict[str, float]]] = []
    p0 = px0
    eth0 = float(px0[4])
    sol0 = float(px0[5])
    for i in range(k.n_binance_usde_loopers):
        equity = float(rng.lognormal(math.log(60_000), 0.9))
        lev = float(rng.uniform(2.0, 5.0))
        rows.append((f"bn-loop-{i:04d}", "usde-loop", {"USDe": lev * equity},
                     (lev - 1) * equity, {}))
    for i in range(k.n_binance_whales):
        equity = float(rng.uniform(0.5e6, 2e6))
        lev = float(rng.uniform(1.5, 2.1))
        perp_mult = float(rng.uniform(3.0, 6.0))
        perps: dict[str, float] = {}
        legs = rng.choice(perp_syms, size=3, replace=False)
        for sym in legs:
            notional = equity * perp_mult / 3
            perps[str(sym)] = notional / float(perp_px[str(sym)][0])
        rows.append((f"bn-whale-{i:03d}", "whale", {"USDe": lev * equity},
                     (lev - 1) * equity, perps))
    alt_names = [s.base for s in alts]
    for i in range(k.n_binance_market_makers):
        usde = float(rng.uniform(0.5e6, 2.5e6))
        wbeth_usd = float(rng.uniform(0.6e6, 2.0e6))
        bnsol_usd = float(rng.uniform(0.3e6, 0.8e6))
        bal = {"USDe": usde, "wBETH": wbeth_usd / (eth0 * WBETH_RATE),
               "BNSOL": bnsol_usd / (sol0 * BNSOL_RATE)}
        inv = 0.0
        for a in rng.choice(alt_names, size=3, replace=False):
            usd = float(rng.uniform(0.3e6, 1.5e6))
            bal[str(a)] = usd / p0[col[str(a)]]
            inv += usd
        gross = usde + wbeth_usd + bnsol_usd + inv
        debt = gross * float(rng.uniform(0.50, 0.62))
        rows.append((f"bn-mm-{i:03d}", "market-maker", bal, debt, {}))
    n_wb = int(k.n_binance_lst_loopers * 0.62)
    for i in range(k.n_binance_lst_loopers):
        asset = "wBETH" if i < n_wb else "BNSOL"
        fair = eth0 * WBETH_RATE if asset == "wBETH" else sol0 * BNSOL_RATE
        equity = float(rng.lognormal(math.log(120_000), 0.8))
        lev = float(rng.uniform(1.4, 2.6))
        rows.append((f"bn-lst-{i:04d}", f"{asset}-loop", {asset: lev * equity / fair},
                     (lev - 1) * equity, {}))
    n_acc = len(rows)
    bal_m = np.zeros((n_acc, len(assets)))
    perp_m = np.zeros((n_acc, len(perp_syms)))
    entry = np.zeros((n_acc, len(perp_syms)))
    debt_v = np.zeros(n_acc)
    for r, (_, _, bal, d, perps) in enumerate(rows):
        for a, q in bal.items():
            bal_m[r, col[a]] = q
        debt_v[r] = d
        for sym, q in perps.items():
            perp_m[r, pcol[sym]] = q
            entry[r, pcol[sym]] = float(perp_px[sym][0])
    return Population(
        ids=[r[0] for r in rows], kinds=[r[1] for r in rows], assets=assets,
        balance=bal_m, debt_usdt=debt_v, perp_syms=perp_syms, perp_qty=perp_m,
        perp_entry=entry, alive=np.ones(n_acc, dtype=bool),
    )


def build_perp_books(
    k: ScenarioKnobs, perp_px: dict[str, FloatArray],
    venue_path: Callable[[str, str], FloatArray], rng: np.random.Generator,
) -> list[PerpBook]:
    """Leveraged traders of every perp book (``venue_path(venue, coin)``: its price path)."""
    books = []
    scale = {"binance-usdm": 1.0, "bybit-linear": 2.0, "okx": 0.8, "hyperliquid": 4.0}
    for venue, coins in (
        ("binance-usdm", ["BTC", "ETH", "SOL", *[a for a in PERP_ALTS if a in perp_px]]),
        ("bybit-linear", ["BTC", "ETH", "SOL"]),
        ("okx", ["BTC", "ETH", "SOL"]),
        ("hyperliquid", ["BTC", "ETH", "SOL"]),
    ):
        for coin in coins:
            path = venue_path(venue, coin)
            p0 = float(path[0])
            m = k.n_perp_positions_per_book
            lev = rng.uniform(3, 50, m)
            notional = rng.lognormal(math.log(150_000), 1.3, m) * scale[venue]
            if coin not in ("BTC", "ETH"):
                notional *= 0.35
            is_long = rng.random(m) < 0.78
            entry = p0 * (1 + rng.normal(0, 0.006, m))
            mmr = 0.005
            liq = np.where(is_long, entry * (1 - 1 / lev + mmr), entry * (1 + 1 / lev - mmr))
            ok = np.where(is_long, liq < p0 * 0.997, liq > p0 * 1.003)
            qty = notional / entry
            lmask = is_long & ok
            smask = (~is_long) & ok
            lo = np.argsort(-liq[lmask])
            so = np.argsort(liq[smask])
            symbol = {"binance-usdm": f"{coin}USDT", "bybit-linear": f"{coin}USDT",
                      "okx": f"{coin}-USDT-SWAP", "hyperliquid": coin}[venue]
            books.append(PerpBook(venue, symbol, coin, liq[lmask][lo], qty[lmask][lo],
                                  liq[smask][so], qty[smask][so], path))
    return books


def build_aave(k: ScenarioKnobs, eth0: float, rng: np.random.Generator) -> list[dict[str, Any]]:
    """Aave v3 USDe loops and ETH-collateral loans (ETH at ``eth0``)."""
    out = []
    for i in range(k.n_aave_usde_loops):
        equity = float(rng.lognormal(math.log(400_000), 1.0))
        rounds = int(rng.integers(3, 11))
        coll = equity * (1 - 0.9 ** (rounds + 1)) / (1 - 0.9)
        out.append({"position_id": f"aave-usde-{i:04d}", "protocol": "aave-v3",
                    "kind": "usde-loop", "coll_asset": "USDe", "coll": coll,
                    "debt": coll - equity, "lt": 0.93, "bonus": 0.02,
                    "e_mode": "usde-stablecoin"})
    for i in range(k.n_aave_eth_loans):
        coll_usd = float(rng.lognormal(math.log(800_000), 1.0))
        hf0 = float(rng.uniform(1.08, 2.2))
        out.append({"position_id": f"aave-eth-{i:04d}", "protocol": "aave-v3",
                    "kind": "eth-loan", "coll_asset": "ETH", "coll": coll_usd / eth0,
                    "debt": coll_usd * 0.83 / hf0, "lt": 0.83, "bonus": 0.05,
                    "e_mode": None})
    return out


def position_rows(aave: list[dict[str, Any]], usde_key: str) -> list[dict[str, Any]]:
    """Loop positions as written to positions.jsonl (USDe collateral priced at ``usde_key``)."""
    out = []
    for pos in aave:
        if pos["coll_asset"] == "USDe":
            key = usde_key
        else:
            key = "ETH"
        out.append({
            "position_id": pos["position_id"], "protocol": pos["protocol"],
            "collateral": [{"asset": pos["coll_asset"], "amount": round(pos["coll"], 6),
                            "liquidation_threshold": pos["lt"], "price_key": key}],
            "debt": [{"asset": "USDT", "amount": round(pos["debt"], 2), "price_key": "USDT"}],
            "liquidation_bonus": pos["bonus"], "e_mode": pos["e_mode"],
        })
    return out


def account_rows(pop: Population, redemption: bool) -> list[dict[str, Any]]:
    """Unified accounts as written to accounts.jsonl (collateral at redemption rates or not)."""
    keys = {"USDe": "rate:USDE/USD" if redemption else "USDe@binance",
            "wBETH": "rate:WBETH/ETH*ETH" if redemption else "wBETH@binance",
            "BNSOL": "rate:BNSOL/SOL*SOL" if redemption else "BNSOL@binance"}
    out = []
    for a, acc_id in enumerate(pop.ids):
        balances = [{"asset": asset, "amount": round(float(q), 6),
                     "price_key": keys.get(asset, f"{asset}@binance")}
                    for asset, q in zip(pop.assets, pop.balance[a], strict=True) if q > 0]
        rates = {asset: [[0, COLLATERAL_RATE.get(asset, ALT_COLLATERAL_RATE)]]
                 for asset, q in zip(pop.assets, pop.balance[a], strict=True) if q > 0}
        balances.append({"asset": "USDT", "amount": -round(float(pop.debt_usdt[a]), 2),
                         "price_key": "USDT", "loan_mmr": LOAN_MMR})
        perps = [{"symbol": f"{s}USDT", "qty": round(float(q), 6),
                  "entry_price": round(float(pop.perp_entry[a, j]), 6),
                  "price_key": f"{s}@binance-usdm", "mmr": PERP_MMR.get(s, ALT_PERP_MMR)}
                 for j, (s, q) in enumerate(zip(pop.perp_syms, pop.perp_qty[a], strict=True))
                 if q != 0]
        out.append({"account_id": acc_id, "venue": "binance", "model": "binance-pm",
                    "balances": balances, "perps": perps, "collateral_rates": rates})
    return out
