"""Reference price paths: the macro shock (exogenous driver) and the alt vacuum wicks.

The majors follow a calibrated shock schedule (knots from OCT10_FACTS.md) with seeded
Brownian-bridge noise pinned to the knots; alts follow BTC with a beta plus an
idiosyncratic vacuum wick in 21:14–21:21. USDe, wBETH and BNSOL on Binance are not here:
they are priced endogenously by the agents in :mod:`replay.scenario.day.sim`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from replay.scenario.config import hhmm

FloatArray = npt.NDArray[np.float64]

#: (time "HH:MM", price) knots of the shock day; the lows are the Binance spot lows.
SHOCK_KNOTS: dict[str, list[tuple[str, float]]] = {
    "BTC": [
        ("20:00", 117_700), ("20:30", 117_200), ("20:45", 116_800), ("20:50", 116_700),
        ("20:53", 114_600), ("20:55", 113_000), ("21:00", 113_600), ("21:05", 112_600),
        ("21:10", 112_300), ("21:13", 111_200), ("21:15", 108_600), ("21:18", 105_600),
        ("21:20", 102_700), ("21:21", 104_600), ("21:24", 107_900), ("21:30", 110_600),
        ("21:40", 111_400), ("22:00", 111_900), ("22:30", 112_300), ("23:30", 112_800),
        ("02:00", 113_000),
    ],
    "ETH": [
        ("20:00", 4_350), ("20:45", 4_335), ("20:50", 4_330), ("20:55", 4_150),
        ("21:05", 4_110), ("21:13", 4_080), ("21:17", 3_720), ("21:20", 3_470),
        ("21:22", 3_650), ("21:35", 3_800), ("21:50", 3_900), ("23:00", 3_860),
        ("02:00", 3_830),
    ],
    "SOL": [
        ("20:00", 218.0), ("20:45", 217.5), ("20:50", 217.0), ("20:55", 205.0),
        ("21:13", 200.0), ("21:17", 181.0), ("21:20", 170.0), ("21:22", 178.0),
        ("21:40", 183.0), ("22:00", 186.0), ("02:00", 182.0),
    ],
}

#: Alts on Binance spot: (symbol base, price at 20:00, tick, wick depth or None=drawn).
#: Named depths are the public day-high-to-low figures.
ALTS: list[tuple[str, float, float, float | None]] = [
    ("IOTX", 0.02010, 0.00001, 0.99996),
    ("ATOM", 4.188, 0.001, 0.9998),
    ("SUI", 3.42, 0.0001, 0.84),
    ("ENA", 0.5480, 0.0001, 0.77),
    ("AVAX", 28.90, 0.01, 0.70),
    ("DOGE", 0.2480, 0.00001, 0.63),
    ("ADA", 0.8200, 0.0001, None),
    ("LINK", 21.80, 0.01, None),
    ("DOT", 4.10, 0.001, None),
    ("NEAR", 2.85, 0.001, None),
    ("APT", 5.20, 0.001, None),
    ("ARB", 0.4300, 0.0001, None),
    ("OP", 0.6900, 0.0001, None),
    ("INJ", 12.40, 0.01, None),
    ("TIA", 1.52, 0.001, None),
    ("SEI", 0.2850, 0.0001, None),
    ("FIL", 2.25, 0.001, None),
    ("LTC", 128.0, 0.01, None),
    ("XRP", 2.80, 0.0001, None),
    ("TRX", 0.3300, 0.0001, None),
    ("AAVE", 275.0, 0.01, None),
    ("UNI", 7.90, 0.001, None),
    ("WIF", 0.7400, 0.0001, None),
    ("JUP", 0.4100, 0.0001, None),
    ("PYTH", 0.1450, 0.0001, None),
    ("RENDER", 3.30, 0.001, None),
    ("FET", 0.6100, 0.0001, None),
    ("ICP", 4.40, 0.001, None),
    ("HBAR", 0.2150, 0.00001, None),
    ("ALGO", 0.2200, 0.0001, None),
    ("SAND", 0.2600, 0.0001, None),
    ("GALA", 0.0150, 0.00001, None),
    ("CRV", 0.7200, 0.001, None),
    ("THETA", 0.7500, 0.0001, None),
]

#: Alts that also have a Binance USD-M perp in the scenario.
PERP_ALTS = ("DOGE", "SUI", "AVAX", "ENA", "ATOM")


@dataclass(frozen=True)
class AltSpec:
    """One modelled alt book."""

    base: str
    price0: float
    tick: float
    depth: float
    beta: float
    wick_start_s: int
    fall_s: int
    hold_s: int
    recover_s: int
    keep_loss: float


def _bridge(rng: np.random.Generator, sigma: FloatArray, knot_idx: list[int]) -> FloatArray:
    """Brownian bridge noise (sum of N(0, sigma_t²) steps) pinned to 0 at every knot."""
    w = np.concatenate([[0.0], np.cumsum(rng.standard_normal(sigma.size - 1) * sigma[1:])])
    out = w.copy()
    for a, b in itertools.pairwise(knot_idx):
        if b <= a:
            continue
        frac = np.linspace(0.0, 1.0, b - a + 1)
        out[a : b + 1] = w[a : b + 1] - (w[a] + frac * (w[b] - w[a]))
    out[knot_idx[-1] :] = w[knot_idx[-1] :] - w[knot_idx[-1]]
    return out


def vol_profile(n: int, shock: bool) -> FloatArray:
    """Per-second log-volatility: calm ≈ 2%/day; ×6 after 20:50, ×12 in 21:13–21:30."""
    base = 0.02 / np.sqrt(86_400.0)
    sigma = np.full(n, base)
    if shock:
        t = np.arange(n)
        sigma[(t >= hhmm("20:50")) & (t < hhmm("22:30"))] *= 6.0
        sigma[(t >= hhmm("21:13")) & (t < hhmm("21:30"))] *= 2.0
    return sigma


def major_path(
    asset: str, n: int, shock: bool, rng: np.random.Generator
) -> FloatArray:
    """Per-second price of a major: log-linear between knots times bridge noise."""
    knots = SHOCK_KNOTS[asset]
    if not shock:
        knots = [("20:00", knots[0][1]), ("02:00", knots[0][1])]
    ks = [min(hhmm(k), n - 1) for k, _ in knots]
    vs = [v for _, v in knots]
    t = np.arange(n, dtype=np.float64)
    anchor = np.exp(np.interp(t, np.array(ks, dtype=np.float64), np.log(np.array(vs))))
    pinned = sorted({k for k in ks})
    noise = _bridge(rng, vol_profile(n, shock), pinned)
    return np.asarray(anchor * np.exp(noise), dtype=np.float64)


def alt_specs(n_alts: int, rng: np.random.Generator) -> list[AltSpec]:
    """Draw each alt's beta, wick timing and depth (named alts keep the public depth)."""
    specs = []
    for base, p0, tick, depth in ALTS[:n_alts]:
        d = depth if depth is not None else float(0.50 + 0.49 * rng.beta(2.2, 1.8))
        specs.append(
            AltSpec(
                base=base,
                price0=p0,
                tick=tick,
                depth=d,
                beta=float(rng.uniform(1.1, 1.6)),
                wick_start_s=hhmm("21:14") + int(rng.integers(0, 300)),
                fall_s=int(rng.integers(45, 180)),
                hold_s=int(rng.integers(15, 60)),
                recover_s=int(rng.integers(240, 900)),
                keep_loss=float(rng.uniform(0.05, 0.30)),
            )
        )
    return specs


