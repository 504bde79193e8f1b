"""Conversion-rate feeds: rate:BASE/QUOTE keys from rate venues, rate:A/B*C derived keys (RISK_MODEL §1)."""

from __future__ import annotations

import orjson

from monitor.config import EngineConfig
from monitor.ingest.frames import Ingest, Routed
from monitor.protocol import SignalRecord
from monitor.stages.engine import Engine
from monitor.stages.global_risk.risk import GlobalRisk

T0 = 1_760_130_000_000


def test_rate_feed_is_a_rate_key_and_never_a_market() -> None:
    cfg = EngineConfig()
    ingest, engine = Ingest(cfg), Engine(cfg)
    signals = []
    frames = [("binance-rate", {"base": "WBETH", "quote": "ETH", "price": 1.0672}),
              ("binance-rate", {"base": "USDE", "quote": "USD", "price": 1.0})]
    for venue, raw in frames:
        routed = list(ingest.feed(venue, "price", raw, T0, orjson.dumps(raw))) + list(ingest.finish())
        for item in routed:
            assert isinstance(item, Routed)
            result = engine.process(item.batch, 0)
            signals += result.signals
            assert result.unpriced == 0
    keys = {s[4]["key"]: s[4]["price"] for s in signals if s[3] == "price"}
    assert keys == {"rate:WBETH/ETH": 1.0672, "rate:USDE/USD": 1.0}
    assert "USDe" not in engine.pegs or "binance-rate" not in engine.pegs["USDe"].trackers


def test_derived_key_is_rate_times_base_and_moves_with_either() -> None:
    risk = GlobalRisk(EngineConfig(), partitions=1)
    risk.upsert_account({
        "account_id": "a1", "venue": "binance", "model": "binance-pm",
        "balances": [{"asset": "wBETH", "amount": 100.0, "price_key": "rate:WBETH/ETH*ETH"},
                     {"asset": "USDT", "amount": -300_000.0, "price_key": "USDT"}],
        "perps": [],
    })

    def push(ts: int, key: str, price: float, seq: int) -> None:
        risk.push(SignalRecord(0, ts, [[ts, "X", seq, "price", {"key": key, "price": price}]]))

    push(T0, "rate:WBETH/ETH", 1.07, 1)
    push(T0 + 1_000, "ETH", 4_000.0, 2)
    push(T0 + 2_000, "ETH", 3_000.0, 3)
    risk.flush()
    assert risk.prices["rate:WBETH/ETH*ETH"] == 1.07 * 3_000.0
    result = risk.account_result("a1")
    assert result is not None
    assert result.equity_by_asset_usd["wBETH"] <= 100 * 1.07 * 3_000.0
