"""Ingest validation: every bad frame becomes a dead letter with a reason; batching is deterministic."""

from __future__ import annotations

import contextlib
import gzip
import random
import threading
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from monitor.config import EngineConfig, IngestConfig
from monitor.events import BOOK_BANDS_BPS
from monitor.ingest.batch import Batch, Control, decode_record
from monitor.ingest.frames import Ingest, Routed
from monitor.protocol import DeadLetter, RecordError
from monitor.stages.engine import Engine
from replay.capture import BadLine, CaptureError, iter_capture, open_capture, write_capture

T0 = 1_760_130_000_000  # 2025-10-10 21:00 UTC


def ticker(b: Any = "0.99990", a: Any = "1.00010", **over: Any) -> dict[str, Any]:
    raw = {"u": 1, "s": "USDEUSDT", "b": b, "B": "1000", "a": a, "A": "1000"}
    raw.update(over)
    return raw


def feed_one(ingest: Ingest, raw: Any, channel: str = "usdeusdt@bookTicker", venue: str = "binance-spot",
             ts: int = T0, raw_bytes: bytes | None = None) -> list[Routed | DeadLetter]:
    data = raw_bytes if raw_bytes is not None else orjson.dumps(raw)
    return list(ingest.feed(venue, channel, raw, ts, data))


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (ticker(b="nan"), "non_finite"),
        (ticker(a="inf"), "non_finite"),
        (ticker(b="-1"), "non_positive_price"),
        (ticker(b="0"), "non_positive_price"),
        (ticker(b="1.2", a="1.1"), "crossed_book"),
        (ticker(b=None), "wrong_type"),
        (ticker(b=[1]), "wrong_type"),
        (ticker(b="abc"), "wrong_type"),
        ({"u": 1, "s": "USDEUSDT", "b": "1", "B": "1", "A": "1"}, "missing_field"),
        ([1, 2, 3], "wrong_type"),
        (ticker(E=T0 + 3_600_000), "timestamp_future"),
        (ticker(E="soon"), "wrong_type"),
        (ticker(B="-5"), "negative_quantity"),
        (ticker(s="???"), "unknown_symbol"),
    ],
)
def test_bad_book_ticker_is_dead_lettered(raw: Any, reason: str) -> None:
    ingest = Ingest(EngineConfig())
    out = feed_one(ingest, raw)
    assert len(out) == 1 and isinstance(out[0], DeadLetter)
    assert out[0].reason == reason
    assert out[0].raw == orjson.dumps(raw)
    assert ingest.stats.deadletters[reason] == 1
    assert ingest.stats.events == 0


def test_generic_price_validation() -> None:
    ingest = Ingest(EngineConfig())
    for raw, reason in [
        ({"base": "USDe", "quote": "USDT"}, "missing_field"),
        ({"base": "USDe", "quote": "USDT", "price": -0.5}, "non_positive_price"),
        ({"base": "USDe", "quote": "USDT", "price": "NaN"}, "non_finite"),
        ({"base": 5, "quote": "USDT", "price": 1.0}, "wrong_type"),
        ("1.0", "wrong_type"),
    ]:
        out = feed_one(ingest, raw, channel="price", venue="curve")
        assert isinstance(out[0], DeadLetter) and out[0].reason == reason, raw


def test_oversize_and_unknown_channel_and_timestamps() -> None:
    ingest = Ingest(EngineConfig(ingest=IngestConfig(max_frame_bytes=100)))
    big = ticker(pad="x" * 500)
    assert feed_one(ingest, big)[0].reason == "oversize"  # type: ignore[union-attr]
    assert feed_one(ingest, ticker(), channel="usdeusdt@kline_1m")[0].reason == "unknown_channel"  # type: ignore[union-attr]
    assert feed_one(ingest, ticker(), ts=42)[0].reason == "timestamp_out_of_range"  # type: ignore[union-attr]
    assert feed_one(ingest, ticker(), ts=T0) == []  # accepted, batched
    far = T0 + 30 * 86_400_000
    assert feed_one(ingest, ticker(), ts=far)[0].reason == "timestamp_future"  # type: ignore[union-attr]
    assert sum(ingest.stats.deadletters.values()) == 4


