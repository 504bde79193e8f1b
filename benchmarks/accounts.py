"""``liqmon bench --only accounts``: the columnar account book at exchange scale.

A deterministic population of portfolio-margin (binance-pm) accounts, built straight into
columns. A fifth hold USDe on Binance (``USDe@binance``) against a USDT loan; the rest hold
BTC, ETH or SOL. Every account has four entries: its main collateral, a second coin, a USDT
balance (a loan for most) and one perp. The tick is ``USDe@binance`` walking down from 1.00
to 0.85 and back in 0.25% steps, twice: the USDe accounts pass through the margin-call,
reduce-only and liquidation lines and back. Then the five standard shocks' spirals run on
the same book (``run_spirals_on_book`` on the live stage's threads, then on one; 40 levels of bids
under each coin). Also measured:
``liqmon stress`` on a file of these accounts against the time to orjson-parse that file
(its lines dropped as parsed, and kept: ``bench_stress``).
"""

from __future__ import annotations

import gc
import os
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import orjson

from monitor.accounts.book import AccountBook
from monitor.accounts.columns import AccountColumns, CollateralTable, StepTable
from monitor.config import EngineConfig, SpiralRunConfig
from monitor.models.margin import Account
from monitor.protocol import DepthSignal, InputRecord, SignalRecord
from monitor.risk_params import RiskParams
from monitor.stages.global_risk.account_shard import AccountShard
from monitor.stages.global_risk.risk import GlobalRisk
from monitor.stages.spiral import BookAccounts, run_spirals_on_book
from streams.app.checkpoint import pack_state, unpack_state
from streams.app.shard_agent import ShardState, shard_step

__all__ = [
    "TICK_KEY",
    "AccountsFromColumns",
    "accounts_jsonl",
    "bench_accounts",
    "bench_global_stage",
    "bench_stress",
    "synthetic_accounts",
]

TICK_KEY = "USDe@binance"
_T0_MS = 1_760_130_000_000
#: Account records replaced before each tick of the bench's second walk of the global stage.
_UPDATES = 100
PRICES_USD: dict[str, float] = {
    "USDe@binance": 1.0, "BTC": 100_000.0, "ETH": 4_000.0, "SOL": 200.0, "BNSOL": 210.0,
    "USDT": 1.0, "USDC": 1.0, "USDe": 1.0,
}
_KEYS = list(PRICES_USD)
_ASSETS = ["USDe", "BTC", "ETH", "SOL", "BNSOL", "USDT", "USDC", "BTCUSDT", "ETHUSDT"]
_PERP_KEY = {"BTCUSDT": "BTC", "ETHUSDT": "ETH"}
_ENTRIES = 4


def _tables(params: RiskParams) -> tuple[list[CollateralTable], list[StepTable]]:
    """Binance's collateral tiers of the assets held (table i = asset i) and the brackets of
    BTCUSDT, ETHUSDT (RISK_MODEL §3)."""
    venue = params.unified.binance_pm
    rates = [venue.collateral_rates[a] for a in _ASSETS[:7]]
    return ([CollateralTable.from_tiers(r) for r in rates],
            [StepTable.from_brackets(venue.perp_brackets[s]) for s in ("BTCUSDT", "ETHUSDT")])


