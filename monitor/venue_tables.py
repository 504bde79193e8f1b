"""Venue margin tables as the venues publish them, read from their public endpoints' JSON
(RISK_MODEL §3): Hyperliquid margin tiers, Bybit collateral value ratios, OKX discount rates.

A *margin-tables document* is ``{"hyperliquid": <meta response>, "bybit": <collateral
response>, "okx": <discount-rate response>}``, each response exactly as the venue sent it
and each part optional. A live session fetches them at start and records one
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
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from monitor.risk_params import (
    CollateralTiers,
    MarginTable,
    MarginTier,
    RiskParams,
    check_margin_table,
)

__all__ = [
    "MARGIN_TABLES_CHANNEL",
    "MARGIN_TABLE_VENUES",
    "VenueTableError",
    "apply_margin_tables",
    "bybit_collateral_tiers",
    "hyperliquid_margin_tables",
    "okx_discount_tiers",
]

#: Capture channel (venue ``liqmon``) of the recorded margin tables.
MARGIN_TABLES_CHANNEL = "margin_tables"
#: Parts of a margin-tables document.
MARGIN_TABLE_VENUES = ("hyperliquid", "bybit", "okx")
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


def apply_margin_tables(params: RiskParams, doc: Any, source: str) -> RiskParams:
    """Risk parameters with the tables of a margin-tables document in place of the built-ins.

    Hyperliquid's margin tables are replaced whole (``margin_tables_source`` becomes
    ``source``); Bybit's and OKX's collateral tiers replace the built-in entries of the coins
    the response lists. Raises :class:`VenueTableError` naming the bad field.
    """
    parts = _obj(doc, MARGIN_TABLES_CHANNEL)
    unknown = sorted(set(parts) - set(MARGIN_TABLE_VENUES))
    if unknown:
        raise VenueTableError(f"{unknown[0]}: unknown venue (known: hyperliquid, bybit, okx)")
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
    return params.model_copy(update={"unified": unified})
