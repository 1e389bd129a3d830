"""The targets file on disk: loaded at start (problems stop the start), reloaded on change.

A reload that fails keeps the last good targets and logs why, once per change of the file.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from projections.targets import Targets, TargetsError, parse_targets

log = logging.getLogger(__name__)


class TargetsFile:
    def __init__(self, path: str) -> None:
        """Load ``path`` ("" for no targets); raises TargetsError listing every problem."""
        self.path = Path(path) if path else None
        self.targets = Targets()
        self._stamp: tuple[int, int] | None = None
        if self.path is not None:
            self._stamp = self._stat()
            self.targets = self._read()

    def current(self) -> Targets:
        """The targets, re-read first if the file changed since the last look."""
        if self.path is None:
            return self.targets
        stamp = self._stat()
        if stamp != self._stamp:
            self._stamp = stamp
            try:
                self.targets = self._read()
                log.info("targets reloaded from %s: %d targets", self.path, len(self.targets.items))
            except TargetsError as exc:
                log.warning(
                    "targets file %s not reloaded, keeping the last good targets: %s",
                    self.path,
                    "; ".join(exc.problems),
                )
        return self.targets

    def _stat(self) -> tuple[int, int] | None:
        assert self.path is not None
        try:
            info = os.stat(self.path)
        except OSError:
            return None
        return info.st_mtime_ns, info.st_size

    def _read(self) -> Targets:
        assert self.path is not None
        try:
            text = self.path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise TargetsError([f"cannot read: {exc}"]) from None
        return parse_targets(text)
