"""Checkpoints: a stage's state together with the input offset it reflects.

The contract (DESIGN "State, recovery and scale-out"): a stateful stage writes its whole
state and the offset of the last input record that state has seen, after every output of
those records is durable; it lets the consumer commit input offsets only up to a
checkpoint; and a worker that is given the partition loads the newest checkpoint and
re-reads the input from the offset after it. Outputs re-emitted on the way keep their
deterministic ids. So a crash at any moment costs re-reading, never an alert.

Checkpoints live in a changelog-backed faust table with raw values (the changelog is
what a new owner recovers before its agents see a record). A state is pickled and
compressed, then cut into chunks that fit Kafka's default message size. Two slots take
turns: a checkpoint is written into the slot the current header does not name, and its
header (offset, slot, chunk count, sha-256) is written last, so a worker killed half-way
through a checkpoint leaves the previous one whole. The header is checked on load; a
checkpoint that does not check out is ignored (the stage then re-reads its input from the
start) and logged.

Trust: a checkpoint is a pickle, so whoever may write the checkpoint changelog topics may
run code in a worker. Give only the workers write access to them (as to every changelog).
"""

from __future__ import annotations

import hashlib
import logging
import pickle
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

import orjson

__all__ = [
    "CHUNK_BYTES",
    "Checkpoint",
    "CheckpointTable",
    "InputCursor",
    "Verdict",
    "pack_state",
    "same_layout",
    "unpack_state",
]

log = logging.getLogger("liqmon.checkpoint")

#: Chunk size of a stored checkpoint: well inside Kafka's default 1 MB message size.
CHUNK_BYTES = 512 * 1024
_HEADER_VERSION = 1


def pack_state(state: object) -> bytes:
    """Pickle (protocol 5) and compress (zlib level 1: ~5x smaller, ~15 ms per MB)."""
    return zlib.compress(pickle.dumps(state, protocol=5), 1)


def unpack_state(blob: bytes) -> Any:
    return pickle.loads(zlib.decompress(blob))


def _attributes(obj: object) -> dict[str, Any] | None:
    """An object's attributes (instance dict and slots), or None for plain values."""
    if isinstance(obj, (str, bytes, int, float, bool, type(None), list, tuple, dict, set, frozenset)):
        return None
    out: dict[str, Any] = dict(getattr(obj, "__dict__", {}))
    for cls in type(obj).__mro__:
        for name in getattr(cls, "__slots__", ()):
            if name not in out and hasattr(obj, name):
                out[name] = getattr(obj, name)
    return out if out or hasattr(obj, "__dict__") else None


def same_layout(loaded: object, fresh: object, depth: int = 3) -> bool:
    """Whether a checkpointed state has the attributes a state built by this code has.

    A checkpoint written by another version of the code (a field added or removed) is
    unpickled without complaint and fails later; comparing attribute names ``depth`` levels
    down, against a freshly built state, finds that at load time.
    """
    if type(loaded) is not type(fresh):
        return False
    mine, theirs = _attributes(loaded), _attributes(fresh)
    if mine is None or theirs is None:
        return mine is None and theirs is None
    if mine.keys() != theirs.keys():
        return False
    if depth <= 1:
        return True
    return all(
        same_layout(mine[name], value, depth - 1)
        for name, value in theirs.items()
        if type(mine[name]) is type(value) and _attributes(value) is not None
    )


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A stage's state and the offset of the last input record it reflects."""

    offset: int
    state: Any
    size_bytes: int = 0


