"""``stablecoin-weekend``: a seeded synthetic market-wide depeg of a fiat-backed stablecoin.

Calibrated to public figures of the USDC depeg of 10–13 March 2023 (Silicon Valley Bank
held $3.3B, about 8%, of USDC's reserves). Every venue fell together over the weekend to
about 0.87 and recovered on Monday. Sources, as in the case that issue 19 reports:

- ``kraken``: a USD book, USDC/USD (the deepest USDC/USD pair that weekend);
- ``binance-spot``: a USDT-quoted book, USDC/USDT, lagging the market by a few seconds,
  converted with the USDT/USD price of ``kraken`` (USDT traded at a small premium);
- ``chainlink``: an on-chain oracle with Chainlink's stablecoin semantics, an update when
  the price moved ≥ 0.25% from the last answer, else a 24 h heartbeat;
- ``curve``: the 3pool's USDC price, sampled hourly.

Public figures (cited in ``WEEKEND_FACTS``) fix the anchor points of one price path; each
source follows it with its own lag, sampling and seeded noise. The peg monitor should
raise ``peg_deviation`` on every source and never ``venue_local_depeg``: no source is
ever alone. Same seed and knobs → byte-identical files.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field

from replay.capture import write_capture

__all__ = [
    "ANCHORS",
    "WEEKEND_CONFIG_TOML",
    "WEEKEND_FACTS",
    "WEEKEND_T0_MS",
    "WeekendKnobs",
    "path_price",
    "weekend_frames",
    "write_weekend",
]

#: Fri 10 Mar 2023 20:00:00 UTC in ms (SVB was closed by regulators that morning, ET).
WEEKEND_T0_MS = 1_678_478_400_000
_H = 3_600

#: (seconds after T0, USD price) the path passes through. Times UTC. Public figures:
#: CoinDesk 11 Mar 2023 ("USDC/USDT dropped as low as 94 cents on Kraken ... recovered to
#: about 98 cents as of 02:54 UTC on Saturday"); Bitcoin.com/cryptonews 11 Mar 2023 ("low
#: of $0.877 ... As of 7:45 a.m. ET [12:45 UTC] trading at $0.91"); CoinDesk 13 Mar 2023
#: ("fell to as low as 86 cents ... began recovering somewhat by midday Saturday", Circle's
#: shortfall pledge "helped it rebound to $0.97"); web3station 13 Mar 2023 ("By March 12
#: ... recovered to $0.96"; "On the evening of March 13, USDC climbed back to its $1").
#: The joint Treasury/Fed/FDIC statement was on Sunday 12 Mar, 18:15 ET (22:15 UTC).
#: Points between the figures are *assumed* (straight lines).
ANCHORS: tuple[tuple[int, float], ...] = (
    (0, 1.0000),
    (2 * _H, 0.9990),        # Fri 22:00: first doubts (assumed)
    (4 * _H + 30 * 60, 0.9550),  # Sat 00:30: the first leg (Kraken prints 0.94 on USDC/USDT)
    (6 * _H + 54 * 60, 0.9800),  # Sat 02:54: "recovered to about 98 cents"
    (7 * _H + 15 * 60, 0.9700),  # Sat 03:15: Circle confirms $3.3B at SVB (assumed time)
    (11 * _H, 0.8770),       # Sat 07:00: the low, "$0.877" (assumed hour, early morning ET)
    (16 * _H + 45 * 60, 0.9100),  # Sat 12:45: "$0.91 ... up 3% from the low"
    (22 * _H, 0.9300),       # Sat 18:00: "began recovering by midday Saturday" (assumed level)
    (28 * _H, 0.9700),       # Sun 00:00: Circle's shortfall pledge, "rebound to $0.97"
    (40 * _H, 0.9600),       # Sun 12:00: "recovered to $0.96" by 12 Mar
    (50 * _H + 15 * 60, 0.9700),  # Sun 22:15: Treasury/Fed/FDIC statement
    (53 * _H, 0.9900),       # Mon 01:00: back near the peg overnight (assumed)
    (72 * _H, 0.9995),       # Mon 20:00: "climbed back to its $1" that evening
)

#: The public figures of the calibration table, with their sources (also in the README).
WEEKEND_FACTS: dict[str, str] = {
    "low": "0.877 (Bitcoin.com/cryptonews, 11 Mar 2023; CoinDesk: 0.86-0.87 at times)",
    "low_time": "Saturday 11 Mar, before 12:45 UTC (7:45 a.m. ET, already 0.91)",
    "first_leg": "below 0.97 before 02:54 UTC Saturday (CoinDesk: Kraken USDC/USDT 0.94)",
    "rebound": "0.96-0.97 on Sunday 12 Mar (CoinDesk; web3station)",
    "recovery": ">= 0.99 on Monday 13 Mar, $1 by the evening (CoinDesk; web3station)",
    "usdt": "USDT stayed 0.99-1.01 (Bitcoin.com: $0.99-$1 since the SVB issues began)",
    "oracle": "Chainlink USDC/USD: 0.25% deviation threshold, 24 h heartbeat",
    "together": "every venue fell together (Kraken, Coinbase, Binance, Curve 3pool)",
    "pool": "a pool price sampled hourly (the sources of issue 19)",
}


class WeekendKnobs(BaseModel):
    """What the ``stablecoin-weekend`` scenario can change (all sampling values *assumed*)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    asset: str = "USDC"
    #: Window simulated, seconds after Fri 10 Mar 2023 20:00 UTC (72 h: to Mon 20:00).
    duration_s: int = Field(default=72 * _H, gt=0)
    #: Book frames: one per venue every this many seconds.
    book_interval_s: int = Field(default=10, gt=0)
    #: The USDT-quoted book shows the market this many seconds late (at most).
    book_lag_s: int = Field(default=15, ge=0)
    #: USDT/USD frames every this many seconds; USDT's premium at the low, bps.
    usdt_interval_s: int = Field(default=30, gt=0)
    usdt_premium_bps_at_low: float = Field(default=30.0, ge=0)
    #: Oracle: checked every block (12 s); updates on this deviation or the heartbeat.
    oracle_deviation_ratio: float = Field(default=0.0025, gt=0)
    oracle_heartbeat_s: int = Field(default=86_400, gt=0)
    #: Pool price sampled every this many seconds (hourly).
    pool_interval_s: int = Field(default=3_600, gt=0)
    #: Per-frame noise of the books, bps (uniform ±).
    noise_bps: float = Field(default=3.0, ge=0)