def test_batches_close_on_size_and_span_and_keep_order() -> None:
    cfg = EngineConfig(ingest=IngestConfig(batch_max_events=3, batch_max_span_ms=1000))
    ingest = Ingest(cfg)
    routed: list[Routed] = []
    for i in range(7):
        for item in feed_one(ingest, ticker(u=i), ts=T0 + i * 100):
            assert isinstance(item, Routed)
            routed.append(item)
    routed.extend(ingest.finish())
    sizes = [len(r.batch) for r in routed]
    assert sizes == [3, 3, 1]
    ts = [int(row[2]) for r in routed for row in r.batch.rows]
    assert ts == sorted(ts) and len(ts) == 7
    far = list(ingest.feed("binance-spot", "usdeusdt@bookTicker", ticker(), T0 + 5000, b"{}"))
    # Receive time crossed a tick boundary: nothing old is open, so only the tick goes out.
    assert len(far) == 1 and isinstance(far[0], Routed) and far[0].broadcast
    assert far[0].batch.tick_ms == T0 + 5000 - 1000


def test_ticks_expire_old_batches_and_advance_only_idle_partitions() -> None:
    cfg = EngineConfig(ingest=IngestConfig(batch_max_span_ms=2_000, tick_interval_ms=1_000))
    ingest, engine = Ingest(cfg), Engine(cfg)
    routed: list[Routed] = []
    routed += [r for r in feed_one(ingest, ticker(), ts=T0) if isinstance(r, Routed)]
    # A price for another asset 3 s later: the USDe batch (first event T0) is older than the
    # span at the tick, so it is closed before the tick at T0 + 3000 - 2000.
    btc = {"u": 2, "s": "BTCUSDT", "b": "100000", "B": "1", "a": "100001", "A": "1"}
    routed += [r for r in feed_one(ingest, btc, "btcusdt@bookTicker", ts=T0 + 3_000) if isinstance(r, Routed)]
    assert [(r.batch.asset, r.broadcast) for r in routed] == [("USDe", False), ("", True)]
    tick = routed[1].batch
    assert tick.tick_ms == T0 + 1_000
    decoded = decode_record(tick.encode())
    assert isinstance(decoded, type(tick)) and decoded.tick_ms == T0 + 1_000
    engine.process(routed[0].batch, 0)
    assert engine.process(tick, 0).watermark_ms == T0  # partition 0 was active: not advanced
    assert engine.process(tick, 1).watermark_ms == T0 + 1_000  # idle partition 1 follows the stream
    assert engine.process(tick, 0).watermark_ms == T0 + 1_000  # idle since its last tick now


def test_quote_currency_price_is_a_broadcast_barrier() -> None:
    ingest = Ingest(EngineConfig())
    assert feed_one(ingest, ticker()) == []
    out = feed_one(ingest, {"base": "USDT", "quote": "USD", "price": 0.998}, channel="price", venue="kraken")
    assert [type(o).__name__ for o in out] == ["Routed", "Routed"]
    assert isinstance(out[0], Routed) and not out[0].broadcast and out[0].batch.asset == "USDe"
    assert isinstance(out[1], Routed) and out[1].broadcast and out[1].batch.asset == "USDT"


def test_usdt_wobble_is_not_a_usde_depeg() -> None:
    """USDe/USDT quotes convert with the USDT price key: USDT at 0.97 makes USDe/USDT 1.03 = USD 1.0."""
    cfg = EngineConfig()
    ingest, engine = Ingest(cfg), Engine(cfg)
    alerts = []
    frames: list[tuple[str, str, Any, int]] = [("kraken", "price", {"base": "USDT", "quote": "USD", "price": 0.97}, T0)]
    for s in range(0, 900, 5):
        frames.append(("binance-spot", "usdeusdt@bookTicker", ticker(b="1.03090", a="1.03100"), T0 + s * 1000))
    for venue, channel, raw, ts in frames:
        for item in ingest.feed(venue, channel, raw, ts, orjson.dumps(raw)):
            assert isinstance(item, Routed)
            alerts += engine.process(item.batch).alerts
    for item in ingest.finish():
        alerts += engine.process(item.batch).alerts
    assert engine.quote_usd["USDT"] == pytest.approx(0.97)
    assert alerts == []
    tracker = engine.pegs["USDe"].trackers["binance-spot"]
    assert abs(tracker.last_dev_bps) < 5


