"""``recinet bench scaling``: time and peak memory against atoms per cell (thin CLI wrapper)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from recinet_cli.cli.common import console, console_err, print_plain

if TYPE_CHECKING:
    from recinet_cli.bench.scaling import ScalingResult

_DEFAULT_SIZES = "1,8,27,64,125,216,512,1000"


def _int_list(text: str, what: str) -> list[int]:
    try:
        values = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        values = []
    if not values or any(n < 1 for n in values):
        raise typer.BadParameter(f"expected comma-separated positive {what}, got {text!r}")
    return list(dict.fromkeys(values))


def _ksets(text: str) -> list[str]:
    values = list(dict.fromkeys(s.strip() for s in text.split(",") if s.strip()))
    if not values or any(v not in ("sphere", "box") for v in values):
        raise typer.BadParameter(f"expected sphere and/or box (comma-separated), got {text!r}")
    return values


def scaling(
    sizes: str = typer.Option(_DEFAULT_SIZES, "--sizes", help="Target atoms per cell (supercells of the base cell)."),
    device: str | None = typer.Option(None, "--device", help="cpu, cuda or cuda:N (default: cuda when available)."),
    kset: str = typer.Option("sphere,box", "--kset", help="k-sets to measure: sphere, box or both."),
    repeats: int = typer.Option(5, "--repeats", help="Timed rounds per point (at least; more for millisecond cells)."),
    backward: bool = typer.Option(True, "--backward/--no-backward", help="Also time forward+backward."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the figures here (after every point)."),
    plot: Path | None = typer.Option(None, "--plot", help="Write a log-log PNG of time and memory (needs recinet\\[plot])."),
    resume: bool = typer.Option(False, "--resume", help="Reuse the points already measured in the --json file."),
    data: Path | None = typer.Option(
        None, "--data", help="JARVIS dft_3d-style json.gz \\[default: ../shared/data/jarvis/dft_3d_subset_1743.json.gz]."
    ),
    cell: str | None = typer.Option(
        None, "--cell", help="JARVIS id of the base cell (default: the densest 1-atom cell with sphere k-vectors)."
    ),
    fit_min: int = typer.Option(27, "--fit-min", help="Smallest size (atoms) entering the exponent fits."),
    threads: int | None = typer.Option(None, "--threads", help="torch intra-op threads (default: torch's choice)."),
    hidden: int = typer.Option(256, "--hidden", hidden=True, help="Model width (tests)."),
    blocks: int = typer.Option(4, "--blocks", hidden=True, help="ReciNet blocks (tests)."),
    budget: float = typer.Option(60.0, "--budget", hidden=True, help="Seconds of timed rounds per point and mode."),
) -> None:
    """Forward (and forward+backward) time and peak memory vs atoms per cell: whole model, local
    part and reciprocal block, both k-sets, with fitted exponents."""
    from recinet_cli.bench.scaling import plot_scaling, require_matplotlib, run_scaling
    from recinet_cli.errors import RecinetError
    from recinet_cli.model.config import ModelConfig

    if data is None:
        from recinet_cli.cli.bench import _default

        data = _default("jarvis", "dft_3d_subset_1743.json.gz")
    if not data.exists():
        raise RecinetError(f"{data}: no such file (pass --data)")
    if plot is not None:
        require_matplotlib()  # fail before minutes of measuring
    result = run_scaling(
        str(data), _int_list(sizes, "atom counts"), _ksets(kset), device=device, repeats=repeats, backward=backward,
        config=ModelConfig(hidden=hidden, blocks=blocks), cell=cell, fit_min_atoms=fit_min, json_path=json_out,
        resume=resume, budget_seconds=budget, threads=threads,
        log=lambda line: console_err.print(line, highlight=False, markup=False, soft_wrap=True),
    )
    _print_tables(result)
    if json_out is not None:
        print_plain(f"wrote {json_out}")
    if plot is not None:
        plot_scaling(result, plot)
        print_plain(f"wrote {plot}")


def _short(value: float) -> str:
    """Three significant figures or so, without wasting columns: 0.123, 12.3, 1,234."""
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def _ms(value: float | None) -> str:
    return "-" if value is None else _short(value * 1e3)


def _mib(value: int | None) -> str:
    return "n/a" if value is None else _short(value / 2**20)


def _print_tables(r: ScalingResult) -> None:
    from rich.table import Table

    from recinet_cli.bench.scaling import COMPONENTS

    s = r.setup
    modes = list(s["modes"])
    label = {"forward": "fwd", "backward": "fwd+bwd"}
    console.print(
        f"supercells of {s['base_cell']} ({s['base_formula']}, {s['base_atoms']} atom(s), "
        f"{s['base_volume_per_atom']:.1f} Å³/atom); {s['device']}, {s['threads']} threads; model hidden "
        f"{s['model']['hidden']}, {s['model']['blocks']} blocks; times: fastest call of the rounds; "
        f"memory: {s['memory_description']}",
        highlight=False, markup=False, soft_wrap=True,
    )
    for ks in dict.fromkeys(p.kset for p in r.points):
        table = Table(title=f"{ks} k-set: time per call (ms) and peak memory (MiB)")
        table.add_column("atoms")
        table.add_column("E / K", justify="right")
        table.add_column("part", no_wrap=True, min_width=10)
        for mode in modes:
            table.add_column(f"{label[mode]} ms", justify="right")
        for mode in modes:
            table.add_column(f"{label[mode]} MiB", justify="right")
        for p in (p for p in r.points if p.kset == ks):
            cell = f"{p.atoms:,}\n({'x'.join(map(str, p.supercell))})"
            sizes = f"{p.edges:,} / {p.kvectors:,}"
            if p.error is not None:
                table.add_row(cell, sizes, p.error, *[""] * (2 * len(modes)), end_section=True)
                continue
            for i, comp in enumerate(COMPONENTS):
                table.add_row(
                    cell if i == 0 else "", sizes if i == 0 else "", comp,
                    *(_ms(p.min_seconds[m][comp]) for m in modes),
                    *(_mib(p.peak_bytes[m][comp]) for m in modes),
                    end_section=i == len(COMPONENTS) - 1,
                )
        console.print(table)

    fits = Table(title=f"fitted exponent b of value = a·N^b over sizes >= {s['fit_min_atoms']} atoms")
    fits.add_column("k-set")
    fits.add_column("part", no_wrap=True, min_width=10)
    fits.add_column("sizes", no_wrap=True)
    for quantity in ("time", "memory"):
        for mode in modes:
            fits.add_column(f"{quantity} {label[mode]}", justify="right")
    for ks in dict.fromkeys(p.kset for p in r.points):
        for comp in COMPONENTS:
            cells: list[str] = []
            used: list[int] = []
            for quantity in ("time", "memory"):
                for mode in modes:
                    f = r.fit(ks, mode, comp, quantity)
                    if f is not None and quantity == "time" and f.exponent is not None:
                        used = f.atoms
                    cells.append("-" if f is None or f.exponent is None else f"{f.exponent:.2f}")
            sizes = f"{min(used):,}-{max(used):,} ({len(used)})" if used else "too few"
            fits.add_row(ks, comp, sizes, *cells)
    console.print(fits)
