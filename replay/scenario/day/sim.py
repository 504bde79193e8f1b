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

import itertools
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from operator import itemgetter
from typing import Any

import numpy as np
import numpy.typing as npt

from replay.capture import dumps_line
from replay.scenario.config import T0_MS, ScenarioKnobs, hhmm
from replay.scenario.day import wire
from replay.scenario.day.actors import (
    BNSOL_RATE,
    COLLATERAL,
    WBETH_RATE,
    Collateral,
    account_rows,
    build_aave,
    build_perp_books,
    build_population,
    make_makers,
    position_rows,
    running_max,
)
from replay.scenario.day.engines import AaveMarket, MarginEngine, PerpDesk
from replay.scenario.day.exogenous import (
    AGENT_BOOKS,
    ExogenousBooks,
    ExogenousInputs,
    Line,
    Second,
    merge,
)
from replay.scenario.day.feed import ForkedFeed
from replay.scenario.day.market import (
    PERP_ALTS,
    AltSpec,
    alt_path,
    alt_specs,
    major_path,
    ou,
)

FloatArray = npt.NDArray[np.float64]
Frame = tuple[int, str, str, Any]

CRASH_WINDOW = (hhmm("20:48"), hhmm("22:45"))
#: USDe panic selling at the full rate, then a fifth of it (the voluntary deleveraging tail).
PANIC_WINDOW = (hhmm("21:36"), hhmm("21:46"))
PANIC_TAIL_END = hhmm("22:25")
#: Seconds the agents may step ahead of the book child's lines.
STEP_AHEAD_S = 600


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
        self.btc_run_max = running_max(self.px["BTC"], 900)
        self.mm = {
            "btc": make_makers(r_mm, (0.015, 0.07), (360, 1800), (0, 30), 0.01),
            "alts": make_makers(r_mm, (0.015, 0.08), (600, 2400), (0, 20), 0.005),
            "usde": make_makers(r_mm, (0.01, 0.06), (600, 1800), (500, 1400), 0.3, True),
            "lst": make_makers(r_mm, (0.01, 0.06), (1200, 2400), (300, 900), 0.15, True),
        }
        self.coll = {
            "USDe": Collateral("USDe", knobs.usde_impact_depth_usd, knobs.engine_usde_usd_per_s,
                               1 / 3000, knobs.usde_arb_usd_per_s, 0.655, 40e6),
            "wBETH": Collateral("wBETH", 0.45e9, knobs.engine_wbeth_usd_per_s, 1 / 700, 0.0,
                                0.188, 20e6),
            "BNSOL": Collateral("BNSOL", 0.15e9, knobs.engine_bnsol_usd_per_s, 1 / 700, 0.0,
                                0.122, 10e6),
        }
        self.pop = build_population(knobs, self.alts, self.perp_px,
                                    self._price_vector(0, valuation=False), r_pop)
        self.perp_books = build_perp_books(knobs, self.perp_px, self._venue_path, r_perp)
        self.aave = build_aave(knobs, float(self.px["ETH"][0]), r_aave)
        self.onchain_flow_usd = 0.0
        self.liquidations: list[dict[str, Any]] = []
        self.books = wire.venue_books(self._perp_syms_usdm(), {s.base: s.tick for s in self.alts})
        self.spot_syms = wire.spot_symbols([(s.base, s.tick) for s in self.alts])
        #: Ids of the trades framed (USDe aggTrades, Hyperliquid liquidation trades).
        self.trade_ids = itertools.count(5_000_001)
        self.dev_hist: deque[tuple[float, float]] = deque(maxlen=60)
        self._prepare()

    # ------------------------------------------------------------------ set-up

    def _venue_path(self, venue: str, coin: str) -> FloatArray:
        if venue == "binance-usdm":
            return self.perp_px[coin]
        key = {"bybit-linear": "bybit", "okx": "okx", "hyperliquid": "hyperliquid"}[venue]
        return self.venue_px[(key, coin)]

    def _perp_syms_usdm(self) -> list[str]:
        return ["BTC", "ETH", "SOL", *[a for a in PERP_ALTS if a in self.perp_px]]

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
        exo_px = np.column_stack([self.px[a] for a in ("BTC", "ETH", "SOL")]
                                 + [self.alt_px[s.base] for s in self.alts])
        marks = np.column_stack([self.perp_px[s] for s in self.pop.perp_syms])
        self.engine = MarginEngine(self.pop, self.coll, exo_px, marks, self.liquidations)
        self.desk = PerpDesk(self.perp_books, self.n, self.liquidations, self.trade_ids)
        #: Collateral, liquidation threshold, debt and "is USDe" of every Aave position.
        self.aave_market = AaveMarket(self.aave, self.liquidations)
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
        forced = self.engine.step(t, ts, lambda: self._collateral_valuation(t),
                                  lambda: self._price_vector(t, valuation=False))
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
                    self.engine.record_sale(name, a, ts)
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
        frames += self.desk.liquidate(t, ts, forced)
        frames += self._emit(t, ts, flow_usde=self.coll["USDe"].executed_usd_now + panic)
        return frames

    def _collateral_valuation(self, t: int) -> Sequence[float]:
        """The valuation prices of USDe, wBETH and BNSOL in Binance's engine at second t."""
        if self.k.binance_collateral_pricing == "redemption":
            return (1.0, float(self.px["ETH"][t]) * WBETH_RATE,
                    float(self.px["SOL"][t]) * BNSOL_RATE)
        return [self.binance_price(a, t) for a in COLLATERAL]

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
        for flow_usd in self.aave_market.check(ts, self._aave_price(t), float(self.px["ETH"][t])):
            self.onchain_flow_usd += flow_usd

    def pool_price(self, venue: str, t: int) -> float:
        """On-chain pool price: arbitrage flow from Binance and seized-collateral sales."""
        depth = 300e6 if venue == "curve" else 120e6
        return 1.0 - self.onchain_flow_usd / depth + float(self.pool_noise[venue][t])

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
            trade_id = next(self.trade_ids)
            p = self.binance_price("USDe", t)
            frames.append((ts + 900, "binance-spot", "usdeusdt@aggTrade", {
                "e": "aggTrade", "E": ts + 900, "s": "USDEUSDT", "a": trade_id,
                "p": f"{p:.4f}", "q": f"{flow_usde / p:.2f}", "f": trade_id,
                "l": trade_id, "T": ts + 899, "m": True}))
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
        a child process meanwhile (see :mod:`replay.scenario.day.exogenous` for why the merged
        lines keep their order).
        """
        return self._merged(ForkedFeed(self.exogenous.second, self.n))

    def _own_lines(self) -> Iterator[list[Line]]:
        """Every second's own lines (the step's frames serialised), ordered by ts_ms."""
        for t in range(self.n):
            own = [(f[0], f[1], dumps_line(*f)) for f in self.step(t)]
            own.sort(key=itemgetter(0))
            yield own

    def _merged(self, feed: ForkedFeed[Second]) -> Iterator[tuple[bytes, dict[str, int]]]:
        """Each second's own lines merged into the child's; while the child's next second
        is not there yet, the agents step ahead (up to :data:`STEP_AHEAD_S` seconds)."""
        own_lines = self._own_lines()
        ahead: deque[list[Line]] = deque()
        stepped = 0
        seconds = iter(feed)
        try:
            for _ in range(self.n):
                while stepped < self.n and len(ahead) < STEP_AHEAD_S and not feed.ready():
                    ahead.append(next(own_lines))
                    stepped += 1
                second = next(seconds)
                if not ahead:
                    ahead.append(next(own_lines))
                    stepped += 1
                own = ahead.popleft()
                venues = Counter(second[3])
                venues.update(map(itemgetter(1), own))
                yield merge(second, own), venues
        finally:
            feed.close()

    # ------------------------------------------------------------------ populations out

    def positions(self) -> list[dict[str, Any]]:
        """Loop positions as written to positions.jsonl."""
        return position_rows(self.aave, self.k.aave_usde_price_key)

    def accounts(self) -> list[dict[str, Any]]:
        """Unified accounts as written to accounts.jsonl."""
        return account_rows(self.pop, self.k.binance_collateral_pricing == "redemption")

    def flush_queues(self, ts: int) -> None:
        """Record partially executed forced sales still queued at the end of the run."""
        for name, c in self.coll.items():
            for a in list(c.sold_qty):
                self.engine.record_sale(name, a, ts)