def test_decode_record_rejects_garbage() -> None:
    base = {"v": 2, "asset": "USDe", "src": [["a", "b", "c"]], "k": [0], "i": [0], "t": [1], "r": [1],
            "f": [1.0, 1.0, 1.0, 1.0], "x": []}
    decode_record(orjson.dumps(base))  # the valid one
    for value, reason in [
        (b"\x89PNG", "invalid_json"),
        (b"{}", "invalid_batch"),
        (orjson.dumps({**base, "v": 1}), "invalid_batch"),
        (orjson.dumps({**base, "i": [3]}), "invalid_batch"),
        (orjson.dumps({**base, "k": [9]}), "invalid_batch"),
        (orjson.dumps({**base, "k": [-1]}), "invalid_batch"),
        (orjson.dumps({**base, "k": [[0]]}), "invalid_batch"),
        (orjson.dumps({**base, "k": [0, 6], "i": [0, 0], "t": [1, 1], "r": [1, 1],
                       "f": [1.0] * 8}), "invalid_batch"),
        (orjson.dumps({**base, "f": [1.0, "x", 1.0, 1.0]}), "invalid_batch"),
        (orjson.dumps({**base, "f": [1.0, 1.0, 1.0]}), "invalid_batch"),
        (orjson.dumps({**base, "t": ["soon"]}), "invalid_batch"),
        (orjson.dumps({**base, "k": [3]}), "invalid_batch"),  # a book event without its bands
        (orjson.dumps({**base, "src": [["a", "b"]]}), "invalid_batch"),
        # the columns as simdjson reads them: only flat arrays of the column's numbers
        (orjson.dumps({**base, "k": [[0], [0]]}), "invalid_batch"),  # flattened would fit
        (orjson.dumps({**base, "f": [[1.0, 1.0], [1.0, 1.0]]}), "invalid_batch"),
        (orjson.dumps({**base, "t": [1.0]}), "invalid_batch"),  # a float in an int64 column
        (orjson.dumps({**base, "t": [2**63]}), "invalid_batch"),
        (orjson.dumps({**base, "t": [True]}), "invalid_batch"),
        (orjson.dumps({**base, "t": None}), "invalid_batch"),
        (orjson.dumps({**base, "t": {"0": 1}}), "invalid_batch"),
        (orjson.dumps({**base, "f": [1.0, 1.0, 1.0, None]}), "invalid_batch"),
        (orjson.dumps({**base, "f": 1.0}), "invalid_batch"),
        (orjson.dumps({**base, "asset": {"x": 1}}), "invalid_batch"),
        (orjson.dumps({**base, "src": [[{"a": 1}, "b", "c"]]}), "invalid_batch"),
        (orjson.dumps({k: v for k, v in base.items() if k != "r"}), "invalid_batch"),
        (orjson.dumps(base).replace(b"[1.0,1.0,1.0,1.0]", b"[1.0,1.0,1.0,1e400]"), "invalid_batch"),
        (orjson.dumps(base).replace(b"[1.0,1.0,1.0,1.0]", b"[1.0,1.0,1.0,NaN]"), "invalid_json"),
    ]:
        with pytest.raises(RecordError) as exc:
            decode_record(value)
        assert exc.value.reason == reason
    ctl = decode_record(Control("end", "r1", 3).encode())
    assert ctl == Control("end", "r1", 3)


def test_a_plain_batch_takes_the_one_pass_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    """The batches liqmon writes are read in one simdjson pass, without the exact reader;
    ticks and end markers go to the exact reader."""
    ingest = Ingest(EngineConfig())
    batches = [item.batch for item in ingest.feed("binance-spot", "usdeusdt@bookTicker", ticker(), T0, b"")
               if isinstance(item, Routed)] + [r.batch for r in ingest.finish()]
    assert batches

    def refuse(value: bytes) -> None:
        raise AssertionError("the exact reader was used")

    monkeypatch.setattr("monitor.ingest.batch.read_record_exact", refuse)
    for batch in batches:
        assert decode_record(batch.encode()) == batch
    with pytest.raises(AssertionError):
        decode_record(Control("end", "r1", 3).encode())


