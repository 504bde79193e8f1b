"""Packs: several market-topic records in one Kafka record.

A replay at full speed sends each market partition's records in packs (:class:`Packer`):
one Kafka record holds up to ``max_records`` of them, at most ``max_bytes``, in the order
they were routed. A worker takes a pack's records one after the other, exactly as if they
had come one by one (:func:`unpack`), so the stages see the same records in the same
order and give the same alerts; the pack is only the unit of the consumer's offsets (read,
checkpointed and re-read after a crash whole). What a Kafka record costs the worker —
the fetch, faust's stream and agent, the offset bookkeeping — is then paid once per
pack: a tick goes to every partition once a second, so most market records are a few
bytes long and their handling, not their content, was the worker's cost.

Wire form: the 5 bytes ``LQPK\\x01``, then each record as a 4-byte big-endian length and
its bytes. A plain record is JSON and starts with ``{``, so the two never mix up. Pure:
no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

from monitor.protocol import RecordError

__all__ = ["PACK_MAGIC", "Packer", "pack", "unpack"]

#: The first bytes of a pack (a plain market record is a JSON object).
PACK_MAGIC = b"LQPK\x01"
_LENGTH_BYTES = 4


def pack(values: Sequence[bytes]) -> bytes:
    """Records as one pack (:func:`unpack` gives them back)."""
    out = bytearray(PACK_MAGIC)
    for value in values:
        out += len(value).to_bytes(_LENGTH_BYTES, "big")
        out += value
    return bytes(out)


def unpack(value: bytes) -> list[bytes] | None:
    """The records of a pack, in order; None when ``value`` is a plain record. A pack
    that does not frame out (a length past its end, or no record) raises
    :class:`RecordError` (``invalid_pack``)."""
    if not value.startswith(PACK_MAGIC):
        return None
    out: list[bytes] = []
    i, end = len(PACK_MAGIC), len(value)
    while i < end:
        if i + _LENGTH_BYTES > end:
            raise RecordError("invalid_pack", f"a record length cut off at byte {i} of {end}")
        size = int.from_bytes(value[i:i + _LENGTH_BYTES], "big")
        i += _LENGTH_BYTES
        if i + size > end:
            raise RecordError("invalid_pack", f"a record of {size} bytes at byte {i} runs past the end ({end})")
        out.append(value[i:i + size])
        i += size
    if not out:
        raise RecordError("invalid_pack", "a pack holds no record")
    return out


class Packer:
    """Records waiting, per partition, to go out as one pack."""

    def __init__(self, max_records: int = 256, max_bytes: int = 512 * 1024) -> None:
        if max_records < 1 or max_bytes < 1:
            raise ValueError("a pack holds at least one record of at least one byte")
        self.max_records = max_records
        self.max_bytes = max_bytes
        self._waiting: dict[int, list[bytes]] = {}
        #: Per partition, the bytes of the pack its waiting records would make.
        self._bytes: dict[int, int] = {}

    def add(self, partition: int, value: bytes) -> list[bytes]:
        """``value`` for ``partition``: what must go out now, in order (the waiting records
        when ``value`` would take their pack past ``max_bytes``, and the pack ``value``
        fills; empty: it waits)."""
        n = _LENGTH_BYTES + len(value)
        waited = self._bytes.get(partition)  # None: nothing waits
        out = [self._take(partition)] if waited is not None and waited + n > self.max_bytes else []
        waiting = self._waiting.setdefault(partition, [])
        waiting.append(value)
        self._bytes[partition] = self._bytes.get(partition, len(PACK_MAGIC)) + n
        if len(waiting) >= self.max_records or self._bytes[partition] >= self.max_bytes:
            out.append(self._take(partition))
        return out

    def drain(self) -> list[tuple[int, bytes]]:
        """Every partition's waiting records, as (partition, pack or lone record)."""
        return [(p, self._take(p)) for p in sorted(self._waiting)]

    def _take(self, partition: int) -> bytes:
        """The waiting records as one pack; a lone one as it is, unless it would read as a pack."""
        waiting = self._waiting.pop(partition)
        del self._bytes[partition]
        lone = len(waiting) == 1 and not waiting[0].startswith(PACK_MAGIC)
        return waiting[0] if lone else pack(waiting)
