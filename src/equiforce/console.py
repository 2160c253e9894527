"""Progress for non-terminal output: a plain line every few seconds.

A live bar (rich) redraws one line in a terminal; written to a log file or a pipe
it shows nothing until the end. Long commands therefore print a plain progress
line (step, rate, ETA, ...) every :data:`LINE_SECONDS` when their output is not a
terminal.
"""

from __future__ import annotations

import os
import sys
import time

#: seconds between progress lines when the output is not a terminal
LINE_SECONDS = float(os.environ.get("EQUIFORCE_PROGRESS_SECONDS", "30"))


def is_terminal(stream=None) -> bool:
    """Whether ``stream`` (default: stderr) is an interactive terminal."""
    stream = sys.stderr if stream is None else stream
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def hms(seconds: float) -> str:
    """``h:mm:ss``."""
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class LineTicker:
    """Prints ``prefix: text`` lines at most every ``seconds`` (first one at once).

    Args:
        prefix: what the lines are about, e.g. ``"train"``.
        seconds: minimum interval between lines.
        stream: where to write (default: stderr).
    """

    def __init__(self, prefix: str, seconds: float = LINE_SECONDS, stream=None) -> None:
        self.prefix, self.seconds, self.stream = prefix, seconds, stream
        self._last = -float("inf")

    def due(self) -> bool:
        """Whether a line is due now."""
        return time.monotonic() - self._last >= self.seconds

    def line(self, text: str, force: bool = False) -> None:
        """Print ``text`` if a line is due (or ``force``)."""
        if not (force or self.due()):
            return
        self._last = time.monotonic()
        stream = sys.stderr if self.stream is None else self.stream
        print(f"{self.prefix}: {text}", file=stream, flush=True)
