"""The replay's progress: rich's live bar on a terminal, a plain line every 5 s otherwise."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

from replay.outputs import utc

__all__ = ["ReplayProgress"]

#: Seconds between two progress lines when stderr is not a terminal (a log, a pipe).
PLAIN_LINE_EVERY_S = 5.0


class ReplayProgress:
    """Called with (event time, frames, alerts) as a replay goes; :meth:`close` ends the bar."""

    def __init__(self, console: Console | None = None) -> None:
        self._console = console if console is not None else Console(stderr=True, highlight=False)
        self._bar: Progress | None = None
        if self._console.is_terminal:
            self._bar = Progress(
                SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                console=self._console,
            )
        self._task: TaskID | None = None
        self._started_s = time.monotonic()
        self._last_line_s = 0.0

    def __call__(self, ts_ms: int, frames: int, alerts: int) -> None:
        now_s = time.monotonic()
        rate_fps = frames / max(now_s - self._started_s, 1e-9)
        text = f"event time {utc(ts_ms) or '-'} UTC | {frames:,} frames | {rate_fps:,.0f} frames/s | {alerts} alerts"
        if self._bar is not None:
            if self._task is None:
                self._bar.start()
                self._task = self._bar.add_task(text, total=None)
            else:
                self._bar.update(self._task, description=text)
            return
        if now_s - self._last_line_s >= PLAIN_LINE_EVERY_S:
            self._last_line_s = now_s
            self._console.print(text, soft_wrap=True)

    def close(self) -> None:
        """Stop the live bar (its last state stays on screen)."""
        if self._bar is not None and self._task is not None:
            self._bar.stop()
            self._task = None
