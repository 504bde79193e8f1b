"""The acks on control.acks: one codec, one collector, command replies skipped."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.events import BOOK_BANDS_BPS, KIND_BOOK
from monitor.ingest.batch import Batch, decode_record, read_record_exact
from monitor.protocol import (
    AckCollector,
    Alert,
    CommandRecord,
    CommandReply,
    DeadLetter,
    GlobalAck,
    InputRecord,
    LoadedAck,
    MarketAck,
    RecordError,
    RiskSnapshot,
    SignalRecord,
    SpiralRequest,
    SyncMarker,
    bundle_inputs,
    decode_ack,
    decode_command,
    decode_market,
    decode_reply,
    decode_risk_record,
    encode,
    split_input_bundle,
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


def test_every_topics_record_round_trips_through_the_one_codec() -> None:
    alert = Alert(alert_id="a1", ts_ms=1, kind="peg_deviation", severity="high", venue="binance-spot",
                  asset="USDe", stage=None, message="m", evidence={"dev_bps": -42.5, "levels": [1, 2]},
                  config_hash="c")
    assert Alert.from_json(alert.to_json()) == alert
    assert alert.to_json() == orjson.dumps(alert.as_dict())  # the alert contract's bytes, key order kept
    snap = RiskSnapshot(ts_ms=5, hf_bands={"<1": 2}, active_stages=(1, 2), withdrawn_ratio=0.25)
    assert RiskSnapshot.decode(snap.encode()) == snap
    letter = DeadLetter("invalid_json", "bad", b"\xff\x00", venue="okx", line_no=7)
    obj = orjson.loads(letter.encode())
    assert obj["raw_b64"] == "/wA=" and obj["line"] == 7 and obj["venue"] == "okx"
    signals = SignalRecord(2, 9, [(9, "USDe", 1, "price", {"key": "USDe@okx", "price": 0.99})], end="r1")
    assert decode_risk_record(encode(signals)) == signals
    request = SpiralRequest(v=1, request_id="q1", shocks={"BTC": -0.1})
    assert decode_command(orjson.loads(encode(request))) == request
    reply = CommandReply(request_id="q1", ok=False, error="no")
    assert decode_reply(encode(reply)) == reply and decode_ack(encode(reply)) is None
    tick = decode_market(b'{"v": 2, "tick": 1000}')
    assert tick.tick == 1000 and tick.asset is None


@pytest.mark.parametrize(("value", "reason", "names"), [
    (b'{"alert_id": "a", "ts_ms": 1}', "invalid_alert", "kind"),
    (b'{"alert_id": "a", "ts_ms": 1, "kind": "k", "severity": "grave", "venue": null, "asset": null,'
     b' "stage": null, "message": "", "evidence": {}, "config_hash": "c"}', "invalid_alert", "$.severity"),
    (b'{"ts_ms": 1, "colour": "red"}', "invalid_snapshot", "colour"),
    (b'{"v": 2, "tick": "soon"}', "invalid_batch", "$.tick"),
    (b"\x89PNG", "invalid_json", ""),
])
def test_a_bad_record_is_refused_with_a_reason_naming_the_field(value: bytes, reason: str, names: str) -> None:
    with pytest.raises(RecordError) as exc:
        if reason == "invalid_alert":
            Alert.from_json(value)
        elif reason == "invalid_snapshot":
            RiskSnapshot.decode(value)
        else:
            decode_market(value)
    assert exc.value.reason == reason and names in exc.value.detail


#: Field names of liqmon's own records, so random objects often look like one.
_RECORD_KEYS = st.sampled_from([
    "v", "asset", "src", "k", "i", "t", "r", "f", "x", "tick", "ctl", "run", "partition", "p", "wm",
    "s", "end", "input", "raw", "command", "request_id", "shocks", "stage", "alerts", "config_hash",
    "alert_id", "ts_ms", "kind", "severity", "evidence", "ok", "error", "of", "sync",
])
_SCALARS = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
            | st.floats() | st.sampled_from(["", "end", "sync", "spiral", "market", "price", "USDe"])
            | st.text(max_size=8))
_JSON = st.recursive(
    _SCALARS, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(_RECORD_KEYS, inner, max_size=8),
    max_leaves=30,
)


def _decoders() -> list[Callable[[bytes], object]]:
    return [decode_record, decode_risk_record, Alert.from_json, RiskSnapshot.decode, decode_reply]


@settings(max_examples=400, deadline=None)
@given(value=_JSON, base=st.sampled_from([2, 1]))
def test_any_json_on_any_topic_is_a_record_or_a_record_error(value: object, base: int) -> None:
    """Whatever a topic carries, its decoder gives a typed record or a RecordError with a reason."""
    obj = {"v": base, **value} if isinstance(value, dict) else value
    raw = json.dumps(obj).encode()  # big integers, NaN and Infinity included (the last two not JSON)
    for decode in _decoders():
        try:
            decode(raw)
        except RecordError as exc:
            assert exc.reason.startswith("invalid_"), exc.reason
    assert decode_ack(raw) is None or isinstance(decode_ack(raw), MarketAck | GlobalAck | LoadedAck)


@settings(max_examples=200, deadline=None)
@given(body=st.binary(max_size=64))
def test_any_bytes_on_any_topic_are_a_record_error(body: bytes) -> None:
    for decode in _decoders():
        try:
            decode(body)
        except RecordError as exc:
            assert exc.reason.startswith("invalid_"), exc.reason


_INTS = st.integers(min_value=-(2**66), max_value=2**66) | st.sampled_from([0, 1, 3, 6, 7, -1])
_ODD = st.sampled_from([True, "1", None, 1.5, [1]])


@settings(max_examples=400, deadline=None)
@given(data=st.data(), n=st.integers(0, 4), n_src=st.integers(0, 2), odd=st.booleans())
def test_a_batch_with_any_columns_decodes_to_consistent_arrays_or_is_refused(
    data: st.DataObject, n: int, n_src: int, odd: bool
) -> None:
    """Columns of the right lengths (or one off) holding any integers, floats or a wrong type:
    arrays that agree with each other, or invalid_batch."""
    value = _INTS | st.floats(allow_nan=False, allow_infinity=False) | (_ODD if odd else _INTS)
    kinds = data.draw(st.lists(st.sampled_from([0, 1, 2, 3, 4, 5, 6, 7, -1]) | _ODD, min_size=n, max_size=n))
    books = sum(1 for k in kinds if k == KIND_BOOK)
    n_bands = books * 2 * len(BOOK_BANDS_BPS)
    off = data.draw(st.sampled_from([0, 0, 0, 1, -1]))
    cols = {
        "k": kinds,
        "i": data.draw(st.lists(st.integers(-1, 2), min_size=n, max_size=n)),
        "t": data.draw(st.lists(_INTS, min_size=n, max_size=n)),
        "r": data.draw(st.lists(_INTS, min_size=n, max_size=n)),
        "f": data.draw(st.lists(value, min_size=max(4 * n + off, 0), max_size=max(4 * n + off, 0))),
        "x": data.draw(st.lists(value, min_size=n_bands, max_size=n_bands)),
    }
    raw = json.dumps({"v": 2, "asset": "USDe", "src": [["okx", "USDE-USDT", "USDT"]] * n_src, **cols}).encode()
    try:
        batch = decode_record(raw)
    except RecordError as exc:
        assert exc.reason == "invalid_batch", exc
        return
    assert isinstance(batch, Batch)
    c = batch.columns()
    assert len(c) == n and c.src.shape == c.ts_ms.shape == c.recv_ts_ms.shape == (n,) and c.f.shape == (n, 4)
    assert c.bands.shape[0] == books and bool(np.isfinite(c.f).all()) and bool(np.isfinite(c.bands).all())
    assert bool(((c.src >= 0) & (c.src < n_src)).all())


def _outcome(decode: Any, raw: bytes) -> tuple[Any, ...]:
    try:
        batch = decode(raw)
    except RecordError as exc:
        return ("error", exc.reason, exc.detail)
    if not isinstance(batch, Batch):
        return ("other", batch)
    c = batch.columns()
    arrays = tuple((a.dtype.str, a.shape, a.tobytes()) for a in (c.kind, c.src, c.ts_ms, c.recv_ts_ms, c.f, c.bands))
    return ("batch", batch.asset, batch.sources, arrays)


@settings(max_examples=600, deadline=None)
@given(data=st.data(), n=st.integers(0, 3), odd=st.booleans(),
       source=st.sampled_from(["okx", "a[b", "x]", "é"]),
       spacing=st.sampled_from([None, 1]), extra=st.sampled_from([b"", b', "v": 2', b', "k": []', b', "tick": null']))
def test_the_one_pass_reader_agrees_with_the_exact_one(
    data: st.DataObject, n: int, odd: bool, source: str, spacing: int | None, extra: bytes
) -> None:
    """``decode_record`` (simdjson in one pass, the exact reader when it declines) gives the
    same batch as ``read_record_exact`` (msgspec first), or the same error: for any columns,
    brackets inside strings, repeated keys, other spacing."""
    value = _INTS | st.floats(allow_nan=False, allow_infinity=False) | (_ODD if odd else _INTS)
    kinds = data.draw(st.lists(st.sampled_from([0, 1, 3, 9]) | (_ODD if odd else _INTS), min_size=n, max_size=n))
    n_bands = sum(1 for k in kinds if k == KIND_BOOK) * 2 * len(BOOK_BANDS_BPS)
    cols = {
        "k": kinds,
        "i": data.draw(st.lists(st.integers(-1, 1) | value, min_size=n, max_size=n)),
        "t": data.draw(st.lists(_INTS | value, min_size=n, max_size=n)),
        "r": data.draw(st.lists(_INTS, min_size=n, max_size=n)),
        "f": data.draw(st.lists(value, min_size=4 * n, max_size=4 * n)),
        "x": data.draw(st.lists(value, min_size=n_bands, max_size=n_bands)),
    }
    if data.draw(st.booleans()):
        cols[data.draw(st.sampled_from(sorted(cols)))] = data.draw(_JSON)
    record: dict[str, Any] = {"v": 2, "asset": "USDe", "src": [[source, "USDE-USDT", "USDT"]], **cols}
    if data.draw(st.integers(0, 4)) == 0:
        record[data.draw(st.sampled_from(["v", "asset", "src"]))] = data.draw(_JSON)
    raw = json.dumps(record, indent=spacing).encode()
    raw = raw[:-1] + extra + raw[-1:]
    assert _outcome(decode_record, raw) == _outcome(read_record_exact, raw)


@settings(max_examples=200, deadline=None)
@given(ids=st.lists(st.text(max_size=40), max_size=30), max_bytes=st.integers(1, 600))
def test_forwarded_inputs_bundle_and_split_back_in_order(ids: list[str], max_bytes: int) -> None:
    records = [InputRecord("account", {"account_id": i}, (0, n)).encode() for n, i in enumerate(ids)]
    bundles = bundle_inputs(records, max_bytes)
    assert [r for b in bundles for r in split_input_bundle(b)] == records
    for b in bundles:
        parts = split_input_bundle(b)
        assert len(b) <= max_bytes or len(parts) == 1  # only a record bigger than the bound goes over it
        assert (parts == [b]) == (len(parts) == 1)  # a lone record goes as it is
        assert all(isinstance(decode_risk_record(r), InputRecord) for r in parts)


@pytest.mark.parametrize(("value", "reason"), [
    (b'{"inputs":[1', "invalid_json"),
    (b'{"inputs":[{"v":1}],"more":1}', "invalid_bundle"),
    (b'{"inputs":["x"]} and more', "invalid_json"),
])
def test_a_bundle_that_does_not_check_out_is_refused_whole(value: bytes, reason: str) -> None:
    with pytest.raises(RecordError) as refused:
        split_input_bundle(value)
    assert refused.value.reason == reason


def test_a_bundles_bad_element_is_left_to_its_reader() -> None:
    good = InputRecord("position", {"position_id": "p"}).encode()
    assert split_input_bundle(b'{"inputs":[' + good + b',1,"x"]}') == [good, b"1", b'"x"']
    with pytest.raises(RecordError):
        decode_risk_record(b"1")
    # what does not open as a bundle is a record of its own, refused by the record's reader
    assert split_input_bundle(b'{"inputs":{}}') == [b'{"inputs":{}}']
    with pytest.raises(RecordError):
        decode_risk_record(b'{"inputs":{}}')
