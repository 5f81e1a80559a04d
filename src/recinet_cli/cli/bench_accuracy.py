"""``recinet bench accuracy`` and ``recinet bench ablation`` (thin layers over
:mod:`recinet_cli.bench.accuracy` and :mod:`recinet_cli.bench.ablation`)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import typer

from recinet_cli.cli.common import console, console_err, print_plain, write_json
from recinet_cli.errors import RecinetError


def _log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _folds(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        folds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        folds = []
    if not folds:
        raise RecinetError(f"--folds: expected comma-separated fold numbers, e.g. 0,1,2, got {text!r}")
    return folds


def _model_options(items: list[str], hidden: int | None) -> dict[str, Any]:
    model: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise RecinetError(f"--model-option {item!r}: expected KEY=VALUE, e.g. hidden=64")
        try:
            model[key] = json.loads(value)
        except ValueError:
            model[key] = value
    if hidden is not None:
        model["hidden"] = hidden
    return model


def _settings(epochs: int | None, seed: int | None, device: str | None, gpus: int | None, data: Path | None,
              batch_size: int | None, blocks: int | None, model: dict[str, Any]) -> Any:
    """The :class:`~recinet_cli.bench.runs.RunSettings` of the command's options."""
    from recinet_cli.bench.runs import RunSettings

    return RunSettings(epochs=epochs, seed=seed, device=device, gpus=gpus, data=str(data) if data else None,
                       batch_size=batch_size, blocks=blocks, model=model)


def _num(value: float | None, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.{digits}g}"


def _pm(mean: float | None, std: float | None) -> str:
    return _num(mean) if std is None else f"{_num(mean)} ± {_num(std, 3)}"


def _announce(runs: int, epochs: int | None, paper_epochs: int, what: str) -> None:
    if epochs is None or epochs >= paper_epochs:
        console_err.print(
            f"[yellow]note:[/] {runs} {what} x {epochs or paper_epochs} epochs (the paper's setting): hours per run "
            "on a GPU, far longer on a CPU; pass --epochs N for a quick look (then the numbers are not comparable "
            "to the paper). Rerun the same command to resume.",
            highlight=False, soft_wrap=True,
        )
    else:
        console_err.print(
            f"[yellow]warning:[/] {epochs} epochs < the paper's {paper_epochs}: numbers are NOT comparable to the paper.",
            highlight=False, soft_wrap=True,
        )


# ----------------------------------------------------------------------------- accuracy


def accuracy(
    task: str = typer.Option(..., "--task", "-t", help="DATASET:PROP, e.g. matbench:jdft2d or jarvis:ehull."),
    folds: str | None = typer.Option(None, "--folds", help="Comma-separated folds (Matbench: default all of 0..4)."),
    epochs: int | None = typer.Option(None, "--epochs", min=1, help="Epochs per run (default: the paper preset, 500)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Runs and outputs go to OUT/TASK/... \\[runs/bench-accuracy]."),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the figures to this JSON file."),
    seed: int | None = typer.Option(None, "--seed", help="Random seed \\[123]."),
    device: str | None = typer.Option(None, "--device", help="auto, cpu or cuda \\[auto]."),
    gpus: int | None = typer.Option(None, "--gpus", help="Train each run on N GPUs (DDP)."),
    data: Path | None = typer.Option(None, "--data", help="Local copy of the dataset file."),
    batch_size: int | None = typer.Option(None, "--batch-size", hidden=True, help="Structures per batch \\[64]."),
    blocks: int | None = typer.Option(None, "--blocks", hidden=True, help="ReciNet blocks (preset per task)."),
    hidden: int | None = typer.Option(None, "--hidden", hidden=True, help="Feature width \\[256]."),
    model_option: list[str] = typer.Option([], "--model-option", hidden=True, help="Model setting KEY=VALUE (repeatable)."),
) -> None:
    """Train (or reuse) ReciNet on a task's official split(s); MAE/RMSE vs the paper and the leaderboard."""
    from recinet_cli.bench.accuracy import PAPER_EPOCHS, run_accuracy
    from recinet_cli.train.tasks import parse_task

    fold_list = _folds(folds)
    parsed = parse_task(task)
    preset_epochs = int(parsed.dataset.preset(list(parsed.names)).get("epochs", PAPER_EPOCHS))
    n_runs = len(fold_list) if fold_list is not None else (int(getattr(parsed.dataset, "folds", 0) or 0) or 1)
    _announce(n_runs, epochs, preset_epochs, "run(s)")
    r = run_accuracy(
        task, folds=fold_list, out=out, log=_log,
        settings=_settings(epochs, seed, device, gpus, data, batch_size, blocks, _model_options(model_option, hidden)),
    )
    _print_accuracy(r)
    write_json(json_out, r.as_dict())


