"""The training engine: one code path for 1 CPU, 1 GPU, N GPUs (NCCL) and N CPU processes (gloo).

:func:`train` prepares the data once (parent process), writes the resolved config, runs
:func:`run_worker` in every rank (spawned, under torchrun, or in-process), evaluates the
best-validation checkpoint on the test split and writes the model bundle.

Run directory::

    RUN/config.json            resolved TrainConfig (re-usable with --config)
    RUN/data.json              dataset, version, split kind and sizes, failures
    RUN/metrics.csv            per epoch: step, lr, time, train/val loss, MAE per property
    RUN/checkpoints/last.pt    full state after the last finished epoch (atomic)
    RUN/checkpoints/best.pt    weights of the best validation epoch
    RUN/test_predictions.csv   id, then <prop>_true, <prop>_pred per property
    RUN/results.json           best epoch, val and test MAE/RMSE per property
    RUN/model.safetensors      the model bundle (also registered in the model store)
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recinet_cli.errors import RecinetError
from recinet_cli.model.precision import describe, resolve_precision
from recinet_cli.train.checkpoint import (
    atomic_write_text,
    capture_rng,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from recinet_cli.train.config import TrainConfig, write_config
from recinet_cli.train.data import GraphTargetDataset, PreparedData, prepare_data
from recinet_cli.train.distributed import (
    DistInfo,
    all_reduce_sum,
    barrier,
    broadcast_object,
    check_gpus,
    init_distributed,
    launch,
    shutdown,
    sync_buffers,
    under_torchrun,
)
from recinet_cli.train.report import ProgressMode, Reporter, make_reporter
from recinet_cli.train.tasks import Task, parse_task

__all__ = ["TrainResult", "TrainingStopped", "train"]

CHECKPOINT_VERSION = 1


class TrainingStopped(RecinetError):
    """Training cannot continue (non-finite loss); the last good checkpoint is kept."""


@dataclass(frozen=True)
class TrainResult:
    """What a finished run produced (paths and the headline numbers)."""

    run_dir: Path
    bundle: Path
    model_name: str | None
    results: dict[str, Any]


# --------------------------------------------------------------------------- set-up


def run_device(cfg: TrainConfig) -> str:
    """``cuda`` or ``cpu``: the device type the ranks of ``cfg`` compute on."""
    if cfg.gpus or cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()):
        return "cuda"
    return "cpu"


def default_head(n_targets: int) -> str:
    """``scalar`` for one property, ``mt-moe`` (ReciNet-MT) for several."""
    return "scalar" if n_targets == 1 else "mt-moe"


def model_config(cfg: TrainConfig, data: PreparedData) -> Any:
    """The :class:`ModelConfig` of this run."""
    from recinet_cli.model.config import ModelConfig

    values = {"head": default_head(len(data.properties)), **cfg.model}
    return ModelConfig.from_dict({**values, "blocks": cfg.blocks, "targets": list(data.target_names)})


def scaler(data: PreparedData) -> tuple[torch.Tensor, torch.Tensor]:
    """``[T]`` mean and std of the training labels (NaN-aware, physical units)."""
    y = data.splits["train"].targets
    with np.errstate(all="ignore"):
        mean = np.nanmean(y, axis=0) if len(y) else np.zeros(y.shape[1])
        std = np.nanstd(y, axis=0) if len(y) else np.ones(y.shape[1])
    return torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def check_sizes(data: PreparedData, cfg: TrainConfig, world: int) -> None:
    """Refuse splits that cannot train or evaluate (clear messages naming the fix)."""
    n_train = len(data.splits["train"])
    if n_train < cfg.batch_size:
        raise RecinetError(
            f"the train split of {data.dataset} has {n_train} structures, fewer than the batch size "
            f"{cfg.batch_size}; use a smaller --batch-size"
        )
    if n_train < world:
        raise RecinetError(f"the train split has {n_train} structures, fewer than the {world} processes")
    for name in ("val", "test"):
        if len(data.splits[name]) == 0:
            raise RecinetError(f"the {name} split of {data.dataset} is empty; nothing to {'validate' if name == 'val' else 'test'} on")
    missing = [p for p, n in zip(data.target_names, data.splits["train"].label_counts()) if n == 0]
    if missing:
        raise RecinetError(f"no training labels for {', '.join(missing)}")


# --------------------------------------------------------------------------- metrics


class ErrorSums:
    """Per-property sums of |err|, err² and counts in physical units (all-reducible)."""

    def __init__(self, n_targets: int) -> None:
        self.values = torch.zeros(3, n_targets, dtype=torch.float64)
        self.loss = torch.zeros(2, dtype=torch.float64)  # loss sum, batches

    def add(self, pred: torch.Tensor, target: torch.Tensor, loss: torch.Tensor | float) -> None:
        """``pred, target [B, T]`` physical units; NaN targets are skipped. Accumulates on the
        tensors' device (no host synchronisation per batch)."""
        if self.values.device != pred.device:
            self.values = self.values.to(pred.device)
            self.loss = self.loss.to(pred.device)
        mask = torch.isfinite(target)
        err = torch.where(mask, pred.detach().double() - torch.nan_to_num(target.double()), 0.0)
        self.values[0] += err.abs().sum(0)
        self.values[1] += (err * err).sum(0)
        self.values[2] += mask.sum(0).double()
        self.loss[0] += torch.as_tensor(loss, dtype=torch.float64, device=self.loss.device).detach()
        self.loss[1] += 1.0

    def reduce(self, info: DistInfo) -> ErrorSums:
        out = ErrorSums(self.values.shape[1])
        flat = all_reduce_sum(info, torch.cat([self.values.flatten(), self.loss])).cpu()
        out.values = flat[:-2].reshape(self.values.shape)
        out.loss = flat[-2:]
        return out

    def mae(self) -> list[float]:
        n = self.values[2]
        return [float(s / c) if c > 0 else math.nan for s, c in zip(self.values[0], n)]

    def rmse(self) -> list[float]:
        n = self.values[2]
        return [float(math.sqrt(s / c)) if c > 0 else math.nan for s, c in zip(self.values[1], n)]

    def counts(self) -> list[int]:
        return [int(c) for c in self.values[2]]

    def mean_loss(self) -> float:
        return float(self.loss[0] / self.loss[1]) if self.loss[1] > 0 else math.nan


