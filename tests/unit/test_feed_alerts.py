"""Feed alerts and contract values in Ingest: ``book_gap`` from the local books,
``feed_stale`` from ``feed_status`` frames, OKX sizes from ``contract_values`` frames and
from the feeds config; unknown instruments are dead-lettered, never guessed. Recorded
``garbage`` frames become the live connector's dead letters; a ``session`` frame sets the
book throttle."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from monitor.config import EngineConfig
from monitor.events import KIND_BOOK, KIND_LIQUIDATION, MarketEvent
from monitor.ingest.frames import (
    CONTRACT_VALUES_CHANNEL,
    DEFAULT_BOOK_THROTTLE_MS,
    FEED_STATUS_CHANNEL,
    GARBAGE_CHANNEL,
    SESSION_CHANNEL,
    SESSION_VENUE,
    Ingest,
    IngestOutput,
    Routed,
    feed_status_raw,
    garbage_raw,
    session_raw,
)
from monitor.ingest.wire.okx import BUILTIN_CONTRACT_VALUES, contract_values_raw, parse_contract_values
from monitor.protocol import Alert, DeadLetter
from replay.capture import CaptureLine, iter_capture, write_capture
from replay.replayer import route_capture
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


@pytest.mark.parametrize(
    ("frame", "reason", "key"),
    [
        (b"this is not json {", "invalid_json", "text"),
        (b"[1,2]", "unroutable", "text"),
        ("caf\u00e9 \u2603 \x00".encode(), "invalid_json", "text"),
        (b"\xff\xfe\x00 binary \x80", "invalid_json", "b64"),
    ],
)
def test_recorded_garbage_frame_replays_to_the_live_dead_letter(
    tmp_path: Path, frame: bytes, reason: str, key: str
) -> None:
    raw = garbage_raw(reason, "unexpected character: line 1 column 1 (char 0)", frame)
    assert set(raw) == {"reason", "detail", key}
    path = tmp_path / "c.jsonl.gz"
    write_capture(path, [(T0, "okx", GARBAGE_CHANNEL, raw)])
    (line,) = iter_capture(path)
    assert isinstance(line, CaptureLine)
    live, replayed = Ingest(EngineConfig()), Ingest(EngineConfig())
    (letter,) = feed(live, "okx", GARBAGE_CHANNEL, raw, T0)
    (again,) = replayed.feed(line.venue, line.channel, line.raw, line.ts_ms, line.raw_bytes, line.line_no)
    assert isinstance(letter, DeadLetter) and isinstance(again, DeadLetter)
    assert (letter.reason, letter.detail, letter.raw, letter.venue, letter.channel, letter.ts_ms) == (
        reason, "okx: unexpected character: line 1 column 1 (char 0)", frame, "okx", None, T0)
    assert (again.reason, again.detail, again.raw, again.venue, again.ts_ms, again.line_no) == (
        reason, letter.detail, frame, "okx", T0, 1)
    for ingest in (live, replayed):
        assert ingest.stats.frames == 1 and ingest.stats.deadletters == {reason: 1}
        assert ingest.watermark_ms is None and ingest.stats.events == 0


def test_garbage_dead_letter_carries_at_most_a_frame_of_bytes() -> None:
    ingest = Ingest(EngineConfig())
    limit = ingest.max_frame_bytes
    frame = b"{" + b"x" * (limit + 100)
    (letter,) = feed(ingest, "okx", GARBAGE_CHANNEL, garbage_raw("invalid_json", "eof", frame), T0)
    assert isinstance(letter, DeadLetter) and letter.reason == "invalid_json" and letter.raw == frame[:limit]
    # What a recording keeps (the first frame's worth) replays to the same dead letter.
    (again,) = feed(ingest, "okx", GARBAGE_CHANNEL, garbage_raw("invalid_json", "eof", frame[:limit]), T0)
    assert isinstance(again, DeadLetter) and again.raw == letter.raw


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("not json {", "wrong_type"),
        ({"reason": "Not A Label", "detail": "", "text": "x"}, "wrong_value"),
        ({"reason": "", "detail": "", "text": "x"}, "wrong_value"),
        ({"reason": "invalid_json", "text": "x"}, "wrong_type"),
        ({"reason": "invalid_json", "detail": "d"}, "missing_field"),
        ({"reason": "invalid_json", "detail": "d", "text": "x", "b64": "eA=="}, "missing_field"),
        ({"reason": "invalid_json", "detail": "d", "text": 1}, "missing_field"),
        ({"reason": "invalid_json", "detail": "d", "b64": "not base64!"}, "wrong_value"),
    ],
)
def test_bad_garbage_frame_is_dead_lettered_as_such(raw: Any, reason: str) -> None:
    ingest = Ingest(EngineConfig())
    (out,) = feed(ingest, "okx", GARBAGE_CHANNEL, raw, T0)
    assert isinstance(out, DeadLetter) and out.reason == reason and out.channel == GARBAGE_CHANNEL
    assert out.raw == orjson.dumps(raw)
    assert ingest.stats.deadletters == {reason: 1}


def book_summaries(ingest: Ingest, start: int, updates: int, step_ms: int) -> list[int]:
    """Event times of the book summaries of an OKX snapshot plus ``updates`` heartbeats."""
    out = feed(ingest, "okx", "books", okx_books("snapshot", 100, -1, start), start)
    for i in range(1, updates + 1):
        ts = start + i * step_ms
        out += feed(ingest, "okx", "books", okx_books("update", 100, 100, ts), ts)
    return [e.ts_ms for e in events(ingest, out) if e.kind == KIND_BOOK]


def test_session_frame_sets_the_book_throttle() -> None:
    default = book_summaries(Ingest(EngineConfig()), T0, 10, 50)
    assert DEFAULT_BOOK_THROTTLE_MS == 100 and default == [T0 + i * 100 for i in range(6)]
    ingest = Ingest(EngineConfig())
    assert feed(ingest, SESSION_VENUE, SESSION_CHANNEL, session_raw(250), T0 - 1) == []
    assert ingest.watermark_ms is None and ingest.stats.events == 0  # configuration, not market data
    assert book_summaries(ingest, T0, 10, 50) == [T0, T0 + 250, T0 + 500]
    # Mid-stream, it applies to the books already known too.
    assert feed(ingest, SESSION_VENUE, SESSION_CHANNEL, session_raw(0), T0 + 600) == []
    out: list[IngestOutput] = []
    for ts in (T0 + 610, T0 + 620):
        out += feed(ingest, "okx", "books", okx_books("update", 100, 100, ts), ts)
    assert [e.ts_ms for e in events(ingest, out) if e.kind == KIND_BOOK] == [T0 + 610, T0 + 620]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ([250], "wrong_type"),
        ({}, "wrong_type"),
        ({"book_throttle_ms": "250"}, "wrong_type"),
        ({"book_throttle_ms": 2.5}, "wrong_type"),
        ({"book_throttle_ms": True}, "wrong_type"),
        ({"book_throttle_ms": -1}, "wrong_value"),
        ({"book_throttle_ms": 250, "tick_lag_ms": -5}, "wrong_value"),
        ({"book_throttle_ms": 250, "tick_lag_ms": "2s"}, "wrong_value"),
        ({"book_throttle_ms": 250, "tick_lag_ms": True}, "wrong_value"),
    ],
)
def test_bad_session_frame_is_dead_lettered_and_changes_nothing(raw: Any, reason: str) -> None:
    ingest = Ingest(EngineConfig(), book_throttle_ms=40)
    (out,) = feed(ingest, SESSION_VENUE, SESSION_CHANNEL, raw, T0)
    assert isinstance(out, DeadLetter) and out.reason == reason
    assert ingest.book_throttle_ms == 40
    assert ingest.tick_lag_ms == EngineConfig().ingest.batch_max_span_ms


def ticks_after(ingest: Ingest, seconds: int) -> list[int]:
    """Tick times while one USDe quote a second arrives for ``seconds`` seconds."""
    out: list[int] = []
    for i in range(seconds):
        ts = T0 + i * 1_000
        raw = {"u": i, "s": "USDEUSDT", "b": "0.9999", "B": "10", "a": "1.0001", "A": "10"}
        for item in ingest.feed("binance-spot", "usdeusdt@bookTicker", raw, ts, orjson.dumps(raw)):
            if isinstance(item, Routed) and item.batch.tick_ms is not None:
                out.append(item.batch.tick_ms)
    return out


def test_session_frame_sets_how_far_ticks_trail_receive_time() -> None:
    span_ms = EngineConfig().ingest.batch_max_span_ms
    default = ticks_after(Ingest(EngineConfig()), 30)
    assert default and all(t == T0 + (i + 1) * 1_000 - span_ms for i, t in enumerate(default))
    live = Ingest(EngineConfig())
    assert feed(live, SESSION_VENUE, SESSION_CHANNEL, session_raw(100, 2_000), T0 - 1) == []
    lagged = ticks_after(live, 30)
    assert lagged == [T0 + (i + 1) * 1_000 - 2_000 for i in range(29)]
    # Whatever the lag, no batch stays open with events older than the tick.
    for ingest in (Ingest(EngineConfig(), tick_lag_ms=2_000), Ingest(EngineConfig())):
        ticks_after(ingest, 30)
        horizon = T0 + 29_000 - ingest.tick_lag_ms
        assert all(b.first_ts_ms >= horizon for b in ingest.batcher.flush())
    assert session_raw(100) == {"book_throttle_ms": 100}  # older sessions: no lag recorded


def test_replay_applies_the_session_frame_before_from(tmp_path: Path) -> None:
    start = T0 + 1_000
    frames = [(start + i * 50, "okx", "books", okx_books("update" if i else "snapshot", 100, 100 if i else -1,
                                                         start + i * 50)) for i in range(20)]

    def summaries(lines: list[tuple[int, str, str, Any]], from_ms: int | None) -> list[int]:
        path = tmp_path / "c.jsonl"
        write_capture(path, lines)
        ingest = Ingest(EngineConfig())
        out = [item for _ts, item in route_capture(path, ingest, from_ms=from_ms)]
        return [ev.ts_ms for r in out if isinstance(r, Routed) for ev in r.batch.events() if ev.kind == KIND_BOOK]

    session = (T0, SESSION_VENUE, SESSION_CHANNEL, session_raw(250))
    throttled = [start + i * 250 for i in range(4)]
    assert summaries([session, *frames], None) == throttled
    assert summaries([session, *frames], T0 + 500) == throttled
    # A capture without one: the default.
    assert summaries(frames, None) == [start + i * 100 for i in range(10)]
