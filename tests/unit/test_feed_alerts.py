"""Feed alerts and contract values in Ingest: ``book_gap`` from the local books,
``feed_stale`` from ``feed_status`` frames, OKX sizes from ``contract_values`` frames and
from the feeds config; unknown instruments are dead-lettered, never guessed."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from monitor.alerts import Alert
from monitor.config import EngineConfig
from monitor.events import KIND_LIQUIDATION, MarketEvent
from monitor.ingest import (
    CONTRACT_VALUES_CHANNEL,
    FEED_STATUS_CHANNEL,
    DeadLetter,
    Ingest,
    IngestOutput,
    Routed,
    feed_status_raw,
)
from monitor.wire.okx import BUILTIN_CONTRACT_VALUES, contract_values_raw, parse_contract_values
from streams.feeds.config import ContractValue, LiveConfig, split_config

T0 = 1_760_130_000_000


def feed(ingest: Ingest, venue: str, channel: str, raw: Any, ts: int) -> list[IngestOutput]:
    return list(ingest.feed(venue, channel, raw, ts, orjson.dumps(raw)))


def alerts(out: list[IngestOutput]) -> list[Alert]:
    return [x for x in out if isinstance(x, Alert)]


def dead(out: list[IngestOutput]) -> list[DeadLetter]:
    return [x for x in out if isinstance(x, DeadLetter)]


def events(ingest: Ingest, out: list[IngestOutput]) -> list[MarketEvent]:
    routed = [x for x in out if isinstance(x, Routed)] + list(ingest.finish())
    return [ev for r in routed for ev in r.batch.events()]


def okx_books(action: str, seq: int, prev: int, ts: int) -> dict[str, Any]:
    return {"arg": {"channel": "books", "instId": "BTC-USDT-SWAP"}, "action": action,
            "data": [{"asks": [["100010", "2", "0", "1"]], "bids": [["100000", "3", "0", "1"]],
                      "ts": str(ts), "checksum": 0, "seqId": seq, "prevSeqId": prev}]}


def okx_liquidations(*items: tuple[str, str, str]) -> dict[str, Any]:
    """(instId, bkPx, sz in contracts) per item; every one a long liquidated."""
    return {"arg": {"channel": "liquidation-orders", "instType": "SWAP"}, "data": [
        {"instId": inst, "instType": "SWAP", "details": [
            {"side": "sell", "posSide": "long", "bkPx": px, "sz": sz, "bkLoss": "0", "ccy": "", "ts": str(T0)}]}
        for inst, px, sz in items]}


def test_sequence_gap_raises_book_gap_with_a_deterministic_id() -> None:
    runs: list[list[Alert]] = []
    for _ in range(2):
        ingest = Ingest(EngineConfig())
        out = feed(ingest, "okx", "books", okx_books("snapshot", 100, -1, T0), T0 + 1)
        out += feed(ingest, "okx", "books", okx_books("update", 105, 100, T0 + 10), T0 + 11)
        assert alerts(out) == []
        out += feed(ingest, "okx", "books", okx_books("update", 130, 120, T0 + 20), T0 + 21)
        runs.append(alerts(out))
        assert ingest.stats.book_gaps["okx"] == 1
    (gap,) = runs[0]
    assert (gap.kind, gap.venue, gap.asset, gap.ts_ms) == ("book_gap", "okx", "BTC", T0 + 20)
    assert gap.evidence == {"symbol": "BTC-USDT-SWAP", "expected": 105, "received": 120}
    assert gap.config_hash == EngineConfig().config_hash
    assert [a.to_json() for a in runs[1]] == [gap.to_json()]


def test_feed_status_frame_raises_feed_stale_stamped_with_its_receive_time() -> None:
    ingest = Ingest(EngineConfig())
    raw = feed_status_raw("btcusdt@markPrice@1s", 61.23456)
    assert raw == {"event": "stale", "channel": "btcusdt@markPrice@1s", "age_s": 61.235}
    (stale,) = feed(ingest, "binance-usdm", FEED_STATUS_CHANNEL, raw, T0 + 500)
    assert isinstance(stale, Alert)
    assert (stale.kind, stale.venue, stale.asset, stale.ts_ms) == ("feed_stale", "binance-usdm", None, T0 + 500)
    assert stale.evidence == {"channel": "btcusdt@markPrice@1s", "age_s": 61.235}
    assert "no data for 61.2 s" in stale.message
    again = feed(Ingest(EngineConfig()), "binance-usdm", FEED_STATUS_CHANNEL, raw, T0 + 500)
    assert alerts(again)[0].alert_id == stale.alert_id
    later = feed(Ingest(EngineConfig()), "binance-usdm", FEED_STATUS_CHANNEL, raw, T0 + 501)
    assert alerts(later)[0].alert_id != stale.alert_id


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ([1], "wrong_type"),
        ({"event": "reconnected", "channel": "x", "age_s": 1.0}, "wrong_value"),
        ({"event": "stale", "channel": "", "age_s": 1.0}, "wrong_type"),
        ({"event": "stale", "channel": "x", "age_s": "soon"}, "wrong_type"),
        ({"event": "stale", "channel": "x", "age_s": -1.0}, "wrong_value"),
    ],
)
def test_bad_feed_status_is_dead_lettered(raw: Any, reason: str) -> None:
    ingest = Ingest(EngineConfig())
    (out,) = feed(ingest, "okx", FEED_STATUS_CHANNEL, raw, T0)
    assert isinstance(out, DeadLetter) and out.reason == reason
    assert ingest.stats.deadletters[reason] == 1


def test_contract_values_frame_sizes_later_frames_and_unknown_ones_are_dead_lettered() -> None:
    ingest = Ingest(EngineConfig())
    doge = okx_liquidations(("DOGE-USDT-SWAP", "0.2", "3"))
    btc = okx_liquidations(("BTC-USDT-SWAP", "100000", "20"))
    (before,) = feed(ingest, "okx", "liquidation-orders", doge, T0)
    assert isinstance(before, DeadLetter) and before.reason == "unknown_contract_value"
    assert "DOGE-USDT-SWAP" in before.detail and "DOGE-USDT" in before.detail
    assert before.raw == orjson.dumps(doge)
    out = feed(ingest, "okx", "liquidation-orders", btc, T0 + 1)  # the built-in table: 0.01 BTC
    table = {"DOGE-USDT": (1000.0, "DOGE"), "BTC-USDT": (0.001, "BTC")}
    assert feed(ingest, "okx", CONTRACT_VALUES_CHANNEL, contract_values_raw(table), T0 + 2) == []
    assert ingest.watermark_ms == T0 + 1  # configuration, not market data
    out += feed(ingest, "okx", "liquidation-orders", doge, T0 + 3)
    out += feed(ingest, "okx", "liquidation-orders", btc, T0 + 4)
    sized = sorted((e.recv_ts_ms, e.kind, e.base, round(e.f2, 9), round(e.f4, 6)) for e in events(ingest, out))
    assert sized == [(T0 + 1, KIND_LIQUIDATION, "BTC", 0.2, 20_000.0),
                     (T0 + 3, KIND_LIQUIDATION, "DOGE", 3000.0, 600.0),
                     (T0 + 4, KIND_LIQUIDATION, "BTC", 0.02, 2_000.0)]
    # The frame replaced the table: ETH (built in) is unknown now.
    (eth,) = feed(ingest, "okx", "liquidation-orders", okx_liquidations(("ETH-USDT-SWAP", "4000", "1")), T0 + 5)
    assert isinstance(eth, DeadLetter) and eth.reason == "unknown_contract_value"
    assert ingest.stats.deadletters["unknown_contract_value"] == 2


def test_mixed_frame_keeps_known_instruments_and_dead_letters_the_frame_once() -> None:
    ingest = Ingest(EngineConfig())
    liq = okx_liquidations(("BTC-USDT-SWAP", "100000", "20"), ("PEPE-USDT-SWAP", "0.00001", "7"),
                           ("ETH-USDT-SWAP", "4000", "30"))
    out = feed(ingest, "okx", "liquidation-orders", liq, T0)
    (letter,) = dead(out)
    assert letter.reason == "unknown_contract_value" and "PEPE-USDT-SWAP" in letter.detail
    assert "BTC" not in letter.detail
    assert [(e.base, round(e.f2, 6)) for e in events(ingest, out)] == [("BTC", 0.2), ("ETH", 3.0)]
    assert ingest.stats.deadletters == {"unknown_contract_value": 1} and ingest.stats.events == 2


def test_unknown_book_instrument_is_dead_lettered_not_sized() -> None:
    ingest = Ingest(EngineConfig())
    raw = okx_books("snapshot", 1, -1, T0)
    raw["arg"]["instId"] = "PEPE-USDT-SWAP"
    (out,) = feed(ingest, "okx", "books", raw, T0)
    assert isinstance(out, DeadLetter) and out.reason == "unknown_contract_value"
    assert ingest.books == {}


@pytest.mark.parametrize(
    "raw",
    [
        {"values": {"BTC-USDT-SWAP": {"ct_val": 0.01, "ct_val_ccy": "BTC"}}},
        {"values": {"BTC-USDT": {"ct_val": 0, "ct_val_ccy": "BTC"}}},
        {"values": {"BTC-USDT": {"ct_val": "nan", "ct_val_ccy": "BTC"}}},
        {"values": {"BTC-USDT": {"ct_val": 0.01, "ct_val_ccy": ""}}},
        {"values": {"BTC-USDT": {"ct_val": 0.01}}},
        {"values": [["BTC-USDT", 0.01, "BTC"]]},
        {},
    ],
)
def test_bad_contract_values_frame_is_dead_lettered_and_changes_nothing(raw: Any) -> None:
    ingest = Ingest(EngineConfig())
    (out,) = feed(ingest, "okx", CONTRACT_VALUES_CHANNEL, raw, T0)
    assert isinstance(out, DeadLetter)
    assert ingest.contract_values == {}


def test_feeds_config_defaults_to_the_builtin_table_and_merges_the_users() -> None:
    assert LiveConfig().contract_values() == {"okx": dict(BUILTIN_CONTRACT_VALUES)}
    _engine, live = split_config(
        '[live.okx_contract_values]\n'
        '"doge-usdt" = { ct_val = 1000.0, ct_val_ccy = "doge" }\n'
        '"BTC-USDT" = { ct_val = 0.001, ct_val_ccy = "BTC" }\n'
    )
    table = live.contract_values()["okx"]
    assert table["DOGE-USDT"] == (1000.0, "DOGE")
    assert table["BTC-USDT"] == (0.001, "BTC")
    assert table["ETH-USD"] == BUILTIN_CONTRACT_VALUES["ETH-USD"]
    assert set(table) == set(BUILTIN_CONTRACT_VALUES) | {"DOGE-USDT"}
    assert parse_contract_values(contract_values_raw(table)) == table
    assert isinstance(live.okx_contract_values["DOGE-USDT"], ContractValue)


@pytest.mark.parametrize(
    "entry",
    [
        '"BTC-USDT-SWAP" = { ct_val = 0.01, ct_val_ccy = "BTC" }',
        '"BTC-USDT" = { ct_val = 0.0, ct_val_ccy = "BTC" }',
        '"BTC-USDT" = { ct_val = 0.01 }',
        '"BTC-USDT" = { ct_val = 0.01, ct_val_ccy = "BTC", typo = 1 }',
    ],
)
def test_feeds_config_rejects_bad_contract_values(entry: str) -> None:
    with pytest.raises(ValueError, match="okx_contract_values"):
        split_config(f"[live.okx_contract_values]\n{entry}\n")
