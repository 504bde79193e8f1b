"""Capture files: JSON Lines (optionally gzip), one received frame per line.

Line contract (README "Capture file")::

    {"ts_ms": <receive time, int ms UTC>, "venue": "<venue id>",
     "channel": "<channel as the venue names it>", "raw": <frame JSON as sent>}

Reading is lenient per line (a bad line is handed on as a :class:`BadLine` so the
caller can dead-letter it) and strict per file (a file that is not a capture raises
:class:`CaptureError` with a one-line reason before anything is replayed).
"""

from __future__ import annotations

import gzip
import multiprocessing as mp
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import IO, Any, NamedTuple, cast

import orjson
from isal import igzip, igzip_threaded

__all__ = [
    "GZIP_LEVEL",
    "MAX_LINE_BYTES",
    "AheadWriter",
    "BadLine",
    "CaptureError",
    "CaptureLine",
    "can_fork",
    "dumps_line",
    "gzip_writer",
    "iter_capture",
    "open_capture",
    "write_capture",
    "write_chunks",
]

#: Frames larger than this are dead-lettered as ``oversize`` (the biggest venue
#: frames, full 1000-level depth snapshots, stay well under it).
MAX_LINE_BYTES = 1 << 20

_GZIP_MAGIC = b"\x1f\x8b"
#: Compression level of written captures, ISA-L's (``isal.igzip``, levels 0-3; any gzip
#: reader reads them). Measured on the 263 MB synthetic day in 1 MB chunks: ISA-L level 2
#: took 0.41 s of CPU for 65.5 MB where zlib took 1.75 s for 67.9 MB at level 2 and 1.53 s
#: for 71.0 MB at level 1 (zlib level 9, gzip's default: 71 s, 54 MB); the stdlib's gzip
#: reads both back equally fast.
GZIP_LEVEL = 2


def gzip_writer(fh: IO[bytes]) -> IO[bytes]:
    """A gzip stream into ``fh`` at :data:`GZIP_LEVEL`, mtime 0 (same frames, same bytes).

    ``isal`` ships no type hints for its ``GzipFile``: it is the stdlib's binary file API.
    """
    writer = igzip.GzipFile(  # type: ignore[no-untyped-call]
        filename="", mode="wb", fileobj=fh, mtime=0, compresslevel=GZIP_LEVEL)
    return cast(IO[bytes], writer)


class CaptureError(Exception):
    """The file is not a readable capture (missing, empty, binary, not JSON Lines)."""


class CaptureLine(NamedTuple):
    """One line of a capture, already split into its envelope fields."""

    line_no: int
    ts_ms: int
    venue: str
    channel: str
    raw: Any
    raw_bytes: bytes


@dataclass(frozen=True, slots=True)
class BadLine:
    """A line that could not be read as a capture envelope."""

    line_no: int
    reason: str
    detail: str
    raw_bytes: bytes


def open_capture(path: Path, threaded: bool = True) -> IO[bytes]:
    """Open a capture for binary reading, transparently gunzipping (``threaded``: see
    :func:`_open_binary`); validate the head.

    Raises :class:`CaptureError` for a missing path, a directory, an empty file, or a
    file whose first line is not a JSON object with the envelope keys.
    """
    if not path.exists():
        raise CaptureError(f"capture file not found: {path}")
    if path.is_dir():
        raise CaptureError(f"capture path is a directory, not a file: {path}")
    try:
        with path.open("rb") as probe:
            head = probe.read(2)
    except OSError as exc:
        raise CaptureError(f"cannot read capture {path}: {exc.strerror}") from None
    if not head:
        raise CaptureError(f"capture file is empty: {path}")
    stream = _open_binary(path, head == _GZIP_MAGIC, threaded=False)
    try:
        first = stream.readline(MAX_LINE_BYTES + 1)
    except (OSError, EOFError) as exc:
        stream.close()
        raise CaptureError(f"capture {path} is not readable: {exc}") from None
    if not first.strip():
        stream.close()
        raise CaptureError(f"capture file is empty: {path}")
    try:
        obj = orjson.loads(first)
    except orjson.JSONDecodeError:
        stream.close()
        raise CaptureError(
            f"{path} is not a capture file (first line is not JSON; expected JSON Lines "
            '{"ts_ms", "venue", "channel", "raw"})'
        ) from None
    if not isinstance(obj, dict) or not {"ts_ms", "venue", "channel", "raw"} <= obj.keys():
        stream.close()
        raise CaptureError(
            f"{path} is not a capture file (first line lacks ts_ms/venue/channel/raw)"
        )
    # Re-open so the caller reads from the first line.
    stream.close()
    return _open_binary(path, head == _GZIP_MAGIC, threaded)