class CheckpointTable:
    """Checkpoints by name in a faust table whose keys and values are raw bytes.

    ``send`` is the changelog producer: ``send(key, value, partition)`` (value None = delete).
    Writes name their changelog partition explicitly, so a checkpoint of market partition
    p lands in changelog partition p, the one a new owner of p recovers.
    """

    def __init__(self, data: Any, send: Any, chunk_bytes: int = CHUNK_BYTES) -> None:
        self._data = data
        self._send = send
        self._chunk_bytes = chunk_bytes

    def _header(self, name: str) -> dict[str, Any] | None:
        raw = self._data.get(name.encode())
        if raw is None:
            return None
        try:
            header = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        return header if isinstance(header, dict) and header.get("v") == _HEADER_VERSION else None

    def load(self, name: str) -> Checkpoint | None:
        """The newest whole checkpoint of ``name``, or None (none yet, or it does not check out)."""
        header = self._header(name)
        if header is None:
            return None
        slot, n = int(header["slot"]), int(header["n"])
        parts: list[bytes] = []
        for i in range(n):
            part = self._data.get(f"{name}:{slot}:{i}".encode())
            if part is None:
                log.error("checkpoint %s: chunk %d of %d missing; re-reading the input", name, i, n)
                return None
            parts.append(bytes(part))
        blob = b"".join(parts)
        if hashlib.sha256(blob).hexdigest() != header["sha256"]:
            log.error("checkpoint %s does not match its digest; re-reading the input", name)
            return None
        return Checkpoint(int(header["offset"]), unpack_state(blob), len(blob))

    def load_usable(self, name: str, fresh: object, fits: Callable[[Any], bool]) -> Checkpoint | None:
        """The newest checkpoint of ``name`` if this code can go on from it: its state has the
        type and layout of ``fresh`` (a state this code builds, :func:`same_layout`) and
        ``fits`` it (made with the same settings); else None, and a checkpoint refused is
        logged (the stage starts afresh and re-reads its input from the start)."""
        ckpt = self.load(name)
        if ckpt is None:
            return None
        if type(ckpt.state) is type(fresh) and same_layout(ckpt.state, fresh) and fits(ckpt.state):
            return ckpt
        log.warning("checkpoint %s made with other settings or code; starting afresh", name)
        return None

    async def save(self, name: str, partition: int, offset: int, state: object) -> int:
        """Write a checkpoint (chunks first, header last); returns its size in bytes."""
        previous = self._header(name)
        slot = 1 - int(previous["slot"]) if previous is not None else 0
        blob = pack_state(state)
        size = self._chunk_bytes
        chunks = [blob[i:i + size] for i in range(0, len(blob), size)] or [b""]
        for i, chunk in enumerate(chunks):
            await self._put(f"{name}:{slot}:{i}".encode(), chunk, partition)
        header = {"v": _HEADER_VERSION, "offset": offset, "slot": slot, "n": len(chunks),
                  "sha256": hashlib.sha256(blob).hexdigest()}
        await self._put(name.encode(), orjson.dumps(header), partition)
        return len(blob)

    async def _put(self, key: bytes, value: bytes, partition: int) -> None:
        self._data[key] = value
        await self._send(key, value, partition)


class Verdict(Enum):
    """What a stage does with an input record, given the offset its state expects."""

    PROCESS = "process"
    #: Already reflected in the state (read again after a restart): acknowledge, skip.
    SKIP = "skip"
    #: Past the expected offset: the consumer must seek back to ``expected``.
    REWIND = "rewind"
    #: Past the expected offset while a seek back is under way: drop, do not acknowledge.
    DROP = "drop"


class InputCursor:
    """The next input offset a partition's state expects, and what to do with a record."""

    __slots__ = ("_rewound_at_s", "expected", "retry_s")

    def __init__(self, expected: int | None, retry_s: float = 1.0) -> None:
        #: None: no checkpoint, take the first record the consumer hands over (offsets are
        #: committed only with a checkpoint, so none means nothing was committed either).
        self.expected = expected
        #: A seek back not yet visible after this long is asked for again, by the next record
        #: or by a timer (``streams.app.pipes.Rewinds``): a seek of the consumer's own, or the
        #: rest of a batch fetched before it, may have overtaken it.
        self.retry_s = retry_s
        self._rewound_at_s: float | None = None

    def judge(self, offset: int, now_s: float) -> Verdict:
        if self.expected is None or offset == self.expected:
            self._rewound_at_s = None
            return Verdict.PROCESS
        if offset < self.expected:
            return Verdict.SKIP
        if self._rewound_at_s is not None and not self.overdue(now_s):
            return Verdict.DROP
        self._rewound_at_s = now_s
        return Verdict.REWIND

    def overdue(self, now_s: float) -> bool:
        """Whether a seek back was asked for and its first record has not come for
        ``retry_s``: ask again without waiting for a record (the partition's last records
        may all have been dropped while the seek was under way, and none may follow)."""
        return self._rewound_at_s is not None and now_s - self._rewound_at_s >= self.retry_s

    def rewinding(self) -> bool:
        """Whether a seek back was asked for and its first record has not come yet."""
        return self._rewound_at_s is not None

    def rewound(self, now_s: float) -> None:
        """A seek back was asked for again at ``now_s``."""
        self._rewound_at_s = now_s

    def advance(self, offset: int) -> None:
        self.expected = offset + 1
