"""``recinet bench``: benchmark commands that print figures (and write JSON)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import typer

from recinet_cli.cli.common import console, print_plain

bench_app = typer.Typer(help="Benchmarks: graph construction, featurize throughput.", no_args_is_help=True)

_SHARED = Path(__file__).resolve().parents[3].parent / "shared" / "data"


def _default(*parts: str) -> Path:
    return _SHARED.joinpath(*parts)


def _print_figures(title: str, rows: list[tuple[str, str]]) -> None:
    """A two-column rich table of named figures."""
    from rich.table import Table

    table = Table(title=title)
    table.add_column("")
    table.add_column("value", justify="right")
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)


def _write_json(path: Path | None, payload: dict[str, object]) -> None:
    if path is not None:
        path.write_text(json.dumps(payload, indent=2, default=float))
        print_plain(f"wrote {path}")


@bench_app.command("graphs")
def graphs(
    data: Path = typer.Option(
        _default("jarvis", "dft_3d_subset_1743.json.gz"), "--data", help="JARVIS dft_3d-style json.gz."
    ),
    limit: int = typer.Option(0, "--limit", help="Use only the first N structures (0 = all)."),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the figures to this JSON file."),
) -> None:
    """Graph construction: ours vs the jarvis-tools reference, same structures, same run."""
    from recinet_cli.bench.graphs import run_graph_bench
    from recinet_cli.errors import RecinetError
    from recinet_cli.structures.graph import GraphParams

    if not data.exists():
        raise RecinetError(f"{data}: no such file (pass --data)")
    r = run_graph_bench(str(data), limit or None)
    params = GraphParams()
    _print_figures(
        f"graph construction on {r.structures:,} JARVIS structures ({r.atoms:,} atoms, {r.edges:,} edges)",
        [
            ("ours (s)", f"{r.seconds_ours:.3f}"),
            ("jarvis-tools reference (s)", f"{r.seconds_reference:.3f}"),
            ("speed-up", f"{r.speedup:.1f}x"),
            ("identical edge multisets", f"{r.identical:,}"),
            (f"differ only by ties within tie_tol={params.tie_tol:g} Å", f"{r.tie_supersets:,}"),
            ("other differences", f"{r.other_differences:,}"),
            ("max |tie distance - k-th distance| (Å)", f"{r.max_tie_gap:.2e}"),
            ("max edge-length difference (Å)", f"{r.max_distance_error:.2e}"),
        ],
    )
    _write_json(json_out, r.as_dict())


@bench_app.command("featurize")
def featurize(
    data: Path = typer.Option(_default("mp", "mp_36k.jsonl.gz"), "--data", help="MP jsonl.gz with a 'cif' field."),
    n: int = typer.Option(5000, "-n", help="Number of structures (written as CIF files)."),
    workers: int = typer.Option(0, "--workers", "-j", help="Worker processes for both sides (0 = all cores)."),
    workdir: Path | None = typer.Option(None, "--workdir", help="Where to write the CIFs and outputs (default: a temp dir)."),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the figures to this JSON file."),
) -> None:
    """Featurize throughput from CIF files vs the pymatgen parse-only floor; peak memory by size."""
    from recinet_cli.bench.featurize import run_featurize_bench
    from recinet_cli.errors import RecinetError

    if not data.exists():
        raise RecinetError(f"{data}: no such file (pass --data)")
    w = workers or (os.cpu_count() or 1)
    with tempfile.TemporaryDirectory(prefix="recinet-bench-") as tmp:
        r = run_featurize_bench(str(data), n, w, str(workdir or tmp))
    _print_figures(
        f"featurize {r.structures:,} MP CIF files with {w} workers",
        [
            ("parse-only floor (s)", f"{r.floor_seconds:.2f}"),
            ("recinet featurize (s)", f"{r.featurize_seconds:.2f}"),
            ("ratio (goal <= 1.5)", f"{r.ratio:.2f}"),
            ("throughput (structures/s)", f"{r.structures / r.featurize_seconds:,.0f}"),
            *((f"peak RSS, {k:,} structures (MiB)", f"{mb:,.0f}") for k, mb in sorted(r.peak_rss_mb.items())),
        ],
    )
    _write_json(json_out, r.as_dict())
