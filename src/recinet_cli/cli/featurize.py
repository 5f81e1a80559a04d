"""``recinet featurize``: parse options, call :func:`recinet_cli.featurize.featurize`, render."""

from __future__ import annotations

import os
import sys
import time
from enum import Enum
from pathlib import Path

import typer

from recinet_cli.cli.common import console, console_err, print_error, print_failure, print_plain


class IdFrom(str, Enum):
    stem = "stem"
    name = "name"
    parent = "parent"
    path = "path"


class Disorder(str, Enum):
    fail = "fail"
    majority = "majority"


def featurize(
    inputs: list[str] = typer.Argument(
        ..., help="Structure files, directories (searched recursively) or glob patterns.", show_default=False
    ),
    output: Path = typer.Option(..., "-o", "--output", help="HDF5 file to write (appended to / resumed if it exists)."),
    workers: int = typer.Option(0, "--workers", "-j", help="Worker processes (0 = all cores)."),
    labels: Path | None = typer.Option(
        None, "--labels", help="CSV of targets: headerless 'id,value[,value]' or a header with units, e.g. 'bandgap (eV)'; an optional 'split' column (train/val/test, empty = none) is stored as the file's split."
    ),
    id_from: IdFrom = typer.Option(IdFrom.stem, "--id-from", help="Structure id: file stem, file name, parent directory or relative path."),
    suffix_duplicates: bool = typer.Option(False, "--suffix-duplicates", help="Make duplicate ids unique (-2, -3...) instead of failing."),
    disorder: Disorder = typer.Option(Disorder.fail, "--disorder", help="Partially occupied sites: fail, or keep the majority species."),
    max_neighbors: int = typer.Option(16, "--max-neighbors", min=1, help="k of the k-nearest-neighbour graph."),
    cutoff: float = typer.Option(4.0, "--cutoff", min=0.1, help="Initial neighbour search radius in Å, as in the reference (it grows until every atom has k candidates, so the edges do not depend on it)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start over: delete the output and any interrupted run."),
    shard_size: int = typer.Option(512, "--shard-size", min=1, hidden=True, help="Structures per checkpoint shard."),
) -> None:
    """Featurize structure files into periodic graphs in an HDF5 store.

    Every input is either stored or listed as failed (in the file and in OUT.failed.csv).
    An interrupted run resumes when the same command is run again.
    """
    from recinet_cli.featurize import FeaturizeConfig
    from recinet_cli.featurize import featurize as run
    from recinet_cli.structures.graph import GraphParams

    cfg = FeaturizeConfig(
        inputs=tuple(inputs),
        output=os.fspath(output),
        params=GraphParams(cutoff=cutoff, max_neighbors=max_neighbors),
        workers=workers if workers > 0 else (os.cpu_count() or 1),
        id_mode=id_from.value,
        suffix_duplicates=suffix_duplicates,
        disorder=disorder.value,
        labels=os.fspath(labels) if labels else None,
        overwrite=overwrite,
        shard_size=shard_size,
    )
    report = run(cfg, progress=make_progress("featurizing"))
    for f in report.failures:
        where = f.source + (f" [{f.id}]" if f.id and f.id not in f.source else "")
        print_failure(where, f.reason)
    _summary(report)
    if report.total_stored == 0:
        print_error(f"no structure could be stored (see {report.failures_csv})")
        raise typer.Exit(1)


def _summary(report: object) -> None:
    from rich.markup import escape
    from rich.table import Table

    r = report
    table = Table(title=escape(f"recinet featurize → {r.output}"), show_header=True, header_style="bold")
    table.add_column("")
    table.add_column("this run", justify="right")
    table.add_column("in file", justify="right")
    table.add_row("input files read", f"{r.files_read:,}", "")
    if r.files_skipped:
        table.add_row("input files already done", f"{r.files_skipped:,}", "")
    table.add_row("structures stored", f"{r.stored:,}", f"{r.total_stored:,}")
    table.add_row("failed", f"{r.failed:,}", f"{r.total_failed:,}")
    if r.unlabelled:
        table.add_row("stored without a label", f"{r.unlabelled:,}", "")
    table.add_row("atoms", f"{r.atoms:,}", "")
    table.add_row("edges", f"{r.edges:,}", "")
    rate = r.stored / r.seconds if r.seconds > 0 else 0.0
    table.add_row("time", f"{r.seconds:.1f} s ({rate:,.0f} structures/s)", "")
    console.print(table)
    if r.total_failed:
        print_plain(f"failures listed in {r.failures_csv}")


class _RichProgress:
    """Rich progress bar with rate and ETA (terminal) or plain periodic lines (pipes, CI)."""

    def __init__(self, label: str) -> None:
        self.label = label
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
            console_err.print(f"resuming: {skipped:,} input files already done", highlight=False)
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
                TextColumn("{task.fields[rate]} files/s"),
                TextColumn("{task.fields[stats]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=console_err,
                transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task(self.label, total=total_files, rate="-", stats="")

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
                stats=f"{self.structures:,} stored, {self.failed:,} failed",
            )
        elif now - self._last >= 5.0 or self.done == self.total:
            self._last = now
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            print(
                f"{self.label}: {self.done}/{self.total} files, {self.structures} stored, "
                f"{self.failed} failed, {rate:.1f} files/s, ETA {eta:.0f} s",
                file=sys.stderr, flush=True,
            )

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def make_progress(label: str) -> _RichProgress:
    return _RichProgress(label)
