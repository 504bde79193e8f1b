"""An account shard reads another shard's account records by their head only
(``decode_account_head``): what it does with the log is the same as with every record
decoded whole — alerts, steps, dead letters and state, byte for byte."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.config import EngineConfig
from monitor.models.margin import Account
from monitor.protocol import InputRecord, SignalRecord, bundle_inputs, encode
from monitor.stages.global_risk.account_shard import AccountShard
from streams.app import shard_agent
from streams.app.checkpoint import pack_state
from streams.app.shard_agent import ShardState, shard_step
from tests.unit.test_account_book import KEYS, account

SHARDS = 3


def _account_record(acct: Account, src: tuple[int, int] | None) -> bytes:
    raw = {**acct.model_dump(mode="json"), "venue": acct.model.split("-")[0]}
    return InputRecord(kind="account", raw=raw, src=src).encode()


@st.composite
def log_record(draw: st.DrawFn) -> bytes:
    """A record of the ordered log: accounts (some sent again), deletions, replay markers,
    records whose id or deletion flag is not of the plain kind, positions, prices."""
    kind = draw(st.sampled_from(["account", "account", "account", "delete", "marker", "odd", "position", "price"]))
    src = draw(st.one_of(st.none(), st.tuples(st.integers(0, 1), st.integers(0, 30))))
    n = draw(st.integers(0, 9))
    if kind == "account":
        return _account_record(draw(account(n)), src)
    if kind == "delete":
        return InputRecord(kind="account", raw={"account_id": f"a{n}", "delete": True}, src=src).encode()
    if kind == "marker":
        return InputRecord(kind="account", raw={"ctl": "sync", "run": "r1", "partition": 0, "of": 1}, src=src).encode()
    if kind == "odd":
        raw = draw(st.sampled_from([{"account_id": n}, {"account_id": f"a{n}", "delete": 1},
                                    {"account_id": f"a{n}", "ctl": None}, {"venue": "binance"}]))
        return orjson.dumps({"v": 1, "input": "account", "raw": raw, **({"src": list(src)} if src else {})})
    if kind == "position":
        return InputRecord(kind="position", raw={"position_id": f"p{n}", "protocol": "aave-v3"}, src=src).encode()
    ts = 1_760_000_000_000 + n * 1_000
    key = draw(st.sampled_from(KEYS))
    return encode(SignalRecord(0, ts, [(ts, "X", n, "price", {"key": key, "price": draw(st.floats(0.3, 2.0))})]))


def _read(records: list[bytes], shard: int) -> tuple[list[bytes], bytes]:
    state = ShardState(AccountShard(EngineConfig(), 1, shard, SHARDS))
    out: list[bytes] = []
    for offset, value in enumerate(records):
        alerts, step, dead = shard_step(state, offset, value)
        out += [encode(a) for a in alerts]
        out.append(b"" if step is None else encode(step))
        out += [encode(letter) for letter in dead]
    return out, pack_state(state)


@settings(max_examples=150, deadline=None)
@given(records=st.lists(log_record(), min_size=1, max_size=40), shard=st.integers(0, SHARDS - 1))
def test_reading_other_shards_accounts_by_their_head_changes_nothing(records: list[bytes], shard: int) -> None:
    fast = _read(records, shard)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(shard_agent, "decode_account_head", lambda value: None)  # every record decoded whole
        whole = _read(records, shard)
    assert fast == whole


def test_the_head_is_read_only_for_a_plain_account_record() -> None:
    from monitor.protocol import decode_account_head

    plain = InputRecord(kind="account", raw={"account_id": "a1", "venue": "x"}, src=(0, 4)).encode()
    head = decode_account_head(plain)
    assert head is not None and (head.raw.account_id, head.raw.delete, head.src) == ("a1", False, (0, 4))
    for raw in ({"ctl": "sync", "run": "r"}, {"account_id": "a1", "ctl": None}, {"account_id": 1},
                {"account_id": "a1", "delete": "yes"}):
        assert decode_account_head(InputRecord(kind="account", raw=raw).encode()) is None, raw
    assert decode_account_head(InputRecord(kind="position", raw={"position_id": "p"}).encode()) is None
    assert decode_account_head(b"not json") is None


def test_a_replay_marker_that_does_not_check_out_is_left_to_the_aggregation_stage() -> None:
    """The global stage dead-letters it and applies nothing; a shard must not stop on it, nor
    count it on the accounts' clock (it would evaluate when the others do not)."""
    state = ShardState(AccountShard(EngineConfig(), 1, 0, SHARDS))
    bad = InputRecord(kind="account", raw={"account_id": "a1", "ctl": None}, src=(0, 1)).encode()
    alerts, step, dead = shard_step(state, 0, bad)
    assert (alerts, step, dead) == ([], None, [])
    assert state.inputs.taken == {} and not state.shard.cadence.pending


def _read_bundled(records: list[bytes], sizes: list[int], shard: int) -> tuple[list[bytes], list[bytes], bytes]:
    """The log with its records bundled ``sizes`` at a time (one offset per bundle)."""
    state = ShardState(AccountShard(EngineConfig(), 1, shard, SHARDS))
    alerts_out: list[bytes] = []
    dead_out: list[bytes] = []
    groups, at = [], 0
    for size in [*sizes, len(records)]:
        if records[at:at + size]:
            groups.append(records[at:at + size])
        at += size
    for offset, group in enumerate(groups):
        alerts, _step, dead = shard_step(state, offset, bundle_inputs(group, max_bytes=1 << 30)[0])
        alerts_out += [encode(a) for a in alerts]
        dead_out += [encode(letter) for letter in dead]
    return alerts_out, dead_out, pack_state(state)


@settings(max_examples=100, deadline=None)
@given(records=st.lists(log_record(), min_size=1, max_size=30), sizes=st.lists(st.integers(1, 8), max_size=10),
       shard=st.integers(0, SHARDS - 1))
def test_a_bundle_of_inputs_is_read_as_its_records_one_by_one(
    records: list[bytes], sizes: list[int], shard: int
) -> None:
    assert _read_bundled(records, sizes, shard) == _read_bundled(records, [1] * len(records), shard)


def test_a_bundle_that_does_not_parse_is_left_to_the_aggregation_stage() -> None:
    state = ShardState(AccountShard(EngineConfig(), 1, 0, SHARDS))
    alerts, _step, dead = shard_step(state, 0, b'{"inputs":[1')
    assert (alerts, dead) == ([], []) and state.inputs.taken == {}