def _print_accuracy(r: Any) -> None:
    from rich.table import Table

    for prop, unit in zip(r.properties, r.units):
        table = Table(title=f"{r.task}: {prop} ({unit}), {r.epochs} epoch(s) per run", title_justify="left")
        for col in ("run", "val MAE", "test MAE", "test RMSE", "n", "best ep.", "s/epoch", "status"):
            table.add_column(col, justify="left" if col in ("run", "status") else "right")
        for f in r.folds:
            t = f.test[prop]
            table.add_row("official" if f.fold is None else f"fold {f.fold}", _num(f.val_mae.get(prop)),
                          _num(t["mae"]), _num(t["rmse"]), str(t["n"]), str(f.run.results.get("best_epoch")),
                          _num(f.run.epoch_seconds, 3), f.run.status)
        console.print(table)
        s = r.summary(prop)
        cmp = Table(title=f"{r.task}: test {prop} ({unit}), ours vs published", title_justify="left")
        for col in ("model", "test MAE", "test RMSE", "source"):
            cmp.add_column(col, justify="right" if col.startswith("test") else "left")
        folds = f"mean ± std over {s['folds']} folds" if s["folds"] > 1 else "one run"
        cmp.add_row("ReciNet (ours)", _pm(s["mae"], s["mae_std"]), _pm(s["rmse"], s["rmse_std"]),
                    f"{folds}, {r.epochs} epochs")
        paper = r.paper.get(prop)
        if paper:
            note = "" if paper["paper_unit"] == unit else f"; printed {_num(paper['paper_value'])} {paper['paper_unit']}"
            cmp.add_row("ReciNet (paper)", _pm(paper["mae"], paper["mae_std"]),
                        _pm(paper["rmse"], paper["rmse_std"]) if paper["rmse"] is not None else "—",
                        f"{paper['source']}, {r.paper_epochs} epochs{note}")
        board = r.leaderboards.get(prop)
        if board and board.get("best"):
            name, value = board["best"]
            shown = [name] + [o for o in ("alignn", "alignn_model", "coNGN", "kgcnn_coNGN", "potnet", "dummy")
                              if o in board["scores"] and o != name]
            for i, other in enumerate(shown):
                cmp.add_row(other, _num(board["scores"][other]), "—",
                            ("best; " if i == 0 else "") + board["source"])
        console.print(cmp)
    if not r.comparable:
        print_plain(f"NOTE: {r.epochs} epochs < the paper's {r.paper_epochs}: these numbers are NOT comparable "
                    "to the paper's or the leaderboard's.")
    if r.written:
        print_plain(f"Matbench files: {', '.join(r.written)}"
                    + ("" if r.complete else " (partial: not every fold; not a complete leaderboard record)"))


# ----------------------------------------------------------------------------- ablation


