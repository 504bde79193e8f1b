"""Fuzzing every parser and the capture reader: events or a dead letter, never an exception.

Hypothesis feeds :class:`monitor.ingest.frames.Ingest` (the step live sessions and replays share)
with any JSON shape on every channel a parser serves, and with real frames (the
``docframes`` fixtures) mutated one field at a time. Whatever comes in, what comes out is
batches of events, dead letters with a well-formed reason, or feed alerts; and no event
downstream carries a non-finite number, a negative size or a crossed book. The capture
reader, given any bytes, yields lines or bad lines, or refuses the file with
:class:`replay.capture.CaptureError`.
"""

from __future__ import annotations

import copy
import gzip
import json
import math
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.config import EngineConfig
from monitor.events import KIND_BOOK, KIND_LIQUIDATION, KIND_QUOTE, KIND_TRADE
from monitor.ingest.frames import Ingest, Routed
from monitor.limits import MIN_INPUT_PRICE
from monitor.protocol import Alert, DeadLetter
from replay.capture import BadLine, CaptureError, CaptureLine, iter_capture

T0 = 1_760_130_000_000
REASON = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
#: (venue, channel) of every parser, and of the frames ingest reads about itself.
CHANNELS: list[tuple[str, str]] = [
    ("binance-spot", "btcusdt@bookTicker"), ("binance-spot", "btcusdt@aggTrade"),
    ("binance-spot", "btcusdt@depth@100ms"), ("binance-spot", "btcusdt@depthSnapshot"),
    ("binance-usdm", "btcusdt@markPrice@1s"), ("binance-usdm", "!markPrice@arr@1s"),
    ("binance-usdm", "!forceOrder@arr"), ("binance-usdm", "btcusdt@depth@100ms"),
    ("bybit-linear", "orderbook.50.BTCUSDT"), ("bybit-linear", "allLiquidation.BTCUSDT"),
    ("bybit-linear", "publicTrade.BTCUSDT"), ("okx", "books"), ("okx", "trades"),
    ("okx", "liquidation-orders"), ("hyperliquid", "l2Book"), ("hyperliquid", "trades"),
    ("curve", "price"), ("curve", "trade"), ("okx", "contract_values"), ("okx", "instruments"),
    ("liqmon", "session"), ("binance-spot", "book_reset"), ("binance-spot", "feed_status"),
    ("binance-spot", "garbage"),
]
#: Field names the venues use, so random objects often look like frames.
KEYS = st.sampled_from([
    "e", "E", "s", "u", "U", "pu", "b", "a", "B", "A", "p", "q", "m", "T", "o", "S", "z", "ap",
    "stream", "data", "topic", "type", "ts", "v", "arg", "channel", "instId", "action", "bids",
    "asks", "seqId", "prevSeqId", "px", "sz", "side", "posSide", "bkPx", "details", "coin",
    "levels", "time", "lastUpdateId", "values", "instruments", "symbol", "base", "quote",
    "price", "kind", "reason", "detail", "text", "b64", "symbols", "event", "age_s",
])
SCALARS = (st.none() | st.booleans() | st.integers(min_value=-(2**64), max_value=2**64)
           | st.floats(allow_nan=True, allow_infinity=True)
           | st.sampled_from(["", "0", "-1", "1e400", "nan", "BTCUSDT", "BTC-USD-SWAP", "snapshot", "delta",
                              "update", "Buy", "Sell", "buy", "sell", "SELL", str(T0), "BTCUSDT_210625"])
           | st.text(max_size=12))
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=6),
                    max_leaves=24)
#: Values that break naive parsers: signs, zeros, non-finite numbers, wrong types.
HOSTILE = st.sampled_from([
    "-1", -1, "-0.5", "0", 0, "nan", "NaN", "inf", "-inf", "1e400", 1e308, -1e308, None, "", [], {}, True,
    "abc", [[]], [["1"]], [["-1", "1"]], [["1", "-1"]], [["nan", "1"]], 2**63, -(2**63),
    "1e-300", 5e-324, [["1e-300", "1"]],
])
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "docframes" / "docframes.json"
REAL: list[dict[str, Any]] = [f for g in orjson.loads(FIXTURE.read_bytes())["groups"] for f in g["frames"]]