def selection_score(val_mae: list[float], std: torch.Tensor) -> float:
    """Early-stopping / best-checkpoint score: the MAE for one property; for several, the
    mean of MAE / training std (unit-free, so no property dominates by its units)."""
    if len(val_mae) == 1:
        return val_mae[0]
    return float(np.mean([m / float(s) if float(s) > 0 else m for m, s in zip(val_mae, std)]))


# --------------------------------------------------------------------------- the worker


def _loader(dataset: Any, batch_size: int, sampler: Any, num_workers: int) -> Any:
    from torch_geometric.loader import DataLoader

    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      persistent_workers=num_workers > 0)


def _evaluate(model: Any, loader: Any, info: DistInfo, cfg: TrainConfig, mcfg: Any,
              collect: bool = False) -> tuple[ErrorSums, list[tuple[int, list[float], list[float]]]]:
    """Error sums over this rank's share of a split (and, with ``collect``, per-structure
    ``(row, target, prediction)`` in physical units)."""
    from recinet_cli.model.recinet import masked_l1
    from recinet_cli.train.step import forward_standardized

    net = getattr(model, "module", model)
    net.eval()
    sums = ErrorSums(len(mcfg.targets))
    rows: list[tuple[int, list[float], list[float]]] = []
    with torch.no_grad():
        for batch in loader:
            batch = batch.to(info.device)
            pred_std = forward_standardized(net, batch, mcfg, cfg.precision)
            pred = pred_std * net.target_std + net.target_mean
            y_std = (batch.y - net.target_mean) / net.target_std
            sums.add(pred, batch.y, masked_l1(pred_std, y_std))
            if collect:
                for r, t, p in zip(batch.row.tolist(), batch.y.tolist(), pred.tolist()):
                    rows.append((r, t, p))
    return sums, rows


def _shard(n: int, info: DistInfo) -> list[int]:
    """This rank's positions of an evaluation split (no padding, no duplicates)."""
    return list(range(info.rank, n, info.world_size))


def _metric_columns(names: tuple[str, ...]) -> list[str]:
    cols = ["epoch", "step", "lr", "time_s", "train_loss", "val_loss"]
    cols += [f"train_mae_{p}" for p in names] + [f"val_mae_{p}" for p in names] + ["val_score"]
    return cols


