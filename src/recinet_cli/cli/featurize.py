"""``recinet featurize``: parse options, call :func:`recinet_cli.featurize.featurize`, render."""

from __future__ import annotations

import os
from enum import Enum
from pathlib import Path

import typer

from recinet_cli.cli.common import console, print_error, print_failure, print_plain
from recinet_cli.cli.progress import make_progress


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
        None, "--labels", help="CSV of targets: headerless 'id,value\\[,value]' or a header with units, e.g. 'bandgap (eV)'; an optional 'split' column (train/val/test, empty = none) is stored as the file's split."
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
    report = run(cfg, progress=make_progress("featurizing", "input files"))
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
