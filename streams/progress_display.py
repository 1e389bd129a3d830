"""Where progress lines go: one line redrawn in place on a terminal, log lines elsewhere.

On a terminal (stderr is a TTY) the line is redrawn with a carriage return at
most five times a second, and ends with the summary and a newline; a log record
written to the same terminal meanwhile is printed above the line. Otherwise
(a pipe, a file, a CI log) a line is logged every ``LOG_EVERY_SECONDS``, plus
the summary: a long job leaves a trace, a short one a single line.
"""

from __future__ import annotations

import io
import logging
import os
import sys
import time
from typing import TextIO

from streams.progress import Clock, Meter, Progress

log = logging.getLogger(__name__)

REDRAW_EVERY_SECONDS = 0.2
LOG_EVERY_SECONDS = 5.0


class TerminalProgress:
    """The line, redrawn in place: it overwrites itself, so it never scrolls."""

    def __init__(self, meter: Meter, stream: TextIO) -> None:
        self.meter, self.stream = meter, stream
        self.shown = 0  # characters of the line on screen, to blank a longer one's tail
        self.line = ""
        self.held: list[logging.StreamHandler[TextIO]] = []

    def update(self, done: int, position: int | None = None, total: int | None = None) -> None:
        line = self.meter.update(done, position, total)
        if line is not None:
            self._draw(line)

    def finish(self, failed: bool = False) -> None:
        if not failed:
            self._draw(self.meter.summary())
        if self.shown or not failed:
            self.stream.write("\n")
            self.stream.flush()
        self.shown = 0
        for handler in self.held:
            handler.setStream(self.stream)
        self.held = []

    def _draw(self, line: str) -> None:
        if not self.shown:
            self._hold_logs()
        line = line[: max(_columns(self.stream) - 1, 20)]  # a wrapped line cannot be redrawn
        self.stream.write("\r" + line + " " * max(self.shown - len(line), 0))
        self.stream.flush()
        self.line, self.shown = line, len(line)

    def _hold_logs(self) -> None:
        """Log handlers writing to this terminal write above the line from now on."""
        above = _AboveTheLine(self)
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream is self.stream:
                handler.setStream(above)
                self.held.append(handler)

    def write_above(self, text: str) -> None:
        """Blank the line, write ``text``, draw the line again below it."""
        self.stream.write("\r" + " " * self.shown + "\r" + text)
        if text.endswith("\n") and self.shown:
            self.stream.write(self.line)
        self.stream.flush()


class _AboveTheLine(io.TextIOBase):
    """The stream a held log handler writes to."""

    def __init__(self, progress: TerminalProgress) -> None:
        self.progress = progress

    def write(self, text: str) -> int:
        self.progress.write_above(text)
        return len(text)


class LogProgress:
    def __init__(self, meter: Meter, logger: logging.Logger = log) -> None:
        self.meter, self.logger = meter, logger

    def update(self, done: int, position: int | None = None, total: int | None = None) -> None:
        line = self.meter.update(done, position, total)
        if line is not None:
            self.logger.info("%s", line)

    def finish(self, failed: bool = False) -> None:
        if not failed:
            self.logger.info("%s", self.meter.summary())


def stderr_progress(label: str, unit: str, clock: Clock = time.monotonic) -> Progress:
    """A ``ProgressFactory``: redrawn on stderr when it is a terminal, logged otherwise."""
    stream = sys.stderr
    if _is_terminal(stream):
        return TerminalProgress(Meter(label, unit, clock, REDRAW_EVERY_SECONDS), stream)
    return LogProgress(Meter(label, unit, clock, LOG_EVERY_SECONDS))


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # replaced or closed
        return False


def _columns(stream: TextIO) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns or 80  # 0: a size never set
    except (AttributeError, ValueError, OSError):
        return 80
