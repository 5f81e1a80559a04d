"""``recinet bench speed``: the paper's Table 5 figures for a task, measured on this machine."""

from __future__ import annotations

import math
from pathlib import Path

import typer

from recinet_cli.cli.common import console, console_err, print_plain


def _value(value: float | None, unit: str) -> str:
    if value is None or not math.isfinite(value):
        return "—"
    if unit == "params":
        return f"{value / 1e6:.2f} M"
    if unit == "structures/s":
        return f"{value:,.0f} {unit}"
    if unit == "h":
        return f"{value:.2f} h" if value >= 0.1 else f"{value * 60:.1f} min"
    if unit == "s":
        return f"{value:.2f} s" if value < 100 else f"{value:,.0f} s"
    return f"{value:.2f} {unit}" if value >= 0.1 else f"{value:.3f} {unit}"


def _log(text: str) -> None:
    console_err.print(text, highlight=False, soft_wrap=True, markup=False)


def speed(
    task: str = typer.Option("matbench:jdft2d", "--task", help="DATASET:PROP\\[,PROP...] (its paper preset model)."),
    data: Path | None = typer.Option(None, "--data", help="Local data for the dataset plugin (as recinet train)."),
    slice_steps: int = typer.Option(
        10, "--slice", min=1, help="Timed training steps (batches) on the training split, extrapolated to an epoch."
    ),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when available), cpu, cuda or cuda:N."),
    json_out: Path = typer.Option(
        Path("bench-speed.json"), "--json", help="JSON written after every section (what --resume reads)."
    ),
    resume: bool = typer.Option(False, "--resume", help="Keep the sections already measured in --json."),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Training and batched-inference batch size."),
    warmup: int = typer.Option(2, "--warmup", min=0, help="Untimed training steps before the slice."),
    featurize_n: int = typer.Option(1000, "--featurize-n", min=0, help="Structures featurized for the throughput."),
    infer_n: int = typer.Option(512, "--infer-n", min=1, help="Test-split structures timed at the batch size."),
    single_n: int = typer.Option(128, "--single-n", min=0, help="Of those, structures timed at batch size 1."),
    precision: str = typer.Option("auto", "--precision", help="Training and inference precision: auto, fp32 or bf16."),
    fastpath: bool = typer.Option(True, "--fastpath/--no-fastpath", help="Also time the previous formulation (fp32, concatenated conv, full multigraph) against the default, one epoch each."),
    hidden: int | None = typer.Option(None, "--hidden", hidden=True, help="Override the width (tests only)."),
    blocks: int | None = typer.Option(None, "--blocks", hidden=True, help="Override the blocks (tests only)."),
) -> None:
    """Table 5 of the paper on this machine: featurize, train/epoch, inference, parameters, memory."""
    from rich.table import Table

    from recinet_cli.bench.speed import PAPER_TABLE5, SpeedSettings, run_speed_bench

    settings = SpeedSettings(
        task=task, data=str(data) if data else None, device=device, batch_size=batch_size,
        slice_steps=slice_steps, warmup=warmup, featurize_n=featurize_n, infer_n=infer_n, single_n=single_n,
        hidden=hidden, blocks=blocks, precision=precision, fastpath=fastpath,
    )
    r = run_speed_bench(settings, json_path=json_out, resume=resume, log=_log)
    cfg = r.parameters.task_config if r.parameters else {}
    overrides = ", ".join(f"{k} {v}" for k, v in (("hidden", hidden), ("blocks", blocks)) if v is not None)
    title = (
        f"{r.task_label}: ReciNet hidden {cfg.get('hidden')}, {cfg.get('blocks')} blocks"
        f"{' (overridden: ' + overrides + ')' if overrides else ' (paper preset)'}; "
        f"ours: {r.device.label}; paper: {PAPER_TABLE5.device}, {PAPER_TABLE5.task}"
    )
    table = Table(title=title)
    table.add_column("figure")
    table.add_column("ours", justify="right")
    table.add_column("paper (A100)", justify="right")
    table.add_column("ratio", justify="right")
    for f in r.figures():
        paper = _value(f.paper, f.unit)
        if f.paper is not None and not f.comparable:
            paper += " *"
        table.add_row(f.name, _value(f.ours, f.unit), paper, "—" if f.ratio is None else f"{f.ratio:.2f}")
    console.print(table)
    print_plain("ratio = ours / paper; * the paper's figure is for its task "
                f"({PAPER_TABLE5.task}, {PAPER_TABLE5.train_structures:,} training structures): no ratio")
    if r.fastpath is not None:
        fp = Table(title=f"{r.task_label}: the previous formulation (fp32, \\[h_i||h_j||v_ij] conv, full multigraph) "
                         "vs the default fast path, same batches, one run")
        for col, just in (("figure", "left"), ("reference", "right"), ("fast (default)", "right"), ("ratio", "right")):
            fp.add_column(col, justify=just)  # type: ignore[arg-type]
        for row in r.fastpath.rows():
            fp.add_row(*row)
        console.print(fp)
    if r.resumed:
        print_plain(f"resumed from {json_out}: {', '.join(r.resumed)}")
    print_plain(f"wrote {json_out}")