def wick(spec: AltSpec, n: int, depth: float) -> FloatArray:
    """Multiplier 1 → (1 − depth) → (1 − keep_loss) of a vacuum wick."""
    t = np.arange(n, dtype=np.float64)
    m = np.ones(n)
    a = spec.wick_start_s
    b = a + spec.fall_s
    c = b + spec.hold_s
    d = c + spec.recover_s
    low = np.log(max(1.0 - depth, 1e-7))
    end = np.log(1.0 - min(spec.keep_loss, depth))
    fall = (t >= a) & (t < b)
    m[fall] = np.exp(low * ((t[fall] - a) / spec.fall_s) ** 2)
    m[(t >= b) & (t < c)] = np.exp(low)
    rec = (t >= c) & (t < d)
    frac = 1 - (1 - (t[rec] - c) / spec.recover_s) ** 3
    m[rec] = np.exp(low + (end - low) * frac)
    m[t >= d] = np.exp(end)
    return m


def alt_path(
    spec: AltSpec, btc: FloatArray, shock: bool, rng: np.random.Generator, perp: bool = False
) -> FloatArray:
    """Alt price: beta × BTC log-return, idiosyncratic noise, and (shock) the wick."""
    n = btc.size
    sigma = vol_profile(n, shock) * 1.5
    noise = _bridge(rng, sigma, [0, n - 1])
    rel = np.log(btc / btc[0]) * spec.beta + noise
    price = spec.price0 * np.exp(rel)
    if shock:
        price = price * wick(spec, n, spec.depth * (0.55 if perp else 1.0))
    return np.asarray(np.maximum(price, spec.tick), dtype=np.float64)


def ou(n: int, sigma: float, theta: float, rng: np.random.Generator) -> FloatArray:
    """Ornstein-Uhlenbeck noise x' = −θx + σ dW, x0 = 0, one step per second."""
    eps = rng.standard_normal(n) * sigma
    out = np.empty(n)
    x = 0.0
    keep = 1.0 - theta
    for i in range(n):
        x = x * keep + eps[i]
        out[i] = x
    return out