def _open_binary(path: Path, gzipped: bool, threaded: bool = True) -> IO[bytes]:
    """The capture's bytes. A gzip one is inflated by ISA-L on a thread of its own
    (``threaded``: it releases the interpreter lock, so the inflating runs beside the
    reader, whose lines cost a fifth of the stdlib's), or by the stdlib, which gives every
    line up to where a cut-off file ends (the threaded reader drops its last block)."""
    if gzipped and threaded:
        return cast(IO[bytes], igzip_threaded.open(path, "rb", threads=1))  # type: ignore[no-untyped-call]
    if gzipped:
        return cast(IO[bytes], gzip.open(path, "rb"))
    return path.open("rb")


def _split(line_no: int, line: bytes) -> CaptureLine | BadLine:
    if len(line) > MAX_LINE_BYTES:
        return BadLine(line_no, "oversize", f"line of {len(line)} bytes > {MAX_LINE_BYTES}", line)
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        return BadLine(line_no, "invalid_json", str(exc), line)
    if not isinstance(obj, dict):
        return BadLine(line_no, "invalid_envelope", "line is not a JSON object", line)
    ts_ms = obj.get("ts_ms")
    venue = obj.get("venue")
    channel = obj.get("channel")
    if "raw" not in obj:
        return BadLine(line_no, "missing_field", "envelope has no 'raw'", line)
    if isinstance(ts_ms, bool) or not isinstance(ts_ms, int):
        return BadLine(line_no, "invalid_timestamp", f"ts_ms must be an integer, got {ts_ms!r}", line)
    if not isinstance(venue, str) or not venue:
        return BadLine(line_no, "missing_field", "envelope has no venue string", line)
    if not isinstance(channel, str) or not channel:
        return BadLine(line_no, "missing_field", "envelope has no channel string", line)
    return CaptureLine(line_no, ts_ms, venue, channel, obj["raw"], line)


def iter_capture(path: Path, spelling: tuple[bytes, ...] = ()) -> Iterator[CaptureLine | BadLine]:
    """Yield every non-blank line of a capture as a CaptureLine or a BadLine. A gzip
    capture cut off mid-stream ends with a ``truncated_file`` BadLine after every line
    before the cut (read again past the threaded reader's last block by the stdlib's).
    ``spelling``: when given, only the lines that may hold one of these texts (a channel's
    name, say) in a JSON string; the others are skipped unparsed, their numbers still
    counted (:func:`_may_spell`)."""
    with open_capture(path) as stream:
        cut = yield from _lines(stream, 0, 0, spelling)
    if cut is None:
        return
    line_no, error = cut
    with open_capture(path, threaded=False) as slow:
        cut = yield from _lines(slow, line_no, line_no, spelling)
    if cut is not None:
        line_no, error = cut
    yield BadLine(line_no + 1, "truncated_file", error, b"")


_Cut = tuple[int, str] | None


def _may_spell(line: bytes, texts: tuple[bytes, ...]) -> bool:
    """False only for a JSON line that cannot hold any of ``texts`` (none holding a quote or
    backslash) in a string: it spells none of them and has no ``\\u`` escape, the one way
    JSON spells a character otherwise."""
    for text in texts:
        if text in line:
            return True
    return b"\\u" in line


def _lines(stream: IO[bytes], skip: int, line_no: int,
           spelling: tuple[bytes, ...] = ()) -> Generator[CaptureLine | BadLine, None, _Cut]:
    """The lines of ``stream`` after its first ``skip`` (numbered on from ``line_no``);
    returns (lines read, error) when the stream is cut off, None at its end."""
    seen = 0
    while True:
        try:
            line = stream.readline(MAX_LINE_BYTES + 1)
            oversize = len(line) > MAX_LINE_BYTES and not line.endswith(b"\n")
            rest = line
            while oversize and rest and not rest.endswith(b"\n"):  # consume the rest of the line
                rest = stream.readline(MAX_LINE_BYTES + 1)
        except (OSError, EOFError) as exc:
            return max(line_no, skip), str(exc)
        if not line:
            return None
        seen += 1
        if seen <= skip:
            continue
        line_no += 1
        if oversize:
            yield BadLine(line_no, "oversize", f"line longer than {MAX_LINE_BYTES} bytes", line[:4096])
            continue
        stripped = line.strip()
        if stripped and (not spelling or _may_spell(stripped, spelling)):
            yield _split(line_no, stripped)


def dumps_line(ts_ms: int, venue: str, channel: str, raw: Any) -> bytes:
    """Serialise one capture line (no trailing newline), byte-stable for equal input."""
    return orjson.dumps({"ts_ms": ts_ms, "venue": venue, "channel": channel, "raw": raw})


class AheadWriter:
    """Calls ``write`` on each chunk, in order, on a worker thread of its own, with at most
    ``ahead`` chunks queued (:meth:`write` waits beyond that); a failed write is raised on
    the next :meth:`write` or on :meth:`close`, which waits for the rest."""

    def __init__(self, write: Callable[[bytes], object], ahead: int, name: str) -> None:
        self._write = write
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._pending: deque[Future[object]] = deque()
        self._ahead = ahead

    def write(self, chunk: bytes) -> None:
        while len(self._pending) >= self._ahead:
            self._pending.popleft().result()
        self._pending.append(self._pool.submit(self._write, chunk))

    def close(self) -> None:
        try:
            while self._pending:
                self._pending.popleft().result()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)


