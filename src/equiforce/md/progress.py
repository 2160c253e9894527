"""Progress display of an MD run: a rich bar, or plain lines when not a terminal."""

from __future__ import annotations

import time

from equiforce.console import LineTicker, hms, is_terminal


class MDProgress:
    """Rich progress bar with steps/s and ns/day (a no-op when disabled)."""

    def __init__(self, total: int, start: int, dt_fs: float, enabled: bool) -> None:
        self.enabled, self.total, self.start, self.dt = enabled, total, start, dt_fs
        self._every = max(1, (total - start) // 200)
        self._t0 = 0.0

    def __enter__(self) -> MDProgress:
        self._ticker = None
        if self.enabled and not is_terminal():
            self._ticker = LineTicker("md")  # plain lines: a log shows progress
        elif self.enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                TextColumn("MD"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn(
                    "{task.fields[rate]:.1f} steps/s {task.fields[nsday]:.3f} ns/day"
                ),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
            )
            self._bar.__enter__()
            self._task = self._bar.add_task(
                "md", total=self.total, completed=self.start, rate=0.0, nsday=0.0
            )
        self._t0 = time.perf_counter()
        self._window = (self._t0, self.start)  # (time, step) of the last line
        return self

    def update(self, step: int) -> None:
        """Advance to ``step`` (redrawn every ~0.5 % of the run)."""
        if not self.enabled or step % self._every:
            return
        rate = (step - self.start) / max(time.perf_counter() - self._t0, 1e-9)
        nsday = rate * self.dt * 86400.0 * 1e-6
        if self._ticker is not None:
            if self._ticker.due():  # the rate since the last line: not a compile
                now = time.perf_counter()
                t_last, s_last = self._window
                rate = (step - s_last) / max(now - t_last, 1e-9)
                self._window = (now, step)
                nsday = rate * self.dt * 86400.0 * 1e-6
                left = hms((self.total - step) / rate) if rate > 0 else "-"
                self._ticker.line(
                    f"step {step}/{self.total}, {rate:.1f} steps/s, {nsday:.3f} "
                    f"ns/day, ETA {left}"
                )
            return
        self._bar.update(self._task, completed=step, rate=rate, nsday=nsday)

    def __exit__(self, *exc) -> None:
        if self.enabled and self._ticker is None:
            self._bar.__exit__(*exc)