def path_price(t_s: float) -> float:
    """The weekend's price path at ``t_s`` seconds after T0: linear between ``ANCHORS``."""
    if t_s <= ANCHORS[0][0]:
        return ANCHORS[0][1]
    for (t0, p0), (t1, p1) in pairwise(ANCHORS):
        if t_s <= t1:
            return p0 + (p1 - p0) * (t_s - t0) / (t1 - t0)
    return ANCHORS[-1][1]


Frame = tuple[int, str, str, dict[str, Any]]


def _usdt_usd(t_s: float, knobs: WeekendKnobs) -> float:
    """USDT/USD: a premium proportional to the USDC discount (flight to USDT, *assumed*)."""
    depth = (1.0 - path_price(t_s)) / (1.0 - 0.877)
    return 1.0 + knobs.usdt_premium_bps_at_low * max(depth, 0.0) / 10_000.0


def _book_frames(knobs: WeekendKnobs, rng: random.Random) -> Iterator[Frame]:
    """The two books and the USDT/USD feed, in time order within each second."""
    noise = knobs.noise_bps / 10_000.0
    asset = knobs.asset
    for t in range(0, knobs.duration_s, 1):
        ts = WEEKEND_T0_MS + t * 1_000
        if t % knobs.usdt_interval_s == 0:
            usdt = round(_usdt_usd(t, knobs), 6)
            yield ts, "kraken", "price", {"base": "USDT", "quote": "USD", "price": usdt}
        if t % knobs.book_interval_s:
            continue
        px = path_price(t) * (1.0 + rng.uniform(-noise, noise))
        yield ts, "kraken", "price", {
            "base": asset, "quote": "USD", "price": round(px, 6), "depth_usd": 8_000_000.0,
        }
        lag = rng.randint(0, knobs.book_lag_s)
        seen = path_price(t - lag) * (1.0 + rng.uniform(-noise, noise))
        usdt_then = _usdt_usd(t - lag, knobs)
        yield ts + 1, "binance-spot", "price", {
            "base": asset, "quote": "USDT", "price": round(seen / usdt_then, 6),
            "depth_usd": 12_000_000.0,
        }


