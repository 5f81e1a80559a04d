"""Progress on rank 0: a rich bar with ETA on a terminal, one plain line per epoch otherwise."""

from __future__ import annotations

import sys
from typing import Any, Literal

ProgressMode = Literal["auto", "rich", "plain", "none"]


class Reporter:
    """Receives training events; this base class prints nothing."""

    def start(self, epochs: int, start_epoch: int, steps_per_epoch: int) -> None: ...

    def step(self) -> None: ...

    def epoch(self, row: dict[str, Any]) -> None: ...

    def message(self, text: str) -> None: ...

    def stop(self) -> None: ...


def _summary(row: dict[str, Any]) -> str:
    parts = [f"epoch {row['epoch']}", f"loss {row['train_loss']:.4g}"]
    parts += [f"{k} {v:.4g}" for k, v in row.items() if k.startswith("val_mae_")]
    parts += [f"lr {row['lr']:.3g}", f"{row['time_s']:.1f}s"]
    return "  ".join(parts)


class PlainReporter(Reporter):
    """One line per epoch on stderr (logs, CI, non-terminals)."""

    def __init__(self) -> None:
        self.epochs = 0

    def start(self, epochs: int, start_epoch: int, steps_per_epoch: int) -> None:
        self.epochs = epochs
        if start_epoch >= epochs:
            print(f"all {epochs} epochs already done", file=sys.stderr, flush=True)
            return
        where = f" (resuming at epoch {start_epoch + 1})" if start_epoch else ""
        print(f"training {epochs} epochs x {steps_per_epoch} steps{where}", file=sys.stderr, flush=True)

    def epoch(self, row: dict[str, Any]) -> None:
        print(f"[{row['epoch']}/{self.epochs}] " + _summary(row), file=sys.stderr, flush=True)

    def message(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)


class RichReporter(Reporter):
    """A live bar over all remaining steps (rate and ETA) plus a line per epoch."""

    def __init__(self) -> None:
        from rich.console import Console

        self.console = Console(stderr=True)
        self.progress: Any = None
        self.task: Any = None

    def start(self, epochs: int, start_epoch: int, steps_per_epoch: int) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn("[bold]train[/] epoch {task.fields[epoch]}/" + str(epochs)), BarColumn(),
            MofNCompleteColumn(), TextColumn("steps"), TimeElapsedColumn(), TextColumn("ETA"),
            TimeRemainingColumn(), console=self.console,
        )
        self.progress.start()
        total = (epochs - start_epoch) * steps_per_epoch
        self.task = self.progress.add_task("train", total=total, epoch=start_epoch + 1)

    def step(self) -> None:
        self.progress.advance(self.task)

    def epoch(self, row: dict[str, Any]) -> None:
        from rich.markup import escape

        self.progress.console.print(escape(_summary(row)))
        self.progress.update(self.task, epoch=row["epoch"] + 1)

    def message(self, text: str) -> None:
        from rich.markup import escape

        (self.progress.console if self.progress else self.console).print(escape(text))

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def make_reporter(mode: ProgressMode, is_main: bool) -> Reporter:
    """The reporter for this rank: silent on ranks other than 0."""
    if not is_main or mode == "none":
        return Reporter()
    if mode == "rich" or (mode == "auto" and sys.stderr.isatty()):
        return RichReporter()
    return PlainReporter()
