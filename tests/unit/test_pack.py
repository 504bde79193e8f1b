"""Packs of market records (``monitor/ingest/pack.py``): what goes in comes out, in order,
per partition; a pack that does not frame out is refused with a reason."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from monitor.ingest.batch import Batch, decode_record
from monitor.ingest.pack import PACK_MAGIC, Packer, pack, unpack
from monitor.protocol import RecordError

records = st.lists(st.binary(min_size=0, max_size=300), min_size=1, max_size=40)


@given(values=records)
def test_a_pack_gives_back_its_records_in_order(values: list[bytes]) -> None:
    assert unpack(pack(values)) == values


def test_a_plain_record_is_not_a_pack() -> None:
    tick = Batch.tick(1_760_130_000_000).encode()
    assert tick.startswith(b"{") and unpack(tick) is None
    assert unpack(pack([tick, tick])) == [tick, tick]
    assert decode_record(unpack(pack([tick]))[0]).tick_ms == 1_760_130_000_000  # type: ignore[index, union-attr]


@pytest.mark.parametrize(("value", "detail"), [
    (PACK_MAGIC, "no record"),
    (PACK_MAGIC + b"\x00\x00", "cut off"),
    (PACK_MAGIC + (10).to_bytes(4, "big") + b"abc", "runs past the end"),
    (pack([b"abc"]) + b"\x00", "cut off"),
])
def test_a_pack_that_does_not_frame_out_is_refused(value: bytes, detail: str) -> None:
    with pytest.raises(RecordError) as err:
        unpack(value)
    assert err.value.reason == "invalid_pack" and detail in err.value.detail


@given(sends=st.lists(st.tuples(st.integers(0, 3), st.binary(min_size=1, max_size=120)), max_size=200),
       max_records=st.integers(1, 9), max_bytes=st.integers(20, 400))
def test_the_packer_keeps_each_partitions_order_and_its_limits(
    sends: list[tuple[int, bytes]], max_records: int, max_bytes: int
) -> None:
    packer = Packer(max_records, max_bytes)
    out: dict[int, list[bytes]] = {}
    wire: list[tuple[int, bytes]] = []
    for part, value in sends:
        wire += [(part, sent) for sent in packer.add(part, value)]
    wire += packer.drain()
    assert packer.drain() == []
    for part, sent in wire:
        got = unpack(sent)
        if got is None:  # a lone record goes as it is
            got = [sent]
        else:
            assert len(got) <= max_records and (len(got) == 1 or len(sent) <= max_bytes)
        out.setdefault(part, []).extend(got)
    want: dict[int, list[bytes]] = {}
    for part, value in sends:
        want.setdefault(part, []).append(value)
    assert out == want
