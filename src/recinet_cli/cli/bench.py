"""``recinet bench``: benchmark commands that print figures (and write JSON)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import typer

from recinet_cli.cli.common import console, print_plain, write_json

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
    write_json(json_out, r.as_dict())


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
    write_json(json_out, r.as_dict())


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
    write_json(json_out, r.as_dict())


@bench_app.command("predict")
def predict(
    data: Path = typer.Option(_default("mp", "mp_36k.jsonl.gz"), "--data", help="MP jsonl.gz with a 'cif' field."),
    n: int = typer.Option(1000, "--n", "-n", min=1, help="Structures timed end to end (the first N, as CIF files)."),
    model: str | None = typer.Option(
        None, "--model", help="Model name, group or bundle path (default: an untrained paper-size model)."
    ),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when available), cpu, cuda or cuda:N."),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Structures per forward pass."),
    workers: int | None = typer.Option(
        None, "--workers", "-j", min=0, help="Featurization processes (0 = in the main process) \\[as recinet predict]."
    ),
    warmup: int = typer.Option(16, "--warmup", min=0, help="Structures of the untimed warm-up run (reported as 'cold')."),
    single: int = typer.Option(200, "--single", min=0, help="Structures timed at batch size 1 (0 = skip)."),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the figures to this JSON file."),
) -> None:
    """End-to-end predict throughput from CIF files: parse / featurize / model split, FLOP utilisation, ms/material."""
    from recinet_cli.bench.model import UTILISATION_GOAL, format_rate
    from recinet_cli.bench.predict import (
        MS_PER_MATERIAL_GOAL,
        PAPER_MS_PER_MATERIAL,
        run_predict_bench,
    )
    from recinet_cli.errors import RecinetError

    if not data.exists():
        raise RecinetError(f"{data}: no such file (pass --data)")
    r = run_predict_bench(
        str(data), n, model=model, device=device, batch_size=batch_size, workers=workers, warmup=warmup,
        single=single, log=print_plain,
    )
    e, c, f, b, s = r.end_to_end, r.warmup, r.featurize_only, r.batched, r.single
    weights = "untrained paper-size ReciNet (throughput does not depend on the weights)" if r.untrained else r.model
    cfg = r.model_config
    where = f"{r.device}, {r.threads} torch threads, {r.workers} worker process(es)"
    _print_figures(
        f"recinet predict end to end: {e.inputs:,} MP CIF files, batch {r.batch_size}, {where}; "
        f"model: {weights} (hidden {cfg['hidden']}, {cfg['blocks']} blocks, {cfg['kset']})",
        [
            ("throughput (structures/s, wall)", f"{e.structures_per_second:,.1f}"),
            ("wall (s)", f"{e.wall_seconds:.2f}"),
            ("ms/structure, wall", f"{e.ms_per_structure:.1f}"),
            ("predicted / failed", f"{e.predicted:,} / {e.failed:,}"),
            ("atoms / edges per structure", f"{e.atoms / max(1, e.structures):.1f} / {e.edges / max(1, e.structures):.0f}"),
            ("parse, worker CPU (s; ms/structure)", f"{e.parse_seconds:.2f}; {e.per_structure_ms(e.parse_seconds):.2f}"),
            ("featurize, worker CPU (s; ms/structure)",
             f"{e.featurize_seconds:.2f}; {e.per_structure_ms(e.featurize_seconds):.2f}"),
            ("model stage, main process (s; ms/structure)",
             f"{e.model_seconds:.2f}; {e.per_structure_ms(e.model_seconds):.1f}"),
            ("main process outside the model stage (s)", f"{e.outside_model_seconds:.2f}"),
            (f"cold warm-up run, excluded ({c.inputs} structures, s)", f"{c.wall_seconds:.2f}"),
        ],
    )
    feat_split = (
        f"{f.parse_seconds:.2f} + {f.featurize_seconds:.2f}"
        if f.parse_seconds is not None and f.featurize_seconds is not None else "n/a (pool)"
    )
    rows = [
        (f"featurize only, {f.processes} process(es){' (in process)' if f.in_process else ''} (s)", f"{f.wall_seconds:.2f}"),
        ("featurize only: parse + featurize (s)", feat_split),
        ("featurize only (structures/s)", f"{f.structures_per_second:,.0f}"),
        ("featurize-only wall / end-to-end wall", f"{r.featurize_share_of_wall:.1%}"),
        (f"model only, batch {b.batch_size}: forward (s)", f"{b.forward_seconds:.2f}"),
        (f"model only, batch {b.batch_size}: collate + k-vectors (s)", f"{b.collate_seconds:.2f} + {b.prepare_seconds:.2f}"),
        (f"ms/material batched ({b.batch_size}), forward", f"{b.ms_per_material:.2f}"),
        (f"ms/material batched ({b.batch_size}), with collate + k-vectors", f"{b.ms_per_material_with_inputs:.2f}"),
    ]
    if s is not None:
        rows.append((f"ms/material at batch 1, forward (first {s.structures} structures)", f"{s.ms_per_material:.2f}"))
    if r.batched_ms_same_structures is not None and s is not None:
        rows.append((f"ms/material batched ({b.batch_size}), forward, same {s.structures} structures",
                     f"{r.batched_ms_same_structures:.2f}"))
    rows.append(("paper, batched GPU (ms/material); paper / ours", f"{PAPER_MS_PER_MATERIAL}; {r.speedup_vs_paper:.2f}x"))
    if r.ms_goal_applies:
        rows.append((f"goal <= {MS_PER_MATERIAL_GOAL} ms/material batched", "met" if r.ms_goal_met else "NOT met"))
    else:
        rows.append((f"goal <= {MS_PER_MATERIAL_GOAL} ms/material batched", f"GPU only (this run: {r.device})"))
    _print_figures(f"references measured in the same run ({e.inputs:,} structures)", rows)
    m, k, nn = r.matmul_shape
    shares = ", ".join(f"(m,{x['k']})@({x['k']},{x['n']}) {x['share']:.0%}" for x in r.matmul_shares[:3])
    flop_rows = [
        ("forward FLOPs per structure (counted over every batch)", f"{b.flops / max(1, b.structures) / 1e9:.2f} GFLOP"),
        ("matmul FLOP shares by shape", shares),
        (f"achieved, batch {b.batch_size} forward", format_rate(b.achieved_flops)),
        (f"fp32 matmul ({m}x{k})@({k}x{nn}), median", format_rate(r.matmul_rate)),
        (f"FLOP utilisation, batch {b.batch_size} forward (goal >= {UTILISATION_GOAL:.0%})",
         f"{r.utilisation:.1%} ({'met' if r.goal_met else 'NOT met'})"),
        ("FLOP utilisation, per batch vs the bracketing matmuls (median)", f"{r.utilisation_paired:.1%}"),
        ("FLOP utilisation, end-to-end model stage", f"{r.utilisation_model_stage:.1%}"),
    ]
    if r.utilisation_single is not None:
        flop_rows.append(("FLOP utilisation, batch 1 forward", f"{r.utilisation_single:.1%}"))
    _print_figures("FLOP utilisation (matrix-product FLOPs vs the fp32 matmul rate, same run)", flop_rows)
    write_json(json_out, r.as_dict())


# Commands whose code lives in their own modules (kept small; registered here, in menu order).
from recinet_cli.cli.bench_accuracy import ablation, accuracy  # noqa: E402
from recinet_cli.cli.bench_analysis import curves, moe  # noqa: E402
from recinet_cli.cli.bench_scaling import scaling  # noqa: E402
from recinet_cli.cli.bench_speed import speed  # noqa: E402

bench_app.command("speed")(speed)
bench_app.command("scaling")(scaling)
bench_app.command("accuracy")(accuracy)
bench_app.command("ablation")(ablation)
bench_app.command("moe")(moe)
bench_app.command("curves")(curves)
