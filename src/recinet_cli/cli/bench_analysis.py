"""``recinet bench moe`` and ``recinet bench curves``: analysis of trained models and runs.

Registered on ``bench_app`` at the end of :mod:`recinet_cli.cli.bench`. Both print rich
tables, optionally write JSON (``--json``) and a figure (``--plot``, needs ``recinet[plot]``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from recinet_cli.cli.common import console, print_failure, print_plain, write_json

if TYPE_CHECKING:
    from recinet_cli.bench.curves import CurvesSummary
    from recinet_cli.bench.moe import MoEAnalysis

#: Read failures listed one per line before the rest are only counted.
_MAX_LISTED_FAILURES = 10


def _check_plot(plot: Path | None) -> None:
    """Fail fast (before any model or file work) on a missing extra or a bad --plot name."""
    if plot is not None:
        from recinet_cli.bench.plotting import check_plot_path, require_matplotlib

        check_plot_path(plot)
        require_matplotlib()


def moe(
    model: str = typer.Argument(..., help="Model store name, bundle file or run directory (an mt-moe model).",
                                show_default=False),
    structures: list[str] | None = typer.Argument(
        None, help="Structure files, directories or glob patterns \\[the 70 example JARVIS POSCARs].", show_default=False,
    ),
    recorded: bool = typer.Option(
        False, "--recorded", help="Report the selection counts stored in the bundle (accumulated in training) instead of running structures.",
    ),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Structures per forward pass."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when available), cpu, cuda or cuda:N."),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the figures to this JSON file."),
    plot: Path | None = typer.Option(None, "--plot", help="Write the Figure 4 heat maps to this .png/.pdf/.svg."),
) -> None:
    """MoE routing of a ReciNet-MT model (paper Figure 4): per-task expert-selection
    frequencies and the task-by-task cosine similarity of those frequencies."""
    from recinet_cli.bench.moe import plot_moe, run_moe_analysis

    _check_plot(plot)
    a = run_moe_analysis(model, structures or [], batch_size=batch_size, device=device, recorded=recorded,
                         log=print_plain)
    for where, reason in a.failures[:_MAX_LISTED_FAILURES]:
        print_failure(where, reason)
    if len(a.failures) > _MAX_LISTED_FAILURES:
        print_failure(f"{len(a.failures) - _MAX_LISTED_FAILURES} more structures", "skipped")
    _moe_tables(a)
    write_json(json_out, a.as_dict())
    if plot is not None:
        print_plain(f"wrote {plot_moe(a, plot)}")


def _moe_tables(a: MoEAnalysis) -> None:
    from rich.markup import escape
    from rich.table import Table

    where = f"{a.structures} structures" if a.source == "structures" else "counts recorded in training"
    # experts as rows: 15 experts do not fit across a terminal, five tasks do
    print_plain(f"expert selection frequency over {where} (top-{a.top_k} of {a.n_experts} experts per task; "
                f"each task's column sums to 1, its {a.top_k} most selected experts in bold):")
    freq = Table()
    freq.add_column("expert")
    for name in a.targets:
        freq.add_column(escape(name), justify="right")
    tops = [set(a.frequencies[t].argsort()[::-1][: a.top_k].tolist()) for t in range(len(a.targets))]
    for e in range(a.n_experts):
        cells = [f"[bold]{a.frequencies[t, e]:.3f}[/]" if e in tops[t] else f"{a.frequencies[t, e]:.3f}"
                 for t in range(len(a.targets))]
        freq.add_row(f"E{e + 1}", *cells)
    console.print(freq)
    print_plain("task similarity (cosine of the tasks' selection-frequency vectors, paper Figure 4):")
    sim = Table()
    sim.add_column("")
    for name in a.targets:
        sim.add_column(escape(name), justify="right")
    for t, name in enumerate(a.targets):
        sim.add_row(escape(name), *(f"{v:.3f}" for v in a.similarity[t]))
    console.print(sim)
    pair = a.most_similar_pair()
    if pair is not None:
        print_plain(f"most similar tasks: {pair[0]} and {pair[1]} ({pair[2]:.3f})")


def curves(
    run: Path = typer.Argument(..., help="A `recinet train` run directory (or its metrics.csv).", show_default=False),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the summary and the curves to this JSON file."),
    plot: Path | None = typer.Option(None, "--plot", help="Write the learning curves to this .png/.pdf/.svg."),
) -> None:
    """Learning curves of a training run: loss, learning rate and MAE per property by epoch;
    best epoch (as the trainer picks it) and best validation MAE per property."""
    from recinet_cli.bench.curves import load_curves, plot_curves

    _check_plot(plot)
    s = load_curves(run)
    _curves_tables(s)
    write_json(json_out, s.as_dict())
    if plot is not None:
        print_plain(f"wrote {plot_curves(s, plot)}")


def _fmt(v: float | int | None, spec: str = ".4g") -> str:
    return "n/a" if v is None else format(v, spec)


def _curves_tables(s: CurvesSummary) -> None:
    from rich.markup import escape
    from rich.table import Table

    d = s.as_dict()
    summary = Table(title=f"learning curves: {escape(s.run)}")
    summary.add_column("")
    summary.add_column("value", justify="right")
    rows = [
        ("epochs", str(d["epochs"])),
        (f"best epoch (lowest {d['best_epoch_by']})", _fmt(d["best_epoch"], "d")),
    ]
    if d["results_best_epoch"] is not None:
        rows.append(("best epoch in results.json", str(d["results_best_epoch"])))
    rows += [
        ("best val loss (epoch)", f"{_fmt(d['best_val_loss'])} ({_fmt(d['best_val_loss_epoch'], 'd')})"),
        ("final train / val loss", f"{_fmt(d['final_train_loss'])} / {_fmt(d['final_val_loss'])}"),
        ("final lr (max)", f"{_fmt(d['final_lr'], '.3g')} ({_fmt(d['max_lr'], '.3g')})"),
        ("training time, all epochs (s)", _fmt(d["time_s"], ".1f")),
    ]
    for name, value in rows:
        summary.add_row(escape(name), escape(value))
    console.print(summary)
    if not s.properties:
        return
    props = Table(title="validation MAE per property")
    for col in ("property", "unit", "best val MAE", "at epoch", "at best epoch", "final val MAE", "final train MAE"):
        props.add_column(col, justify="left" if col in ("property", "unit") else "right")
    for p, v in d["properties"].items():
        props.add_row(escape(p), escape(v["unit"]), _fmt(v["best_val_mae"]), _fmt(v["best_val_mae_epoch"], "d"),
                      _fmt(v["val_mae_at_best_epoch"]), _fmt(v["final_val_mae"]), _fmt(v["final_train_mae"]))
    console.print(props)
