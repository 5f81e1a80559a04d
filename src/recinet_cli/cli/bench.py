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


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        sizes = []
    if not sizes or any(n < 1 for n in sizes):
        raise typer.BadParameter(f"expected comma-separated positive atom counts, got {text!r}")
    return sizes


@bench_app.command("model")
def model(
    data: Path = typer.Option(
        _default("jarvis", "dft_3d_subset_1743.json.gz"), "--data", help="JARVIS dft_3d-style json.gz."
    ),
    batch_size: int = typer.Option(64, "--batch-size", help="Structures per training batch."),
    steps: int = typer.Option(5, "--steps", help="Timed training steps (after 2 warm-up steps)."),
    sizes: str = typer.Option("5,50,200,500,1000", "--sizes", help="Supercell sizes (atoms) for the reciprocal share."),
    device: str | None = typer.Option(None, "--device", help="cpu or cuda (default: cuda when available)."),
    blocks: int = typer.Option(4, "--blocks", help="ReciNet blocks (hidden 256, sphere k-set otherwise default)."),
    cell: str | None = typer.Option(None, "--cell", help="JARVIS id of the supercells' base cell (default: first cubic ABO3)."),
    profile: bool = typer.Option(False, "--profile", help="Also print torch.profiler top ops."),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the figures to this JSON file."),
) -> None:
    """Model training throughput and FLOP utilisation, reciprocal-block time share, bf16 check."""
    from recinet_cli.bench.model import (
        BF16_LOSS_GOAL,
        SHARE_GOAL,
        SHARE_GOAL_MAX_ATOMS,
        UTILISATION_GOAL,
        format_rate,
        run_model_bench,
    )
    from recinet_cli.errors import RecinetError

    if not data.exists():
        raise RecinetError(f"{data}: no such file (pass --data)")
    if device not in (None, "cpu", "cuda"):
        raise RecinetError(f"--device must be cpu or cuda, got {device!r}")
    r = run_model_bench(
        str(data), batch_size, steps, sizes=_sizes(sizes), device=device, blocks=blocks, cell=cell,
        profile=profile, log=print_plain,
    )
    t = r.throughput
    m, k, n = t.matmul_shape
    _print_figures(
        f"training step: {t.batch_size} JARVIS structures ({t.atoms:,} atoms, {t.edges:,} edges, "
        f"{t.kvectors:,} k-vectors, {t.pairs:,} pairs), {r.config['blocks']} blocks, {t.device}, "
        f"{t.threads} threads",
        [
            ("step time, median (s)", f"{t.step_median_seconds:.3f}"),
            ("throughput (graphs/s)", f"{t.graphs_per_second:,.1f}"),
            ("FLOPs per step (fwd+bwd, counted)", f"{t.flops_per_step / 1e9:,.2f} GFLOP"),
            ("achieved", format_rate(t.achieved_flops)),
            (f"fp32 matmul ({m}x{k})@({k}x{n}), median", format_rate(t.matmul_rate)),
            (f"FLOP utilisation (goal >= {UTILISATION_GOAL:.0%})", f"{t.utilisation:.1%}"),
            ("FLOP utilisation, paired per step", f"{t.utilisation_paired:.1%}"),
        ],
    )
    rows = []
    for s in r.shares:
        goal = "" if not s.goal_applies else (" ok" if s.goal_met else " OVER")
        label = f"{s.kset}, {s.atoms:,} atoms ({'x'.join(map(str, s.supercell))}), K={s.kvectors:,}, P={s.pairs:,}"
        if s.error is not None:
            rows.append((label, s.error))
        else:
            rows.append((label, f"{s.share:.1%} of {s.forward_seconds:.3f} s{goal}"))
    _print_figures(
        f"reciprocal share of the eval forward, supercells of {r.base_cell} ({r.base_formula}); "
        f"goal <= {SHARE_GOAL:.0%} up to {SHARE_GOAL_MAX_ATOMS} atoms",
        rows,
    )
    a = r.autocast
    if a.skipped is not None:
        _print_figures("bf16 autocast", [("bf16 vs fp32 loss", a.skipped)])
    else:
        _print_figures(
            "bf16 autocast (reciprocal phases and sums in fp32)",
            [
                ("loss fp32", f"{a.loss_fp32:.6f}"),
                ("loss bf16 autocast", f"{a.loss_autocast:.6f}"),
                (f"relative difference (goal < {BF16_LOSS_GOAL:.0%})", f"{a.relative_loss_difference:.3%}"),
                ("gradient cosine similarity", f"{a.gradient_cosine:.5f}"),
                ("reciprocal phases and sums in fp32", str(a.reciprocal_fp32)),
                ("bf16 throughput (graphs/s)", f"{a.graphs_per_second:,.1f}"),
                ("bf16 matmul, median", format_rate(a.matmul_rate or float("nan"))),
                ("bf16 FLOP utilisation", f"{a.utilisation:.1%}"),
            ],
        )
    for name, ops in r.profiles.items():
        _print_figures(
            f"top ops: {name}", [(o["op"], f"{o['self_ms']:,.1f} ms ({o['share']:.0%}, {o['calls']} calls)") for o in ops]
        )
    _write_json(json_out, r.as_dict())
