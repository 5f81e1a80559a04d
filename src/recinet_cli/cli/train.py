"""``recinet train``: a thin layer over :func:`recinet_cli.train.engine.train`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from recinet_cli.cli.common import console, print_plain
from recinet_cli.errors import RecinetError


def parse_head_options(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs; values parsed as JSON when possible (``top_k=2`` -> 2)."""
    import json

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise RecinetError(f"--head-option {item!r}: expected KEY=VALUE, e.g. top_k=2")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def _model_flags(head: str | None, head_option: list[str], kset: str | None, gmax: float | None,
                 hidden: int | None, reciprocal: bool | None) -> dict[str, Any]:
    model: dict[str, Any] = {}
    if head is not None:
        model["head"] = head
    if head_option:
        model["head_options"] = parse_head_options(head_option)
    for key, value in (("kset", kset), ("gmax", gmax), ("hidden", hidden), ("reciprocal", reciprocal)):
        if value is not None:
            model[key] = value
    return model


def _summary(result: Any) -> None:
    import os

    from rich.table import Table
    from rich.text import Text

    if os.environ.get("RANK", "0") != "0":  # under torchrun every rank runs this command
        return

    r = result.results
    table = Table(title=f"{r.get('task')}  (best epoch {r.get('best_epoch')} of {r.get('epochs_run')})",
                  title_justify="left")
    for col in ("property", "unit", "val MAE", "test MAE", "test RMSE", "test n"):
        table.add_column(col, justify="left" if col in ("property", "unit") else "right")
    for prop, unit in zip(r.get("properties", []), r.get("units", [])):
        v, t = r["val"][prop], r["test"][prop]
        table.add_row(Text(prop), Text(unit), f"{v['mae']:.4g}", f"{t['mae']:.4g}", f"{t['rmse']:.4g}", str(t["n"]))
    console.print(table)
    print_plain(f"run: {result.run_dir}")
    print_plain(f"bundle: {result.bundle}")
    if result.model_name:
        print_plain(f"model: {result.model_name} (recinet models show {result.model_name})")


