"""A deterministic synthetic loop population for benchmarks and tests (not product data)."""

from __future__ import annotations

import numpy as np

from monitor.models.loops.lending import LoopBook
from monitor.risk_params import RiskParams

__all__ = ["synthetic_loop_book"]


def synthetic_loop_book(n_positions: int, seed: int = 0, params: RiskParams | None = None) -> LoopBook:
    """Deterministic synthetic loop population for benchmarks (ETH/USDe/WBTC loops)."""
    rng = np.random.default_rng(seed)
    keys = ["ETH", "USDT", "USDC", "BTC", "USDe@binance"]
    prices = np.array([4_000.0, 1.0, 1.0, 100_000.0, 1.0])
    assets = ["ETH", "USDT", "USDC", "WBTC", "USDe"]
    n = n_positions
    kind = rng.integers(0, 4, size=n)  # 0 ETH/USDC, 1 USDe(USDT)/USDT, 2 BTC/USDC, 3 USDe@bn
    coll_key = np.array([0, 1, 3, 4])[kind]
    coll_asset = np.array([0, 4, 3, 4])[kind]
    debt_key = np.array([2, 1, 2, 1])[kind]
    debt_asset = np.array([2, 1, 2, 1])[kind]
    lt = np.array([0.83, 0.93, 0.78, 0.93])[kind]
    equity_usd = rng.lognormal(mean=9.0, sigma=1.5, size=n)
    ltv = lt * rng.uniform(0.80, 0.995, size=n)
    rounds = rng.integers(1, 12, size=n)
    coll_usd = equity_usd * (1.0 - ltv ** (rounds + 1)) / (1.0 - ltv)
    debt_usd_ = coll_usd - equity_usd
    idx = np.arange(n, dtype=np.int64)
    return LoopBook(
        keys=keys,
        prices=prices,
        entry_position=np.concatenate([idx, idx]),
        entry_key=np.concatenate([coll_key, debt_key]),
        entry_is_collateral=np.concatenate([np.ones(n, bool), np.zeros(n, bool)]),
        entry_amount=np.concatenate(
            [coll_usd / prices[coll_key], debt_usd_ / prices[debt_key]]
        ),
        entry_lt=np.concatenate([lt, np.zeros(n)]),
        entry_asset=np.concatenate([coll_asset, debt_asset]),
        assets=assets,
        position_protocol=rng.integers(0, 2, size=n),
        ids=None,
        params=params,
    )