def synthetic_accounts(n: int, seed: int = 1, params: RiskParams | None = None) -> AccountColumns:
    """``n`` binance-pm accounts (see the module docstring), deterministic in ``seed``."""
    p = params or RiskParams()
    rng = np.random.default_rng(seed)
    px = np.array([PRICES_USD[k] for k in _KEYS])
    usde = np.arange(n) % 5 == 0
    main = np.where(usde, 0, rng.integers(1, 4, size=n))  # key/asset: USDe@binance, BTC, ETH, SOL
    second = np.where(usde, 4, 6)  # BNSOL beside USDe, USDC beside the majors
    main_usd = np.clip(rng.lognormal(10.0, 1.2, size=n), 1_000.0, 5e6)
    loan_share = np.where(usde, rng.uniform(0.72, 0.93, size=n), rng.uniform(0.2, 0.6, size=n))
    usdt = np.where(rng.random(n) < 0.9, -loan_share * main_usd, 0.05 * main_usd)
    perp = rng.integers(0, 2, size=n)  # BTCUSDT, ETHUSDT
    perp_key = perp + 1
    qty = np.where(rng.random(n) < 0.7, 1.0, -1.0) * rng.uniform(0.2, 1.0, size=n) * main_usd / px[perp_key]
    keys = np.stack([main, second, np.full(n, 5), perp_key], axis=1)
    amounts = np.stack([main_usd / px[main], 0.05 * main_usd / px[second], usdt, qty], axis=1)
    entry_px = np.zeros((n, _ENTRIES))
    entry_px[:, 3] = px[perp_key] * rng.uniform(0.97, 1.03, size=n)
    loan_mmr = np.zeros((n, _ENTRIES))
    loan_mmr[:, :3] = p.unified.binance_pm.margin_loan_mmr_ratio
    coll, steps = _tables(p)
    return AccountColumns(
        ids=[f"pm-{i}" for i in range(n)], venues=["binance"] * n, model=np.zeros(n, dtype=np.int8),
        entry_start=np.arange(n + 1, dtype=np.int64) * _ENTRIES,
        entry_key=keys.astype(np.int32).ravel(),
        entry_is_perp=np.tile(np.array([False, False, False, True]), n),
        entry_asset=np.stack([main, second, np.full(n, 5), perp + 7], axis=1).astype(np.int32).ravel(),
        qty=amounts.ravel(), entry_price_usd=entry_px.ravel(), loan_mmr=loan_mmr.ravel(),
        entry_table=np.stack([main, second, np.full(n, 5), perp], axis=1).astype(np.int32).ravel(),
        keys=_KEYS, assets=_ASSETS, collateral_tables=coll, step_tables=steps,
    )


class AccountsFromColumns:
    """The synthetic accounts as :class:`Account` models, one at a time by number; account
    i is row ``rows[i]`` of the columns (a book's clustered columns), row i without ``rows``."""

    def __init__(self, columns: AccountColumns, rows: npt.NDArray[np.int64] | None = None) -> None:
        self._columns = columns
        self._starts = columns.entry_start.tolist()
        self._rows = rows

    def document(self, i: int) -> dict[str, Any]:
        """Account ``i`` as a ``liqmon stress --accounts`` line (the model's tables apply)."""
        c = self._columns
        row = i if self._rows is None else int(self._rows[i])
        entries = range(self._starts[row], self._starts[row + 1])
        keys, assets = c.keys, c.assets
        balances = [{"asset": assets[c.entry_asset[e]], "amount": float(c.qty[e]),
                     "price_key": keys[c.entry_key[e]]} for e in entries if not c.entry_is_perp[e]]
        perps = [{"symbol": assets[c.entry_asset[e]], "qty": float(c.qty[e]),
                  "entry_price": float(c.entry_price_usd[e]), "price_key": keys[c.entry_key[e]]}
                 for e in entries if c.entry_is_perp[e]]
        return {"account_id": c.ids[row], "venue": c.venues[row], "model": "binance-pm",
                "balances": balances, "perps": perps}

    def __call__(self, i: int) -> Account:
        return Account.model_validate(self.document(i))


def accounts_jsonl(columns: AccountColumns) -> bytes:
    """The accounts as ``liqmon stress --accounts`` lines."""
    of = AccountsFromColumns(columns)
    return b"".join(orjson.dumps(of.document(i)) + b"\n" for i in range(columns.n_accounts))


def _tick_prices() -> list[float]:
    down = [round(1.0 - 0.0025 * i, 6) for i in range(1, 61)]
    walk = down + down[-2::-1] + [1.0]
    return walk * 2


