"""Venue margin tables as the venues publish them, read from their public endpoints' JSON
(RISK_MODEL §3): Hyperliquid margin tiers, Bybit collateral value ratios and risk limits,
OKX discount rates and position tiers.

A *margin-tables document* is ``{"hyperliquid": <meta response>, "bybit": <collateral
response>, "okx": <discount-rate response>, "bybit_risk_limit": [<risk-limit response>,
…], "okx_position_tiers": [<position-tiers response>, …]}``, each response exactly as the
venue sent it and each part optional (the two tier parts take one response or a list: one
request per symbol, or per five instrument families). A live session fetches them at start and records one
``margin_tables`` frame (venue ``liqmon``) per venue whose raw is that venue's part; the
frames of a capture merge into one document. :func:`apply_margin_tables` turns a document
into risk parameters; a table it does not hold keeps the built-in fallback (which names its
source and date). Pure: the responses arrive as decoded JSON.

Endpoints and formats:

- Hyperliquid ``POST /info {"type": "meta"}`` (docs, For developers › API › Info endpoint ›
  Perpetuals, "Retrieve perpetuals metadata (universe and margin tables)"): ``universe[]``
  ``{name, maxLeverage, marginTableId}``, ``marginTables[]`` ``[id, {description,
  marginTiers: [{lowerBound, maxLeverage}]}]``; "for IDs less than 50, there is a single tier
  with max leverage equal to the ID" (docs, Trading › Margin tiers).
- Bybit ``GET /v5/spot-margin-trade/collateral`` (API v5, "Get Tiered Collateral Ratio"):
  ``result.list[] {currency, collateralRatioList: [{minQty, maxQty, collateralRatio}]}``,
  quantities "in coin", ``maxQty = ""`` is unbounded.
- OKX ``GET /api/v5/public/discount-rate-interest-free-quota`` (API v5, "Get discount rate
  and interest-free quota"): ``data[] {ccy, details: [{minAmt, maxAmt, discountRate}]}``,
  amounts in the currency ("the unit is the currency like BTC").
- Bybit ``GET /v5/market/risk-limit?category=linear&symbol=S`` (API v5, "Get Risk Limit",
  bybit-exchange.github.io/docs/v5/market/risk-limit): ``result.list[] {id, symbol,
  riskLimitValue, maintenanceMargin, initialMargin, maxLeverage, mmDeduction}``;
  ``riskLimitValue`` is the tier's position-value cap in the settle coin, ``mmDeduction``
  "the maintenance margin deduction value when risk limit tier changed" (``""`` on the first
  tier; then derived as cap_(n−1) × ΔMMR + deduction_(n−1), Bybit "Margin Parameters").
  Rates are fractions (``"0.005"`` = 0.5%, as recorded from the API, e.g. BTCUSDT
  2,000,000 / 0.005 / 0.01 / 100x).
- OKX ``GET /api/v5/public/position-tiers?instType=SWAP&tdMode=cross&instFamily=F``
  (API v5, "Get position tiers", okx.com/docs-v5/en/#public-data-rest-api-get-position-tiers):
  ``data[] {instFamily, uly, tier, minSz, maxSz, mmr, imr, maxLever}``; for swaps
  ``minSz``/``maxSz`` are contracts, turned into coins with the family's contract value
  (:data:`monitor.ingest.wire.instruments.BUILTIN_CONTRACT_VALUES`); linear families only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from monitor.ingest.wire.instruments import BUILTIN_CONTRACT_VALUES, ContractValues
from monitor.risk_params import (
    CollateralTiers,
    MarginTable,
    MarginTier,
    PerpTierTable,
    RiskParams,
    check_margin_table,
)

__all__ = [
    "MARGIN_TABLES_CHANNEL",
    "MARGIN_TABLE_VENUES",
    "VenueTableError",
    "apply_margin_tables",
    "bybit_collateral_tiers",
    "bybit_risk_limits",
    "hyperliquid_margin_tables",
    "okx_discount_tiers",
    "okx_position_tiers",
]

#: Capture channel (venue ``liqmon``) of the recorded margin tables.
MARGIN_TABLES_CHANNEL = "margin_tables"
#: Parts of a margin-tables document.
MARGIN_TABLE_VENUES = ("hyperliquid", "bybit", "okx", "bybit_risk_limit", "okx_position_tiers")
#: Margin table ids below this are a single tier at that leverage (Hyperliquid docs).
_HL_FLAT_TABLES_BELOW = 50


class VenueTableError(ValueError):
    """A venue response that is not in the documented format; names the field."""


def _obj(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise VenueTableError(f"{where}: expected a JSON object")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise VenueTableError(f"{where}: expected a JSON list")
    return value


def _num(value: Any, where: str, *, empty_is_inf: bool = False) -> float:
    if empty_is_inf and value == "":
        return math.inf
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise VenueTableError(f"{where}: expected a number")
    try:
        out = float(value)
    except ValueError:
        raise VenueTableError(f"{where}: not a number: {value!r}") from None
    if math.isnan(out) or out < 0 or (math.isinf(out) and not empty_is_inf):
        raise VenueTableError(f"{where}: expected a finite number >= 0, got {value!r}")
    return out


def _hl_tiers(table_id: int, tables: Mapping[int, Any], where: str) -> MarginTable:
    if table_id < _HL_FLAT_TABLES_BELOW:
        return (MarginTier(lower_bound_usd=0.0, max_leverage=float(table_id)),)
    if table_id not in tables:
        raise VenueTableError(f"{where}: margin table {table_id} is not in marginTables")
    tiers = _list(_obj(tables[table_id], f"marginTables[{table_id}]").get("marginTiers"),
                  f"marginTables[{table_id}].marginTiers")
    out = []
    for i, tier in enumerate(tiers):
        at = f"marginTables[{table_id}].marginTiers[{i}]"
        t = _obj(tier, at)
        lev = _num(t.get("maxLeverage"), f"{at}.maxLeverage")
        if lev < 1:
            raise VenueTableError(f"{at}.maxLeverage: must be >= 1")
        out.append(MarginTier(lower_bound_usd=_num(t.get("lowerBound"), f"{at}.lowerBound"),
                              max_leverage=lev))
    try:
        check_margin_table(str(table_id), tuple(out))
    except ValueError as exc:
        raise VenueTableError(str(exc)) from None
    return tuple(out)


def hyperliquid_margin_tables(meta: Any) -> dict[str, MarginTable]:
    """Coin → margin tiers from a Hyperliquid ``meta`` response (docs, Margin tiers)."""
    m = _obj(meta, "meta")
    tables: dict[int, Any] = {}
    for i, pair in enumerate(_list(m.get("marginTables", []), "meta.marginTables")):
        if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], int)):
            raise VenueTableError(f"meta.marginTables[{i}]: expected [id, table]")
        tables[pair[0]] = pair[1]
    out: dict[str, MarginTable] = {}
    for i, asset in enumerate(_list(m.get("universe"), "meta.universe")):
        a = _obj(asset, f"meta.universe[{i}]")
        name = a.get("name")
        if not isinstance(name, str) or not name:
            raise VenueTableError(f"meta.universe[{i}].name: expected a coin name")
        table_id = a.get("marginTableId", a.get("maxLeverage"))
        if not isinstance(table_id, int) or isinstance(table_id, bool) or table_id < 1:
            raise VenueTableError(f"meta.universe[{i}].marginTableId: expected an id >= 1")
        out[name] = _hl_tiers(table_id, tables, f"meta.universe[{i}]")
    return out


def _qty_tiers(
    items: list[Any], where: str, keys: tuple[str, str, str, str]
) -> dict[str, CollateralTiers]:
    """Coin → quantity tiers from a list of ``{coin, tiers: [{floor, rate}]}`` objects; keys
    = (coin, tier list, floor, rate) field names of the venue's response."""
    coin_key, list_key, floor_key, rate_key = keys
    out: dict[str, CollateralTiers] = {}
    for i, item in enumerate(items):
        at = f"{where}[{i}]"
        c = _obj(item, at)
        coin = c.get(coin_key)
        if not isinstance(coin, str) or not coin:
            raise VenueTableError(f"{at}.{coin_key}: expected a coin name")
        rows = []
        for j, tier in enumerate(_list(c.get(list_key), f"{at}.{list_key}")):
            t = _obj(tier, f"{at}.{list_key}[{j}]")
            rows.append((_num(t.get(floor_key), f"{at}.{list_key}[{j}].{floor_key}"),
                         _num(t.get(rate_key), f"{at}.{list_key}[{j}].{rate_key}")))
        if rows:
            try:
                out[coin] = CollateralTiers(basis="qty", tiers=tuple(sorted(rows)))
            except ValueError as exc:
                raise VenueTableError(f"{at}: {exc}") from None
    return out