def _truncate_metrics(path: Path, last_epoch: int) -> None:
    """Drop rows after the checkpointed epoch (written before a kill, re-run on resume)."""
    if not path.is_file():
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    keep = [rows[0]] + [r for r in rows[1:] if r and int(r[0]) <= last_epoch]
    atomic_write_text(path, "".join(",".join(r) + "\n" for r in keep))  # same format as _append_metrics


def _append_metrics(path: Path, cols: list[str], row: dict[str, Any]) -> None:
    new = not path.is_file()
    with open(path, "a", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        if new:
            w.writerow(cols)
        w.writerow([f"{row[c]:.8g}" if isinstance(row[c], float) else row[c] for c in cols])
        f.flush()
        os.fsync(f.fileno())


def _gather_rng(info: DistInfo) -> list[dict[str, Any]]:
    mine = capture_rng()
    if not info.distributed:
        return [mine]
    import torch.distributed as dist

    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, mine)
    return out


def _tensorboard(run_dir: Path, enabled: bool) -> Any:
    if not enabled:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        raise RecinetError("--tensorboard needs the tensorboard package: pip install tensorboard") from exc
    return SummaryWriter(str(run_dir / "tensorboard"))


def run_worker(cfg: TrainConfig, data: PreparedData, run_dir: str, resume: bool, progress: ProgressMode) -> None:
    """Train in this process (one rank). Writes files on rank 0 only."""
    from torch.nn.parallel import DistributedDataParallel
    from torch.utils.data.distributed import DistributedSampler

    from recinet_cli.model.recinet import ReciNet
    from recinet_cli.train.step import NonFinite, make_optimizer, train_step

    info = init_distributed(cfg.device, cfg.gpus)
    run = Path(run_dir)
    ckpt_dir = run / "checkpoints"
    reporter: Reporter = make_reporter(progress, info.is_main)
    tb = _tensorboard(run, cfg.tensorboard) if info.is_main else None
    try:
        if info.device.type == "cpu" and info.world_size > 1:
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // min(info.world_size, os.cpu_count() or 1)))
        seed_everything(cfg.seed)
        if cfg.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
        mcfg = model_config(cfg, data)
        net = ReciNet(mcfg)
        net.set_scaler(*scaler(data))
        net.to(info.device)
        model: Any = net
        if info.distributed:
            ids = [info.device.index] if info.device.type == "cuda" else None
            model = DistributedDataParallel(net, device_ids=ids)
        if cfg.compile:
            model = torch.compile(model, dynamic=True)

        train_ds = GraphTargetDataset(data.store_path, data.splits["train"])
        val_ds = GraphTargetDataset(data.store_path, data.splits["val"])
        sampler = DistributedSampler(train_ds, num_replicas=info.world_size, rank=info.rank,
                                     shuffle=True, seed=cfg.seed, drop_last=False)
        train_loader = _loader(train_ds, cfg.batch_size, sampler, cfg.num_workers)
        val_loader = _loader(torch.utils.data.Subset(val_ds, _shard(len(val_ds), info)),
                             cfg.batch_size, None, cfg.num_workers)
        steps_per_epoch = len(train_loader)
        opt = make_optimizer(net, cfg.lr, cfg.weight_decay)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch)

        start_epoch, step = 0, 0
        best = {"score": math.inf, "epoch": -1, "bad_epochs": 0}
        if resume:
            state = load_checkpoint(ckpt_dir / "last.pt")
            if state.get("world_size") != info.world_size:
                raise RecinetError(
                    f"{ckpt_dir / 'last.pt'}: written by {state.get('world_size')} process(es), resuming with "
                    f"{info.world_size}; resume with the same number of processes"
                )
            net.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            start_epoch, step, best = int(state["epoch"]), int(state["step"]), dict(state["best"])
            restore_rng(state["rng"][info.rank])
        cols = _metric_columns(mcfg.targets)
        if info.is_main:
            _truncate_metrics(run / "metrics.csv", start_epoch)
        reporter.start(cfg.epochs, start_epoch, steps_per_epoch)

        stop = start_epoch >= cfg.epochs or (cfg.patience is not None and best["bad_epochs"] >= cfg.patience)
        epoch = start_epoch
        while not stop:
            t0 = time.perf_counter()
            sampler.set_epoch(epoch)
            net.train()
            sums = ErrorSums(len(mcfg.targets))
            losses = NonFinite()
            for batch in train_loader:
                batch = batch.to(info.device)
                out = train_step(model, batch, mcfg, opt, sched, cfg.precision, cfg.clip_grad)
                losses.watch(out.loss)
                step += 1
                sums.add(out.pred_std * net.target_std + net.target_mean, batch.y, out.loss)
                reporter.step()
            _check_finite(losses, info, epoch, step - steps_per_epoch, ckpt_dir)
            train_sums = sums.reduce(info)
            sync_buffers(info, net)
            val_sums = _evaluate(model, val_loader, info, cfg, mcfg)[0].reduce(info)
            val_mae = val_sums.mae()
            score = selection_score(val_mae, net.target_std.cpu())
            row = {"epoch": epoch + 1, "step": step, "lr": float(sched.get_last_lr()[0]),
                   "time_s": time.perf_counter() - t0, "train_loss": train_sums.mean_loss(),
                   "val_loss": val_sums.mean_loss(), "val_score": score}
            row.update({f"train_mae_{p}": m for p, m in zip(mcfg.targets, train_sums.mae())})
            row.update({f"val_mae_{p}": m for p, m in zip(mcfg.targets, val_mae)})
            improved = score < best["score"]
            if improved:
                best = {"score": score, "epoch": epoch + 1, "bad_epochs": 0}
            else:
                best["bad_epochs"] += 1
            epoch += 1
            stop = epoch >= cfg.epochs or (cfg.patience is not None and best["bad_epochs"] >= cfg.patience)
            stop = bool(broadcast_object(info, stop))
            rng = _gather_rng(info)
            if info.is_main:
                if improved:
                    save_checkpoint(ckpt_dir / "best.pt", {"format": "recinet-checkpoint", "model": net.state_dict(),
                                                            "epoch": epoch, "score": score})
                _append_metrics(run / "metrics.csv", cols, row)
                save_checkpoint(ckpt_dir / "last.pt", {
                    "format": "recinet-checkpoint", "version": CHECKPOINT_VERSION, "model": net.state_dict(),
                    "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "epoch": epoch, "step": step,
                    "rng": rng, "best": best, "world_size": info.world_size,
                })
                if tb is not None:
                    for key, value in row.items():
                        if key != "epoch" and isinstance(value, float) and math.isfinite(value):
                            tb.add_scalar(key.replace("_mae_", "/mae_", 1), value, epoch)
            reporter.epoch(row)
            barrier(info)
            if stop and cfg.patience is not None and best["bad_epochs"] >= cfg.patience and epoch < cfg.epochs:
                reporter.message(f"early stop: no better validation score for {cfg.patience} epochs (best epoch {best['epoch']})")
        reporter.stop()
        barrier(info)
        if info.is_main:
            _finish(cfg, data, run, mcfg, net, best, epoch, step)
        barrier(info)
    finally:
        reporter.stop()
        if tb is not None:
            tb.close()
        shutdown()


