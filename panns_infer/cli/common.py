"""What every ``panns-tag`` mode shares: exit codes, failure reports, the progress line."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Optional

__all__ = ["EXIT_OK", "EXIT_SOME_FAILED", "EXIT_USAGE", "EXIT_BROKEN_PIPE", "report_failure", "ProgressLine"]

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_BROKEN_PIPE = 128 + 13  # what a shell reports for a tool stopped by SIGPIPE


def report_failure(path: Optional[str], error: Optional[str], exc: Optional[BaseException],
                    args: argparse.Namespace) -> None:
    """A failed file: one line on stderr; with --debug, its traceback through the log."""
    print(f"panns-tag: {path}: {error}", file=sys.stderr, flush=True)
    if args.debug and exc is not None:
        logging.getLogger("panns_infer").error("while tagging %s", path,
                                               exc_info=(type(exc), exc, exc.__traceback__))


class ProgressLine:
    """A one-line progress display on stderr for long files (only on a terminal)."""

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self.shown = False

    def for_file(self, path: str):
        if not self.enabled:
            return None

        def update(done: float, total: float) -> None:
            if total >= 60:  # only worth showing for long recordings
                pct = 100.0 * done / total if total else 100.0
                sys.stderr.write(f"\r{os.path.basename(path)}: {pct:5.1f}% ({done:.0f}/{total:.0f} s)")
                sys.stderr.flush()
                self.shown = True
        return update

    def clear(self) -> None:
        if self.shown:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
            self.shown = False


