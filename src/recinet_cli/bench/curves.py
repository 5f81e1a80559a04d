"""``recinet bench curves``: learning curves of a training run directory.

Reads ``RUN/metrics.csv`` (one row per epoch, written by :mod:`recinet_cli.train.engine`:
``epoch, step, lr, time_s, train_loss, val_loss, train_mae_<p>..., val_mae_<p>..., val_score``)
and, when present, ``RUN/results.json`` (the epoch whose weights the bundle holds). The *best
epoch* is chosen as the trainer chooses it: the lowest ``val_score`` (the validation MAE for
one property; the mean of MAE / training std for several), first epoch on ties; files without
``val_score`` fall back to the lowest ``val_loss``.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recinet_cli.errors import RecinetError

__all__ = ["METRICS_FILE", "CurvesSummary", "load_curves", "plot_curves"]

METRICS_FILE = "metrics.csv"
_REQUIRED = ("epoch", "val_loss")


def _argmin(values: list[float]) -> int | None:
    """Index of the smallest finite value (the first on ties), None when there is none."""
    best: int | None = None
    for i, v in enumerate(values):
        if math.isfinite(v) and (best is None or v < values[best]):
            best = i
    return best


@dataclass
class CurvesSummary:
    """Learning curves of one run and their summary figures.

    Attributes:
        series: every numeric column of metrics.csv, one value per epoch (NaN where missing).
        properties: the property names (from the ``val_mae_<p>`` columns), units alongside
            when ``results.json`` names them.
    """

    run: str
    metrics_path: str
    series: dict[str, list[float]]
    properties: list[str]
    units: dict[str, str] = field(default_factory=dict)
    results_best_epoch: int | None = None

    @property
    def epochs(self) -> list[int]:
        return [int(e) for e in self.series["epoch"]]

    @property
    def best_by(self) -> str:
        score = self.series.get("val_score")
        return "val_score" if score is not None and _argmin(score) is not None else "val_loss"

    def best_index(self, column: str | None = None) -> int | None:
        return _argmin(self.series.get(column or self.best_by, []))

    @property
    def best_epoch(self) -> int | None:
        i = self.best_index()
        return None if i is None else self.epochs[i]

    def property_summary(self, prop: str) -> dict[str, Any]:
        vals = self.series.get(f"val_mae_{prop}", [])
        i, b = _argmin(vals), self.best_index()
        return {
            "unit": self.units.get(prop, ""),
            "best_val_mae": None if i is None else vals[i],
            "best_val_mae_epoch": None if i is None else self.epochs[i],
            "val_mae_at_best_epoch": None if b is None else _finite(vals[b]),
            "final_val_mae": _finite(vals[-1]) if vals else None,
            "final_train_mae": _finite(self.series.get(f"train_mae_{prop}", [math.nan])[-1]),
        }

    def as_dict(self) -> dict[str, Any]:
        vl = self.best_index("val_loss")
        lr = self.series.get("lr") or []
        finite_lr = [v for v in lr if math.isfinite(v)]
        return {
            "run": self.run,
            "metrics": self.metrics_path,
            "epochs": len(self.epochs),
            "best_epoch": self.best_epoch,
            "best_epoch_by": self.best_by,
            "results_best_epoch": self.results_best_epoch,
            "best_val_loss": None if vl is None else self.series["val_loss"][vl],
            "best_val_loss_epoch": None if vl is None else self.epochs[vl],
            "final_train_loss": _finite(self.series.get("train_loss", [math.nan])[-1]),
            "final_val_loss": _finite(self.series["val_loss"][-1]),
            "final_lr": None if not lr else _finite(lr[-1]),
            "max_lr": max(finite_lr) if finite_lr else None,
            "time_s": math.fsum(v for v in self.series.get("time_s", []) if math.isfinite(v)),
            "steps": None if "step" not in self.series else int(self.series["step"][-1]),
            "properties": {p: self.property_summary(p) for p in self.properties},
            "series": {k: [_finite(v) for v in vs] for k, vs in self.series.items()},
        }


def _finite(v: float) -> float | None:
    """JSON has no NaN: missing values become null."""
    return v if math.isfinite(v) else None


def _metrics_path(run: Path) -> tuple[Path, Path]:
    """(run directory, metrics.csv) for a run directory or its metrics.csv."""
    if not run.exists():
        raise RecinetError(f"{run}: no such run directory")
    if run.is_file():
        if run.name != METRICS_FILE:
            raise RecinetError(f"{run}: not a run directory (pass the -o folder of `recinet train`)")
        return run.parent, run
    path = run / METRICS_FILE
    if not path.is_file():
        raise RecinetError(f"{run}: not a training run directory (no {METRICS_FILE}; pass the -o folder of `recinet train`)")
    return run, path


def _read_metrics(path: Path) -> dict[str, list[float]]:
    try:
        with open(path, newline="") as f:
            rows = [r for r in csv.reader(f) if r]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise RecinetError(f"{path}: cannot read ({exc})") from None
    if not rows:
        raise RecinetError(f"{path}: empty (no epoch has finished yet)")
    header = [h.strip() for h in rows[0]]
    missing = [c for c in _REQUIRED if c not in header]
    if missing:
        raise RecinetError(f"{path}: not a recinet metrics file (missing column(s) {', '.join(missing)})")
    if len(rows) < 2:
        raise RecinetError(f"{path}: no epoch has finished yet")
    series: dict[str, list[float]] = {h: [] for h in header}
    for lineno, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise RecinetError(f"{path}: line {lineno}: {len(row)} values for {len(header)} columns")
        for h, cell in zip(header, row):
            try:
                series[h].append(float(cell) if cell.strip() else math.nan)
            except ValueError:
                raise RecinetError(f"{path}: line {lineno}: {h} = {cell!r} is not a number") from None
    if not all(math.isfinite(e) for e in series["epoch"]):
        raise RecinetError(f"{path}: the epoch column has missing values")
    return series


def load_curves(run: Path) -> CurvesSummary:
    """The learning curves of ``run`` (a run directory, or its ``metrics.csv``).

    Raises:
        RecinetError: no such directory, no or malformed metrics.csv, no finished epoch.
    """
    run_dir, path = _metrics_path(Path(run))
    series = _read_metrics(path)
    props = [h[len("val_mae_"):] for h in series if h.startswith("val_mae_")]
    units: dict[str, str] = {}
    results_best: int | None = None
    results = run_dir / "results.json"
    if results.is_file():
        try:
            r = json.loads(results.read_text())
            if isinstance(r, dict):
                units = {str(p): str(u) for p, u in zip(r.get("properties") or [], r.get("units") or [])}
                results_best = int(r["best_epoch"]) if isinstance(r.get("best_epoch"), int) else None
        except (OSError, ValueError):
            pass  # the curves do not need it; a half-written results.json is not an error here
    return CurvesSummary(str(run_dir), str(path), series, props, units, results_best)


def plot_curves(summary: CurvesSummary, path: Path) -> Path:
    """Subplots: train/val loss, learning rate, and train/val MAE per property, with the best
    epoch marked."""
    from recinet_cli.bench.plotting import require_matplotlib, save_figure

    plt = require_matplotlib()
    from matplotlib.ticker import MaxNLocator

    s = summary
    epochs = s.epochs
    panels: list[tuple[str, list[tuple[str, str, str]], str]] = [
        ("loss", [("train_loss", "train", "-"), ("val_loss", "val", "-")], "loss"),
    ]
    if "lr" in s.series:
        panels.append(("learning rate", [("lr", "lr", "-")], "lr"))
    for p in s.properties:
        unit = s.units.get(p, "")
        panels.append((f"MAE {p}", [(f"train_mae_{p}", "train", "--"), (f"val_mae_{p}", "val", "-")],
                       f"MAE ({unit})" if unit else "MAE"))
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.4 * nrows), squeeze=False)
    best = s.best_epoch
    marker = "o" if len(epochs) <= 30 else None
    for ax, (title, lines, ylabel) in zip(axes.flat, panels):
        for col, label, style in lines:
            if col in s.series:
                ax.plot(epochs, s.series[col], style, marker=marker, markersize=3, label=label)
        if best is not None:
            ax.axvline(best, color="grey", linestyle=":", linewidth=1, label=f"best epoch {best}")
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(f"learning curves: {s.run} ({len(epochs)} epochs)", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)
