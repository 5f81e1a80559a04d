"""``recinet bench accuracy``: train (or reuse) ReciNet on a task's official split(s) and
compare test MAE/RMSE with the paper and the public leaderboards.

For a dataset with cross-validation folds (Matbench: 5) every fold is a run; the summary is
the mean ± sample standard deviation over folds, as Matbench and the paper's Table 3 report
it. Other datasets have one official split, trained once. Matbench tasks also get a
Matbench-compatible ``results.json.gz`` (the layout ``MatbenchBenchmark.to_file`` writes)
and an ``info.json`` for a leaderboard submission.

The per-fold MAE/RMSE are computed from the run's ``test_predictions.csv``, i.e. from the
very predictions written to ``results.json.gz``.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recinet_cli.bench.runs import (
    RunRecord,
    RunSettings,
    bench_config,
    ensure_run,
    read_predictions,
    safe_name,
)
from recinet_cli.errors import RecinetError

__all__ = [
    "AccuracyReport",
    "DEFAULT_OUT",
    "PAPER_EPOCHS",
    "PAPER_TEST",
    "PaperScore",
    "REFERENCE_DIR",
    "convert",
    "leaderboard",
    "matbench_payload",
    "mean_std",
    "run_accuracy",
]

DEFAULT_OUT = Path("runs") / "bench-accuracy"
#: ``../shared/data`` next to the checkout: the Matbench and JARVIS leaderboard files.
REFERENCE_DIR = Path(__file__).resolve().parents[3].parent / "shared" / "data"
#: The paper trains every task for 500 epochs (Tables 7, 8, 10), except MP shear moduli (300).
PAPER_EPOCHS = 500

Log = Callable[[str], None]


@dataclass(frozen=True)
class PaperScore:
    """A test score of ReciNet as printed in the paper (in the paper's unit)."""

    mae: float
    unit: str
    source: str
    mae_std: float | None = None
    rmse: float | None = None
    rmse_std: float | None = None

    def as_dict(self, unit: str) -> dict[str, Any]:
        """The score converted to ``unit`` (the dataset's), with its source."""
        return {
            "mae": convert(self.mae, self.unit, unit), "mae_std": convert(self.mae_std, self.unit, unit),
            "rmse": convert(self.rmse, self.unit, unit), "rmse_std": convert(self.rmse_std, self.unit, unit),
            "unit": unit if convert(self.mae, self.unit, unit) is not None else self.unit,
            "paper_value": self.mae, "paper_unit": self.unit, "source": self.source,
        }


#: ReciNet's test scores in the paper, per ``(dataset plugin, property)``.
PAPER_TEST: dict[tuple[str, str], PaperScore] = {
    # Table 3 (MatBench, mean ± std over the 5 official folds)
    ("matbench", "jdft2d"): PaperScore(31.6, "meV/atom", "Table 3", 6.3, 75.6, 34.7),
    ("matbench", "mp_e_form"): PaperScore(16.1, "meV/atom", "Table 3", 0.2, 42.9, 3.5),
    # Table 2 (JARVIS dft_3d 2021, leaderboard splits)
    ("jarvis", "formation_energy"): PaperScore(27.0, "meV/atom", "Table 2"),
    ("jarvis", "bandgap_opt"): PaperScore(0.126, "eV", "Table 2"),
    ("jarvis", "total_energy"): PaperScore(26.8, "meV/atom", "Table 2"),
    ("jarvis", "bandgap_mbj"): PaperScore(0.24, "eV", "Table 2"),
    ("jarvis", "ehull"): PaperScore(43.0, "meV", "Table 2"),
    # Table 1 (Materials Project 2018.6.1; moduli in log10(GPa))
    ("mp", "formation_energy"): PaperScore(17.07, "meV/atom", "Table 1"),
    ("mp", "bandgap"): PaperScore(0.189, "eV", "Table 1"),
    ("mp", "bulk_modulus"): PaperScore(0.0328, "log10(GPa)", "Table 1"),
    ("mp", "shear_modulus"): PaperScore(0.0628, "log10(GPa)", "Table 1"),
}

#: The JARVIS leaderboard key of each ``(dataset plugin, property)``
#: (``leaderboard_reference_test_mae.json``; values in the dataset's unit).
JARVIS_LEADERBOARD_KEYS: dict[tuple[str, str], str] = {
    ("jarvis", "formation_energy"): "formation_energy_peratom-dft_3d",
    ("jarvis", "bandgap_opt"): "optb88vdw_bandgap-dft_3d",
    ("jarvis", "total_energy"): "optb88vdw_total_energy-dft_3d",
    ("jarvis", "bandgap_mbj"): "mbj_bandgap-dft_3d",
    ("jarvis", "ehull"): "ehull-dft_3d",
    ("jarvis", "bulk_modulus"): "bulk_modulus_kv-dft_3d",
    ("jarvis", "shear_modulus"): "shear_modulus_gv-dft_3d",
    ("jarvis", "exfoliation_energy"): "exfoliation_energy-dft_3d",
    ("mp", "formation_energy"): "e_form-megnet",
    ("mp", "bandgap"): "gappbe-megnet",
}

_PREFIX = {"m": 1e-3, "": 1.0}


def convert(value: float | None, unit: str, to: str) -> float | None:
    """``value`` in ``unit`` expressed in ``to``: equal units, or the same unit with/without
    an ``m`` (milli) prefix (``meV/atom`` <-> ``eV/atom``, ``meV`` <-> ``eV``); ``log(GPa)`` is
    ``log10(GPa)``. ``None`` when not convertible (or ``value`` is None)."""
    if value is None:
        return None

    def norm(u: str) -> str:
        return u.replace("log(", "log10(").strip()

    unit, to = norm(unit), norm(to)
    if unit == to:
        return value
    for a in _PREFIX:
        for b in _PREFIX:
            if a != b and unit.startswith(a) and to.startswith(b) and unit[len(a):] == to[len(b):] and unit[len(a):]:
                return value * _PREFIX[a] / _PREFIX[b]
    return None


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and *sample* standard deviation (n-1; ``None`` for a single value)."""
    n = len(values)
    if n == 0:
        return math.nan, None
    mean = math.fsum(values) / n
    if n == 1:
        return mean, None
    return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))


def _metrics(rows: Sequence[tuple[str, float, float]]) -> dict[str, float]:
    """MAE, RMSE and Matbench's MAPE and max error of ``(id, true, pred)`` rows."""
    if not rows:
        return {"mae": math.nan, "rmse": math.nan, "mape": math.nan, "max_error": math.nan, "n": 0}
    err = [p - t for _, t, p in rows]
    eps = 2.220446049250313e-16  # sklearn's mean_absolute_percentage_error guard
    return {
        "mae": math.fsum(abs(e) for e in err) / len(err),
        "rmse": math.sqrt(math.fsum(e * e for e in err) / len(err)),
        "mape": math.fsum(abs(e) / max(abs(t), eps) for e, (_, t, _) in zip(err, rows)) / len(err),
        "max_error": max(abs(e) for e in err),
        "n": len(err),
    }


def leaderboard(dataset: str, prop: str, reference_dir: Path | None = REFERENCE_DIR) -> dict[str, Any] | None:
    """The published leaderboard MAEs of ``(dataset, prop)``: ``{"source", "scores": {model:
    mae}, "best": [model, mae]}`` in the dataset's unit, or ``None`` when unknown / absent."""
    if reference_dir is None:
        return None
    scores: dict[str, float] = {}
    if dataset == "matbench":
        path = reference_dir / "matbench" / "matbench_v0.1_reference_scores.json"
        if not path.is_file():
            return None
        table = json.loads(path.read_text()).get(f"matbench_{prop}")
        if not isinstance(table, dict):
            return None
        scores = {k: float(v) for k, v in table.items()}
        source = "Matbench v0.1 leaderboard (mean test MAE over 5 folds)"
    else:
        key = JARVIS_LEADERBOARD_KEYS.get((dataset, prop))
        path = reference_dir / "jarvis" / "leaderboard_reference_test_mae.json"
        if key is None or not path.is_file():
            return None
        table = json.loads(path.read_text()).get(key)
        if not isinstance(table, dict):
            return None
        scores = {k: float(v[0] if isinstance(v, list) else v) for k, v in table.items()}
        source = f"JARVIS leaderboard ({key}, test MAE)"
    if not scores:
        return None
    ranked = sorted((v, k) for k, v in scores.items() if k != "dummy")
    best = [ranked[0][1], ranked[0][0]] if ranked else None
    return {"source": source, "scores": dict(sorted(scores.items())), "best": best,
            "dummy": scores.get("dummy")}


@dataclass
class FoldScore:
    """One run's test scores per property (from ``test_predictions.csv``)."""

    fold: int | None
    run: RunRecord
    test: dict[str, dict[str, float]]  # prop -> mae/rmse/mape/max_error/n
    val_mae: dict[str, float]
    predictions: dict[str, dict[str, float]]  # prop -> {id: pred}


@dataclass
class AccuracyReport:
    """Everything ``bench accuracy`` measured (``as_dict`` is its JSON)."""

    task: str
    dataset: str
    properties: list[str]
    units: list[str]
    epochs: int
    paper_epochs: int
    folds: list[FoldScore]
    out: Path
    paper: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    leaderboards: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    written: list[str] = field(default_factory=list)
    complete: bool | None = None  # Matbench: all 5 folds with every official test id

    @property
    def comparable(self) -> bool:
        """Trained as long as the paper (else the numbers are not comparable)."""
        return self.epochs >= self.paper_epochs

    def summary(self, prop: str) -> dict[str, Any]:
        maes = [f.test[prop]["mae"] for f in self.folds]
        rmses = [f.test[prop]["rmse"] for f in self.folds]
        mae, mae_std = mean_std(maes)
        rmse, rmse_std = mean_std(rmses)
        return {"mae": mae, "mae_std": mae_std, "rmse": rmse, "rmse_std": rmse_std, "folds": len(maes)}

    def as_dict(self) -> dict[str, Any]:
        return {
            "bench": "accuracy", "task": self.task, "dataset": self.dataset, "properties": self.properties,
            "units": self.units, "epochs": self.epochs, "paper_epochs": self.paper_epochs,
            "comparable_to_paper": self.comparable, "out": str(self.out),
            "folds": [
                {"fold": f.fold, "run_dir": str(f.run.run_dir), "status": f.run.status, "seconds": f.run.seconds,
                 "epoch_seconds": f.run.epoch_seconds, "best_epoch": f.run.results.get("best_epoch"),
                 "val_mae": f.val_mae, "test": f.test, "split_ids_sha256": f.run.data.get("ids_sha256")}
                for f in self.folds
            ],
            "summary": {p: self.summary(p) for p in self.properties},
            "paper": self.paper, "leaderboard": self.leaderboards,
            "matbench_complete": self.complete, "written": self.written,
        }


def _fold_score(fold: int | None, run: RunRecord) -> FoldScore:
    preds = read_predictions(run.run_dir / "test_predictions.csv")
    test = {p: _metrics(rows) for p, rows in preds.items()}
    val = {p: float(v["mae"]) for p, v in run.results.get("val", {}).items()}
    return FoldScore(fold, run, test, val, {p: {i: pr for i, _, pr in rows} for p, rows in preds.items()})


def run_accuracy(
    task: str,
    *,
    folds: Sequence[int] | None = None,
    out: Path | None = None,
    settings: RunSettings = RunSettings(),
    reference_dir: Path | None = REFERENCE_DIR,
    log: Log | None = None,
    progress: str = "auto",
) -> AccuracyReport:
    """Train or reuse every run of ``task`` (all folds, or ``folds``), score it, and for
    Matbench write ``results.json.gz`` and ``info.json`` into ``out/TASK``."""
    from recinet_cli.train.tasks import parse_task

    parsed = parse_task(task)
    ds = parsed.dataset
    n_folds = int(getattr(ds, "folds", 0) or 0)
    if folds is not None and n_folds == 0:
        raise RecinetError(f"dataset {ds.name!r} has one official split, no folds; drop --folds")
    bad = [k for k in (folds or []) if not 0 <= k < n_folds]
    if bad:
        raise RecinetError(f"--folds: {ds.name!r} has folds 0..{n_folds - 1}, got {bad[0]}")
    fold_list: list[int | None] = (sorted(set(folds)) if folds is not None else list(range(n_folds))) if n_folds else [None]
    base = (out or DEFAULT_OUT) / safe_name(parsed.label)
    preset = ds.preset(list(parsed.names))
    paper_epochs = int(preset.get("epochs", PAPER_EPOCHS))
    scores: list[FoldScore] = []
    cfg = None
    for i, fold in enumerate(fold_list):
        run_dir = base / (f"fold-{fold}" if fold is not None else "official")
        cfg = bench_config(parsed.label, settings, out=run_dir, fold=fold)
        label = f"{parsed.label} {'fold ' + str(fold) if fold is not None else 'official split'} [{i + 1}/{len(fold_list)}]"
        scores.append(_fold_score(fold, ensure_run(cfg, label, log=log, progress=progress)))
    assert cfg is not None
    first = scores[0].run.results
    props = list(first.get("properties", parsed.names))
    units = list(first.get("units", [p.unit for p in parsed.properties]))
    report = AccuracyReport(
        parsed.label, ds.name, props, units, cfg.epochs, paper_epochs, scores, base,
        paper={p: (PAPER_TEST[(ds.name, p)].as_dict(u) if (ds.name, p) in PAPER_TEST else None)
               for p, u in zip(props, units)},
        leaderboards={p: leaderboard(ds.name, p, reference_dir) for p in props},
    )
    if ds.name == "matbench":
        report.complete = _write_matbench(report, cfg.to_dict())
    return report


# --------------------------------------------------------------------------- Matbench files


def _official_test_ids(prop: str) -> list[list[str]] | None:
    try:
        from recinet_matbench.splits import official_test_folds
        from recinet_matbench.tasks import resolve
    except ImportError:
        return None
    return official_test_folds(resolve(prop))


def matbench_payload(report: AccuracyReport, user_metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The ``MatbenchBenchmark.as_dict()`` layout of the report's folds:
    ``{"@module", "@class", "version", "benchmark_name", "tasks": {"matbench_TASK": {...,
    "results": {"fold_K": {"data": {mbid: prediction}, "parameters": {...}, "scores": {mae,
    rmse, mape, max_error}}}}}, "user_metadata", "datestamp", "hash"}``; the hash is
    Matbench's (SHA-256 of the key-sorted JSON without the hash)."""
    tasks: dict[str, Any] = {}
    for prop in report.properties:
        name = f"matbench_{prop}"
        results = {}
        for f in report.folds:
            r = f.run.results
            params = {"epochs": f.run.config.get("epochs"), "best_epoch": r.get("best_epoch"),
                      "lr": f.run.config.get("lr"), "blocks": f.run.config.get("blocks"),
                      "batch_size": f.run.config.get("batch_size"), "seed": f.run.config.get("seed"),
                      "model": dict(f.run.config.get("model") or {}), "n_val": r.get("val", {}).get(prop, {}).get("n")}
            scores = {k: float(f.test[prop][k]) for k in ("mae", "rmse", "mape", "max_error")}
            results[f"fold_{f.fold}"] = {"data": dict(sorted(f.predictions[prop].items())),
                                         "parameters": params, "scores": scores}
        tasks[name] = {"@module": "matbench.task", "@class": "MatbenchTask", "benchmark_name": "matbench_v0.1",
                       "dataset_name": name, "results": results}
    d: dict[str, Any] = {
        "@module": "matbench.bench", "@class": "MatbenchBenchmark", "version": "0.6",
        "tasks": tasks, "user_metadata": dict(user_metadata), "benchmark_name": "matbench_v0.1",
        "datestamp": time.strftime("%Y.%m.%d %H:%M.%S", time.gmtime()),
    }
    d["hash"] = hashlib.sha256(json.dumps(_sorted(d)).encode("utf-8")).hexdigest()
    return d


def _sorted(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _sorted(value[k]) for k in sorted(value)}
    return value


def _info(report: AccuracyReport) -> dict[str, Any]:
    import platform

    import numpy
    import torch

    from recinet_cli import __version__

    note = (f"recinet `bench accuracy --task {report.task}`: {report.epochs} epochs per fold "
            f"(paper: {report.paper_epochs}), Matbench's official test folds; 10% of each fold's training "
            "ids held out for validation / best-epoch selection.")
    if not report.comparable:
        note += " Fewer epochs than the paper: not comparable to the paper's numbers."
    return {
        "authors": "recinet contributors (reproduction of Nie, Xiao, Ji and Gao, ReciNet)",
        "algorithm": "ReciNet",
        "algorithm_long": (
            "ReciNet: a crystal graph network whose blocks combine a PotNet-style local message-passing layer "
            "with a reciprocal-space block (learned |G|-filter over the Fourier series of the atom features on "
            "the reciprocal lattice vectors within G_max), mean pooling and an MLP head."
        ),
        "bibtex_refs": ("@article{nie2025recinet,title={ReciNet: Reciprocal Space-Aware Long-Range Modeling for "
                        "Crystalline Property Prediction},author={Nie, Jianan and Xiao, Peiyao and Ji, Kaiyi and "
                        "Gao, Peng},year={2025}}"),
        "notes": note,
        "requirements": {"python": [f"recinet=={__version__}", f"torch=={torch.__version__}",
                                    f"numpy=={numpy.__version__}", f"python=={platform.python_version()}"]},
    }


def _write_matbench(report: AccuracyReport, cfg: Mapping[str, Any]) -> bool:
    """Write ``results.json.gz`` and ``info.json`` into ``report.out``; ``True`` when every
    fold with every official test id is present (a complete Matbench record)."""
    from recinet_cli.train.checkpoint import atomic_write_text

    complete = len(report.folds) == 5
    for prop in report.properties:
        official = _official_test_ids(prop)
        for f in report.folds:
            if official is None or set(f.predictions[prop]) != set(official[int(f.fold or 0)]):
                complete = False
    meta = {"recinet_task": report.task, "epochs": report.epochs, "paper_epochs": report.paper_epochs,
            "folds": [f.fold for f in report.folds], "complete": complete, "train_config": dict(cfg)}
    payload = matbench_payload(report, meta)
    report.out.mkdir(parents=True, exist_ok=True)
    path = report.out / "results.json.gz"
    tmp = path.with_name(path.name + ".tmp")
    with gzip.open(tmp, "wt", encoding="utf-8") as fh:
        json.dump(payload, fh)
    tmp.replace(path)
    atomic_write_text(report.out / "info.json", json.dumps(_info(report), indent=2) + "\n")
    report.written += [str(path), str(report.out / "info.json")]
    return complete