def _check_finite(losses: Any, info: DistInfo, epoch: int, first_step: int, ckpt_dir: Path) -> None:
    """Stop with one line if any rank saw a non-finite loss in this epoch (checked once per
    epoch; ``last.pt`` still holds the previous epoch, which is what the message names)."""
    found = losses.first()
    bad = torch.tensor([0.0 if found is None else 1.0])
    if float(all_reduce_sum(info, bad)[0]) == 0:
        return
    where = f"at epoch {epoch + 1}, step {first_step + found[0] + 1}" if found else f"at epoch {epoch + 1} (another process)"
    value = f"{found[1]}" if found else "not finite"
    kept = (f"the last good checkpoint is {ckpt_dir / 'last.pt'} (epoch {epoch})" if epoch
            else "no checkpoint was written yet (first epoch)")
    raise TrainingStopped(f"the loss became {value} {where}; {kept}; try a lower --lr or --clip-grad 1")


# --------------------------------------------------------------------------- finishing (rank 0)


def _finish(cfg: TrainConfig, data: PreparedData, run: Path, mcfg: Any, net: Any,
            best: dict[str, Any], epochs_run: int, steps: int) -> None:
    """Evaluate the best-validation weights on val and test; write predictions, results, bundle."""
    from recinet_cli.bundle import save_bundle

    solo = DistInfo(0, 1, 0, next(net.parameters()).device, None)
    best_state = load_checkpoint(run / "checkpoints" / "best.pt")
    net.load_state_dict(best_state["model"])
    results: dict[str, Any] = {"task": cfg.task, "dataset": data.dataset, "dataset_version": data.dataset_version,
                               "fold": cfg.fold, "properties": list(data.target_names),
                               "units": list(data.target_units), "best_epoch": int(best_state["epoch"]),
                               "epochs_run": epochs_run, "steps": steps, "split": data.split_kind,
                               "precision": cfg.precision}
    for name in ("val", "test"):
        ds = GraphTargetDataset(data.store_path, data.splits[name])
        sums, rows = _evaluate(net, _loader(ds, cfg.batch_size, None, 0), solo, cfg, mcfg, collect=name == "test")
        results[name] = {p: {"mae": m, "rmse": r, "n": n}
                         for p, m, r, n in zip(data.target_names, sums.mae(), sums.rmse(), sums.counts())}
        if name == "test":
            _write_predictions(run / "test_predictions.csv", data, rows)
    atomic_write_text(run / "results.json", json.dumps(results, indent=2) + "\n")
    info = {
        "name": cfg.name, "task": cfg.task, "model_config": mcfg.to_dict(),
        "featurizer": data.featurizer, "featurizer_hash": data.featurizer_hash,
        "targets": [{"name": p.name, "unit": p.unit, "aliases": list(p.aliases)} for p in data.properties],
        "group": cfg.group,
        "scaler": {"mean": net.target_mean.tolist(), "std": net.target_std.tolist()},
        "dataset": {"name": data.dataset, "version": data.dataset_version, "fold": cfg.fold, "split": data.split_kind,
                    "sizes": {k: len(v) for k, v in data.splits.items()}, "ids_sha256": data.split_ids_sha256()},
        "metrics": {"best_epoch": results["best_epoch"], "val": results["val"], "test": results["test"]},
        "train_config": cfg.to_dict(), "precision": cfg.precision, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    save_bundle(run / "model.safetensors", net.cpu(), info)


def _write_predictions(path: Path, data: PreparedData, rows: list[tuple[int, list[float], list[float]]]) -> None:
    names = data.target_names
    lines = [",".join(["id"] + [f"{p}_{k}" for p in names for k in ("true", "pred")])]
    for row, target, pred in sorted(rows, key=lambda r: data.ids[r[0]]):
        cells = [data.ids[row]]
        for t, p in zip(target, pred):
            cells += ["" if math.isnan(t) else f"{t:.8g}", f"{p:.8g}"]
        lines.append(",".join(cells))
    atomic_write_text(path, "\n".join(lines) + "\n")


# --------------------------------------------------------------------------- entry point


def _check_run_dir(run: Path, resume: bool) -> None:
    last = run / "checkpoints" / "last.pt"
    if resume and not last.is_file():
        raise RecinetError(f"--resume: {run} has no checkpoint (checkpoints/last.pt); nothing to resume")
    if not resume and last.is_file():
        raise RecinetError(f"{run} already holds a run; continue it with --resume or choose another --out")


def train(
    cfg: TrainConfig,
    *,
    resume: bool = False,
    progress: ProgressMode = "auto",
    log: Any = None,
) -> TrainResult:
    """Train, evaluate and bundle a model for ``cfg``; register it in the model store.

    ``resume``: continue the run in ``cfg.out`` from its last checkpoint. ``log``: a callable
    for one-line status messages (default: stderr on rank 0).
    """
    import sys

    def say(text: str) -> None:
        if log is not None:
            log(text)
        else:
            print(text, file=sys.stderr, flush=True)

    task = parse_task(cfg.task)
    check_gpus(cfg.gpus)
    requested = cfg.precision
    cfg = replace(cfg, precision=resolve_precision(cfg.precision, run_device(cfg)))
    if cfg.tensorboard:
        _tensorboard_available()
    run = Path(cfg.out) if cfg.out else Path("runs") / f"{task.default_name}-{time.strftime('%Y%m%d-%H%M%S')}"
    _check_run_dir(run, resume)
    if cfg.register and cfg.name and not resume and not (run / "registered.json").exists():
        from recinet_cli.modelstore import check_name, models_dir

        if (models_dir() / check_name(cfg.name)).exists():
            raise RecinetError(
                f"a model named {cfg.name!r} already exists in {models_dir()}; choose another --name "
                f"or `recinet models remove {cfg.name}`"
            )
    torchrun = under_torchrun()
    world = int(os.environ["WORLD_SIZE"]) if torchrun else cfg.world_size
    is_main = int(os.environ.get("RANK", "0")) == 0
    local_first = int(os.environ.get("LOCAL_RANK", "0")) == 0

    if torchrun and not local_first:
        _wait_for_marker(run)
    data = _prepare(task, cfg, say if is_main else (lambda s: None))
    check_sizes(data, cfg, world)
    if is_main:
        run.mkdir(parents=True, exist_ok=True)
        write_config(cfg, run / "config.json")
        _write_data_json(run, data)
        say(f"run directory: {run}")
        say(describe(requested, cfg.precision, run_device(cfg)))
        _say_splits(say, data)
    if torchrun:
        if local_first:
            (run / ".prepared").touch()
        run_worker(cfg, data, str(run), resume, progress)
    elif world > 1:
        launch(world, run_worker, cfg, data, str(run), resume, progress)
    else:
        run_worker(cfg, data, str(run), resume, progress)

    results = json.loads((run / "results.json").read_text()) if (run / "results.json").is_file() else {}
    bundle = run / "model.safetensors"
    name = None
    marker = run / "registered.json"
    if is_main and cfg.register and bundle.is_file():
        if marker.is_file():  # resuming a run that finished and was registered before
            name = json.loads(marker.read_text())["name"]
        else:
            from recinet_cli.modelstore import free_name, register

            name = cfg.name or free_name(task.default_name)
            register(bundle, name)
            atomic_write_text(marker, json.dumps({"name": name}) + "\n")
            say(f"model registered as {name!r}")
    return TrainResult(run, bundle, name, results)


def _tensorboard_available() -> None:
    try:
        import tensorboard  # noqa: F401
    except ImportError as exc:
        raise RecinetError("--tensorboard needs the tensorboard package: pip install tensorboard") from exc


def _wait_for_marker(run: Path, timeout: float = 3600.0) -> None:
    """Under torchrun, ranks other than a node's first wait until it has built the graph cache."""
    t0 = time.monotonic()
    while not (run / ".prepared").exists():
        if time.monotonic() - t0 > timeout:
            raise RecinetError(f"timed out waiting for local rank 0 to prepare the data in {run}")
        time.sleep(1.0)


def _prepare(task: Task, cfg: TrainConfig, say: Any) -> PreparedData:
    return prepare_data(task, cfg.data, cfg.fold, cfg.seed, cfg.val_fraction, cfg.test_fraction, log=say)


def _say_splits(say: Any, data: PreparedData) -> None:
    sizes = ", ".join(f"{k} {len(v)}" for k, v in data.splits.items())
    say(f"data: {data.dataset} {data.dataset_version}, split {data.split_kind}: {sizes}")
    if data.failures:
        first = "; ".join(f"{i}: {r}" for i, r in data.failures[:3])
        say(f"warning: {len(data.failures)} structure(s) could not be featurized and are left out ({first}{' ...' if len(data.failures) > 3 else ''}); see data.json")


def _write_data_json(run: Path, data: PreparedData) -> None:
    payload = {
        "dataset": data.dataset, "version": data.dataset_version, "graph_store": data.store_path,
        "properties": [{"name": p.name, "unit": p.unit} for p in data.properties],
        "featurizer": data.featurizer, "featurizer_hash": data.featurizer_hash, "split": data.split_kind,
        "sizes": {k: len(v) for k, v in data.splits.items()},
        "labels": {k: dict(zip(data.target_names, v.label_counts())) for k, v in data.splits.items()},
        "ids_sha256": data.split_ids_sha256(),
        "failures": [{"id": i, "reason": r} for i, r in data.failures],
    }
    atomic_write_text(run / "data.json", json.dumps(payload, indent=2) + "\n")