class _ChunkSink:
    """Writes byte chunks in order; gzip (when asked) is done on a worker thread
    (:class:`AheadWriter`, 4 chunks ahead).

    The compressor (ISA-L) and crc32 release the GIL on large buffers, so compressing one
    chunk overlaps with building the next.
    """

    def __init__(self, fh: IO[bytes], gzipped: bool) -> None:
        self._fh = fh
        self._gz = gzip_writer(fh) if gzipped else None
        self._ahead = AheadWriter(self._gz.write, 4, "capture-gzip") if self._gz is not None else None

    def write(self, chunk: bytes) -> None:
        if self._ahead is None:
            self._fh.write(chunk)
        else:
            self._ahead.write(chunk)

    def close(self) -> None:
        try:
            if self._ahead is not None:
                self._ahead.close()
        finally:
            if self._gz is not None:
                self._gz.close()


#: Lines joined into one chunk before it is handed to the sink.
_CHUNK_LINES = 4096


def can_fork() -> bool:
    """True where a child process can be forked (Linux, the BSDs; not from a daemonic
    multiprocessing worker, which may not have children)."""
    return "fork" in mp.get_all_start_methods() and not mp.current_process().daemon


def _gzip_child(path: Path, conn: Connection, parent_end: Connection, errors: Connection) -> None:
    """Child: gzip every chunk received into ``path`` until an empty one arrives.

    A pipe closed before that means the parent stopped (it raises its own error), so the
    child just ends. The child's copy of the parent's end is closed first, or that end
    would never be closed everywhere. A file that cannot be written (a full disk) is sent
    back on ``errors`` as (errno, message), for the parent to raise as its own OSError.
    """
    parent_end.close()
    try:
        with path.open("wb") as fh, gzip_writer(fh) as gz:
            while chunk := conn.recv_bytes():
                gz.write(chunk)
    except EOFError:
        pass
    except OSError as exc:
        errors.send((exc.errno, exc.strerror or str(exc)))
        raise SystemExit(1) from None  # said to the parent: no traceback of its own
    finally:
        conn.close()
        errors.close()


def _write_in_child(path: Path, chunks: Iterable[bytes]) -> None:
    """:func:`write_chunks`' gzip in a forked child process, fed through a pipe; the
    child's OSError (a full disk) is raised here as it was raised there."""
    ctx = mp.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    errors_recv, errors_send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_gzip_child, args=(path, recv, send, errors_send), daemon=True, name="capture-gzip")
    proc.start()
    recv.close()
    errors_send.close()
    try:
        for chunk in chunks:
            if chunk:
                send.send_bytes(chunk)
        send.send_bytes(b"")
    except BrokenPipeError:
        pass  # the child ended early: its exit code says why, below
    finally:
        send.close()
        proc.join()
    with errors_recv:
        error = errors_recv.recv() if proc.exitcode != 0 and errors_recv.poll() else None
    if error is not None:
        raise OSError(error[0], error[1], str(path))
    if proc.exitcode != 0:
        raise RuntimeError(f"writing {path} failed in the gzip process (exit code {proc.exitcode})")


def write_chunks(path: Path, chunks: Iterable[bytes], *, in_child: bool = False) -> None:
    """Write already serialised capture lines (whole, newline-terminated lines per chunk).

    Gzip (when the name ends in .gz) is written with mtime 0, at :data:`GZIP_LEVEL`, and
    compressed while the caller builds the next chunk: on a worker thread, or with
    ``in_child`` (where :func:`can_fork`) in a forked child process. A thread shares the
    interpreter lock with the caller, chunk by chunk; a child does not, which a caller that
    is itself CPU-bound (the scenario generator) wants. The bytes are the same either way.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if in_child and path.suffix == ".gz" and can_fork():
        _write_in_child(path, chunks)
        return
    with path.open("wb") as fh:
        sink = _ChunkSink(fh, path.suffix == ".gz")
        try:
            for chunk in chunks:
                sink.write(chunk)
        finally:
            sink.close()


def write_capture(path: Path, lines: Iterable[tuple[int, str, str, Any]]) -> int:
    """Write ``(ts_ms, venue, channel, raw)`` tuples; gzip when the name ends in .gz.

    Gzip output is written with mtime 0 so the same frames give the same bytes (at
    :data:`GZIP_LEVEL`). Returns the number of lines written.
    """
    count = 0

    def chunks() -> Iterator[bytes]:
        nonlocal count
        batch: list[bytes] = []
        for ts_ms, venue, channel, raw in lines:
            batch.append(dumps_line(ts_ms, venue, channel, raw))
            if len(batch) >= _CHUNK_LINES:
                count += len(batch)
                batch.append(b"")
                yield b"\n".join(batch)
                batch = []
        if batch:
            count += len(batch)
            batch.append(b"")
            yield b"\n".join(batch)

    write_chunks(path, chunks())
    return count