def _check(outputs: list[Any]) -> None:
    """Only batches, dead letters and alerts; every event finite, sized ≥ 0, uncrossed."""
    for out in outputs:
        if isinstance(out, DeadLetter):
            assert REASON.match(out.reason), out.reason
            continue
        if isinstance(out, Alert):
            continue
        assert isinstance(out, Routed)
        for row in out.batch.rows:
            kind, f1, f2, f3, f4 = row[0], row[4], row[5], row[6], row[7]
            assert all(math.isfinite(x) for x in row), row
            if kind in (KIND_TRADE, KIND_LIQUIDATION):
                assert f1 >= MIN_INPUT_PRICE and f2 >= 0, row
            elif kind == KIND_QUOTE:
                assert MIN_INPUT_PRICE <= f1 <= f2 and f3 >= 0 and f4 >= 0, row
            elif kind == KIND_BOOK:
                assert MIN_INPUT_PRICE <= f1 < f2, row


def _bytes(raw: Any) -> bytes:
    """The frame's bytes (the standard encoder: any int size, NaN and inf as venues never send)."""
    return json.dumps(raw).encode()


def _feed(ingest: Ingest, venue: str, channel: str, raw: Any, ts: int = T0) -> list[Any]:
    out = list(ingest.feed(venue, channel, raw, ts, _bytes(raw)))
    return out + list(ingest.finish())


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(CHANNELS), JSON)
def test_any_json_on_any_channel_is_events_or_a_dead_letter(where: tuple[str, str], raw: Any) -> None:
    _check(_feed(Ingest(EngineConfig()), *where, raw))


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


def _mutate(raw: Any, path: tuple[Any, ...], value: Any, delete: bool) -> Any:
    if not path:
        return value
    out = copy.deepcopy(raw)
    parent = out
    for step in path[:-1]:
        parent = parent[step]
    if delete and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return out


@settings(max_examples=1_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(min_value=0, max_value=len(REAL) - 1), st.data(), HOSTILE | JSON, st.booleans())
def test_mutated_real_frames_are_events_or_a_dead_letter(index: int, data: st.DataObject, value: Any,
                                                         delete: bool) -> None:
    frame = REAL[index]
    path = data.draw(st.sampled_from(_paths(frame["raw"])))
    ingest = Ingest(EngineConfig())
    # The frames before it in its group set up books, so mutations also hit live books.
    for before in REAL[:index]:
        if before["venue"] == frame["venue"]:
            list(ingest.feed(before["venue"], before["channel"], before["raw"], frame["recv_ts_ms"],
                             orjson.dumps(before["raw"])))
    _check(_feed(ingest, frame["venue"], frame["channel"], _mutate(frame["raw"], path, value, delete),
                 frame["recv_ts_ms"]))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=2_000), st.booleans())
def test_any_bytes_read_as_a_capture_are_lines_or_a_refusal(tmp_path: Path, body: bytes, gz: bool) -> None:
    path = tmp_path / ("c.jsonl.gz" if gz else "c.jsonl")
    path.write_bytes(gzip.compress(body, mtime=0) if gz else body)
    try:
        lines = list(iter_capture(path))
    except CaptureError as exc:
        assert str(exc)
        return
    assert all(isinstance(x, CaptureLine | BadLine) for x in lines)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(JSON, max_size=4))
def test_any_json_lines_read_as_a_capture_are_lines_or_a_refusal(tmp_path: Path, values: list[Any]) -> None:
    path = tmp_path / "c.jsonl"
    path.write_bytes(b"\n".join(_bytes(v) for v in values))
    try:
        lines = list(iter_capture(path))
    except CaptureError:
        return
    ingest = Ingest(EngineConfig())
    for line in lines:
        if isinstance(line, CaptureLine):
            _check(list(ingest.feed(line.venue, line.channel, line.raw, line.ts_ms, b"")))


