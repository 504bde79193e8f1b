"""The signals that end a live session: SIGHUP among them unless ``nohup`` ignores it."""

from __future__ import annotations

import signal

from streams.cmd.live import stop_signals


def test_sighup_ends_a_session_unless_nohup_ignores_it() -> None:
    before = signal.signal(signal.SIGHUP, signal.SIG_DFL)
    try:
        assert stop_signals() == [signal.SIGINT, signal.SIGTERM, signal.SIGHUP]
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as nohup leaves it
        assert stop_signals() == [signal.SIGINT, signal.SIGTERM]
    finally:
        signal.signal(signal.SIGHUP, before)