def bench_accounts(n: int, seed: int = 1) -> dict[str, Any]:
    """Build ``n`` accounts into a book; memory per account; one key ticking through the
    lines; then the standard-shock spirals on the same book."""
    params = RiskParams()
    gc.collect()
    tracemalloc.start()
    t = time.perf_counter()
    book = AccountBook(synthetic_accounts(n, seed, params), PRICES_USD, params)
    build_s = time.perf_counter() - t
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    times_ms: list[float] = []
    changes = 0
    statuses_seen: set[int] = set()
    for price in _tick_prices():
        t = time.perf_counter()
        moved = book.move({TICK_KEY: price})
        times_ms.append((time.perf_counter() - t) * 1000)
        changes += int(moved.accounts.shape[0])
        statuses_seen.update(np.unique(moved.after).tolist())
    times_ms.sort()
    spiral = _spirals(BookAccounts(book, AccountsFromColumns(book.columns, book.rows_of(np.arange(n)))), params)
    return {
        "accounts": n,
        "tick_key_holders": int(book.holders(TICK_KEY).shape[0]),
        "ticks": len(times_ms),
        "build_s": round(build_s, 2),
        "tick_median_ms": round(statistics.median(times_ms), 2),
        "tick_p99_ms": round(times_ms[int(0.99 * (len(times_ms) - 1))], 2),
        "status_changes": changes,
        "statuses_reached": sorted(statuses_seen),
        "bytes_per_account": round(current / n, 1),
        "peak_bytes_per_account_during_build": round(peak / n, 1),
        "spiral_s": spiral["s"],
        "spiral_first_s": spiral["first_s"],
        "spiral": spiral,
    }


def _level_usd(key: str) -> float:
    """Bids per level under a key: $0.5M for USDe, $2M for the others."""
    return 5e5 if key.startswith("USDe") else 2e6


def _bid_books() -> dict[str, list[list[float]]]:
    """Bids under each non-stable key: 40 levels 0.5% apart, $2M a level ($0.5M for USDe)."""
    books = {}
    for key, px in PRICES_USD.items():
        if key in ("USDT", "USDC"):
            continue
        level_usd = _level_usd(key)
        levels = [px * (1.0 - 0.001 - 0.005 * i) for i in range(40)]
        books[key] = [[lv, level_usd / lv] for lv in levels]
    return books


def _spirals(accounts: BookAccounts, params: RiskParams) -> dict[str, Any]:
    """The standard shocks' spirals (``run_spirals_on_book``) on the threads the live stage
    uses (``spiral_run.threads``): first on the fresh book (which then makes its id order
    and key-set indexes, once), then again as the live stage runs them every five minutes
    on its book; then on one thread. The same results each time."""
    books = _bid_books()
    shocks = [dict(shock.moves) for shock in params.spiral.standard_shocks]
    threads = SpiralRunConfig().threads
    timed: list[float] = []
    results = []
    for n in (threads, threads, 1):
        t = time.perf_counter()
        results.append(run_spirals_on_book([], accounts, PRICES_USD, books, shocks, params=params, threads=n))
        timed.append(round(time.perf_counter() - t, 2))
    if any(r != results[0] for r in results):
        raise AssertionError("the spirals differ between runs or thread counts")
    return {"shocks": len(shocks), "rounds": [r.rounds for r in results[0]],
            "accounts_liquidated": [len(r.accounts_liquidated) for r in results[0]],
            "threads": threads, "first_s": timed[0], "s": timed[1], "one_thread_s": timed[2]}


def _parse_s(path: Path) -> float:
    """Seconds to read ``path`` and orjson-parse each line, keeping nothing (the floor)."""
    t = time.perf_counter()
    with path.open("rb") as fh:
        for line in fh:
            orjson.loads(line)
    return time.perf_counter() - t


def _load_s(path: Path, collector: bool) -> tuple[float, int]:
    """Seconds to read ``path`` into a list of its lines orjson-parsed, kept in memory as a
    program that goes on to use them holds them, and the lines parsed; with Python's cyclic
    collector on (a plain script) or paused (as ``liqmon stress`` reads its accounts)."""
    gc.collect()
    if not collector:
        gc.disable()
    try:
        t = time.perf_counter()
        with path.open("rb") as fh:
            loaded = [orjson.loads(line) for line in fh]
        load_s = time.perf_counter() - t
    finally:
        gc.enable()
    parsed = len(loaded)
    del loaded
    gc.collect()
    return load_s, parsed


