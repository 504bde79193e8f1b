"""``streams.cmd.forked``: a function computed in a forked child, its result or its failure
handed back to the parent."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import numpy as np
import pytest

from streams.cmd.forked import Forked, ForkedError, ForkedStream, cores


def _columns(n: int) -> dict[str, object]:
    return {"n": n, "values": np.arange(n, dtype=np.float64) * 0.5, "pid": os.getpid()}


def _raises(message: str) -> None:
    raise ValueError(message)


def _dies(signum: int) -> None:
    os.kill(os.getpid(), signum)


def _sleeps(seconds: float) -> int:
    time.sleep(seconds)
    return 1


def test_the_result_comes_back_from_another_process_whatever_its_size() -> None:
    child = Forked(_columns, 3_000_000)  # 24 MB: far more than a pipe holds
    result = child.result()
    assert result["n"] == 3_000_000 and result["pid"] != os.getpid()
    np.testing.assert_array_equal(result["values"], np.arange(3_000_000, dtype=np.float64) * 0.5)


def test_several_children_run_at_once_and_share_the_parents_memory() -> None:
    shared = list(range(1000))  # not sent: the fork shares it
    children = [Forked(sum, shared[k::3]) for k in range(3)]
    assert [c.result() for c in children] == [sum(shared[k::3]) for k in range(3)]


def test_an_exception_in_the_child_is_raised_with_its_traceback() -> None:
    with pytest.raises(ForkedError, match=r"(?s)^the process computing _raises raised:.*ValueError: the part is bad"):
        Forked(_raises, "the part is bad").result()


def test_a_child_killed_is_an_error_naming_the_signal() -> None:
    killed = f"killed by signal {int(signal.SIGKILL)}"
    with pytest.raises(ForkedError, match=f"^the process dying ended without a result \\({killed}\\)"):
        Forked(_dies, signal.SIGKILL, what="dying").result()


def test_cancel_stops_and_reaps_a_child_still_running() -> None:
    child = Forked(_sleeps, 60.0)
    started = time.monotonic()
    child.cancel()
    assert time.monotonic() - started < 10.0
    with pytest.raises(ChildProcessError):
        os.waitpid(child.pid, os.WNOHANG)


def test_cores_counts_the_cores_this_process_may_use() -> None:
    assert 1 <= cores() <= (os.cpu_count() or 1)


def _texts(n: int, size: int) -> Iterator[bytes]:
    for k in range(n):
        yield str(k).encode() * size


def _texts_then_raise(n: int) -> Iterator[bytes]:
    yield from _texts(n, 10)
    raise RuntimeError("chunk 3 is bad")


def _texts_then_die(n: int) -> Iterator[memoryview]:
    for text in _texts(n, 10):
        yield memoryview(text)[1:]
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_stream_hands_over_every_piece_in_order_large_or_empty() -> None:
    stream = ForkedStream(_texts, 5, 400_000)  # 400 kB-2 MB a piece: many pipes' worth
    assert list(stream) == list(_texts(5, 400_000))
    assert next(stream, None) is None  # ended: stays ended
    assert list(ForkedStream(_texts, 3, 0)) == [b"", b"", b""]


def test_a_stream_raises_what_the_child_raised_after_the_pieces_before() -> None:
    stream = ForkedStream(_texts_then_raise, 3)
    assert [next(stream) for _ in range(3)] == list(_texts(3, 10))
    with pytest.raises(ForkedError, match=r"(?s)_texts_then_raise raised:.*RuntimeError: chunk 3 is bad"):
        next(stream)


def test_a_stream_whose_child_dies_is_an_error_after_the_pieces_sent() -> None:
    stream = ForkedStream(_texts_then_die, 2)
    assert [next(stream), next(stream)] == [text[1:] for text in _texts(2, 10)]
    with pytest.raises(ForkedError, match=f"without its end \\(killed by signal {int(signal.SIGKILL)}\\)"):
        next(stream)


def test_a_stream_cancelled_before_its_end_stops_its_child() -> None:
    stream = ForkedStream(_texts, 10_000, 100_000)
    assert next(stream) == b"0" * 100_000
    stream.cancel()
    with pytest.raises(ChildProcessError):
        os.waitpid(stream.pid, os.WNOHANG)
    assert next(stream, None) is None