def train(
    task: str | None = typer.Option(None, "--task", "-t", help="DATASET:PROP\\[,PROP...], e.g. matbench:jdft2d or jarvis:bandgap_mbj,bandgap_opt (several = multi-task)."),
    data: Path | None = typer.Option(None, "--data", help="Local data for the dataset: a folder (folder:), a graph file (h5:) or a local copy of the download."),
    fold: int | None = typer.Option(None, "--fold", help="Cross-validation fold (Matbench: 0..4)."),
    config: Path | None = typer.Option(None, "--config", help="TOML or JSON file of settings (a run's config.json works); flags override it."),
    resume: Path | None = typer.Option(None, "--resume", help="Continue the run in this directory from its last checkpoint."),
    epochs: int | None = typer.Option(None, "--epochs", help="Epochs (paper preset per task, else 500)."),
    lr: float | None = typer.Option(None, "--lr", help="Peak learning rate of OneCycle (preset per task)."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Structures per batch and process \\[64]."),
    blocks: int | None = typer.Option(None, "--blocks", help="ReciNet blocks (preset per task)."),
    weight_decay: float | None = typer.Option(None, "--weight-decay", help="Adam weight decay \\[1e-5]."),
    head: str | None = typer.Option(None, "--head", help="Head plugin \\[scalar; mt-moe for several properties]."),
    head_option: list[str] = typer.Option([], "--head-option", help="Head option KEY=VALUE (repeatable), e.g. top_k=2."),
    kset: str | None = typer.Option(None, "--kset", help="Reciprocal k-set: sphere or box."),
    gmax: float | None = typer.Option(None, "--gmax", help="Sphere k-set radius in 1/Å."),
    hidden: int | None = typer.Option(None, "--hidden", help="Feature width \\[256]."),
    reciprocal: bool | None = typer.Option(None, "--reciprocal/--no-reciprocal", help="Use the reciprocal block."),
    seed: int | None = typer.Option(None, "--seed", help="Random seed \\[123]."),
    deterministic: bool | None = typer.Option(None, "--deterministic/--no-deterministic", help="Deterministic algorithms (slower on GPU)."),
    clip_grad: float | None = typer.Option(None, "--clip-grad", help="Clip the gradient norm to this value \\[off]."),
    precision: str | None = typer.Option(None, "--precision", help="auto (bf16 autocast on CPUs with AMX/AVX512-BF16 and bf16 GPUs, else fp32), fp32 or bf16 \\[auto]."),
    patience: int | None = typer.Option(None, "--patience", help="Stop after N epochs without a better validation MAE \\[off]."),
    val_fraction: float | None = typer.Option(None, "--val-fraction", help="Random validation fraction for datasets without an official split \\[0.1]."),
    test_fraction: float | None = typer.Option(None, "--test-fraction", help="Random test fraction for datasets without an official split \\[0.1]."),
    device: str | None = typer.Option(None, "--device", help="auto, cpu or cuda \\[auto]."),
    gpus: int | None = typer.Option(None, "--gpus", help="Train on N GPUs of this machine with DDP (NCCL). Not needed under torchrun."),
    nprocs: int | None = typer.Option(None, "--nprocs", help="Train with N CPU processes (DDP on gloo)."),
    num_workers: int | None = typer.Option(None, "--num-workers", help="DataLoader workers per process \\[0]."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Run directory \\[runs/TASK-TIMESTAMP]."),
    name: str | None = typer.Option(None, "--name", help="Model store name \\[derived from the task]."),
    group: str | None = typer.Option(None, "--group", help="Ensemble group: models trained with one group name (e.g. several --seed values) are averaged by `recinet predict --model GROUP`."),
    register: bool | None = typer.Option(None, "--register/--no-register", help="Add the model to the model store \\[yes]."),
    tensorboard: bool | None = typer.Option(None, "--tensorboard/--no-tensorboard", help="Also write TensorBoard logs."),
    compile_model: bool | None = typer.Option(None, "--compile/--no-compile", help="torch.compile the training forward (dynamic shapes; for CUDA, slower on CPU) \\[off]."),
) -> None:
    """Train ReciNet on a dataset plugin's properties; paper presets unless overridden."""
    from recinet_cli.train.config import read_config_file, resolve
    from recinet_cli.train.engine import train as run_training
    from recinet_cli.train.tasks import parse_task

    flags = {
        "data": str(data) if data else None, "fold": fold, "epochs": epochs, "lr": lr, "batch_size": batch_size,
        "blocks": blocks, "weight_decay": weight_decay, "seed": seed, "deterministic": deterministic,
        "clip_grad": clip_grad, "precision": precision, "patience": patience, "val_fraction": val_fraction,
        "test_fraction": test_fraction, "device": device, "gpus": gpus, "nprocs": nprocs,
        "num_workers": num_workers, "out": str(out) if out else None, "name": name, "group": group, "register": register,
        "tensorboard": tensorboard, "compile": compile_model,
    }
    model = _model_flags(head, head_option, kset, gmax, hidden, reciprocal)
    if resume is not None:
        given = [k for k, v in flags.items() if v is not None] + (["task"] if task else []) + list(model)
        if given or config:
            raise RecinetError(f"--resume continues a run with its stored config; drop {', '.join(given) or '--config'}")
        stored = resume / "config.json"
        if not stored.is_file():
            raise RecinetError(f"--resume: {resume} has no config.json; is it a run directory?")
        cfg = resolve(None, {}, {**read_config_file(stored), "out": str(resume)}, {})
        result = run_training(cfg, resume=True)
        _summary(result)
        return
    file_values = read_config_file(config) if config else {}
    task_text = task or file_values.get("task")
    if not task_text:
        raise RecinetError("no task: pass --task DATASET:PROP (see `recinet datasets`) or a --config with task = ...")
    parsed = parse_task(task_text)
    preset = parsed.dataset.preset(list(parsed.names))
    cfg = resolve(task_text, preset, file_values, {**flags, "model": model} if model else flags)
    result = run_training(cfg)
    _summary(result)