def bench_stress(n: int, workdir: Path, seed: int = 1) -> dict[str, Any]:
    """``liqmon stress`` on ``n`` synthetic accounts with USDe@binance −35%, against three
    ways of orjson-parsing its accounts file, timed just before it: each line parsed and
    dropped (the floor the target is held to), and the lines parsed into a list kept in
    memory, with the cyclic collector paused and as a plain script runs (the collector on:
    the way the issue measured its parse, 336 MB held for 100,000 accounts)."""
    path = workdir / "accounts.jsonl"
    path.write_bytes(accounts_jsonl(synthetic_accounts(n, seed)))
    prices = workdir / "prices.json"
    prices.write_bytes(orjson.dumps(PRICES_USD))
    (load_plain_s, parsed), (load_paused_s, _) = _load_s(path, collector=True), _load_s(path, collector=False)
    parse_s = _parse_s(path)
    gc.collect()
    cmd = [sys.executable, "-m", "streams.entry", "stress", "--accounts", str(path), "--prices", str(prices),
           "--shock", f"{TICK_KEY}=-35%"]
    t = time.perf_counter()
    with (workdir / "stress.json").open("wb") as out:
        subprocess.run(cmd, check=True, stdout=out, stdin=subprocess.DEVNULL)
    stress_s = time.perf_counter() - t
    return {"accounts": parsed, "file_mb": round(path.stat().st_size / 1e6, 1),
            "orjson_parse_s": round(parse_s, 4), "stress_s": round(stress_s, 2),
            "stress_over_parse": round(stress_s / parse_s, 1),
            "orjson_load_collector_paused_s": round(load_paused_s, 4),
            "stress_over_load_collector_paused": round(stress_s / load_paused_s, 1),
            "orjson_load_plain_s": round(load_plain_s, 4),
            "stress_over_load_plain": round(stress_s / load_plain_s, 1)}


#: What the bench feeds: the global stage, or one account shard of a sharded one.
_Stage = GlobalRisk | AccountShard


class _GlobalFeed:
    """Signal records for the global stage, one event time a second apart (the accounts'
    evaluation interval; the spirals' five-minute timer does not fire during the walk)."""

    def __init__(self, risk: _Stage) -> None:
        self.risk = risk
        self.seq = 0

    def push(self, kind: str, payloads: list[dict[str, Any]]) -> int:
        """One event time of signals of ``kind``; the alerts it raised."""
        self.seq += 1
        ts = _T0_MS + self.seq * 1_000
        signals = [(ts, "X", self.seq * 1_000 + i, kind, p) for i, p in enumerate(payloads)]
        return len(self.risk.push(SignalRecord(0, ts, signals))) + len(self.risk.flush())


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _load_global(n: int, seed: int, stage: _Stage | None = None,
                 ) -> tuple[_Stage, _GlobalFeed, AccountsFromColumns, float]:
    """A global stage (or ``stage``: an account shard) given ``n`` of the synthetic accounts
    as account records (one dict each, made as it is sent, as the worker decodes them);
    the seconds that took."""
    docs = AccountsFromColumns(synthetic_accounts(n, seed))
    risk = stage if stage is not None else GlobalRisk(EngineConfig(), partitions=1)
    t = time.perf_counter()
    for i in range(n):
        risk.upsert_account(docs.document(i))
    return risk, _GlobalFeed(risk), docs, time.perf_counter() - t


def _walk(feed: _GlobalFeed, prices: list[float], update: Callable[[int], None] | None = None,
          ) -> tuple[list[float], list[int]]:
    """The tick key at each price in turn (``update(i)`` first): ms per tick, alerts per tick."""
    times_ms, alerts = [], []
    for i, price in enumerate(prices):
        if update is not None:
            update(i)
        t = time.perf_counter()
        alerts.append(feed.push("price", [{"key": TICK_KEY, "price": price}]))
        times_ms.append((time.perf_counter() - t) * 1000)
    return times_ms, alerts


def _updates(risk: _Stage, docs: AccountsFromColumns, n: int) -> Callable[[int], None]:
    """Before tick i: ``_UPDATES`` account records replaced, their main balance 1% larger."""

    def update(i: int) -> None:
        for j in range(i * _UPDATES, (i + 1) * _UPDATES):
            doc = docs.document((j * 7_919) % n)
            doc["balances"][0]["amount"] *= 1.01
            risk.upsert_account(doc)

    return update


def _p99(values: list[float]) -> float | None:
    ordered = sorted(values)
    return round(ordered[int(0.99 * (len(ordered) - 1))], 2) if ordered else None


def _depth(key: str, px: float) -> dict[str, Any]:
    """A depth signal whose ladder is :func:`_bid_books`' depth in the same bands."""
    level_usd = _level_usd(key)
    return {"venue": "binance", "symbol": key, "key": key, "mid": px,
            "bid_usd": [level_usd * k for k in (1, 10, 20, 40, 100)]}