def bybit_collateral_tiers(resp: Any) -> dict[str, CollateralTiers]:
    """Coin → quantity tiers from Bybit ``/v5/spot-margin-trade/collateral`` (API v5)."""
    result = _obj(_obj(resp, "bybit").get("result"), "bybit.result")
    items = _list(result.get("list"), "bybit.result.list")
    return _qty_tiers(items, "bybit.result.list",
                      ("currency", "collateralRatioList", "minQty", "collateralRatio"))


def okx_discount_tiers(resp: Any) -> dict[str, CollateralTiers]:
    """Currency → quantity tiers from OKX ``/api/v5/public/discount-rate-interest-free-quota``."""
    items = _list(_obj(resp, "okx").get("data"), "okx.data")
    return _qty_tiers(items, "okx.data", ("ccy", "details", "minAmt", "discountRate"))


def _responses(resp: Any, where: str) -> list[tuple[str, Any]]:
    """A tier part's responses with their field paths: one response or a list of them."""
    if isinstance(resp, list):
        return [(f"{where}[{i}]", r) for i, r in enumerate(resp)]
    return [(where, resp)]


def _tier_table(basis: str, rows: list[tuple[float, float, float]], where: str) -> PerpTierTable:
    rows = sorted(rows)
    caps = [cap for cap, _, _ in rows]
    rates = [mmr for _, mmr, _ in rows]
    if caps != sorted(set(caps)) or rates != sorted(rates):
        raise VenueTableError(f"{where}: tier caps must increase and MM rates must not fall")
    try:
        return PerpTierTable.model_validate({"basis": basis, "tiers": [
            {"cap": cap, "mmr_ratio": mmr, "mm_deduction_usd": ded} for cap, mmr, ded in rows]})
    except ValidationError as exc:
        err = exc.errors()[0]
        at = "".join(f"{x}: " for x in err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        raise VenueTableError(f"{where}: {at}{msg}") from None


def _bybit_rows(resp: Any, where: str, out: dict[str, list[tuple[float, float, float | None]]]) -> None:
    result = _obj(_obj(resp, where).get("result"), f"{where}.result")
    for i, item in enumerate(_list(result.get("list"), f"{where}.result.list")):
        at = f"{where}.result.list[{i}]"
        t = _obj(item, at)
        sym = t.get("symbol")
        if not isinstance(sym, str) or not sym:
            raise VenueTableError(f"{at}.symbol: expected a symbol")
        ded = t.get("mmDeduction", "")
        out.setdefault(sym, []).append((
            _num(t.get("riskLimitValue"), f"{at}.riskLimitValue"),
            _num(t.get("maintenanceMargin"), f"{at}.maintenanceMargin"),
            None if ded in ("", None) else _num(ded, f"{at}.mmDeduction"),
        ))


def bybit_risk_limits(resp: Any) -> dict[str, PerpTierTable]:
    """Symbol → USD-notional tier table from Bybit ``/v5/market/risk-limit`` (API v5).

    A blank ``mmDeduction`` is derived with Bybit's formula, deduction_n = cap_(n−1) ×
    (MMR_n − MMR_(n−1)) + deduction_(n−1) (Bybit "Margin Parameters"); 0 on the first tier.
    """
    rows: dict[str, list[tuple[float, float, float | None]]] = {}
    for where, r in _responses(resp, "bybit_risk_limit"):
        _bybit_rows(r, where, rows)
    out: dict[str, PerpTierTable] = {}
    for sym, tiers in rows.items():
        filled: list[tuple[float, float, float]] = []
        for cap, mmr, published in sorted(tiers, key=lambda t: t[0]):
            ded = published
            if ded is None:
                ded = filled[-1][2] + filled[-1][0] * (mmr - filled[-1][1]) if filled else 0.0
            filled.append((cap, mmr, ded))
        out[sym] = _tier_table("usd", filled, f"bybit_risk_limit: {sym}")
    return out


def okx_position_tiers(
    resp: Any, contract_values: ContractValues = BUILTIN_CONTRACT_VALUES
) -> dict[str, PerpTierTable]:
    """Instrument family → tier table from OKX ``/api/v5/public/position-tiers`` (SWAP).

    ``maxSz`` (contracts) × ctVal (in the coin) is the cap in coins; every tier has no
    deduction (OKX applies the tier's rate to the whole position). Inverse families (ctVal
    in USD) are refused: liqmon's perps are linear.
    """
    rows: dict[str, list[tuple[float, float, float]]] = {}
    for where, r in _responses(resp, "okx_position_tiers"):
        for i, item in enumerate(_list(_obj(r, where).get("data"), f"{where}.data")):
            at = f"{where}.data[{i}]"
            t = _obj(item, at)
            family = t.get("instFamily") or t.get("uly")
            if not isinstance(family, str) or not family:
                raise VenueTableError(f"{at}.instFamily: expected an instrument family")
            if family not in contract_values:
                raise VenueTableError(f"{at}.instFamily: no contract value (ctVal) for {family}")
            ct_val, ct_ccy = contract_values[family]
            if ct_ccy in ("USD", "USDT", "USDC"):
                raise VenueTableError(f"{at}.instFamily: {family} is an inverse family (ctVal in "
                                      f"{ct_ccy}); liqmon's perps are linear")
            rows.setdefault(family, []).append(
                (_num(t.get("maxSz"), f"{at}.maxSz") * ct_val, _num(t.get("mmr"), f"{at}.mmr"), 0.0))
    return {family: _tier_table("qty", tiers, f"okx_position_tiers: {family}")
            for family, tiers in rows.items()}


def _with_perp_tables(
    params: RiskParams, field: str, tables: dict[str, PerpTierTable], source: str
) -> RiskParams:
    unified = params.unified
    current = getattr(unified, field)
    venue = current.model_copy(update={
        "perp_tables": {**current.perp_tables, **tables}, "perp_tables_source": source})
    return params.model_copy(update={"unified": unified.model_copy(update={field: venue})})


def apply_margin_tables(params: RiskParams, doc: Any, source: str) -> RiskParams:
    """Risk parameters with the tables of a margin-tables document in place of the built-ins.

    Hyperliquid's margin tables are replaced whole (``margin_tables_source`` becomes
    ``source``); Bybit's and OKX's collateral tiers replace the built-in entries of the coins
    the response lists, their risk limits / position tiers those of the symbols / families
    it lists (``perp_tables_source`` becomes ``source``). Raises :class:`VenueTableError`
    naming the bad field.
    """
    parts = _obj(doc, MARGIN_TABLES_CHANNEL)
    unknown = sorted(set(parts) - set(MARGIN_TABLE_VENUES))
    if unknown:
        raise VenueTableError(f"{unknown[0]}: unknown venue (known: {', '.join(MARGIN_TABLE_VENUES)})")
    unified = params.unified
    if "hyperliquid" in parts:
        hl = unified.hyperliquid.model_copy(update={
            "margin_tables": hyperliquid_margin_tables(parts["hyperliquid"]),
            "margin_tables_source": source,
        })
        unified = unified.model_copy(update={"hyperliquid": hl})
    for venue, field, parse in (("bybit", "bybit_uta", bybit_collateral_tiers),
                                ("okx", "okx_mc", okx_discount_tiers)):
        if venue in parts:
            current = getattr(unified, field)
            rates = {**current.collateral_rates, **parse(parts[venue])}
            unified = unified.model_copy(
                update={field: current.model_copy(update={"collateral_rates": rates})})
    params = params.model_copy(update={"unified": unified})
    if "bybit_risk_limit" in parts:
        params = _with_perp_tables(params, "bybit_uta", bybit_risk_limits(parts["bybit_risk_limit"]), source)
    if "okx_position_tiers" in parts:
        params = _with_perp_tables(params, "okx_mc", okx_position_tiers(parts["okx_position_tiers"]), source)
    return params
