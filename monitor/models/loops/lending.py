"""Lending positions: health factor, liquidation terms, loop maths and the ``LoopBook`` facade.

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
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from monitor.limits import MAX_INPUT_NUMBER
from monitor.models.loops.aggregates import group_aggregates
from monitor.models.loops.index import DrivingKeyIndex
from monitor.models.loops.legs import AnyIntArray, FloatArray, LoopLegs
from monitor.risk_params import AaveV3Params, MorphoBlueParams, RiskParams

__all__ = [
    "PROTOCOLS",
    "CollateralEntry",
    "DebtEntry",
    "LegLists",
    "LoopBook",
    "Position",
    "Protocol",
    "TickResult",
    "checked_position",
    "close_factor_ratio",
    "collateral_seized",
    "collateral_usd",
    "debt_usd",
    "driving_price_key",
    "effective_liquidation_threshold",
    "health_factor",
    "is_liquidatable",
    "leg_lists",
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


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class CollateralEntry(_Model):
    """Supplied collateral valued with ``price_key``."""

    asset: str = Field(min_length=1)
    amount: float = Field(ge=0, le=MAX_INPUT_NUMBER)
    liquidation_threshold: float = Field(gt=0, le=1)
    price_key: str = Field(min_length=1)


class DebtEntry(_Model):
    """Borrowed asset valued with ``price_key``."""

    asset: str = Field(min_length=1)
    amount: float = Field(ge=0, le=MAX_INPUT_NUMBER)
    price_key: str = Field(min_length=1)


class Position(_Model):
    """One lending position (Aave v3 account, Morpho Blue market position, or generic)."""

    position_id: str = Field(min_length=1)
    protocol: Protocol
    collateral: tuple[CollateralEntry, ...]
    debt: tuple[DebtEntry, ...] = ()
    liquidation_bonus: float | None = Field(default=None, ge=0, le=1)
    e_mode: str | None = None

    @field_validator("e_mode")
    @classmethod
    def _known_e_mode(cls, value: str | None, info: ValidationInfo) -> str | None:
        """With the parameters' e-modes in the context (:func:`checked_position`), an e-mode
        they do not name is refused here: its rates would be unknown to every evaluation."""
        known = info.context.get("e_modes") if isinstance(info.context, dict) else None
        if value is not None and known is not None and value not in known:
            raise PydanticCustomError("unknown_e_mode", "unknown e-mode {e_mode} (known: {known})",
                                      {"e_mode": repr(value), "known": ", ".join(sorted(known))})
        return value

    @model_validator(mode="after")
    def _morpho_single_market(self) -> Position:
        if self.protocol == "morpho-blue" and (len(self.collateral) > 1 or len(self.debt) > 1):
            raise ValueError("a morpho-blue position has one collateral and one loan asset")
        return self

    def price_keys(self) -> set[str]:
        """All price keys this position needs."""
        return {c.price_key for c in self.collateral} | {d.price_key for d in self.debt}


def checked_position(raw: Any, aave: AaveV3Params) -> Position:
    """A position record as the stages take it: the model, its e-mode one of ``aave``'s
    (pydantic's ValidationError otherwise, naming the field)."""
    return Position.model_validate(raw, context={"e_modes": aave.e_modes})


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


class LegLists(NamedTuple):
    """The legs of a list of positions, flat: per leg its position, price key index, side,
    amount, effective liquidation threshold (0 on debt) and asset index."""

    keys: dict[str, int]
    assets: dict[str, int]
    position: list[int]
    key: list[int]
    is_collateral: list[bool]
    amount: list[float]
    lt: list[float]
    asset: list[int]


def leg_lists(positions: Sequence[Position], params: RiskParams) -> LegLists:
    """Every position's collateral legs then its debt legs, in position order; the keys and
    assets numbered as first met. Raises ``ValueError`` for an unknown e-mode."""
    out = LegLists({}, {}, [], [], [], [], [], [])
    keys, assets = out.keys, out.assets
    for i, pos in enumerate(positions):
        for c in pos.collateral:
            out.lt.append(effective_liquidation_threshold(pos, c, params.aave_v3))
            out.position.append(i)
            out.key.append(keys.setdefault(c.price_key, len(keys)))
            out.is_collateral.append(True)
            out.amount.append(c.amount)
            out.asset.append(assets.setdefault(c.asset, len(assets)))
        for d in pos.debt:
            out.lt.append(0.0)
            out.position.append(i)
            out.key.append(keys.setdefault(d.price_key, len(keys)))
            out.is_collateral.append(False)
            out.amount.append(d.amount)
            out.asset.append(assets.setdefault(d.asset, len(assets)))
    return out


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


class LoopBook:
    """Lending positions at the book's prices: ticks, liquidatable sets, values, ladders.

    The facade over three pieces: the legs and their values (:class:`LoopLegs`), the index
    of positions by the driving-key price at which HF crosses 1 (:class:`DrivingKeyIndex`,
    O(log n + k) a tick) and the per-group figures (:func:`group_aggregates`).
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
        self._legs = LoopLegs(
            n_positions=n, entry_position=entry_position, entry_key=entry_key,
            entry_is_collateral=entry_is_collateral, entry_amount=entry_amount,
            entry_lt=entry_lt, entry_asset=entry_asset,
        )
        self._index = DrivingKeyIndex(self._legs, self._px, len(self._keys))
        self._asset = self._legs.primary_asset(self._px)

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
        positions = list(positions)
        legs = leg_lists(positions, p)
        keys, assets = legs.keys, legs.assets
        e_pos, e_key, e_coll, e_amt, e_lt, e_asset = (
            legs.position, legs.key, legs.is_collateral, legs.amount, legs.lt, legs.asset)
        ids = [pos.position_id for pos in positions]
        protos = [PROTOCOLS.index(pos.protocol) for pos in positions]
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
        return self._ids_of(np.flatnonzero(self._index.liquidatable))

    def liquidatable_count(self) -> int:
        """Number of positions liquidatable at current prices."""
        return int(self._index.liquidatable.sum())

    def update_price(self, key: str, price: float) -> TickResult:
        """Apply one price tick; return positions that became liquidatable or recovered."""
        if not math.isfinite(price) or price <= 0:
            raise ValueError("price must be finite and positive")
        k = self._key_index[key]
        old = float(self._px[k])
        self._px[k] = price
        newly, back = self._index.move(k, old, price)
        return TickResult(self._ids_of(newly), self._ids_of(back))

    def required_move_ratio(self) -> FloatArray:
        """Per position: adverse move of its driving key that makes it liquidatable.

        0 when already liquidatable, +inf when no move of the driving key does.
        """
        return self._index.required_move_ratio()

    def health_factors(self) -> FloatArray:
        """Per position: HF = Σ coll×price×LT / Σ debt×price (as :func:`health_factor`), §2."""
        return self._legs.health_factors(self._px)

    def position_values(self) -> tuple[FloatArray, FloatArray]:
        """(collateral_usd, debt_usd) per position at current prices."""
        return self._legs.position_values(self._px)

    def aggregates(self, steps_pct: Sequence[float] | None = None) -> list[dict[str, Any]]:
        """Per (primary collateral asset, protocol): liquidatable notional, ladder, illusion."""
        steps = np.asarray(
            steps_pct if steps_pct is not None else self._params.ladder.steps_pct, dtype=float
        )
        coll, debt = self.position_values()
        return group_aggregates(
            assets=self._assets, protocols=PROTOCOLS, primary_asset=self._asset,
            protocol=self._proto, collateral_usd=coll, debt_usd=debt,
            move_ratio=self.required_move_ratio(), liquidatable=self._index.liquidatable,
            steps=steps,
        )

    def ladder_for_key(
        self, key: str, steps_pct: Sequence[float] | None = None
    ) -> list[dict[str, float]]:
        """Collateral newly liquidatable if ``key`` alone falls by each step (driving-key legs)."""
        steps = list(steps_pct if steps_pct is not None else self._params.ladder.steps_pct)
        k = self._key_index[key]
        below = self._index.falling(k)
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
        wanted = (None if collateral_assets is None
                  else [i for i, a in enumerate(self._assets) if a in collateral_assets])
        legs = self._legs
        return LoopBook(
            keys=keys,
            prices=px,
            entry_position=legs.position,
            entry_key=legs.remapped_collateral_keys(remap, wanted),
            entry_is_collateral=legs.is_collateral,
            entry_amount=legs.amount,
            entry_lt=legs.lt_ratio,
            entry_asset=legs.asset,
            assets=self._assets,
            position_protocol=self._proto,
            ids=self._ids,
            params=self._params,
        )