def _onchain_frames(knobs: WeekendKnobs) -> Iterator[Frame]:
    """The oracle (deviation threshold + heartbeat, checked every 12 s block) and the pool."""
    asset = knobs.asset
    last_answer: float | None = None
    last_update_s = 0
    for t in range(0, knobs.duration_s, 12):
        px = path_price(t)
        if (
            last_answer is None
            or t - last_update_s >= knobs.oracle_heartbeat_s
            or abs(px / last_answer - 1.0) >= knobs.oracle_deviation_ratio
        ):
            last_answer, last_update_s = px, t
            yield WEEKEND_T0_MS + t * 1_000 + 2, "chainlink", "price", {
                "base": asset, "quote": "USD", "price": round(px, 8),
            }
        if t % knobs.pool_interval_s == 0:
            yield WEEKEND_T0_MS + t * 1_000 + 3, "curve", "price", {
                "base": asset, "quote": "USD", "price": round(px, 6),
            }


def weekend_frames(knobs: WeekendKnobs, seed: int) -> list[Frame]:
    """Every frame of the scenario, ordered by time (ties: books, then on-chain)."""
    rng = random.Random(f"stablecoin-weekend:{seed}")
    frames = list(_book_frames(knobs, rng)) + list(_onchain_frames(knobs))
    frames.sort(key=lambda f: f[0])  # stable: same-ms frames keep their generation order
    return frames


#: Engine config of the scenario: the stablecoin is the peg asset (so not a quote
#: currency), and its four sources are declared with their kinds and cadences.
WEEKEND_CONFIG_TOML = """\
# Engine config of the stablecoin-weekend scenario (written by liqmon).
[peg]
assets = ["{asset}"]

[[peg.sources]]
venue = "kraken"
kind = "book"

[[peg.sources]]
venue = "binance-spot"
kind = "book"

[[peg.sources]]
venue = "chainlink"
kind = "oracle"
stale_after_ms = {oracle_stale_ms}   # the 24 h heartbeat plus 10 minutes

[[peg.sources]]
venue = "curve"
kind = "pool"
stale_after_ms = {pool_stale_ms}   # one sampling period plus 5 minutes

[ingest.quote_prices_usd]
USDT = 1.0
FDUSD = 1.0
USD = 1.0
"""


def write_weekend(out_dir: Path, seed: int, knobs: WeekendKnobs) -> tuple[int, dict[str, int]]:
    """Write capture, engine.toml, empty populations and scenario.json; (frames, by venue)."""
    frames = weekend_frames(knobs, seed)
    total = write_capture(out_dir / "capture.jsonl.gz", frames)
    by_venue: dict[str, int] = {}
    for frame in frames:
        by_venue[frame[1]] = by_venue.get(frame[1], 0) + 1
    (out_dir / "engine.toml").write_text(WEEKEND_CONFIG_TOML.format(
        asset=knobs.asset,
        oracle_stale_ms=(knobs.oracle_heartbeat_s + 600) * 1_000,
        pool_stale_ms=(knobs.pool_interval_s + 300) * 1_000,
    ))
    for name in ("positions.jsonl", "accounts.jsonl", "liquidations.jsonl"):
        (out_dir / name).write_bytes(b"")
    meta = {
        "name": "stablecoin-weekend", "seed": seed, "knobs": knobs.model_dump(), "frames": total,
        "frames_by_venue": dict(sorted(by_venue.items())), "start_ms": WEEKEND_T0_MS,
        "end_ms": WEEKEND_T0_MS + knobs.duration_s * 1_000,
    }
    (out_dir / "scenario.json").write_bytes(orjson.dumps(meta, option=orjson.OPT_INDENT_2))
    return total, dict(sorted(by_venue.items()))
