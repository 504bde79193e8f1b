"""The capture writer's gzip child process: the same bytes as its thread; errors surface."""

from __future__ import annotations

import errno
import gzip
from collections.abc import Iterator
from pathlib import Path

import pytest

from replay.capture import write_chunks


def _chunks() -> Iterator[bytes]:
    for i in range(40):
        yield b"".join(b'{"ts_ms":%d,"venue":"v","channel":"c","raw":{"n":%d}}\n' % (i, j)
                       for j in range(1000))
    yield b""


@pytest.mark.parametrize("forked", [True, False])
def test_same_bytes_as_the_thread_writer(tmp_path: Path, forked: bool,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    if not forked:
        monkeypatch.setattr("replay.capture.can_fork", lambda: False)
    write_chunks(tmp_path / "a.jsonl.gz", _chunks())
    write_chunks(tmp_path / "b.jsonl.gz", _chunks(), in_child=True)
    assert (tmp_path / "a.jsonl.gz").read_bytes() == (tmp_path / "b.jsonl.gz").read_bytes()
    with gzip.open(tmp_path / "b.jsonl.gz") as fh:
        assert fh.read() == b"".join(_chunks())


def _failing() -> Iterator[bytes]:
    yield b"line\n"
    raise ValueError("generation failed")


def test_an_error_while_generating_is_raised(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="generation failed"):
        write_chunks(tmp_path / "c.jsonl.gz", _failing(), in_child=True)


def test_a_failed_child_is_reported(tmp_path: Path) -> None:
    """The child's OSError is raised in the parent as it was raised there (the caller says
    "cannot write FILE: why" in one line, as for a file written in process)."""
    target = tmp_path / "d.jsonl.gz"
    target.mkdir()  # the child cannot open a directory for writing
    with pytest.raises(IsADirectoryError) as raised:
        write_chunks(target, _chunks(), in_child=True)
    assert raised.value.filename == str(target) and raised.value.strerror == "Is a directory"


def test_a_full_disk_under_the_child_is_its_oserror(tmp_path: Path) -> None:
    target = tmp_path / "full.jsonl.gz"
    target.symlink_to("/dev/full")
    with pytest.raises(OSError, match="No space left on device") as raised:
        write_chunks(target, _chunks(), in_child=True)
    assert raised.value.errno == errno.ENOSPC
