"""Training runs for the accuracy benchmarks: run, resume or reuse, in a fixed directory.

``recinet bench accuracy`` and ``recinet bench ablation`` train many models. Each one lives
in a deterministic directory (``runs/bench-accuracy/TASK/fold-K``,
``runs/bench-ablation/TASK/VARIANT``), so that rerunning a bench command picks up where it
stopped:

- a *finished* run (``results.json`` and ``test_predictions.csv`` present) whose
  ``config.json`` equals the requested config is reused without training;
- an *interrupted* run (``checkpoints/last.pt`` but no results) with the same config is
  continued with ``engine.train(cfg, resume=True)``;
- otherwise the run is trained from scratch.

A directory holding a run with *other* settings (e.g. 5 epochs where 500 are requested) is
never overwritten: that is an error naming the differing settings.

Bench runs never register models in the user's model store (``register=False``).
"""

from __future__ import annotations

import csv
import json
import math
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recinet_cli.errors import RecinetError
from recinet_cli.train.config import TrainConfig, resolve

__all__ = [
    "EXECUTION_KEYS",
    "RunRecord",
    "RunSettings",
    "bench_config",
    "config_differences",
    "ensure_run",
    "parameter_count",
    "read_predictions",
    "run_state",
    "safe_name",
]

#: Config keys that say *where/how* a run executes, not *what* it computes; a finished run
#: is reused whatever they were (a run trained on a GPU counts for a CPU rerun).
EXECUTION_KEYS = frozenset({"device", "num_workers", "tensorboard", "out", "name", "group", "register"})

Log = Callable[[str], None]


def _stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def safe_name(text: str) -> str:
    """A file-name-safe form of a task or variant label (``matbench:jdft2d`` ->
    ``matbench-jdft2d``, ``blocks=3`` -> ``blocks-3``, ``a+b`` -> ``a_b``)."""
    out = text.replace(":", "-").replace("=", "-").replace("+", "_").replace(",", "_").replace("/", "_")
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in out)


@dataclass(frozen=True)
class RunSettings:
    """Overrides shared by every run of a bench command (``None`` = the task's paper preset
    or the training default); ``model``: extra :class:`ModelConfig` keys."""

    epochs: int | None = None
    seed: int | None = None
    device: str | None = None
    gpus: int | None = None
    data: str | None = None
    batch_size: int | None = None
    blocks: int | None = None
    model: Mapping[str, Any] = field(default_factory=dict)


def bench_config(task: str, settings: RunSettings = RunSettings(), *, out: Path,
                 fold: int | None = None) -> TrainConfig:
    """The :class:`TrainConfig` of one bench run: the dataset's paper preset, then
    ``settings``, ``out`` as run directory and never registered."""
    from recinet_cli.train.tasks import parse_task

    parsed = parse_task(task)
    preset = parsed.dataset.preset(list(parsed.names))
    s = settings
    flags: dict[str, Any] = {
        "fold": fold, "epochs": s.epochs, "seed": s.seed, "device": s.device, "gpus": s.gpus, "data": s.data,
        "batch_size": s.batch_size, "blocks": s.blocks, "out": str(out), "register": False,
    }
    if s.model:
        flags["model"] = dict(s.model)
    return resolve(task, preset, {}, flags)


def config_differences(stored: Mapping[str, Any], cfg: TrainConfig) -> list[str]:
    """``["epochs: 5 in the run, 500 requested", ...]`` for every setting (outside
    :data:`EXECUTION_KEYS`) where a stored ``config.json`` differs from ``cfg``."""
    from dataclasses import MISSING, fields

    from recinet_cli.model.precision import resolve_precision
    from recinet_cli.train.engine import run_device

    want = cfg.to_dict()
    # runs record the precision they used (auto resolved), and settings added since a run
    # was made count as their defaults
    want["precision"] = resolve_precision(cfg.precision, run_device(cfg))
    stored = {**stored}
    if stored.get("precision") == "auto":
        stored["precision"] = want["precision"]
    defaults = {f.name: f.default for f in fields(TrainConfig) if f.default is not MISSING}
    diffs = []
    for key in sorted(set(want) | set(stored)):
        if key in EXECUTION_KEYS:
            continue
        have, need = stored.get(key, defaults.get(key)), want.get(key)
        if key == "model":
            have, need = dict(have or {}), dict(need or {})
        if have != need:
            diffs.append(f"{key}: {have!r} in the run, {need!r} requested")
    return diffs


def run_state(run_dir: Path) -> str:
    """``finished`` (results and test predictions written), ``interrupted`` (a last
    checkpoint, no results) or ``new``."""
    if (run_dir / "results.json").is_file() and (run_dir / "test_predictions.csv").is_file():
        return "finished"
    if (run_dir / "checkpoints" / "last.pt").is_file():
        return "interrupted"
    return "new"


def read_predictions(path: Path) -> dict[str, list[tuple[str, float, float]]]:
    """``{property: [(id, true, pred), ...]}`` from a run's ``test_predictions.csv`` (rows
    without a label for a property are left out of that property)."""
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        cols = list(reader.fieldnames or [])
        props = [c[: -len("_true")] for c in cols if c.endswith("_true")]
        out: dict[str, list[tuple[str, float, float]]] = {p: [] for p in props}
        for row in reader:
            for p in props:
                t = row[f"{p}_true"]
                if t != "":
                    out[p].append((row["id"], float(t), float(row[f"{p}_pred"])))
    return out


