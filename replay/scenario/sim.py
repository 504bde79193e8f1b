"""The agent-based day: populations, market makers, liquidation engines, arbitrageurs.

One step per second from 20:00 UTC. Each step:

1. market makers (per book family) compare a stress signal with their own risk limit and
   cancel their near bids (returning after a cooldown once stress has eased);
2. Binance's liquidation engine values every unified account (collateral at the
   configured price key, Binance uniMMR, RISK_MODEL.md §3), liquidates accounts below
   1.05 and sells *all* their collateral at a capped speed per asset;
3. USDe / wBETH / BNSOL on Binance are priced by the unabsorbed sell overhang over the
   depth the market makers still quote; arbitrageurs absorb USDe at Ethena's redemption
   cap ($2M per block) and sell part of it on-chain (which moves the Curve / Uniswap pools
   a little); wBETH/BNSOL have no instant redemption, only returning market makers;
4. leveraged perp traders on Binance, Bybit, OKX and Hyperliquid are liquidated when the
   venue price crosses their liquidation price;
5. Aave positions are checked with their own oracle key (USDT unless the preset says
   otherwise); liquidated Aave collateral is sold on-chain;
6. frames are written in each venue's wire format.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

import numpy as np
import numpy.typing as npt

from replay.capture import dumps_line
from replay.scenario import wire
from replay.scenario.config import T0_MS, ScenarioKnobs, hhmm
from replay.scenario.exogenous import (
    AGENT_BOOKS,
    ExogenousBooks,
    ExogenousInputs,
    Second,
    merge,
)
from replay.scenario.feed import ForkedFeed
from replay.scenario.market import (
    PERP_ALTS,
    AltSpec,
    alt_path,
    alt_specs,
    major_path,
    ou,
)

FloatArray = npt.NDArray[np.float64]
Frame = tuple[int, str, str, Any]

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
CRASH_WINDOW = (hhmm("20:48"), hhmm("22:45"))
#: USDe panic selling at the full rate, then a fifth of it (the voluntary deleveraging tail).
PANIC_WINDOW = (hhmm("21:36"), hhmm("21:46"))
PANIC_TAIL_END = hhmm("22:25")


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


class Simulation:
    """State and step loop of one scenario run."""

    def __init__(self, knobs: ScenarioKnobs, seed: int) -> None:
        self.k = knobs
        self.n = max(60, min(knobs.duration_s, 6 * 3600))
        ss = np.random.SeedSequence(seed)
        (r_major, r_alt, r_pop, r_perp, r_noise, r_mm, r_aave) = (
            np.random.default_rng(s) for s in ss.spawn(7)
        )
        self.rng_noise = r_noise
        shock = knobs.shock
        n = self.n
        self.px: dict[str, FloatArray] = {
            a: major_path(a, n, shock, r_major) for a in ("BTC", "ETH", "SOL")
        }
        self.alts: list[AltSpec] = alt_specs(knobs.n_alts, r_alt)
        self.alt_px = {s.base: alt_path(s, self.px["BTC"], shock, r_alt) for s in self.alts}
        self.perp_px: dict[str, FloatArray] = {}
        for a in ("BTC", "ETH", "SOL"):
            self.perp_px[a] = self.px[a] * np.exp(ou(n, 0.00004, 0.05, r_noise) - 0.0002)
        for s in self.alts:
            if s.base in PERP_ALTS:
                self.perp_px[s.base] = alt_path(s, self.px["BTC"], shock, r_alt, perp=True)
        self.venue_px: dict[tuple[str, str], FloatArray] = {}
        for venue, extra in (("bybit", 1.0), ("okx", 1.0), ("hyperliquid", 1.6)):
            for a in ("BTC", "ETH", "SOL"):
                vol = 0.00005 * extra
                self.venue_px[(venue, a)] = self.px[a] * np.exp(ou(n, vol, 0.05, r_noise))
        self.usde_noise = ou(n, 0.00003, 0.2, r_noise)
        self.pool_noise = {"curve": ou(n, 0.00002, 0.01, r_noise),
                           "uniswap-v3": ou(n, 0.00003, 0.01, r_noise)}
        self.btc_run_max = self._running_max(self.px["BTC"], 900)
        self.mm = {
            "btc": self._makers(r_mm, (0.015, 0.07), (360, 1800), (0, 30), 0.01),
            "alts": self._makers(r_mm, (0.015, 0.08), (600, 2400), (0, 20), 0.005),
            "usde": self._makers(r_mm, (0.01, 0.06), (600, 1800), (500, 1400), 0.3, True),
            "lst": self._makers(r_mm, (0.01, 0.06), (1200, 2400), (300, 900), 0.15, True),
        }
        self.coll = {
            "USDe": Collateral("USDe", knobs.usde_impact_depth_usd, knobs.engine_usde_usd_per_s,
                               1 / 3000, knobs.usde_arb_usd_per_s, 0.655, 40e6),
            "wBETH": Collateral("wBETH", 0.45e9, knobs.engine_wbeth_usd_per_s, 1 / 700, 0.0,
                                0.188, 20e6),
            "BNSOL": Collateral("BNSOL", 0.15e9, knobs.engine_bnsol_usd_per_s, 1 / 700, 0.0,
                                0.122, 10e6),
        }
        self.pop = self._population(r_pop)
        self.perp_books = self._perp_books(r_perp)
        self.aave = self._aave(r_aave)
        self.aave_alive = np.ones(len(self.aave), dtype=bool)
        self.onchain_flow_usd = 0.0
        self.liquidations: list[dict[str, Any]] = []
        self.books = self._books()
        self.spot_syms = self._spot_symbols()
        self.agg_id = 5_000_000
        self.dev_hist: deque[tuple[float, float]] = deque(maxlen=60)
        self._prepare()

    # ------------------------------------------------------------------ set-up

    @staticmethod
    def _running_max(x: FloatArray, window: int) -> FloatArray:
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

    @staticmethod
    def _makers(
        rng: np.random.Generator,
        thr: tuple[float, float],
        cool: tuple[int, int],
        lag: tuple[int, int],
        floor: float,
        stable: bool = False,
        n: int = 40,
    ) -> MarketMakers:
        return MarketMakers(
            threshold=rng.uniform(*thr, n),
            cooldown_s=rng.uniform(*cool, n),
            lag_s=rng.uniform(*lag, n),
            floor=floor,
            return_when_stable=stable,
        )

    def _population(self, rng: np.random.Generator) -> Population:
        k = self.k
        assets = ["USDe", "wBETH", "BNSOL", "BTC", "ETH", "SOL"] + [s.base for s in self.alts]
        perp_syms = ["BTC", "ETH", "SOL"] + [s.base for s in self.alts if s.base in PERP_ALTS]
        col = {a: i for i, a in enumerate(assets)}
        pcol = {a: i for i, a in enumerate(perp_syms)}
        rows: list[tuple[str, str, dict[str, float], float, dict[str, float]]] = []
        p0 = self._price_vector(0, valuation=False)
        eth0 = float(self.px["ETH"][0])
        sol0 = float(self.px["SOL"][0])
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
                perps[str(sym)] = notional / float(self.perp_px[str(sym)][0])
            rows.append((f"bn-whale-{i:03d}", "whale", {"USDe": lev * equity},
                         (lev - 1) * equity, perps))
        alt_names = [s.base for s in self.alts]
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
                entry[r, pcol[sym]] = float(self.perp_px[sym][0])
        return Population(
            ids=[r[0] for r in rows], kinds=[r[1] for r in rows], assets=assets,
            balance=bal_m, debt_usdt=debt_v, perp_syms=perp_syms, perp_qty=perp_m,
            perp_entry=entry, alive=np.ones(n_acc, dtype=bool),
        )

    def _perp_books(self, rng: np.random.Generator) -> list[PerpBook]:
        books = []
        scale = {"binance-usdm": 1.0, "bybit-linear": 2.0, "okx": 0.8, "hyperliquid": 4.0}
        for venue, coins in (
            ("binance-usdm", ["BTC", "ETH", "SOL", *[a for a in PERP_ALTS if a in self.perp_px]]),
            ("bybit-linear", ["BTC", "ETH", "SOL"]),
            ("okx", ["BTC", "ETH", "SOL"]),
            ("hyperliquid", ["BTC", "ETH", "SOL"]),
        ):
            for coin in coins:
                path = self._venue_path(venue, coin)
                p0 = float(path[0])
                m = self.k.n_perp_positions_per_book
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

    def _aave(self, rng: np.random.Generator) -> list[dict[str, Any]]:
        out = []
        for i in range(self.k.n_aave_usde_loops):
            equity = float(rng.lognormal(math.log(400_000), 1.0))
            rounds = int(rng.integers(3, 11))
            coll = equity * (1 - 0.9 ** (rounds + 1)) / (1 - 0.9)
            out.append({"position_id": f"aave-usde-{i:04d}", "protocol": "aave-v3",
                        "kind": "usde-loop", "coll_asset": "USDe", "coll": coll,
                        "debt": coll - equity, "lt": 0.93, "bonus": 0.02,
                        "e_mode": "usde-stablecoin"})
        eth0 = float(self.px["ETH"][0])
        for i in range(self.k.n_aave_eth_loans):
            coll_usd = float(rng.lognormal(math.log(800_000), 1.0))
            hf0 = float(rng.uniform(1.08, 2.2))
            out.append({"position_id": f"aave-eth-{i:04d}", "protocol": "aave-v3",
                        "kind": "eth-loan", "coll_asset": "ETH", "coll": coll_usd / eth0,
                        "debt": coll_usd * 0.83 / hf0, "lt": 0.83, "bonus": 0.05,
                        "e_mode": None})
        return out

    def _venue_path(self, venue: str, coin: str) -> FloatArray:
        if venue == "binance-usdm":
            return self.perp_px[coin]
        key = {"bybit-linear": "bybit", "okx": "okx", "hyperliquid": "hyperliquid"}[venue]
        return self.venue_px[(key, coin)]

    def _spot_symbols(self) -> list[tuple[str, str, float]]:
        syms = [("BTC", "BTCUSDT", 0.01), ("ETH", "ETHUSDT", 0.01), ("SOL", "SOLUSDT", 0.01),
                ("USDe", "USDEUSDT", 0.0001), ("wBETH", "WBETHUSDT", 0.01),
                ("BNSOL", "BNSOLUSDT", 0.01)]
        syms += [(s.base, f"{s.base}USDT", s.tick) for s in self.alts]
        return syms

    def _books(self) -> dict[str, wire.Book]:
        book = wire.Book
        books = {
            "bs:BTC": book("binance-spot", "BTCUSDT", 0.01, 0.00001, 120e6, 0.4e6, 0.2),
            "bs:ETH": book("binance-spot", "ETHUSDT", 0.01, 0.0001, 80e6, 0.3e6, 0.3),
            "bs:USDe": book("binance-spot", "USDEUSDT", 0.0001, 1.0, 89e6, 0.3e6, 1.0),
            "bs:wBETH": book("binance-spot", "WBETHUSDT", 0.01, 0.0001, 12e6, 0.05e6, 3.0),
            "bs:BNSOL": book("binance-spot", "BNSOLUSDT", 0.01, 0.001, 5e6, 0.02e6, 4.0),
            "bu:BTC": book("binance-usdm", "BTCUSDT", 0.1, 0.001, 550e6, 1.0e6, 0.1),
            "by:USDe": book("bybit-spot", "USDEUSDT", 0.0001, 1.0, 30e6, 0.1e6, 1.0),
        }
        for coin, tick, qs, d5 in (("BTC", 0.1, 0.001, 300e6), ("ETH", 0.01, 0.01, 150e6),
                                   ("SOL", 0.01, 0.1, 50e6)):
            books[f"by:{coin}"] = book("bybit-linear", f"{coin}USDT", tick, qs, d5, 0.5e6, 0.2)
            ct = {"BTC": 0.01, "ETH": 0.1, "SOL": 1.0}[coin]
            books[f"ok:{coin}"] = book("okx", f"{coin}-USDT-SWAP", tick, 1.0, d5 * 0.8, 0.4e6,
                                    0.3, contract_size=ct)
            books[f"hl:{coin}"] = book("hyperliquid", coin, tick * 10 if coin == "BTC" else tick,
                                    qs, d5 * 0.5, 0.3e6, 0.5)
        for s in self._perp_syms_usdm():
            if s != "BTC":
                tick = 0.01 if s in ("ETH", "SOL") else self._alt(s).tick
                books[f"bu:{s}"] = book("binance-usdm", f"{s}USDT", tick, 0.001, 40e6, 0.2e6, 0.5)
        return books

    def _perp_syms_usdm(self) -> list[str]:
        return ["BTC", "ETH", "SOL", *[a for a in PERP_ALTS if a in self.perp_px]]

    def _alt(self, base: str) -> AltSpec:
        return next(s for s in self.alts if s.base == base)

    # ------------------------------------------------------------------ prices

    def binance_price(self, asset: str, t: int) -> float:
        """Binance spot price of an asset at second t (collateral assets endogenous)."""
        if asset in ("BTC", "ETH", "SOL"):
            return float(self.px[asset][t])
        if asset == "USDe":
            return (1.0 - self.coll["USDe"].dev) * (1.0 + float(self.usde_noise[t]))
        if asset == "wBETH":
            return float(self.px["ETH"][t]) * WBETH_RATE * (1.0 - self.coll["wBETH"].dev)
        if asset == "BNSOL":
            return float(self.px["SOL"][t]) * BNSOL_RATE * (1.0 - self.coll["BNSOL"].dev)
        return float(self.alt_px[asset][t])

    def _price_vector(self, t: int, valuation: bool) -> FloatArray:
        assets = ["USDe", "wBETH", "BNSOL", "BTC", "ETH", "SOL"] + [s.base for s in self.alts]
        out = np.array([self.binance_price(a, t) if t >= 0 else 0.0 for a in assets])
        if valuation and self.k.binance_collateral_pricing == "redemption":
            out[0] = 1.0
            out[1] = float(self.px["ETH"][t]) * WBETH_RATE
            out[2] = float(self.px["SOL"][t]) * BNSOL_RATE
        return out

    # ------------------------------------------------------------------ precomputed

    def _prepare(self) -> None:
        """What does not depend on the agents' state, computed for the whole run at once.

        The BTC and alt market makers react to BTC's drawdown only; the engine's price
        matrix columns other than the collateral assets, its rates and marks are exogenous.
        """
        btc_dd = 1.0 - self.px["BTC"] / self.btc_run_max
        self.lf_btc = [self.mm["btc"].step(t, dd) for t, dd in enumerate(btc_dd.tolist())]
        self.lf_alts = [self.mm["alts"].step(t, dd) for t, dd in enumerate(btc_dd.tolist())]
        pop = self.pop
        self._exo_px = np.column_stack([self.px[a] for a in ("BTC", "ETH", "SOL")]
                                       + [self.alt_px[s.base] for s in self.alts])
        self._rates = np.array([COLLATERAL_RATE.get(a, ALT_COLLATERAL_RATE) for a in pop.assets])
        self._marks = np.column_stack([self.perp_px[s] for s in pop.perp_syms])
        self._mmrs = np.array([PERP_MMR.get(s, ALT_PERP_MMR) for s in pop.perp_syms])
        self._perp_due = self._perp_checks()
        #: Collateral, liquidation threshold, debt and "is USDe" of every Aave position.
        self._aave_terms = (np.array([pos["coll"] for pos in self.aave]),
                            np.array([pos["lt"] for pos in self.aave]),
                            np.array([pos["debt"] for pos in self.aave]),
                            np.array([pos["coll_asset"] == "USDe" for pos in self.aave]))
        #: Accounts holding perps (the others' perp PnL is a sum of zeros).
        self._perp_rows = np.flatnonzero((pop.perp_qty != 0).any(axis=1))
        self._perp_qty = pop.perp_qty[self._perp_rows]
        self._perp_entry = pop.perp_entry[self._perp_rows]
        self._abs_perp_qty = np.abs(pop.perp_qty)
        self._loan_mm = pop.debt_usdt * LOAN_MMR
        k = self.k
        t = np.arange(self.n)
        crash = (t >= CRASH_WINDOW[0]) & (t < CRASH_WINDOW[1]) if k.shock else t < 0
        self.book_tick = np.where(crash, t % k.crash_book_interval_s == 0,
                                  t % k.book_interval_s == 0)
        self.depth_tick = np.where(crash, t % k.crash_depth_interval_s == 0,
                                   t % k.depth_interval_s == 0)
        #: (offset ms, asset, channel, book) of the spot books the agents price.
        self._spot = [(5 + idx * 7, asset, f"{sym.lower()}@bookTicker", self.books[f"bs:{asset}"])
                      for idx, (asset, sym, _) in enumerate(self.spot_syms)
                      if asset in AGENT_BOOKS]
        inputs = ExogenousInputs(
            px=self.px, alt_px=self.alt_px, perp_px=self.perp_px, venue_px=self.venue_px,
            spot_syms=self.spot_syms, usdm=self._perp_syms_usdm(), lf_btc=self.lf_btc,
            lf_alts=self.lf_alts, depth_tick=self.depth_tick.tolist(),
            book_tick=self.book_tick.tolist(), books=self.books)
        self.exogenous = ExogenousBooks(inputs)

    def _perp_checks(self) -> dict[int, list[PerpBook]]:
        """Seconds at which a perp book can liquidate, and the books (in book order).

        After second s every long left has its liquidation price below the price at s and
        every short above it, so a book can only liquidate at a new low or high of its path
        (or at the first second).
        """
        due = np.zeros((self.n, len(self.perp_books)), dtype=bool)
        for i, b in enumerate(self.perp_books):
            low = np.minimum.accumulate(b.path)
            high = np.maximum.accumulate(b.path)
            due[1:, i] = (b.path[1:] < low[:-1]) | (b.path[1:] > high[:-1])
            due[0, i] = True
        out: dict[int, list[PerpBook]] = {}
        for t, i in np.argwhere(due).tolist():
            out.setdefault(t, []).append(self.perp_books[i])
        return out

    # ------------------------------------------------------------------ step

    def step(self, t: int) -> list[Frame]:
        """Advance one second and return that second's frames (unsorted)."""
        ts = T0_MS + t * 1000
        frames: list[Frame] = []
        k = self.k
        lf_btc = self.lf_btc[t]
        lf_alts = self.lf_alts[t]
        lst_dev = max(self.coll["wBETH"].dev, self.coll["BNSOL"].dev)
        usde_dev = self.coll["USDe"].dev
        self.dev_hist.append((usde_dev, lst_dev))
        usde_then, lst_then = self.dev_hist[0]
        lf_usde = self.mm["usde"].step(t, usde_dev, usde_dev > usde_then + 1e-4)
        lf_lst = self.mm["lst"].step(t, lst_dev, lst_dev > lst_then + 1e-4)
        self.lf = {"btc": lf_btc, "alts": lf_alts, "usde": lf_usde, "lst": lf_lst}

        # Binance liquidation engine: value accounts, liquidate, queue forced sales.
        self._binance_engine(t, ts)
        # Collateral books.
        panic = 0.0
        if k.shock and PANIC_WINDOW[0] <= t < PANIC_WINDOW[1]:
            panic = k.usde_panic_sell_usd_per_s
        elif k.shock and PANIC_WINDOW[1] <= t < PANIC_TAIL_END:
            panic = k.usde_panic_sell_usd_per_s * 0.2  # voluntary deleveraging tail
        for name, c in self.coll.items():
            fair = 1.0 if name == "USDe" else (
                float(self.px["ETH"][t]) * WBETH_RATE if name == "wBETH"
                else float(self.px["SOL"][t]) * BNSOL_RATE)
            price = fair * (1.0 - c.dev)
            budget = c.engine_usd_per_s
            c.executed_usd_now = 0.0
            while budget > 1.0 and c.queue:
                acc, left = c.queue[0]
                a = int(acc)
                take = min(left, budget / price)
                usd = take * price
                c.sold_qty[a] = c.sold_qty.get(a, 0.0) + take
                c.sold_usd[a] = c.sold_usd.get(a, 0.0) + usd
                c.started_ms.setdefault(a, ts)
                budget -= usd
                c.executed_usd_now += usd
                left -= take
                if left <= 1e-9:
                    c.queue.popleft()
                    self._record_collateral(name, a, ts)
                else:
                    c.queue[0][1] = left
            flow = c.executed_usd_now + (panic if name == "USDe" else 0.0)
            c.overhang_usd += flow
            lf = self.lf["usde"] if name == "USDe" else self.lf["lst"]
            absorb = c.mm_absorb_per_s * lf * c.overhang_usd
            arb = c.arb_usd_per_s if c.dev > 0.003 else 0.0
            if name == "USDe":
                self.onchain_flow_usd = 0.98 * self.onchain_flow_usd + 0.02 * min(
                    arb, c.overhang_usd) * 0.5
            c.overhang_usd = max(0.0, c.overhang_usd - absorb - arb)
            depth = c.depth_usd * lf
            # Value buyers' resting bids at value_level × fair fill whatever would push
            # the price below them, up to their per-second capacity.
            room = (1.0 - c.value_level) * depth
            if c.value_usd_per_s > 0 and c.overhang_usd > room:
                c.overhang_usd -= min(c.value_usd_per_s, c.overhang_usd - room)
            c.dev = min(0.97, c.overhang_usd / depth)

        self._aave_check(t, ts)
        frames += self._perp_liquidations(t, ts)
        frames += self._emit(t, ts, flow_usde=self.coll["USDe"].executed_usd_now + panic)
        return frames

    def _record_collateral(self, asset: str, a: int, ts: int) -> None:
        c = self.coll[asset]
        qty = c.sold_qty.pop(a)
        usd = c.sold_usd.pop(a)
        self.liquidations.append({
            "ts_ms": ts, "venue": "binance", "kind": "collateral", "account_id": self.pop.ids[a],
            "account_kind": self.pop.kinds[a], "asset": asset, "qty": round(qty, 6),
            "notional_usd": round(usd, 2), "avg_price": round(usd / qty, 6) if qty else 0.0,
            "started_ms": c.started_ms.pop(a),
        })

    def _binance_engine(self, t: int, ts: int) -> None:
        pop = self.pop
        if not np.count_nonzero(pop.alive):
            return
        prices = np.empty(self._exo_px.shape[1] + 3)
        if self.k.binance_collateral_pricing == "redemption":
            prices[:3] = (1.0, float(self.px["ETH"][t]) * WBETH_RATE,
                          float(self.px["SOL"][t]) * BNSOL_RATE)
        else:
            prices[:3] = [self.binance_price(a, t) for a in COLLATERAL]
        prices[3:] = self._exo_px[t]
        marks = self._marks[t].copy()
        equity = pop.balance @ (prices * self._rates) - pop.debt_usdt
        equity[self._perp_rows] += (self._perp_qty * (marks[None, :] - self._perp_entry)).sum(axis=1)
        mm = self._loan_mm + self._abs_perp_qty @ (marks * self._mmrs)
        hits = np.flatnonzero(pop.alive & ((equity < 1.05 * mm) | (equity < 0)))
        if not hits.size:
            return
        sell_px = self._price_vector(t, valuation=False)
        for a in hits:
            pop.alive[a] = False
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
            for j, sym in enumerate(pop.perp_syms):
                q = float(pop.perp_qty[a, j])
                if q != 0:
                    self.pending_force.append((f"{sym}USDT", q, float(marks[j])))
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

    def _aave_price(self, t: int) -> float:
        key = self.k.aave_usde_price_key
        if key == "USDe@binance":
            return self.binance_price("USDe", t)
        if key == "USDe":
            return float(np.median([self.binance_price("USDe", t), self.pool_price("curve", t),
                                    self.pool_price("uniswap-v3", t)]))
        return 1.0

    def _aave_check(self, t: int, ts: int) -> None:
        if t % 12:
            return  # one check per Ethereum block
        p_usde = self._aave_price(t)
        p_eth = float(self.px["ETH"][t])
        coll, lt, debt, usde = self._aave_terms
        health = coll * np.where(usde, p_usde, p_eth) * lt / debt
        for i in np.flatnonzero(self.aave_alive & (health < 1.0)).tolist():
            pos = self.aave[i]
            p = p_usde if pos["coll_asset"] == "USDe" else p_eth
            hf = float(health[i])
            self.aave_alive[i] = False
            repaid = pos["debt"] * (0.5 if hf > 0.95 else 1.0)
            seized = min(pos["coll"], repaid / p * (1 + pos["bonus"]))
            if pos["coll_asset"] == "USDe":
                self.onchain_flow_usd += seized * p * 0.02
            self.liquidations.append({
                "ts_ms": ts, "venue": "aave-v3", "kind": pos["kind"],
                "position_id": pos["position_id"], "asset": pos["coll_asset"],
                "qty": round(seized, 6), "notional_usd": round(seized * p, 2),
                "avg_price": round(p, 6), "health_factor": round(hf, 4),
            })

    def pool_price(self, venue: str, t: int) -> float:
        """On-chain pool price: arbitrage flow from Binance and seized-collateral sales."""
        depth = 300e6 if venue == "curve" else 120e6
        return 1.0 - self.onchain_flow_usd / depth + float(self.pool_noise[venue][t])

    # ------------------------------------------------------------------ perps

    pending_force: list[tuple[str, float, float]]

    def _perp_liquidations(self, t: int, ts: int) -> list[Frame]:
        frames: list[Frame] = []
        force = {sym: (q, p) for sym, q, p in self.pending_force}
        self.pending_force = []
        for b in self._perp_due.get(t, ()):
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
            frames += self._liq_frames(b, ts, price, events)
            if b.venue == "binance-usdm":
                force.pop(b.symbol, None)
        for sym, (q, p) in force.items():
            b = next(x for x in self.perp_books if x.venue == "binance-usdm" and x.symbol == sym)
            frames += self._liq_frames(b, ts, p, [("long" if q > 0 else "short", abs(q), p)])
        return frames

    def _liq_frames(
        self, b: PerpBook, ts: int, price: float, events: list[tuple[str, float, float]]
    ) -> list[Frame]:
        pd = 1 if b.coin == "BTC" else (2 if b.coin in ("ETH", "SOL") else 5)
        if b.venue == "binance-usdm":
            # Binance pushes at most one liquidation per symbol per second: the last one.
            side, q, bk = events[-1]
            qty = f"{q:.3f}"
            return [(ts + 400, b.venue, "!forceOrder@arr", {
                "e": "forceOrder", "E": ts + 400,
                "o": {"s": b.symbol, "S": "SELL" if side == "long" else "BUY", "o": "LIMIT",
                      "f": "IOC", "q": qty, "p": f"{bk:.{pd}f}", "ap": f"{price:.{pd}f}",
                      "X": "FILLED", "l": qty, "z": qty, "T": ts + 390}})]
        if b.venue == "bybit-linear":
            out = []
            for half in (0, 1):
                part = events[half::2]
                if part:
                    out.append((ts + 250 + 500 * half, b.venue, f"allLiquidation.{b.symbol}", {
                        "topic": f"allLiquidation.{b.symbol}", "type": "snapshot",
                        "ts": ts + 250 + 500 * half,
                        "data": [{"T": ts + 200 + 500 * half, "s": b.symbol,
                                  "S": "Buy" if side == "long" else "Sell", "v": f"{q:.3f}",
                                  "p": f"{bk:.{pd}f}"} for side, q, bk in part]}))
            return out
        if b.venue == "okx":
            ct = {"BTC": 0.01, "ETH": 0.1, "SOL": 1.0}[b.coin]
            return [(ts + 600, b.venue, "liquidation-orders", {
                "arg": {"channel": "liquidation-orders", "instType": "SWAP"},
                "data": [{"instId": b.symbol, "instType": "SWAP", "uly": f"{b.coin}-USDT",
                          "details": [{"side": "sell" if side == "long" else "buy",
                                       "posSide": side, "bkPx": f"{bk:.{pd}f}",
                                       "sz": str(max(1, round(q / ct))), "bkLoss": "0",
                                       "ccy": "", "ts": str(ts + 550)}
                                      for side, q, bk in events]}]})]
        trades = []
        for side, q, _bk in events:
            self.agg_id += 1
            trades.append({"coin": b.coin, "side": "A" if side == "long" else "B",
                           "px": f"{price:.{pd}f}", "sz": f"{q:.4f}",
                           "hash": f"0x{self.agg_id:064x}", "time": ts + 700,
                           "tid": self.agg_id,
                           "users": [f"0x{(self.agg_id * 7919) % (1 << 160):040x}",
                                     "0x" + "2e3d94f0562703b25c83308a05046ddaf9a8dd14"]})
        return [(ts + 700, "hyperliquid", "trades", {"channel": "trades", "data": trades})]

    # ------------------------------------------------------------------ frames

    def _emit(self, t: int, ts: int, flow_usde: float) -> list[Frame]:
        frames: list[Frame] = []
        lf = self.lf
        depth_tick = bool(self.depth_tick[t])
        book_tick = bool(self.book_tick[t])
        # Binance spot books of USDe, wBETH and BNSOL (the other spot, USD-M, Bybit, OKX and
        # Hyperliquid streams are framed by ExogenousStreams).
        for off, asset, channel, book in self._spot:
            if depth_tick or book_tick or not book.started:
                liq = lf["usde"] if asset == "USDe" else lf["lst"]
                frames += wire.binance_depth(book, ts + off, self.binance_price(asset, t), liq,
                                             False)
            if book_tick:
                frames.append((ts + off + 1, "binance-spot", channel,
                               wire.binance_book_ticker(book, ts + off + 1, False)))
        if flow_usde > 0:
            self.agg_id += 1
            p = self.binance_price("USDe", t)
            frames.append((ts + 900, "binance-spot", "usdeusdt@aggTrade", {
                "e": "aggTrade", "E": ts + 900, "s": "USDEUSDT", "a": self.agg_id,
                "p": f"{p:.4f}", "q": f"{flow_usde / p:.2f}", "f": self.agg_id,
                "l": self.agg_id, "T": ts + 899, "m": True}))
        if depth_tick:
            frames.append((ts + 560, "bybit-spot", "orderbook.50.USDEUSDT",
                           wire.bybit_book(self.books["by:USDe"], ts + 560,
                                           self.bybit_usde(t), lf["usde"] ** 0.5)))
        # On-chain pools every block, USDT/USD and redemption rates every minute.
        if t % 12 == 0:
            for venue, quote, depth in (("curve", "USDC", 180e6), ("uniswap-v3", "USDT", 35e6)):
                frames.append((ts + 800, venue, "price", {
                    "base": "USDe", "quote": quote, "price": round(self.pool_price(venue, t), 6),
                    "depth_usd": depth, "block": 23_552_000 + t // 12}))
        if t % 60 == 0:
            frames.append((ts + 850, "chainlink", "price",
                           {"base": "USDT", "quote": "USD", "price": 1.0}))
            frames.append((ts + 851, "binance-rate", "price",
                           {"base": "WBETH", "quote": "ETH", "price": WBETH_RATE}))
            frames.append((ts + 852, "binance-rate", "price",
                           {"base": "BNSOL", "quote": "SOL", "price": BNSOL_RATE}))
            frames.append((ts + 853, "binance-rate", "price",
                           {"base": "USDE", "quote": "USD", "price": 1.0}))
        return frames

    def bybit_usde(self, t: int) -> float:
        """Bybit's USDe book: a shallower venue-local dip (public: 0.92–0.95)."""
        return 1.0 - 0.2 * self.coll["USDe"].dev + float(self.usde_noise[t]) * 0.5

    def run(self) -> Iterator[tuple[bytes, dict[str, int]]]:
        """The run second by second: (its capture lines, how many per venue).

        :attr:`exogenous` (the exogenous books, tickers and markPrice lines) is framed in
        a child process meanwhile (see :mod:`replay.scenario.exogenous` for why the merged
        lines keep their order).
        """
        self.pending_force = []
        return self._merged(ForkedFeed(self.exogenous.second, self.n))

    def _merged(self, feed: ForkedFeed[Second]) -> Iterator[tuple[bytes, dict[str, int]]]:
        try:
            for t, second in enumerate(feed):
                own = [(f[0], f[1], dumps_line(*f)) for f in self.step(t)]
                own.sort(key=itemgetter(0))
                venues = Counter(second[3])
                venues.update(map(itemgetter(1), own))
                yield merge(second, own), venues
        finally:
            feed.close()

    # ------------------------------------------------------------------ populations out

    def positions(self) -> list[dict[str, Any]]:
        """Loop positions as written to positions.jsonl."""
        out = []
        for pos in self.aave:
            if pos["coll_asset"] == "USDe":
                key = self.k.aave_usde_price_key
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

    def accounts(self) -> list[dict[str, Any]]:
        """Unified accounts as written to accounts.jsonl."""
        pop = self.pop
        redemption = self.k.binance_collateral_pricing == "redemption"
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

    def flush_queues(self, ts: int) -> None:
        """Record partially executed forced sales still queued at the end of the run."""
        for name, c in self.coll.items():
            for a in list(c.sold_qty):
                self._record_collateral(name, a, ts)
