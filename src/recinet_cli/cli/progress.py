"""Progress display shared by the commands that work through many input files."""

from __future__ import annotations

import sys
import time

from recinet_cli.cli.common import console_err


class _RichProgress:
    """Rich progress bar with rate and ETA (terminal) or plain periodic lines (pipes, CI)."""

    def __init__(self, label: str, unit: str = "files", done_word: str = "stored") -> None:
        self.label = label
        self.unit = unit
        self.done_word = done_word
        self.tty = console_err.is_terminal
        self.total = self.done = self.structures = self.failed = 0
        self._last = 0.0
        self._t0 = 0.0
        self._bar = None
        self._task = None

    def start(self, total_files: int, skipped: int) -> None:
        self.total = total_files
        self._t0 = time.monotonic()
        if skipped:
            console_err.print(f"resuming: {skipped:,} {self.unit} already done", highlight=False)
        if self.tty:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]} {task.fields[unit]}/s"),
                TextColumn("{task.fields[stats]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=console_err,
                transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task(self.label, total=total_files, rate="-", stats="", unit=self.unit)

    def advance(self, files: int, structures: int, failed: int) -> None:
        self.done += files
        self.structures += structures
        self.failed += failed
        now = time.monotonic()
        elapsed = max(now - self._t0, 1e-9)
        rate = self.done / elapsed
        if self._bar is not None:
            self._bar.update(
                self._task, advance=files, rate=f"{rate:,.1f}",
                stats=f"{self.structures:,} {self.done_word}, {self.failed:,} failed",
            )
        elif now - self._last >= 5.0 or self.done == self.total:
            self._last = now
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            print(
                f"{self.label}: {self.done}/{self.total} {self.unit}, {self.structures} {self.done_word}, "
                f"{self.failed} failed, {rate:.1f} {self.unit}/s, ETA {eta:.0f} s",
                file=sys.stderr, flush=True,
            )

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def make_progress(label: str, unit: str = "files", done_word: str = "stored") -> _RichProgress:
    """A rich bar with rate and ETA on a terminal, a plain line every 5 s otherwise."""
    return _RichProgress(label, unit, done_word)