def parameter_count(cfg: TrainConfig, targets: list[str]) -> int:
    """Trainable parameters of the model ``cfg`` builds (construction only, no data)."""
    from recinet_cli.model.config import ModelConfig
    from recinet_cli.model.recinet import ReciNet
    from recinet_cli.train.engine import default_head

    values = {"head": default_head(len(targets)), **cfg.model, "blocks": cfg.blocks, "targets": targets}
    net = ReciNet(ModelConfig.from_dict(values))
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


@dataclass(frozen=True)
class RunRecord:
    """One bench run after :func:`ensure_run`.

    Attributes:
        label: what the bench calls it (``fold 0``, ``no-reciprocal``).
        run_dir: the run directory.
        status: ``reused`` (finished before, not trained), ``resumed`` or ``trained``.
        results: the run's ``results.json``.
        config: the run's ``config.json``.
        data: the run's ``data.json`` (split sizes, id hashes), ``{}`` when absent.
        seconds: wall time spent on it by this invocation (0 when reused).
        epoch_seconds: mean training time per epoch (``metrics.csv``), ``None`` if unknown.
        epochs_run: rows of ``metrics.csv``.
        params: trainable parameters.
    """

    label: str
    run_dir: Path
    status: str
    results: dict[str, Any]
    config: dict[str, Any]
    data: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    epoch_seconds: float | None = None
    epochs_run: int = 0
    params: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "label": self.label, "run_dir": str(self.run_dir), "status": self.status,
            "seconds": self.seconds, "epoch_seconds": self.epoch_seconds, "epochs_run": self.epochs_run,
            "params": self.params, "config": self.config, "results": self.results,
            "split_ids_sha256": self.data.get("ids_sha256"),
        }


def _epoch_times(path: Path) -> list[float]:
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        out = []
        for row in csv.DictReader(fh):
            try:
                out.append(float(row["time_s"]))
            except (KeyError, TypeError, ValueError):
                continue
        return out


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RecinetError(f"{path}: cannot read ({exc}); remove the run directory to retrain it") from exc
    if not isinstance(value, dict):
        raise RecinetError(f"{path}: expected a JSON object; remove the run directory to retrain it")
    return value


def _check_same(run_dir: Path, cfg: TrainConfig) -> None:
    stored_path = run_dir / "config.json"
    if not stored_path.is_file():
        raise RecinetError(f"{run_dir} holds a run without config.json; remove it or pass another --out")
    diffs = config_differences(_read_json(stored_path), cfg)
    if diffs:
        raise RecinetError(
            f"{run_dir} holds a run with other settings ({'; '.join(diffs)}); "
            "pass another --out or remove that directory to train it again"
        )


def ensure_run(
    cfg: TrainConfig,
    label: str,
    *,
    log: Log | None = None,
    progress: str = "auto",
) -> RunRecord:
    """Reuse, resume or train the run of ``cfg`` in ``cfg.out`` (see the module docstring).

    Raises:
        RecinetError: ``cfg.out`` is unset, registers models, or holds a run with other
            settings; or training failed.
    """
    from recinet_cli.train import engine  # looked up at call time (tests replace engine.train)

    say = log or _stderr
    if cfg.out is None:
        raise RecinetError("bench runs need a run directory (cfg.out)")
    if cfg.register:
        raise RecinetError("bench runs must not register models in the model store")
    run_dir = Path(cfg.out)
    state = run_state(run_dir)
    t0 = time.perf_counter()
    if state == "finished":
        _check_same(run_dir, cfg)
        status = "reused"
        say(f"bench: {label}: finished run reused ({run_dir})")
    elif state == "interrupted":
        _check_same(run_dir, cfg)
        status = "resumed"
        say(f"bench: {label}: resuming the interrupted run in {run_dir}")
        engine.train(cfg, resume=True, progress=progress, log=say)  # type: ignore[arg-type]
    else:
        status = "trained"
        say(f"bench: {label}: training {cfg.epochs} epoch(s) in {run_dir}")
        engine.train(cfg, resume=False, progress=progress, log=say)  # type: ignore[arg-type]
    seconds = 0.0 if status == "reused" else time.perf_counter() - t0
    if run_state(run_dir) != "finished":
        raise RecinetError(f"{run_dir}: training ended without results.json/test_predictions.csv")
    results = _read_json(run_dir / "results.json")
    config = _read_json(run_dir / "config.json")
    data = _read_json(run_dir / "data.json") if (run_dir / "data.json").is_file() else {}
    times = _epoch_times(run_dir / "metrics.csv")
    epoch_seconds = math.fsum(times) / len(times) if times else None
    try:
        params: int | None = parameter_count(cfg, list(results.get("properties", [])) or ["target"])
    except RecinetError:
        params = None
    if status != "reused":
        say(f"bench: {label}: done in {seconds:.1f} s")
    return RunRecord(label, run_dir, status, results, config, data, seconds, epoch_seconds, len(times), params)