def bench_global_stage(n: int, seed: int = 1) -> dict[str, Any]:
    """The streaming global stage (``GlobalRisk``) given ``n`` accounts as records: load,
    first evaluation (the book is built), the tick walk of :func:`bench_accounts` once,
    the standard shocks' spirals on its live state, its checkpoint, and memory per
    account (a second stage of n/5 accounts traced with ``tracemalloc``)."""
    gc.collect()
    rss0 = _rss_bytes()
    risk, feed, docs, load_s = _load_global(n, seed)
    assert isinstance(risk, GlobalRisk)
    figures = _stage_walk(risk, feed, docs, n, rss0)
    t = time.perf_counter()
    risk.run_standard_shocks()
    spiral_s = time.perf_counter() - t
    figures.update(_checkpoint_figures(risk))
    rss_bytes = figures.pop("rss_bytes")
    del risk, feed
    return {
        "accounts": n, "load_s": round(load_s, 2), **figures, "spirals_s": round(spiral_s, 2),
        "rss_bytes_per_account": round(rss_bytes / n),
        "bytes_per_account": _traced_bytes_per_account(max(n // 5, 1), seed),
    }


def bench_account_shard(n: int, shards: int, seed: int = 1) -> dict[str, Any]:
    """What one worker does for one account shard of ``shards``: shard 0 given all ``n``
    account records (it keeps its own), then :func:`bench_global_stage`'s first evaluation,
    tick walks and checkpoint on its share (the spirals stay with the aggregation)."""
    log_load_s = _shard_load_from_log(n, shards, seed)
    gc.collect()
    rss0 = _rss_bytes()
    shard = AccountShard(EngineConfig(), 1, 0, shards)
    risk, feed, docs, load_s = _load_global(n, seed, shard)
    held = len(shard.watch.accounts)
    figures = _stage_walk(risk, feed, docs, n, rss0)
    figures.update(_checkpoint_figures(risk))
    rss_bytes = figures.pop("rss_bytes")
    del risk, feed, shard
    return {"accounts": n, "shards": shards, "accounts_held": held, "load_s": round(load_s, 2),
            "load_from_log_s": round(log_load_s, 2), **figures,
            "rss_bytes_per_account_held": round(rss_bytes / max(held, 1))}


def bench_aggregation_copy(n: int, shards: int, seed: int = 1) -> dict[str, Any]:
    """What the aggregation stage of ``shards`` account shards does with ``n`` account
    records when it keeps their copy for the spirals (``spiral_run.copy_sharded_accounts``):
    the load, the standard shocks' spirals the first time (the book built from the
    documents) and again after the tick key moved, its checkpoint, and memory per account
    (traced on a fifth of them). The prices and ladders are set as the signals would set
    them (no shard reports here: the shards evaluate, not this stage)."""
    risk, load_s = _aggregation_with_copy(n, shards, seed)
    t = time.perf_counter()
    first = risk.run_standard_shocks()
    first_s = time.perf_counter() - t
    risk.price_book.apply({"key": TICK_KEY, "price": PRICES_USD[TICK_KEY] * 0.99}, set())
    t = time.perf_counter()
    risk.run_standard_shocks()
    again_s = time.perf_counter() - t
    assert risk.spiral_gate.decision is not None and risk.spiral_gate.decision.rerun
    liquidated = sorted(len(r.accounts_liquidated) for r in first.values())
    figures = _checkpoint_figures(risk)
    del risk
    small = max(n // 5, 1)  # memory traced on a fifth of the accounts: the documents and the book
    gc.collect()
    tracemalloc.start()
    risk, _ = _aggregation_with_copy(small, shards, seed)
    assert risk.watch.on_book(risk.prices) is not None
    gc.collect()
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"accounts": n, "shards": shards, "load_s": round(load_s, 2), "first_spirals_s": round(first_s, 2),
            "spirals_again_s": round(again_s, 2), "accounts_liquidated_per_shock": liquidated,
            "bytes_per_account": round(held / small), **figures}


def _aggregation_with_copy(n: int, shards: int, seed: int) -> tuple[GlobalRisk, float]:
    """The aggregation stage of ``shards`` shards given ``n`` account records (one dict
    each, made as it is sent), its prices and ladders set as the signals would set them;
    the seconds the records took."""
    docs = AccountsFromColumns(synthetic_accounts(n, seed))
    risk = GlobalRisk(EngineConfig(), partitions=1, account_shards=shards)
    t = time.perf_counter()
    for i in range(n):
        risk.upsert_account(docs.document(i))
    load_s = time.perf_counter() - t
    for key, px in PRICES_USD.items():
        risk.price_book.apply({"key": key, "price": px}, set())
        if key not in ("USDT", "USDC"):
            risk.spiral_clock.on_depth(cast(DepthSignal, _depth(key, px)))
    return risk, load_s


def _shard_load_from_log(n: int, shards: int, seed: int) -> float:
    """Seconds for shard 0 of ``shards`` to read ``n`` account records as the worker reads
    them off the log (``shard_step``: bytes in, another shard's account by its head only)."""
    docs = AccountsFromColumns(synthetic_accounts(n, seed))
    records = [InputRecord(kind="account", raw=docs.document(i), src=(0, i)).encode() for i in range(n)]
    del docs
    state = ShardState(AccountShard(EngineConfig(), 1, 0, shards))
    gc.collect()
    t = time.perf_counter()
    for offset, value in enumerate(records):
        shard_step(state, offset, value)
    return time.perf_counter() - t


def _stage_walk(risk: _Stage, feed: _GlobalFeed, docs: AccountsFromColumns, n: int, rss0: int,
                ) -> dict[str, Any]:
    """The first evaluation, the tick walk, and the walk with account updates before each
    tick; ``rss_bytes``: the memory grown since ``rss0`` (before the load) at the first evaluation."""
    t = time.perf_counter()
    first_alerts = feed.push("price", [{"key": k, "price": px} for k, px in PRICES_USD.items()])
    first_s = time.perf_counter() - t
    rss_bytes = _rss_bytes() - rss0
    feed.push("depth", [_depth(k, px) for k, px in PRICES_USD.items() if k not in ("USDT", "USDC")])
    walk = _tick_prices()[: len(_tick_prices()) // 2]
    times_ms, alerts = _walk(feed, walk)
    quiet = [ms for ms, a in zip(times_ms, alerts, strict=True) if a == 0]
    updated_ms, updated_alerts = _walk(feed, walk, _updates(risk, docs, n))
    return {
        "first_evaluation_s": round(first_s, 2), "first_evaluation_alerts": first_alerts, "ticks": len(walk),
        "tick_median_ms": round(statistics.median(times_ms), 2), "tick_p99_ms": _p99(times_ms),
        "ticks_without_alerts": len(quiet), "tick_without_alerts_median_ms": round(statistics.median(quiet), 2),
        "tick_without_alerts_p99_ms": _p99(quiet),
        "updates_per_tick": _UPDATES, "tick_with_updates_median_ms": round(statistics.median(updated_ms), 2),
        "tick_with_updates_p99_ms": _p99(updated_ms), "tick_with_updates_max_ms": round(max(updated_ms), 2),
        "alerts_with_updates": sum(updated_alerts),
        "alerts": sum(alerts), "us_per_alert": round(sum(times_ms) * 1000 / max(sum(alerts), 1), 1),
        "rss_bytes": rss_bytes,
    }


def _checkpoint_figures(risk: _Stage) -> dict[str, Any]:
    """The stage's checkpoint: its size, and the time to write and read it."""
    t = time.perf_counter()
    blob = pack_state(risk)
    pack_s = time.perf_counter() - t
    t = time.perf_counter()
    unpack_state(blob)
    unpack_s = time.perf_counter() - t
    return {"checkpoint_mb": round(len(blob) / 1e6, 1), "checkpoint_pack_s": round(pack_s, 2),
            "checkpoint_restore_s": round(unpack_s, 2)}


def _traced_bytes_per_account(n: int, seed: int) -> float:
    """Bytes the global stage holds per account after its first evaluation (traced)."""
    gc.collect()
    tracemalloc.start()
    risk, feed, _, _ = _load_global(n, seed)
    feed.push("price", [{"key": k, "price": px} for k, px in PRICES_USD.items()])
    gc.collect()
    current, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del risk, feed
    return round(current / n, 1)
