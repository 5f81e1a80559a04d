"""``recinet export``: parse options, call :func:`recinet_cli.artifact.export_artifact`, render."""

from __future__ import annotations

import math
from collections.abc import Sequence
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from recinet_cli.cli.common import console, print_plain

if TYPE_CHECKING:
    from recinet_cli.artifact import ParityRow


class ExportFormat(str, Enum):
    torchscript = "torchscript"
    torch_export = "torch-export"
    onnx = "onnx"


def export(
    model: str = typer.Argument(
        ..., help="Model name in the store, a bundle file, or a directory holding model.safetensors.",
        show_default=False, metavar="MODEL",
    ),
    fmt: ExportFormat = typer.Option(
        ..., "--format", "-f",
        help="torchscript (.pt, torch.jit.load), torch-export (.pt2, torch.export.load) or onnx (.onnx, onnxruntime; needs pip install \"recinet\\[onnx]\").",
        show_default=False,
    ),
    output: Path | None = typer.Option(
        None, "-o", "--output", help="File to write (default: MODEL_NAME.pt / .pt2 / .onnx in the current directory).",
        show_default=False, metavar="PATH",
    ),
    structures: list[Path] | None = typer.Option(
        None, "--structures",
        help="Structure file or directory for the parity check (repeatable; default: the 7 sample JARVIS POSCARs shipped with recinet).",
        show_default=False, metavar="PATH",
    ),
    tolerance: float = typer.Option(
        1e-4, "--tolerance", min=0.0,
        help="Allowed max |exported - eager| per property, as a fraction of its training std.",
    ),
) -> None:
    """Export a trained model (graph tensors in, properties out) for plain torch or onnxruntime.

    The exported file is loaded back and checked against eager PyTorch on real structures; it
    is written to its final name only if every property agrees within the tolerance.
    """
    from recinet_cli.artifact import ParityError, export_artifact

    try:
        report = export_artifact(model, fmt.value, output, structures or None, tolerance)
    except ParityError as exc:
        _render(exc.rows, fmt.value, exc.n_structures)
        raise
    _render(report.parity, report.format, len(report.structures))
    print_plain(f"wrote {report.path} ({report.format}, {report.seconds:.1f} s)")


def _render(rows: Sequence[ParityRow], fmt: str, n_structures: int | None) -> None:
    from rich.table import Table
    from rich.text import Text

    on = f" on {n_structures} structure{'' if n_structures == 1 else 's'}" if n_structures else ""
    table = Table(title=f"parity: {fmt} vs eager PyTorch{on}", title_justify="left")
    for col in ("property", "unit", "max |diff|", "tolerance", "result"):
        table.add_column(col, justify="right" if col in ("max |diff|", "tolerance") else "left")
    for r in rows:
        diff = "nan" if math.isnan(r.max_diff) else f"{r.max_diff:.3g}"
        table.add_row(Text(r.property), Text(r.unit), diff, f"{r.tol:.3g}",
                      Text("ok", style="green") if r.ok else Text("FAILED", style="bold red"))
    console.print(table)