def ablation(
    task: str = typer.Option(..., "--task", "-t", help="DATASET:PROP, e.g. jarvis:formation_energy or matbench:jdft2d."),
    variants: str | None = typer.Option(
        None, "--variants",
        help="Comma-separated variants: full, no-reciprocal, blocks=N, kset=box, gmax=X, KEY=VALUE, joined with + "
             "[full,no-reciprocal,blocks=3,blocks=4,blocks=5,kset=box,gmax=2.0,gmax=3.0].",
    ),
    fold: int | None = typer.Option(None, "--fold", help="Fold of a cross-validated dataset \\[0]."),
    epochs: int | None = typer.Option(None, "--epochs", min=1, help="Epochs per run (default: the paper preset, 500)."),
    seed: int | None = typer.Option(None, "--seed", help="Random seed, the same for every variant \\[123]."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Runs go to OUT/TASK/SPLIT/VARIANT \\[runs/bench-ablation]."),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the figures to this JSON file."),
    device: str | None = typer.Option(None, "--device", help="auto, cpu or cuda \\[auto]."),
    gpus: int | None = typer.Option(None, "--gpus", help="Train each run on N GPUs (DDP)."),
    data: Path | None = typer.Option(None, "--data", help="Local copy of the dataset file."),
    batch_size: int | None = typer.Option(None, "--batch-size", hidden=True, help="Structures per batch \\[64]."),
    blocks: int | None = typer.Option(None, "--blocks", hidden=True, help="Base ReciNet blocks (preset per task)."),
    hidden: int | None = typer.Option(None, "--hidden", hidden=True, help="Feature width \\[256]."),
    model_option: list[str] = typer.Option([], "--model-option", hidden=True, help="Base model setting KEY=VALUE."),
) -> None:
    """Table 4 / Table 11 ablations on one task: reciprocal block, depth, k-set, G_max; one table."""
    from recinet_cli.bench.ablation import DEFAULT_VARIANTS, run_ablation
    from recinet_cli.bench.accuracy import PAPER_EPOCHS
    from recinet_cli.train.tasks import parse_task

    names = [v.strip() for v in variants.split(",") if v.strip()] if variants is not None else list(DEFAULT_VARIANTS)
    if not names:
        raise RecinetError("--variants: no variant given")
    parsed = parse_task(task)
    preset_epochs = int(parsed.dataset.preset(list(parsed.names)).get("epochs", PAPER_EPOCHS))
    _announce(len(names) + (0 if "full" in names else 1), epochs, preset_epochs, "variant run(s)")
    r = run_ablation(
        task, variants=names, fold=fold, out=out, log=_log,
        settings=_settings(epochs, seed, device, gpus, data, batch_size, blocks, _model_options(model_option, hidden)),
    )
    _print_ablation(r)
    write_json(json_out, r.as_dict())


def _print_ablation(r: Any) -> None:
    from rich.table import Table

    split = "official split" if r.fold is None else f"fold {r.fold}"
    table = Table(title=f"{r.task} ablation: {split}, seed {r.seed}, {r.epochs} epochs per run, MAE in {r.unit}",
                  title_justify="left")
    for col in ("variant", "blocks", "recip.", "k-set", "val MAE", "test MAE", "Δ vs full", "params", "s/epoch", "paper"):
        table.add_column(col, justify="left" if col in ("variant", "k-set", "recip.") else "right")
    for row in (r.row_dict(x) for x in r.rows):
        kset = row["kset"] if row["kset"] == "box" else f"sphere {row['gmax']:g}"
        delta = "—" if row["variant"] == "full" else (
            f"{row['delta_test_mae']:+.4g} ({row['delta_test_mae_pct']:+.1f}%)" if row["delta_test_mae_pct"] is not None
            else f"{row['delta_test_mae']:+.4g}")
        paper = row["paper"]
        paper_text = f"{_num(paper['mae'])} ({paper['source']})" if paper and paper["mae"] is not None else "—"
        name = row["variant"] + (f" (= {row['same_as']})" if row["same_as"] else "")
        table.add_row(name, str(row["blocks"]), "yes" if row["reciprocal"] else "no", kset, _num(row["val_mae"]),
                      _num(row["test_mae"]), delta, f"{row['params']:,}" if row["params"] else "—",
                      _num(row["epoch_seconds"], 3), paper_text)
    console.print(table)
    if r.dataset != "jarvis":
        print_plain("paper: Tables 4 and 11 report JARVIS tasks only; no paper numbers for this task.")
    if r.epochs < r.paper_epochs:
        print_plain(f"NOTE: {r.epochs} epochs < the paper's {r.paper_epochs}: not comparable to the paper's numbers; "
                    "differences between variants this short mostly reflect early-training speed.")
