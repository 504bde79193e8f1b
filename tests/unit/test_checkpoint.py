"""Checkpoints (streams.app.checkpoint): whole or ignored, never torn; cursors; signals taken once."""

from __future__ import annotations

import pickle
from dataclasses import dataclass

import pytest

from monitor.config import EngineConfig
from monitor.protocol import InputRecord, SignalRecord
from monitor.signals import ReorderBuffer
from monitor.stages.global_risk.risk import GlobalRisk
from streams.app.checkpoint import CheckpointTable, InputCursor, Verdict, pack_state, same_layout, unpack_state
from streams.app.global_stage import GlobalState

T0 = 1_760_130_000_000


class Changelog:
    """A table's data plus the changelog records written, per partition."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.data: dict[bytes, bytes] = {}
        self.records: list[tuple[bytes, bytes | None, int]] = []
        self.fail_after = fail_after

    async def send(self, key: bytes, value: bytes | None, partition: int) -> None:
        if self.fail_after is not None and len(self.records) >= self.fail_after:
            raise ConnectionError("worker killed")
        self.records.append((key, value, partition))

    def recovered(self, partition: int) -> dict[bytes, bytes]:
        """What a new owner of ``partition`` recovers from the changelog."""
        out: dict[bytes, bytes] = {}
        for key, value, p in self.records:
            if p != partition:
                continue
            if value is None:
                out.pop(key, None)
            else:
                out[key] = value
        return out


async def test_a_checkpoint_round_trips_in_chunks_to_its_partition() -> None:
    log = Changelog()
    table = CheckpointTable(log.data, log.send, chunk_bytes=1024)
    state = {"prices": {f"k{i}": i * 1.5 for i in range(5000)}, "seq": 42}
    size = await table.save("market:3", 3, 1234, state)
    assert size == len(pack_state(state)) and size > 1024  # several chunks
    assert {p for _, _, p in log.records} == {3}
    assert log.records[-1][0] == b"market:3", "the header goes last"
    fresh = CheckpointTable(log.recovered(3), log.send)
    ckpt = fresh.load("market:3")
    assert ckpt is not None and ckpt.offset == 1234 and ckpt.state == state
    assert fresh.load("market:4") is None


async def test_a_worker_killed_half_way_through_a_checkpoint_leaves_the_previous_one_whole() -> None:
    log = Changelog()
    table = CheckpointTable(log.data, log.send, chunk_bytes=256)
    first = {"n": list(range(300))}
    await table.save("global", 0, 10, first)
    written = len(log.records)
    log.fail_after = written + 2  # two chunks of the next checkpoint, then the kill
    with pytest.raises(ConnectionError):
        await table.save("global", 0, 20, {"n": list(range(600))})
    ckpt = CheckpointTable(log.recovered(0), log.send).load("global")
    assert ckpt is not None and (ckpt.offset, ckpt.state) == (10, first)


async def test_a_checkpoint_that_does_not_check_out_is_ignored() -> None:
    log = Changelog()
    table = CheckpointTable(log.data, log.send, chunk_bytes=64)
    await table.save("global", 0, 5, {"a": list(range(100))})
    data = log.recovered(0)
    data[b"global:0:1"] = b"garbage"
    assert CheckpointTable(data, log.send).load("global") is None
    del data[b"global:0:1"]
    assert CheckpointTable(data, log.send).load("global") is None
    data[b"global"] = b"not json"
    assert CheckpointTable(data, log.send).load("global") is None


def test_the_cursor_processes_the_next_record_skips_old_ones_and_rewinds_once() -> None:
    fresh = InputCursor(None)
    assert fresh.judge(17, 0.0) is Verdict.PROCESS  # no checkpoint: whatever comes first
    cursor = InputCursor(100, retry_s=1.0)
    assert cursor.judge(98, 0.0) is Verdict.SKIP  # already in the state
    assert cursor.judge(105, 0.0) is Verdict.REWIND  # past it: seek back to 100
    assert cursor.judge(106, 0.5) is Verdict.DROP  # the seek is under way
    assert cursor.judge(107, 1.6) is Verdict.REWIND  # not visible after 1 s: ask again
    assert cursor.judge(100, 1.7) is Verdict.PROCESS
    cursor.advance(100)
    assert cursor.expected == 101
    assert cursor.judge(101, 1.8) is Verdict.PROCESS


def test_a_seek_back_whose_first_record_never_comes_is_overdue_after_retry_s() -> None:
    cursor = InputCursor(100, retry_s=1.0)
    assert not cursor.rewinding() and not cursor.overdue(50.0)  # nothing asked
    assert cursor.judge(105, 0.0) is Verdict.REWIND
    assert cursor.judge(106, 0.2) is Verdict.DROP  # the partition's last record, dropped
    assert cursor.rewinding() and not cursor.overdue(0.9)
    assert cursor.overdue(1.0)  # no record follows: only a timer can ask again
    cursor.rewound(1.0)
    assert not cursor.overdue(1.5) and cursor.overdue(2.0)
    assert cursor.judge(100, 2.1) is Verdict.PROCESS
    assert not cursor.rewinding() and not cursor.overdue(99.0)


def test_signals_sent_again_after_a_restart_are_taken_once_whatever_the_merging() -> None:
    def sig(seq: int) -> tuple[object, ...]:
        return (T0 + seq, "USDe", seq, "price", {"key": "USDe@binance", "price": 1 - seq / 1000})

    once = ReorderBuffer(2)
    once.push(SignalRecord(0, T0 + 10, [sig(s) for s in range(1, 11)]))
    again = ReorderBuffer(2)
    again.push(SignalRecord(0, T0 + 4, [sig(s) for s in range(1, 5)]))
    again.push(SignalRecord(0, T0 + 7, [sig(s) for s in range(5, 8)]))
    # the partition's new owner went on from a checkpoint after seq 2, merging differently
    again.push(SignalRecord(0, T0 + 6, [sig(s) for s in range(3, 7)]))
    again.push(SignalRecord(0, T0 + 10, [sig(s) for s in range(7, 11)]))
    for buf in (once, again):
        buf.push(SignalRecord(1, T0 + 20, []))
    first = once.release()
    assert len(first) == 9 and again.release() == first
    assert again.release(flush=True) == once.release(flush=True) == [sig(10)]


def test_a_forwarded_input_is_applied_once() -> None:
    state = GlobalState.fresh(EngineConfig(), 2)
    raw = {"account_id": "a1", "venue": "binance", "model": "binance-pm", "balances": []}
    assert state.take_input(InputRecord("account", raw, (3, 7)))
    assert not state.take_input(InputRecord("account", raw, (3, 7)))
    assert not state.take_input(InputRecord("account", raw, (3, 6)))
    assert state.take_input(InputRecord("account", raw, (3, 8)))
    assert state.take_input(InputRecord("position", raw, (3, 7))), "per input kind"
    assert state.take_input(InputRecord("account", raw, None)), "unnumbered: always"


def test_the_global_state_survives_a_checkpoint_exactly() -> None:
    state = GlobalState.fresh(EngineConfig(), 1)
    state.risk.upsert_account({
        "account_id": "a1", "venue": "binance", "model": "binance-pm",
        "balances": [{"asset": "USDe", "amount": 1_000_000.0, "price_key": "USDe@binance"},
                     {"asset": "USDT", "amount": -500_000.0, "price_key": "USDT"}],
    })
    state.risk.push(SignalRecord(0, T0 + 1, [[T0, "USDe", 1, "price", {"key": "USDe@binance", "price": 1.0}]]))
    copy = unpack_state(pack_state(state))
    assert isinstance(copy, GlobalState) and isinstance(copy.risk, GlobalRisk)
    later = [T0 + 5, "USDe", 2, "price", {"key": "USDe@binance", "price": 0.45}]
    a = state.risk.push(SignalRecord(0, T0 + 9, [later]))
    b = copy.risk.push(SignalRecord(0, T0 + 9, [later]))
    a += state.risk.flush()
    b += copy.risk.flush()
    assert a and [x.to_json() for x in a] == [x.to_json() for x in b]
    assert pickle.dumps(copy.risk.alert_latches()) == pickle.dumps(state.risk.alert_latches())


def test_a_checkpoint_of_another_code_version_is_recognised() -> None:
    fresh = GlobalState.fresh(EngineConfig(), 1)
    state = unpack_state(pack_state(GlobalState.fresh(EngineConfig(), 1)))
    state.risk.push(SignalRecord(0, T0 + 1, [[T0, "USDe", 1, "price", {"key": "USDe@binance", "price": 0.9}]]))
    assert same_layout(state, fresh)
    older = unpack_state(pack_state(state))
    del older.risk.cascade  # a field this code has and the writer's did not
    assert not same_layout(older, fresh)
    newer = unpack_state(pack_state(state))
    newer.risk.extra_field = 1  # a field the writer had and this code has not
    assert not same_layout(newer, fresh)
    assert not same_layout({"risk": None}, fresh)


@dataclass
class _Stage:
    config_hash: str
    seq: int = 0


@dataclass
class _OtherStage:
    config_hash: str


async def test_a_checkpoint_of_other_code_or_settings_is_refused_and_said_so(caplog: pytest.LogCaptureFixture) -> None:
    log = Changelog()
    table = CheckpointTable(log.data, log.send)
    assert table.load_usable("global", _Stage("a"), lambda s: True) is None  # none yet: nothing said
    await table.save("global", 0, 7, _Stage("a", 3))
    ckpt = table.load_usable("global", _Stage("a"), lambda s: s.config_hash == "a")
    assert ckpt is not None and ckpt.offset == 7 and ckpt.state == _Stage("a", 3)
    assert not caplog.records
    assert table.load_usable("global", _Stage("b"), lambda s: s.config_hash == "b") is None  # other settings
    assert table.load_usable("global", _OtherStage("a"), lambda s: True) is None  # another type
    older = _Stage("a")
    del older.seq  # as a version of the code without that field wrote it
    await table.save("global", 0, 8, older)
    assert table.load_usable("global", _Stage("a"), lambda s: True) is None  # another layout
    assert [r.getMessage() for r in caplog.records] == [
        "checkpoint global made with other settings or code; starting afresh"] * 3