def test_decoded_columns_are_exact_and_outlive_the_next_record() -> None:
    """The columns read by simdjson equal the numbers written (ints to int64 exactly, floats
    to the same IEEE doubles, JSON ints in a float column converted), whitespace and all,
    and one record's arrays are untouched by decoding the next ones (on other threads too)."""
    floats = [0.1, -0.0, 5e-324, 1.7976931348623157e308, 1e-7, 12345.678901234567, 3, -2**53]
    text = (b'{ "v": 2, "asset": "USDe", "src": [["a", "b", "c"], ["d", "e", "f"]],\n'
            b' "k": [ 0 , 0 ], "i": [1, 0], "t": [-9223372036854775808, 9223372036854775807],'
            b' "r": [0, 1], "f": ' + orjson.dumps(floats) + b', "x": [] }')
    first = decode_record(text)
    assert isinstance(first, Batch)
    c = first.columns()
    expected_f = np.array(floats, dtype=np.float64)

    def decode_others() -> None:
        for n in range(50):
            decode_record(orjson.dumps({"v": 2, "asset": "BTC", "src": [["a", "b", "c"]], "k": [0] * n,
                                        "i": [0] * n, "t": list(range(n)), "r": list(range(n)),
                                        "f": [float(n)] * 4 * n, "x": []}))

    threads = [threading.Thread(target=decode_others) for _ in range(3)]
    for th in threads:
        th.start()
    decode_others()
    for th in threads:
        th.join()
    assert c.src.tolist() == [1, 0] and c.ts_ms.tolist() == [-(2**63), 2**63 - 1]
    assert c.f.ravel().tobytes() == expected_f.tobytes() and c.f.shape == (2, 4)
    assert c.ts_ms.dtype == np.int64 and c.f.dtype == np.float64 and c.bands.shape == (0, 2 * len(BOOK_BANDS_BPS))


def test_capture_round_trip_and_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl.gz"
    write_capture(path, [(T0, "binance-spot", "usdeusdt@bookTicker", ticker())])
    with gzip.open(path, "ab") as fh:
        fh.write(b"not json\n")
        fh.write(b'{"ts_ms": "x", "venue": "v", "channel": "c", "raw": {}}\n')
        fh.write(b"[1]\n\n")
    items = list(iter_capture(path))
    reasons = [getattr(i, "reason", "ok") for i in items]
    assert reasons == ["ok", "invalid_json", "invalid_timestamp", "invalid_envelope"]
    again = tmp_path / "d.jsonl.gz"
    write_capture(again, [(T0, "binance-spot", "usdeusdt@bookTicker", ticker())])
    first = tmp_path / "e.jsonl.gz"
    write_capture(first, [(T0, "binance-spot", "usdeusdt@bookTicker", ticker())])
    assert again.read_bytes() == first.read_bytes()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "not found"),
        (b"", "empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "not a capture"),
        (b'{"a": 1}\n', "lacks ts_ms"),
    ],
)
def test_not_a_capture(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "x.jsonl"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CaptureError, match=message):
        open_capture(path)


@pytest.mark.parametrize("keep", [0.02, 0.5, 0.999])
def test_a_cut_off_gzip_capture_gives_every_line_before_the_cut(tmp_path: Path, keep: float) -> None:
    """The threaded reader drops the last block of a cut-off file: the lines it did not
    give are read again by the stdlib's, as far as the stdlib's reader gets, then the cut."""
    rng = random.Random(7)  # numbers that do not compress: the file spans several blocks
    lines = [(1_760_000_000_000 + i, "binance-spot", "btcusdt@trade", {"p": rng.random(), "q": rng.random()})
             for i in range(60_000)]
    whole = tmp_path / "whole.jsonl.gz"
    write_capture(whole, lines)
    data = whole.read_bytes()
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(data[: int(len(data) * keep)])
    want = 0
    with gzip.open(cut, "rb") as fh, contextlib.suppress(EOFError):
        while fh.readline():
            want += 1
    items = list(iter_capture(cut))
    assert [item.line_no for item in items] == list(range(1, want + 2))
    assert all(not isinstance(item, BadLine) for item in items[:-1])
    last = items[-1]
    assert isinstance(last, BadLine) and last.reason == "truncated_file" and "end-of-stream" in last.detail