def test_the_mutation_corpus_is_not_empty() -> None:
    assert len(REAL) >= 10
    with pytest.raises(KeyError):
        _mutate({"a": 1}, ("b", "c"), 1, False)


_BINANCE_LIQUIDATION = {"e": "forceOrder", "E": T0, "o": {"s": "BTCUSDT", "S": "SELL", "o": "LIMIT", "f": "IOC",
                                                       "q": "0.014", "p": "9910", "ap": "9910", "X": "FILLED",
                                                       "l": "0.014", "z": "0.014", "T": T0}}


@pytest.mark.parametrize(("venue", "channel", "raw"), [
    # a price read by positive_price (bookTicker), the one path of every print and quote
    ("binance-spot", "btcusdt@bookTicker",
     {"u": 1, "s": "BTCUSDT", "b": "1e-300", "B": "1", "a": "100", "A": "1"}),
    # a liquidation's average fill price, read apart from its order price
    ("binance-usdm", "btcusdt@forceOrder",
     _BINANCE_LIQUIDATION | {"o": _BINANCE_LIQUIDATION["o"] | {"ap": "1e-300"}}),
    # book levels: the msgspec path (two fields), the plain path (a level of three), the checked path
    ("bybit-linear", "orderbook.50.BTCUSDT",
     {"topic": "orderbook.50.BTCUSDT", "type": "snapshot", "ts": T0,
      "data": {"s": "BTCUSDT", "b": [["1e-300", "1"]], "a": [["101", "1"]], "u": 1, "seq": 1}}),
    ("bybit-linear", "orderbook.50.BTCUSDT",
     {"topic": "orderbook.50.BTCUSDT", "type": "snapshot", "ts": T0,
      "data": {"s": "BTCUSDT", "b": [["1e-300", "1", "x"]], "a": [["101", "1", "x"]], "u": 1, "seq": 1}}),
    ("okx", "books",
     {"arg": {"channel": "books", "instId": "BTC-USDT"}, "action": "snapshot",
      "data": [{"asks": [["101", "1", "0", "1"]], "bids": [[1e-300, "1", "0", "1"]],
                "ts": str(T0), "checksum": 0, "prevSeqId": -1, "seqId": 1}]}),
])
def test_a_price_below_the_wire_floor_is_refused(venue: str, channel: str, raw: dict[str, Any]) -> None:
    """A price below 1e-18 (no asset trades there) is an ``out_of_range`` dead letter on every
    path a price is read by: before, 1e-300 went on, and a value settled in the asset and
    divided by its price could overflow to a null figure."""
    (dead,) = [o for o in _feed(Ingest(EngineConfig()), venue, channel, raw, T0 + 10) if isinstance(o, DeadLetter)]
    assert dead.reason == "out_of_range" and "below 1e-18" in dead.detail
    at_floor = orjson.loads(orjson.dumps(raw).replace(b"1e-300", b"1e-18"))
    assert not [o for o in _feed(Ingest(EngineConfig()), venue, channel, at_floor, T0 + 10)
                if isinstance(o, DeadLetter)]


@pytest.mark.parametrize("size", ["1e308", 1e19, "-1e19"])
def test_a_size_beyond_any_real_one_is_refused_not_summed_to_infinity(size: Any) -> None:
    # Found by the mutation test: an OKX book level of 1e308 made its depth bands infinite.
    book = {"arg": {"channel": "books", "instId": "BTC-USDT"}, "action": "snapshot",
            "data": [{"asks": [["8476.98", size, "0", "1"]], "bids": [["8476.97", "1", "0", "1"]],
                      "ts": "1597026383085", "checksum": 0, "prevSeqId": -1, "seqId": 1}]}
    ingest = Ingest(EngineConfig())
    (dead,) = [o for o in _feed(ingest, "okx", "books", book, 1_597_026_383_100) if isinstance(o, DeadLetter)]
    assert dead.reason == "out_of_range"
