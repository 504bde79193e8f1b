"""Lending positions: health factor, liquidation terms, loop maths and the ``LoopBook`` index.

Formulas: RISK_MODEL.md §2 (Aave v3 ``GenericLogic.calculateUserAccountData``, Aave v3.3
close factor, Morpho Blue ``_isHealthy`` and liquidation incentive factor).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any, Literal, NamedTuple

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, model_validator

from monitor.risk_params import AaveV3Params, MorphoBlueParams, RiskParams

__all__ = [
    "PROTOCOLS",
    "CollateralEntry",
    "DebtEntry",
    "LoopBook",
    "Position",
    "Protocol",
    "TickResult",
    "close_factor_ratio",
    "collateral_seized",
    "collateral_usd",
    "debt_usd",
    "driving_price_key",
    "effective_liquidation_threshold",
    "health_factor",
    "is_liquidatable",
    "liquidation_bonus_ratio",
    "liquidation_drop_pct",
    "liquidation_price",
    "loop_collateral",
    "loop_debt",
    "loop_equity_after_drop",
    "loop_leverage",
    "loop_liquidation_drop",
    "loop_wipe_drop",
    "morpho_lif",
    "protocol_fee_collateral",
    "remap_price_keys",
]

Protocol = Literal["aave-v3", "morpho-blue", "generic"]
PROTOCOLS: tuple[Protocol, ...] = ("aave-v3", "morpho-blue", "generic")
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
AnyIntArray = npt.NDArray[np.integer[Any]]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class CollateralEntry(_Model):
    """Supplied collateral valued with ``price_key``."""

    asset: str = Field(min_length=1)
    amount: float = Field(ge=0)
    liquidation_threshold: float = Field(gt=0, le=1)
    price_key: str = Field(min_length=1)


class DebtEntry(_Model):
    """Borrowed asset valued with ``price_key``."""

    asset: str = Field(min_length=1)
    amount: float = Field(ge=0)
    price_key: str = Field(min_length=1)


class Position(_Model):
    """One lending position (Aave v3 account, Morpho Blue market position, or generic)."""

    position_id: str = Field(min_length=1)
    protocol: Protocol
    collateral: tuple[CollateralEntry, ...]
    debt: tuple[DebtEntry, ...] = ()
    liquidation_bonus: float | None = Field(default=None, ge=0, le=1)
    e_mode: str | None = None

    @model_validator(mode="after")
    def _morpho_single_market(self) -> Position:
        if self.protocol == "morpho-blue" and (len(self.collateral) > 1 or len(self.debt) > 1):
            raise ValueError("a morpho-blue position has one collateral and one loan asset")
        return self

    def price_keys(self) -> set[str]:
        """All price keys this position needs."""
        return {c.price_key for c in self.collateral} | {d.price_key for d in self.debt}


# --------------------------------------------------------------------------- single position


@functools.cache
def _default_params() -> RiskParams:
    return RiskParams()


def effective_liquidation_threshold(
    position: Position, entry: CollateralEntry, params: AaveV3Params
) -> float:
    """LT used in HF: the e-mode LT when the position is in a known e-mode (RISK_MODEL §2)."""
    if position.protocol == "aave-v3" and position.e_mode is not None:
        mode = params.e_modes.get(position.e_mode)
        if mode is None:
            raise ValueError(f"unknown e-mode {position.e_mode!r}")
        return mode.liquidation_threshold_ratio
    return entry.liquidation_threshold


def collateral_usd(position: Position, prices: Mapping[str, float]) -> float:
    """Σ collateral amount × price (no threshold)."""
    return math.fsum(c.amount * prices[c.price_key] for c in position.collateral)


def debt_usd(position: Position, prices: Mapping[str, float]) -> float:
    """Σ debt amount × price."""
    return math.fsum(d.amount * prices[d.price_key] for d in position.debt)


def health_factor(
    position: Position, prices: Mapping[str, float], params: RiskParams | None = None
) -> float:
    """HF = Σ coll×price×LT / Σ debt×price (Aave v3 GenericLogic; Morpho _isHealthy), §2."""
    aave = (params or _default_params()).aave_v3
    debt = debt_usd(position, prices)
    if debt <= 0:
        return math.inf
    weighted = math.fsum(
        c.amount * prices[c.price_key] * effective_liquidation_threshold(position, c, aave)
        for c in position.collateral
    )
    return weighted / debt


def is_liquidatable(
    position: Position, prices: Mapping[str, float], params: RiskParams | None = None
) -> bool:
    """Liquidatable ⇔ HF < 1 (RISK_MODEL §2)."""
    return health_factor(position, prices, params) < 1.0


def morpho_lif(lltv: float, params: MorphoBlueParams | None = None) -> float:
    """Morpho Blue LIF = min(1.15, 1 / (0.3 × LLTV + 0.7)) (RISK_MODEL §2)."""
    p = params or MorphoBlueParams()
    return min(p.max_lif, 1.0 / (p.lif_cursor * lltv + 1.0 - p.lif_cursor))


def liquidation_bonus_ratio(position: Position, params: RiskParams | None = None) -> float:
    """Bonus paid to liquidators: explicit, else e-mode, Morpho LIF − 1, USDe default (§2)."""
    p = params or _default_params()
    if position.liquidation_bonus is not None:
        return position.liquidation_bonus
    if position.protocol == "morpho-blue" and position.collateral:
        return morpho_lif(position.collateral[0].liquidation_threshold, p.morpho_blue) - 1.0
    if position.e_mode is not None and position.e_mode in p.aave_v3.e_modes:
        return p.aave_v3.e_modes[position.e_mode].liquidation_bonus_ratio
    if position.collateral and all(c.asset == "USDe" for c in position.collateral):
        return p.aave_v3.usde_outside_emode.liquidation_bonus_ratio
    return p.aave_v3.default_liquidation_bonus_ratio


def close_factor_ratio(
    position: Position, prices: Mapping[str, float], params: RiskParams | None = None
) -> float:
    """Share of debt repayable in one liquidation: Aave v3.3 50%, 100% if HF≤0.95 or <$2k (§2).

    Morpho Blue has no close factor (1.0).
    """
    p = (params or _default_params()).aave_v3
    if position.protocol == "morpho-blue":
        return 1.0
    hf = health_factor(position, prices, params)
    small = collateral_usd(position, prices) < p.full_close_reserve_usd or (
        debt_usd(position, prices) < p.full_close_reserve_usd
    )
    if hf <= p.full_close_health_factor or small:
        return 1.0
    return p.close_factor_ratio


def collateral_seized(
    debt_repaid: float, debt_price: float, collateral_price: float, bonus_ratio: float
) -> float:
    """Collateral units seized = repaid × debt price / collateral price × (1 + bonus) (§2)."""
    return debt_repaid * debt_price / collateral_price * (1.0 + bonus_ratio)


def protocol_fee_collateral(seized: float, bonus_ratio: float, fee_of_bonus_ratio: float) -> float:
    """Aave v3 protocol fee: fee share of the bonus part of the seized collateral (§2)."""
    return seized * bonus_ratio / (1.0 + bonus_ratio) * fee_of_bonus_ratio


def remap_price_keys(
    position: Position,
    key_map: Mapping[str, str],
    collateral_assets: Collection[str] | None = None,
) -> Position:
    """Counterfactual: value collateral (of the given assets) with other price keys."""
    new_coll = tuple(
        c.model_copy(update={"price_key": key_map[c.price_key]})
        if c.price_key in key_map and (collateral_assets is None or c.asset in collateral_assets)
        else c
        for c in position.collateral
    )
    return position.model_copy(update={"collateral": new_coll})


def _key_coefficients(
    position: Position, prices: Mapping[str, float], params: AaveV3Params
) -> dict[str, float]:
    """Per price key: Σ coll×LT − Σ debt (HF ≥ 1 ⇔ Σ_k coef_k × price_k ≥ 0)."""
    coef: dict[str, float] = {}
    for c in position.collateral:
        lt = effective_liquidation_threshold(position, c, params)
        coef[c.price_key] = coef.get(c.price_key, 0.0) + c.amount * lt
    for d in position.debt:
        coef[d.price_key] = coef.get(d.price_key, 0.0) - d.amount
    return coef


def driving_price_key(position: Position, prices: Mapping[str, float]) -> str | None:
    """The collateral key with the largest collateral value (the only one if single-key)."""
    values: dict[str, float] = {}
    for c in position.collateral:
        values[c.price_key] = values.get(c.price_key, 0.0) + c.amount * prices[c.price_key]
    if not values:
        return None
    return max(sorted(values), key=lambda k: values[k])


def liquidation_price(
    position: Position,
    prices: Mapping[str, float],
    key: str | None = None,
    params: RiskParams | None = None,
) -> float | None:
    """Price of ``key`` (default: driving key) at which HF = 1, other prices fixed (§2)."""
    aave = (params or _default_params()).aave_v3
    key = key or driving_price_key(position, prices)
    if key is None or not position.debt:
        return None
    coef = _key_coefficients(position, prices, aave)
    ck = coef.get(key, 0.0)
    if ck == 0.0:
        return None
    rest = math.fsum(v * prices[k] for k, v in coef.items() if k != key)
    p_star = -rest / ck
    return p_star if p_star > 0 else None


def liquidation_drop_pct(
    position: Position, prices: Mapping[str, float], params: RiskParams | None = None
) -> float | None:
    """% drop of the driving key that brings HF to 1; 0 if already liquidatable; None if never."""
    if health_factor(position, prices, params) < 1.0:
        return 0.0
    key = driving_price_key(position, prices)
    if key is None:
        return None
    aave = (params or _default_params()).aave_v3
    if _key_coefficients(position, prices, aave).get(key, 0.0) <= 0.0:
        return None  # a falling driving price does not hurt this position
    p_star = liquidation_price(position, prices, key, params)
    if p_star is None:
        return None
    return max(0.0, (1.0 - p_star / prices[key]) * 100.0)


# --------------------------------------------------------------------------- loop maths


def loop_collateral(equity_usd: float, ltv_ratio: float, rounds: int) -> float:
    """C_n = E × (1 − LTV^(n+1)) / (1 − LTV) (RISK_MODEL §2, recursive loop)."""
    if ltv_ratio == 1.0:
        return equity_usd * (rounds + 1)
    return equity_usd * (1.0 - ltv_ratio ** (rounds + 1)) / (1.0 - ltv_ratio)


def loop_debt(equity_usd: float, ltv_ratio: float, rounds: int) -> float:
    """D_n = C_n − E (RISK_MODEL §2)."""
    return loop_collateral(equity_usd, ltv_ratio, rounds) - equity_usd


def loop_leverage(ltv_ratio: float, rounds: int) -> float:
    """L_n = C_n / E (RISK_MODEL §2)."""
    return loop_collateral(1.0, ltv_ratio, rounds)


def loop_equity_after_drop(equity_usd: float, leverage: float, drop_ratio: float) -> float:
    """Equity after a collateral-vs-debt price drop d: E × (1 − L × d) (RISK_MODEL §2)."""
    return equity_usd * (1.0 - leverage * drop_ratio)


def loop_wipe_drop(leverage: float) -> float:
    """Drop that wipes the equity: d = 1 / L (RISK_MODEL §2)."""
    return 1.0 / leverage


def loop_liquidation_drop(collateral: float, debt: float, lt_ratio: float) -> float:
    """Drop at which HF < 1: d = 1 − D / (C × LT) (RISK_MODEL §2)."""
    return 1.0 - debt / (collateral * lt_ratio)


# --------------------------------------------------------------------------- LoopBook


class TickResult(NamedTuple):
    """Positions whose liquidatable state changed on one price tick."""

    newly_liquidatable: list[str]
    recovered: list[str]


class _KeyIndex(NamedTuple):
    thr: FloatArray  # sorted thresholds
    pos: IntArray  # position index for each threshold


_EMPTY_F: FloatArray = np.empty(0, dtype=np.float64)
_EMPTY_I: IntArray = np.empty(0, dtype=np.int64)


class LoopBook:
    """Index of lending positions by the price of their driving key at which HF crosses 1.

    Each position's margin Σ_k coef_k × price_k (coef = amount×LT for collateral, −amount
    for debt) is linear in prices. Writing it as coef_d × p_d + rest, the position is
    liquidatable when p_d < −rest/coef_d (coef_d > 0) or p_d > −rest/coef_d (coef_d < 0).
    Thresholds are kept in sorted numpy arrays per key, so a tick on a driving key costs
    O(log n + k). A tick on a key that is a secondary leg of some positions (e.g. the USDC
    debt of an ETH loop) re-indexes those positions: O(m log m) for m such positions.
    """

    def __init__(
        self,
        *,
        keys: Sequence[str],
        prices: Sequence[float] | FloatArray,
        entry_position: Sequence[int] | AnyIntArray,
        entry_key: Sequence[int] | AnyIntArray,
        entry_is_collateral: Sequence[bool] | npt.NDArray[np.bool_],
        entry_amount: Sequence[float] | FloatArray,
        entry_lt: Sequence[float] | FloatArray,
        entry_asset: Sequence[int] | AnyIntArray,
        assets: Sequence[str],
        position_protocol: Sequence[int] | AnyIntArray,
        ids: Sequence[str] | None = None,
        params: RiskParams | None = None,
    ) -> None:
        self._params = params or _default_params()
        self._keys = list(keys)
        self._key_index = {k: i for i, k in enumerate(self._keys)}
        self._assets = list(assets)
        self._px = np.asarray(prices, dtype=np.float64).copy()
        if self._px.shape != (len(self._keys),):
            raise ValueError("one price per key is required")
        if not np.all(np.isfinite(self._px)) or np.any(self._px <= 0):
            raise ValueError("prices must be finite and positive")
        self._proto = np.asarray(position_protocol, dtype=np.int8)
        n = int(self._proto.shape[0])
        self._n = n
        self._ids = list(ids) if ids is not None else None
        if self._ids is not None and len(self._ids) != n:
            raise ValueError("ids must have one entry per position")
        self._e_pos = np.asarray(entry_position, dtype=np.int32)
        self._e_key = np.asarray(entry_key, dtype=np.int32)
        self._e_coll = np.asarray(entry_is_collateral, dtype=np.bool_)
        self._e_amt = np.asarray(entry_amount, dtype=np.float64)
        self._e_lt = np.where(self._e_coll, np.asarray(entry_lt, dtype=np.float64), 0.0)
        self._e_asset = np.asarray(entry_asset, dtype=np.int32)
        m = self._e_pos.shape[0]
        for arr in (self._e_key, self._e_coll, self._e_amt, self._e_lt, self._e_asset):
            if arr.shape != (m,):
                raise ValueError("entry arrays must have equal length")
        if m and (self._e_pos.min() < 0 or self._e_pos.max() >= n):
            raise ValueError("entry_position out of range")
        if np.any(self._e_amt < 0) or not np.all(np.isfinite(self._e_amt)):
            raise ValueError("amounts must be finite and non-negative")
        self._build()

    # ---- construction

    @classmethod
    def from_positions(
        cls,
        positions: Iterable[Position],
        prices: Mapping[str, float],
        params: RiskParams | None = None,
    ) -> LoopBook:
        """Index pydantic positions (prices must cover every key they use)."""
        p = params or _default_params()
        keys: dict[str, int] = {}
        assets: dict[str, int] = {}
        e_pos: list[int] = []
        e_key: list[int] = []
        e_coll: list[bool] = []
        e_amt: list[float] = []
        e_lt: list[float] = []
        e_asset: list[int] = []
        ids: list[str] = []
        protos: list[int] = []
        for i, pos in enumerate(positions):
            ids.append(pos.position_id)
            protos.append(PROTOCOLS.index(pos.protocol))
            for c in pos.collateral:
                e_pos.append(i)
                e_key.append(keys.setdefault(c.price_key, len(keys)))
                e_coll.append(True)
                e_amt.append(c.amount)
                e_lt.append(effective_liquidation_threshold(pos, c, p.aave_v3))
                e_asset.append(assets.setdefault(c.asset, len(assets)))
            for d in pos.debt:
                e_pos.append(i)
                e_key.append(keys.setdefault(d.price_key, len(keys)))
                e_coll.append(False)
                e_amt.append(d.amount)
                e_lt.append(0.0)
                e_asset.append(assets.setdefault(d.asset, len(assets)))
        key_list = list(keys)
        missing = [k for k in key_list if k not in prices]
        if missing:
            raise KeyError(f"no price for {missing[0]!r}")
        return cls(
            keys=key_list,
            prices=[prices[k] for k in key_list],
            entry_position=np.asarray(e_pos, dtype=np.int64),
            entry_key=np.asarray(e_key, dtype=np.int64),
            entry_is_collateral=np.asarray(e_coll, dtype=np.bool_),
            entry_amount=np.asarray(e_amt, dtype=np.float64),
            entry_lt=np.asarray(e_lt, dtype=np.float64),
            entry_asset=np.asarray(e_asset, dtype=np.int64),
            assets=list(assets),
            position_protocol=np.asarray(protos, dtype=np.int64),
            ids=ids,
            params=p,
        )

    @classmethod
    def bulk_load(cls, **arrays: Any) -> LoopBook:
        """Build from flat numpy arrays (same keyword arguments as ``__init__``)."""
        return cls(**arrays)

    def _build(self) -> None:
        n, nk = self._n, len(self._keys)
        m = self._e_pos.shape[0]
        e_coef = np.where(self._e_coll, self._e_amt * self._e_lt, -self._e_amt)
        # combine legs with the same (position, key)
        comp = self._e_pos.astype(np.int64) * nk + self._e_key
        uniq, inv = np.unique(comp, return_inverse=True)
        coef = np.bincount(inv, weights=e_coef, minlength=uniq.shape[0])
        c_pos = (uniq // nk).astype(np.int64)
        c_key = (uniq % nk).astype(np.int64)
        # driving key: largest collateral value; debt-only positions: largest debt value
        val = self._e_amt * self._px[self._e_key]
        coll_val = np.bincount(inv, weights=np.where(self._e_coll, val, 0.0), minlength=uniq.size)
        debt_val = np.bincount(inv, weights=np.where(self._e_coll, 0.0, val), minlength=uniq.size)
        score = np.where(coll_val > 0, coll_val, -1.0 / (1.0 + debt_val))
        has_coll = np.zeros(n, dtype=np.bool_)
        if m:
            has_coll[self._e_pos[self._e_coll]] = True
        # sort candidates by (position, score desc) and keep the first row of each position
        order = np.lexsort((-score, c_pos))
        first = np.ones(order.shape[0], dtype=np.bool_)
        first[1:] = c_pos[order][1:] != c_pos[order][:-1]
        rows = order[first]
        self._drive = np.full(n, -1, dtype=np.int32)
        self._cd = np.zeros(n, dtype=np.float64)
        self._drive[c_pos[rows]] = c_key[rows]
        self._cd[c_pos[rows]] = coef[rows]
        is_drive = np.zeros(uniq.shape[0], dtype=np.bool_)
        is_drive[rows] = True
        sec = ~is_drive
        self._rest = np.bincount(
            c_pos[sec], weights=coef[sec] * self._px[c_key[sec]], minlength=n
        ).astype(np.float64)
        # secondary legs grouped by key, for re-indexing on their ticks
        s_order = np.argsort(c_key[sec], kind="stable")
        self._s_pos = c_pos[sec][s_order]
        self._s_coef = coef[sec][s_order]
        self._s_ptr = np.searchsorted(c_key[sec][s_order], np.arange(nk + 1))
        # primary asset: the asset of the largest collateral leg
        e_score = np.where(self._e_coll, val, -1.0)
        e_order = np.lexsort((-e_score, self._e_pos))
        e_first = np.ones(m, dtype=np.bool_)
        e_first[1:] = self._e_pos[e_order][1:] != self._e_pos[e_order][:-1]
        self._asset = np.zeros(n, dtype=np.int32)
        self._asset[self._e_pos[e_order[e_first]]] = self._e_asset[e_order[e_first]]
        self._thr = np.full(n, np.nan, dtype=np.float64)
        nz = self._cd != 0.0
        self._thr[nz] = -self._rest[nz] / self._cd[nz]
        self._liq = self._state(np.arange(n, dtype=np.int64))
        self._below: dict[int, _KeyIndex] = {}
        self._above: dict[int, _KeyIndex] = {}
        self._index_keys(range(nk))

    def _state(self, idx: IntArray) -> npt.NDArray[np.bool_]:
        cd = self._cd[idx]
        p = self._px[np.maximum(self._drive[idx], 0)]
        thr = self._thr[idx]
        return np.where(cd > 0, p < thr, np.where(cd < 0, p > thr, self._rest[idx] < 0))

    def _index_keys(self, keys: Iterable[int]) -> None:
        for k in keys:
            for store, sign in ((self._below, 1), (self._above, -1)):
                sel = np.flatnonzero((self._drive == k) & (np.sign(self._cd) == sign))
                if sel.size == 0:
                    store.pop(k, None)
                    continue
                o = np.argsort(self._thr[sel], kind="stable")
                store[k] = _KeyIndex(self._thr[sel][o], sel[o].astype(np.int64))

    # ---- queries

    def __len__(self) -> int:
        return self._n

    @property
    def keys(self) -> list[str]:
        """Price keys known to the book."""
        return list(self._keys)

    def price(self, key: str) -> float:
        """Current price of ``key`` in the book."""
        return float(self._px[self._key_index[key]])

    def _id(self, i: int) -> str:
        return self._ids[i] if self._ids is not None else str(i)

    def _ids_of(self, idx: npt.NDArray[np.integer[Any]]) -> list[str]:
        return [self._id(int(i)) for i in idx]

    def liquidatable_ids(self) -> list[str]:
        """Ids of positions liquidatable at current prices."""
        return self._ids_of(np.flatnonzero(self._liq))

    def liquidatable_count(self) -> int:
        """Number of positions liquidatable at current prices."""
        return int(self._liq.sum())

    def update_price(self, key: str, price: float) -> TickResult:
        """Apply one price tick; return positions that became liquidatable or recovered."""
        if not math.isfinite(price) or price <= 0:
            raise ValueError("price must be finite and positive")
        k = self._key_index[key]
        old = float(self._px[k])
        self._px[k] = price
        newly: list[npt.NDArray[np.int64]] = []
        back: list[npt.NDArray[np.int64]] = []
        below = self._below.get(k)
        if below is not None and price != old:
            lo, hi = sorted((price, old))
            a = int(np.searchsorted(below.thr, lo, side="right"))
            b = int(np.searchsorted(below.thr, hi, side="right"))
            (newly if price < old else back).append(below.pos[a:b])
        above = self._above.get(k)
        if above is not None and price != old:
            lo, hi = sorted((price, old))
            a = int(np.searchsorted(above.thr, lo, side="left"))
            b = int(np.searchsorted(above.thr, hi, side="left"))
            (newly if price > old else back).append(above.pos[a:b])
        for arr in newly:
            self._liq[arr] = True
        for arr in back:
            self._liq[arr] = False
        s0, s1 = int(self._s_ptr[k]), int(self._s_ptr[k + 1])
        if s1 > s0 and price != old:
            sp = self._s_pos[s0:s1]
            np.add.at(self._rest, sp, self._s_coef[s0:s1] * (price - old))
            aff = np.unique(sp)
            nz = aff[self._cd[aff] != 0.0]
            self._thr[nz] = -self._rest[nz] / self._cd[nz]
            before = self._liq[aff].copy()
            after = self._state(aff)
            self._liq[aff] = after
            newly.append(aff[after & ~before])
            back.append(aff[before & ~after])
            self._index_keys(int(d) for d in np.unique(self._drive[aff]) if d >= 0)
        cat_new = np.concatenate(newly) if newly else _EMPTY_I
        cat_back = np.concatenate(back) if back else _EMPTY_I
        return TickResult(self._ids_of(cat_new), self._ids_of(cat_back))

    def required_move_ratio(self) -> FloatArray:
        """Per position: adverse move of its driving key that makes it liquidatable.

        0 when already liquidatable, +inf when no move of the driving key does.
        """
        p = self._px[np.maximum(self._drive, 0)]
        with np.errstate(divide="ignore", invalid="ignore"):
            down = np.where(self._thr > 0, 1.0 - self._thr / p, np.inf)
            up = np.where(self._thr > 0, self._thr / p - 1.0, 0.0)
        move = np.where(self._cd > 0, down, np.where(self._cd < 0, up, np.inf))
        move = np.where(self._cd > 0, np.where(move < 1.0, move, np.inf), move)
        return np.where(self._liq, 0.0, np.maximum(move, 0.0))

    def health_factors(self) -> FloatArray:
        """Per position: HF = Σ coll×price×LT / Σ debt×price (as :func:`health_factor`), §2."""
        val = self._e_amt * self._px[self._e_key]
        weighted = np.bincount(self._e_pos, weights=np.where(self._e_coll, val * self._e_lt, 0.0),
                               minlength=self._n)
        _, debt = self.position_values()
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(debt > 0, weighted / np.where(debt > 0, debt, 1.0), np.inf).astype(np.float64)

    def position_values(self) -> tuple[FloatArray, FloatArray]:
        """(collateral_usd, debt_usd) per position at current prices."""
        val = self._e_amt * self._px[self._e_key]
        coll = np.bincount(self._e_pos, weights=np.where(self._e_coll, val, 0.0), minlength=self._n)
        debt = np.bincount(self._e_pos, weights=np.where(self._e_coll, 0.0, val), minlength=self._n)
        return coll.astype(np.float64), debt.astype(np.float64)

    def aggregates(self, steps_pct: Sequence[float] | None = None) -> list[dict[str, Any]]:
        """Per (primary collateral asset, protocol): liquidatable notional, ladder, illusion."""
        steps = np.asarray(
            steps_pct if steps_pct is not None else self._params.ladder.steps_pct, dtype=float
        )
        n_proto = len(PROTOCOLS)
        group = self._asset.astype(np.int64) * n_proto + self._proto
        n_groups = len(self._assets) * n_proto
        coll, debt = self.position_values()
        move = self.required_move_ratio()
        step_bin = np.searchsorted(steps / 100.0, move, side="right")
        count = np.bincount(group, minlength=n_groups)
        gross = np.bincount(group, weights=coll, minlength=n_groups)
        dsum = np.bincount(group, weights=debt, minlength=n_groups)
        liq = self._liq
        liq_n = np.bincount(group[liq], minlength=n_groups)
        liq_c = np.bincount(group[liq], weights=coll[liq], minlength=n_groups)
        liq_d = np.bincount(group[liq], weights=debt[liq], minlength=n_groups)
        nb = steps.shape[0]
        lad = (~liq) & (step_bin < nb)
        cell = group[lad] * nb + step_bin[lad]
        lad_n = np.bincount(cell, minlength=n_groups * nb).reshape(n_groups, nb).cumsum(axis=1)
        lad_c = (
            np.bincount(cell, weights=coll[lad], minlength=n_groups * nb)
            .reshape(n_groups, nb)
            .cumsum(axis=1)
        )
        out: list[dict[str, Any]] = []
        for g in np.flatnonzero(count):
            equity = float(gross[g] - dsum[g])
            out.append(
                {
                    "asset": self._assets[int(g) // n_proto],
                    "protocol": PROTOCOLS[int(g) % n_proto],
                    "positions": int(count[g]),
                    "liquidatable_count": int(liq_n[g]),
                    "liquidatable_collateral_usd": float(liq_c[g]),
                    "liquidatable_debt_usd": float(liq_d[g]),
                    "gross_collateral_usd": float(gross[g]),
                    "debt_usd": float(dsum[g]),
                    "real_equity_usd": equity,
                    "collateral_illusion_ratio": float(gross[g]) / equity if equity > 0 else None,
                    "ladder": [
                        {
                            "move_pct": float(steps[j]),
                            "additional_count": int(lad_n[g, j]),
                            "additional_collateral_usd": float(lad_c[g, j]),
                        }
                        for j in range(nb)
                    ],
                }
            )
        return out

    def ladder_for_key(
        self, key: str, steps_pct: Sequence[float] | None = None
    ) -> list[dict[str, float]]:
        """Collateral newly liquidatable if ``key`` alone falls by each step (driving-key legs)."""
        steps = list(steps_pct if steps_pct is not None else self._params.ladder.steps_pct)
        k = self._key_index[key]
        below = self._below.get(k)
        coll, _ = self.position_values()
        p = float(self._px[k])
        out = []
        for s in steps:
            if below is None:
                out.append({"move_pct": float(s), "count": 0.0, "collateral_usd": 0.0})
                continue
            a = int(np.searchsorted(below.thr, p * (1 - s / 100.0), side="right"))
            b = int(np.searchsorted(below.thr, p, side="right"))
            sel = below.pos[a:b]
            out.append(
                {
                    "move_pct": float(s),
                    "count": float(sel.size),
                    "collateral_usd": float(coll[sel].sum()),
                }
            )
        return out

    def counterfactual(
        self,
        key_map: Mapping[str, str],
        prices: Mapping[str, float] | None = None,
        collateral_assets: Collection[str] | None = None,
    ) -> LoopBook:
        """A new book whose collateral legs use other price keys (e.g. USDT → USDe@binance)."""
        keys = list(self._keys)
        px = list(self._px)
        extra = dict(prices or {})
        for new in key_map.values():
            if new not in keys:
                if new not in extra:
                    raise KeyError(f"no price for {new!r}")
                keys.append(new)
                px.append(extra[new])
        for k, v in extra.items():
            if k in keys:
                px[keys.index(k)] = v
        remap = np.arange(len(self._keys), dtype=np.int64)
        for old, new in key_map.items():
            if old in self._key_index:
                remap[self._key_index[old]] = keys.index(new)
        e_key = self._e_key.astype(np.int64)
        sel = self._e_coll.copy()
        if collateral_assets is not None:
            wanted = [i for i, a in enumerate(self._assets) if a in collateral_assets]
            sel &= np.isin(self._e_asset, wanted)
        e_key = np.where(sel, remap[e_key], e_key)
        return LoopBook(
            keys=keys,
            prices=px,
            entry_position=self._e_pos,
            entry_key=e_key,
            entry_is_collateral=self._e_coll,
            entry_amount=self._e_amt,
            entry_lt=self._e_lt,
            entry_asset=self._e_asset,
            assets=self._assets,
            position_protocol=self._proto,
            ids=self._ids,
            params=self._params,
        )
