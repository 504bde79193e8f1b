"""The acks on control.acks: one codec, one collector, command replies skipped."""

from __future__ import annotations

import orjson
import pytest

from monitor.protocol import (
    AckCollector,
    CommandRecord,
    GlobalAck,
    InputRecord,
    LoadedAck,
    MarketAck,
    SignalRecord,
    SyncMarker,
    decode_ack,
    decode_risk_record,
    encode,
)


def market(partition: int, run: str = "r1", alerts: int = 2) -> MarketAck:
    return MarketAck(run=run, partition=partition, alerts=alerts, deadletters=1, events=10,
                     config_hash="c", first_wall_s=1.0, ack_wall_s=2.0)


def test_every_ack_round_trips_through_the_codec() -> None:
    acks = [market(3), GlobalAck(run="r1", alerts=5, snapshots=7, config_hash="c", ack_wall_s=3.0),
            LoadedAck(run="r1", alerts=0, positions=9, accounts=4, config_hash="c")]
    for ack in acks:
        assert decode_ack(encode(ack)) == ack


@pytest.mark.parametrize("value", [
    b'{"request_id": "q1", "ok": true, "result": {}}',  # a command reply on the same topic
    b'{"run": "r1", "stage": "market", "partition": -1, "alerts": 0, "deadletters": 0,'
    b' "events": 0, "config_hash": "c", "ack_wall_s": 1.0}',  # a negative partition
    b'{"run": "r1", "stage": "elsewhere", "alerts": 0, "config_hash": "c"}',
    b"not json",
])
def test_anything_but_an_ack_decodes_to_none(value: bytes) -> None:
    assert decode_ack(value) is None


def test_the_collector_waits_for_every_partition_and_the_global_stage() -> None:
    collector = AckCollector("r1")
    for value in (encode(market(0)), encode(market(1, run="other")), b'{"request_id": "q"}'):
        collector.take(value)
    assert not collector.ended(2, global_stage=False)
    collector.take(encode(market(1)))
    collector.take(encode(market(1)))  # re-sent after a restart: one per partition
    assert collector.ended(2, global_stage=False) and not collector.ended(2)
    collector.take(encode(GlobalAck(run="r1", alerts=5, snapshots=7, config_hash="c", ack_wall_s=3.0)))
    assert collector.ended(2)
    assert collector.announced_alerts() == 2 + 2 + 5 and collector.announced_snapshots() == 7
    assert [a.partition for a in collector.in_order()] == [0, 1] and collector.count() == 3
    assert collector.loaded is None
    collector.take(orjson.dumps({"run": "r1", "stage": "loaded", "alerts": 0, "positions": 1,
                                 "accounts": 2, "config_hash": "c"}))
    assert collector.loaded is not None and collector.loaded.accounts == 2


def test_risk_signals_records_are_told_apart_and_inputs_round_trip() -> None:
    raw = {"account_id": "a1", "venue": "binance"}
    record = InputRecord("account", raw, (2, 41))
    assert decode_risk_record(record.encode()) == record
    assert decode_risk_record(InputRecord("position", raw, None).encode()) == InputRecord("position", raw, None)
    assert record.sync is None
    marker = SyncMarker("run-1", 3, 8)
    assert InputRecord("account", marker.raw(), (3, 9)).sync == marker
    assert isinstance(decode_risk_record(b'{"v": 1, "command": "spiral"}'), CommandRecord)
    assert isinstance(decode_risk_record(b'{"v": 1, "p": 0, "wm": 5, "s": []}'), SignalRecord)


@pytest.mark.parametrize(("value", "reason"), [
    (b'{"v": 1, "input": "trade", "raw": {}}', r"invalid_input: Invalid enum value 'trade' - at `\$.input`"),
    (b'{"v": 1, "input": "account", "raw": [1]}', r"invalid_input: Expected `object`, got `array` - at `\$.raw`"),
    (b'{"v": 1, "input": "account", "raw": {}, "src": [1]}', r"invalid_input: Expected `array` of length 2"),
    (b'{"v": 1, "p": "0", "wm": 5, "s": []}', r"invalid_signal: Expected `int`, got `str` - at `\$.p`"),
    (b'{"v": 1, "p": 0, "wm": 5, "s": [[1, "A", 1, "price"]]}', r"invalid_signal: Expected `array` of length 5"),
    (b'{"v": 1, "p": 0 "wm": 5}', "invalid_json"),
    (b'{"v": 2, "p": 0, "wm": 5, "s": []}', "not a liqmon signal record"),
])
def test_a_bad_risk_signals_record_names_what_is_wrong(value: bytes, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        decode_risk_record(value)


def test_a_sync_marker_is_checked() -> None:
    with pytest.raises(ValueError, match="sync marker"):
        InputRecord("account", {"ctl": "sync", "run": 5}, None).sync  # noqa: B018


@pytest.mark.parametrize(("signal", "reason"), [
    ([1, "USDe", 1, "price", {"key": "USDe"}], "a price signal needs price"),
    ([1, "USDe", 1, "rumour", {}], "unknown signal kind 'rumour'"),
    ([1, "USDe", 1, "book", {"venue": "okx", "symbol": "X", "state": "warm"}], "needs baseline_usd, depth_usd"),
])
def test_a_signal_without_its_kinds_fields_is_refused(signal: list[object], reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        decode_risk_record(orjson.dumps({"v": 1, "p": 0, "wm": 1, "s": [signal]}))
