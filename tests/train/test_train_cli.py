"""``recinet train`` end to end on the 50 labelled real JARVIS POSCARs (tiny model, CPU).

One finished run (module fixture) is inspected by several tests; the other runs are as
short as their subject allows (``--no-reciprocal`` where the reciprocal block is beside the
point). The graph cache is shared by every test, the model store is per test (or per
module for the finished run).
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import Result

import recinet_cli.model.recinet as recinet_model
import recinet_cli.train.engine as engine
import recinet_cli.train.step as train_step_module
from tests.train.helpers import (
    POSCARS,
    TASK,
    TINY,
    error_message,
    invoke,
    isolated_env,
    labelled_gaps,
    mae,
    read_csv,
    session_cache,
    set_graph_cache,
)

METRIC_COLUMNS = ["epoch", "step", "lr", "time_s", "train_loss", "val_loss", "train_mae_bandgap",
                  "val_mae_bandgap", "val_score"]
#: 50 labelled structures, random split 40/5/5; batch 8 -> 5 steps per epoch.
SIZES = {"train": 40, "val": 5, "test": 5}
STEPS_PER_EPOCH = 5
#: For runs about the training loop, not the model: no reciprocal block, 2 steps per epoch.
FAST = ["--blocks", "1", "--hidden", "32", "--batch-size", "20", "--no-reciprocal"]
FAST_STEPS = 2


@dataclass(frozen=True)
class Run:
    dir: Path
    result: Result
    home: Path  # RECINET_HOME the run registered its model in


def load_json(path: Path) -> Any:
    return json.loads(path.read_text())


@pytest.fixture
def graph_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = session_cache(tmp_path_factory)
    set_graph_cache(monkeypatch, cache)
    return cache


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """``recinet train --task folder:bandgap --data POSCARS --blocks 1 --hidden 32 --epochs 2
    --batch-size 8 -o RUN`` (reciprocal block on)."""
    home = tmp_path_factory.mktemp("train-home")
    run = tmp_path_factory.mktemp("runs") / "RUN"
    with pytest.MonkeyPatch.context() as mp:
        isolated_env(mp, home, session_cache(tmp_path_factory))
        result = invoke(["train", *TASK, *TINY, "-o", run])
    return Run(run, result, home / "recinet")


@pytest.fixture
def run_dir(finished: Run) -> Path:
    assert finished.result.exit_code == 0, finished.result.output
    return finished.dir


# ----------------------------------------------------------------------------- the finished run


@pytest.mark.slow
def test_run_directory_and_summary(finished: Run) -> None:
    res = finished.result
    assert res.exit_code == 0, res.output
    names = {p.relative_to(finished.dir).as_posix() for p in finished.dir.rglob("*") if p.is_file()}
    assert names >= {"checkpoints/best.pt", "checkpoints/last.pt", "config.json", "data.json", "metrics.csv",
                     "model.safetensors", "results.json", "test_predictions.csv"}
    assert not [n for n in names if ".tmp-" in n]  # atomic writes leave no temporary files
    assert f"run: {finished.dir}" in res.stdout.splitlines()
    assert "model: folder-bandgap (recinet models show folder-bandgap)" in res.stdout
    assert "data: folder local, split random (seed 123, val 0.1, test 0.1): train 40, val 5, test 5" in res.stderr
    assert "model registered as 'folder-bandgap'" in res.stderr
    assert "Traceback" not in res.output


@pytest.mark.slow
def test_config_json_holds_the_resolved_flags(run_dir: Path) -> None:
    cfg = load_json(run_dir / "config.json")
    assert cfg["task"] == "folder:bandgap" and cfg["data"] == str(POSCARS) and cfg["out"] == str(run_dir)
    assert (cfg["blocks"], cfg["epochs"], cfg["batch_size"], cfg["model"]) == (1, 2, 8, {"hidden": 32})
    # what was not given keeps the defaults
    from recinet_cli.model.precision import resolve_precision

    used = resolve_precision("auto", "cpu")  # config.json records what auto resolved to
    assert (cfg["lr"], cfg["seed"], cfg["precision"], cfg["patience"], cfg["register"]) == (1e-3, 123, used, None, True)
    from recinet_cli.train.config import from_mapping

    assert from_mapping(cfg).to_dict() == cfg


@pytest.mark.slow
def test_data_json(run_dir: Path) -> None:
    data = load_json(run_dir / "data.json")
    assert data["dataset"] == "folder" and data["version"] == "local"
    assert data["properties"] == [{"name": "bandgap", "unit": ""}]
    assert data["sizes"] == SIZES
    assert data["labels"] == {k: {"bandgap": v} for k, v in SIZES.items()}
    assert data["failures"] == []
    assert data["split"] == "random (seed 123, val 0.1, test 0.1)"
    assert Path(data["graph_store"]).is_file()
    assert data["featurizer"]["max_neighbors"] == 16 and data["featurizer"]["cutoff"] == 4.0


@pytest.mark.slow
def test_metrics_csv_one_row_per_epoch(run_dir: Path) -> None:
    header, rows = read_csv(run_dir / "metrics.csv")
    assert header == METRIC_COLUMNS
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert [int(r["step"]) for r in rows] == [STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH]
    for r in rows:
        values = {k: float(v) for k, v in r.items()}
        assert all(math.isfinite(v) for v in values.values()), r
        assert values["lr"] > 0 and values["time_s"] > 0
        assert values["train_loss"] > 0 and values["train_mae_bandgap"] > 0 and values["val_mae_bandgap"] > 0
        assert values["val_score"] == values["val_mae_bandgap"]  # one property: the score is its MAE
    # OneCycle: the peak is 1e-3 and the last step anneals far below it
    assert float(rows[-1]["lr"]) < float(rows[0]["lr"]) <= 1e-3


@pytest.mark.slow
def test_checkpoints_load_weights_only(run_dir: Path) -> None:
    last = torch.load(run_dir / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    best = torch.load(run_dir / "checkpoints" / "best.pt", map_location="cpu", weights_only=True)
    assert last["format"] == best["format"] == "recinet-checkpoint"
    assert (last["epoch"], last["step"], last["world_size"]) == (2, 2 * STEPS_PER_EPOCH, 1)
    assert {"model", "optimizer", "scheduler", "rng", "best"} <= set(last)
    _, rows = read_csv(run_dir / "metrics.csv")
    scores = [float(r["val_score"]) for r in rows]
    best_epoch = scores.index(min(scores)) + 1
    results = load_json(run_dir / "results.json")
    assert best["epoch"] == results["best_epoch"] == last["best"]["epoch"] == best_epoch
    assert best["score"] == pytest.approx(min(scores), rel=1e-6)
    assert set(best["model"]) == set(last["model"])


@pytest.mark.slow
def test_test_predictions_and_results(run_dir: Path) -> None:
    header, rows = read_csv(run_dir / "test_predictions.csv")
    assert header == ["id", "bandgap_true", "bandgap_pred"]
    gaps = labelled_gaps()
    ids = [r["id"] for r in rows]
    assert len(ids) == SIZES["test"] == len(set(ids)) and ids == sorted(ids)
    assert set(ids) <= set(gaps)
    # the ids are the recorded test split
    data = load_json(run_dir / "data.json")
    assert hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest() == data["ids_sha256"]["test"]
    pairs = []
    for r in rows:
        true, pred = float(r["bandgap_true"]), float(r["bandgap_pred"])
        assert true == pytest.approx(gaps[r["id"]], abs=1e-6)
        pairs.append((true, pred))
    results = load_json(run_dir / "results.json")
    assert results["task"] == "folder:bandgap" and results["properties"] == ["bandgap"]
    assert (results["epochs_run"], results["steps"]) == (2, 2 * STEPS_PER_EPOCH)
    test = results["test"]["bandgap"]
    assert test["n"] == SIZES["test"] and results["val"]["bandgap"]["n"] == SIZES["val"]
    assert test["mae"] == pytest.approx(mae(pairs), abs=1e-5)
    rmse = math.sqrt(sum((t - p) ** 2 for t, p in pairs) / len(pairs))
    assert test["rmse"] == pytest.approx(rmse, abs=1e-5)
    # the validation MAE is that of the best epoch's weights
    _, mrows = read_csv(run_dir / "metrics.csv")
    best_row = mrows[results["best_epoch"] - 1]
    assert results["val"]["bandgap"]["mae"] == pytest.approx(float(best_row["val_mae_bandgap"]), rel=1e-5)


@pytest.mark.slow
def test_bundle_holds_the_best_weights_and_reproduces_the_predictions(run_dir: Path) -> None:
    from safetensors.torch import load_file
    from torch_geometric.data import Batch

    from recinet_cli.bundle import load_bundle
    from recinet_cli.store.dataset import to_data
    from recinet_cli.store.reader import GraphStore

    best = torch.load(run_dir / "checkpoints" / "best.pt", map_location="cpu", weights_only=True)["model"]
    tensors = load_file(str(run_dir / "model.safetensors"))
    assert set(tensors) == set(best)
    for k, v in best.items():
        assert torch.equal(tensors[k], v), k
    model, info = load_bundle(run_dir / "model.safetensors")
    results = load_json(run_dir / "results.json")
    assert info["task"] == "folder:bandgap"
    assert info["metrics"] == {"best_epoch": results["best_epoch"], "val": results["val"], "test": results["test"]}
    assert info["train_config"] == load_json(run_dir / "config.json")
    assert info["targets"] == [{"name": "bandgap", "unit": "", "aliases": []}]
    assert info["group"] is None
    assert info["dataset"]["sizes"] == SIZES
    # the bundle alone predicts what the run reported
    _, rows = read_csv(run_dir / "test_predictions.csv")
    with GraphStore(load_json(run_dir / "data.json")["graph_store"]) as store:
        index = {sid: i for i, sid in enumerate(store.ids)}
        batch = Batch.from_data_list([to_data(store[index[r["id"]]]) for r in rows])
    from recinet_cli.model.precision import autocast

    assert info["precision"] == load_json(run_dir / "config.json")["precision"] == results["precision"]
    with torch.no_grad(), autocast(info["precision"], "cpu"):  # the precision the run evaluated in
        pred = model.predict(batch)[:, 0].tolist()
    assert pred == pytest.approx([float(r["bandgap_pred"]) for r in rows], abs=1e-5)


@pytest.mark.slow
def test_model_store_list_show_remove(finished: Run, run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECINET_HOME", str(finished.home))
    res = invoke(["models", "list", "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    assert [r["name"] for r in rows] == ["folder-bandgap"]
    results = load_json(run_dir / "results.json")
    assert rows[0]["task"] == "folder:bandgap" and rows[0]["dataset"] == "folder local" and rows[0]["error"] is None
    assert rows[0]["test_mae"] == f"bandgap {results['test']['bandgap']['mae']:.4g}"
    stored = finished.home / "models" / "folder-bandgap" / "model.safetensors"
    assert stored.read_bytes() == (run_dir / "model.safetensors").read_bytes()
    res = invoke(["models", "show", "folder-bandgap"])
    assert res.exit_code == 0, res.output
    assert "task: folder:bandgap" in res.stdout.splitlines()
    assert f"best epoch: {results['best_epoch']}" in res.stdout.splitlines()
    assert "model: 1 blocks, hidden 32, head scalar, reciprocal True (sphere, gmax 2.5)" in res.stdout
    res = invoke(["models", "remove", "folder-bandgap", "--yes"])
    assert res.exit_code == 0, res.output
    assert json.loads(invoke(["models", "list", "--json"]).stdout) == []
    assert (run_dir / "model.safetensors").is_file()  # the run keeps its bundle


@pytest.mark.slow
def test_same_out_without_resume_is_refused(run_dir: Path) -> None:
    before = (run_dir / "metrics.csv").read_bytes()
    msg = error_message(invoke(["train", *TASK, *TINY, "-o", run_dir]))
    assert "--resume" in msg and str(run_dir) in msg
    assert (run_dir / "metrics.csv").read_bytes() == before


@pytest.mark.slow
def test_resume_of_a_finished_run_does_nothing_more(run_dir: Path, tmp_path: Path, graph_cache: Path) -> None:
    copy = tmp_path / "RUN"
    shutil.copytree(run_dir, copy)
    last_before = (copy / "checkpoints" / "last.pt").read_bytes()
    _, rows_before = read_csv(copy / "metrics.csv")
    res = invoke(["train", "--resume", copy])
    assert res.exit_code == 0, res.output
    _, rows_after = read_csv(copy / "metrics.csv")
    assert rows_after == rows_before
    assert (copy / "checkpoints" / "last.pt").read_bytes() == last_before  # no step was taken
    results = load_json(copy / "results.json")
    original = load_json(run_dir / "results.json")
    assert (results["epochs_run"], results["steps"]) == (2, 2 * STEPS_PER_EPOCH)
    assert results["test"] == original["test"] and results["best_epoch"] == original["best_epoch"]
    assert (copy / "test_predictions.csv").read_text() == (run_dir / "test_predictions.csv").read_text()


@pytest.mark.slow
def test_resume_of_a_finished_named_run_exits_0(run_dir: Path, tmp_path: Path, graph_cache: Path) -> None:
    from recinet_cli.modelstore import list_models, register

    copy = tmp_path / "RUN"
    shutil.copytree(run_dir, copy)
    cfg = load_json(copy / "config.json")
    (copy / "config.json").write_text(json.dumps({**cfg, "name": "tiny-gap"}))
    register(copy / "model.safetensors", "tiny-gap")  # what the finished run did
    res = invoke(["train", "--resume", copy])
    assert res.exit_code == 0, res.output
    assert [e.name for e in list_models()] == ["tiny-gap"]


# ----------------------------------------------------------------------------- other runs


@pytest.mark.slow
def test_config_file_with_overriding_flags_and_bf16(tmp_path: Path, graph_cache: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "tiny.toml"
    config.write_text(
        f'task = "folder:bandgap"\ndata = "{POSCARS}"\nepochs = 1\nbatch_size = 16\nblocks = 1\n'
        'seed = 7\nprecision = "fp32"\nregister = false\n[model]\nhidden = 32\nrbf_bins = 64\n'
    )
    import recinet_cli.train.step as step

    seen: list[tuple[bool, torch.dtype]] = []
    real = step.autocast

    def spy(precision: str, device: Any) -> Any:
        ctx = real(precision, device)
        seen.append((ctx._enabled, ctx.fast_dtype))
        return ctx

    monkeypatch.setattr(step, "autocast", spy)
    run = tmp_path / "RUN"
    res = invoke(["train", "--config", config, "--batch-size", "8", "--precision", "bf16", "--hidden", "24",
                  "-o", run])
    assert res.exit_code == 0, res.output
    cfg = load_json(run / "config.json")
    assert cfg["batch_size"] == 8 and cfg["precision"] == "bf16"  # flags win
    assert (cfg["epochs"], cfg["seed"], cfg["blocks"], cfg["register"]) == (1, 7, 1, False)  # from the file
    assert cfg["model"] == {"hidden": 24, "rbf_bins": 64}  # merged per key
    assert cfg["task"] == "folder:bandgap" and cfg["data"] == str(POSCARS)
    _, rows = read_csv(run / "metrics.csv")
    assert [int(r["step"]) for r in rows] == [STEPS_PER_EPOCH]  # batch 8, not the file's 16
    # the bf16 autocast path ran on the CPU, and gave finite numbers
    assert seen and all(s == (True, torch.bfloat16) for s in seen)
    results = load_json(run / "results.json")
    assert math.isfinite(results["test"]["bandgap"]["mae"]) and math.isfinite(results["val"]["bandgap"]["mae"])
    from recinet_cli.bundle import read_bundle_info

    info = read_bundle_info(run / "model.safetensors")
    assert info["model_config"]["hidden"] == 24 and info["model_config"]["rbf_bins"] == 64
    assert "model registered" not in res.stderr  # register = false
    assert json.loads(invoke(["models", "list", "--json"]).stdout) == []


@pytest.mark.slow
def test_patience_stops_after_patience_epochs_without_improvement(tmp_path: Path, graph_cache: Path) -> None:
    """Real scores: whatever the validation curve, the run stops exactly ``patience`` epochs
    after its best epoch, or at ``--epochs``."""
    run = tmp_path / "RUN"
    res = invoke(["train", *TASK, *FAST, "--epochs", "4", "--patience", "1", "--lr", "0.02", "-o", run])
    assert res.exit_code == 0, res.output
    _, rows = read_csv(run / "metrics.csv")
    scores = [float(r["val_score"]) for r in rows]
    results = load_json(run / "results.json")
    best_epoch = scores.index(min(scores)) + 1
    assert results["best_epoch"] == best_epoch
    assert results["epochs_run"] == len(rows)
    # the invariant of patience 1: every epoch but the last improved on all before it
    for i in range(1, len(rows) - 1):
        assert scores[i] < min(scores[:i]), scores
    if len(rows) < 4:
        assert len(rows) == best_epoch + 1 and scores[-1] >= min(scores[:-1])
        assert "early stop: no better validation score for 1 epochs" in res.stderr
    else:
        assert len(rows) == 4 and "early stop" not in res.stderr
    assert [int(r["step"]) for r in rows] == [FAST_STEPS * (i + 1) for i in range(len(rows))]


@pytest.mark.slow
def test_patience_with_a_scripted_validation_curve(tmp_path: Path, graph_cache: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Deterministic early stop: scores 1, 2, 1.5 -> best epoch 1, stop after epoch 3
    (patience 2, although 1.5 improved on the previous epoch); best.pt is epoch 1's."""
    scripted = iter([1.0, 2.0, 1.5, 0.5, 0.1])
    monkeypatch.setattr(engine, "selection_score", lambda val_mae, std: next(scripted))
    run = tmp_path / "RUN"
    res = invoke(["train", *TASK, *FAST, "--epochs", "5", "--patience", "2", "-o", run])
    assert res.exit_code == 0, res.output
    _, rows = read_csv(run / "metrics.csv")
    assert [float(r["val_score"]) for r in rows] == [1.0, 2.0, 1.5]
    results = load_json(run / "results.json")
    assert (results["best_epoch"], results["epochs_run"], results["steps"]) == (1, 3, 3 * FAST_STEPS)
    best = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    last = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert (best["epoch"], last["epoch"], last["best"]["bad_epochs"]) == (1, 3, 2)
    assert "early stop: no better validation score for 2 epochs (best epoch 1)" in res.stderr


@pytest.fixture(scope="module")
def nan_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """A 2-epoch run whose loss becomes NaN at the first step of epoch 2."""
    real = recinet_model.masked_l1
    calls = {"train": 0}

    def poisoned(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if pred.requires_grad:  # a training step (evaluation runs under no_grad)
            calls["train"] += 1
            if calls["train"] > FAST_STEPS:
                return real(pred, target) * float("nan")  # a NaN loss with its graph, as in real life
        return real(pred, target)

    home = tmp_path_factory.mktemp("nan-home")
    run = tmp_path_factory.mktemp("nan") / "RUN"
    with pytest.MonkeyPatch.context() as mp:
        isolated_env(mp, home, session_cache(tmp_path_factory))
        mp.setattr(recinet_model, "masked_l1", poisoned)
        mp.setattr(train_step_module, "masked_l1", poisoned)
        result = invoke(["train", *TASK, *FAST, "--epochs", "2", "-o", run])
    return Run(run, result, home / "recinet")


@pytest.mark.slow
def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(nan_run: Run) -> None:
    msg = error_message(nan_run.result)
    assert msg.startswith(f"the loss became nan at epoch 2, step {FAST_STEPS + 1};")
    assert str(nan_run.dir / "checkpoints" / "last.pt") in msg and "--lr" in msg
    last = torch.load(nan_run.dir / "checkpoints" / "last.pt", weights_only=True)
    assert (last["epoch"], last["step"]) == (1, FAST_STEPS)
    assert all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())
    _, rows = read_csv(nan_run.dir / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [1]
    for name in ("results.json", "model.safetensors", "test_predictions.csv"):
        assert not (nan_run.dir / name).exists(), name
    assert not (nan_run.home / "models").exists()  # nothing registered


@pytest.mark.slow
def test_nan_message_names_the_epoch_of_the_last_checkpoint(nan_run: Run) -> None:
    msg = error_message(nan_run.result)
    assert "(epoch 1)" in msg


# ----------------------------------------------------------------------------- refusals


def test_gpus_without_cuda(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    msg = error_message(invoke(["train", *TASK, *TINY, "--gpus", "1", "-o", tmp_path / "RUN"]))
    assert msg.startswith("--gpus 1: CUDA is not available") and "--nprocs" in msg
    assert not (tmp_path / "RUN").exists()


def test_folder_task_without_data(tmp_path: Path) -> None:
    msg = error_message(invoke(["train", "--task", "folder:bandgap", *TINY, "-o", tmp_path / "RUN"]))
    assert "--data" in msg and "folder" in msg
    assert not (tmp_path / "RUN").exists()


def test_no_task(tmp_path: Path) -> None:
    assert "no task" in error_message(invoke(["train", *TINY, "-o", tmp_path / "RUN"]))


def test_batch_size_larger_than_the_train_split(tmp_path: Path, graph_cache: Path) -> None:
    msg = error_message(invoke(["train", *TASK, "--batch-size", "64", "-o", tmp_path / "RUN"]))
    assert "--batch-size" in msg and "40 structures" in msg and "64" in msg
    assert not (tmp_path / "RUN").exists()


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--precision", "fp16"], "precision must be auto, fp32 or bf16, got 'fp16'"),
        (["--epochs", "0"], "epochs must be >= 1"),
        (["--nprocs", "2", "--gpus", "1"], "nprocs is for CPU runs"),
        (["--seed", "-3"], "seed must be in"),
        (["--head-option", "top_k"], "expected KEY=VALUE"),
    ],
)
def test_invalid_flags(tmp_path: Path, extra: list[str], expected: str) -> None:
    assert expected in error_message(invoke(["train", *TASK, *extra, "-o", tmp_path / "RUN"]))
    assert not (tmp_path / "RUN").exists()


def test_unknown_dataset_and_property(tmp_path: Path) -> None:
    msg = error_message(invoke(["train", "--task", "nosuch:gap", "-o", tmp_path / "RUN"]))
    assert "unknown dataset 'nosuch'; installed: " in msg and "folder" in msg and "h5" in msg
    msg = error_message(invoke(["train", "--task", "folder:gap,gap", "--data", POSCARS, "-o", tmp_path / "RUN"]))
    assert "'gap' is requested twice" in msg


@pytest.mark.slow
def test_h5_dataset_with_an_unknown_target_lists_the_stored_ones(tmp_path: Path, graph_cache: Path) -> None:
    h5 = tmp_path / "X.h5"
    res = invoke(["featurize", POSCARS, "-o", h5, "--labels", POSCARS / "id_prop.csv", "-j", "1"])
    assert res.exit_code == 0, res.output
    from recinet_cli.store.reader import GraphStore

    with GraphStore(h5) as store:
        stored = list(store.target_names)
    assert stored == ["target"]  # a headerless id_prop.csv names its column "target"
    msg = error_message(invoke(["train", "--task", "h5:bandgap", "--data", h5, "-o", tmp_path / "RUN"]))
    assert msg == f"{h5}: no target 'bandgap'; stored: target"
    # the stored name works (fails later, on purpose, at the batch size: no training here)
    msg = error_message(invoke(["train", "--task", "h5:target", "--data", h5, "--batch-size", "64",
                                "-o", tmp_path / "RUN"]))
    assert "--batch-size" in msg and "40 structures" in msg


def test_resume_refusals(tmp_path: Path) -> None:
    msg = error_message(invoke(["train", "--resume", tmp_path]))
    assert "has no config.json" in msg
    msg = error_message(invoke(["train", "--resume", tmp_path, "--epochs", "3"]))
    assert "drop epochs" in msg
    (tmp_path / "config.json").write_text(json.dumps({"task": "folder:bandgap", "data": str(POSCARS)}))
    msg = error_message(invoke(["train", "--resume", tmp_path]))
    assert "has no checkpoint" in msg


def test_config_file_refusals(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('task = "folder:bandgap"\nbatchsize = 8\n')
    msg = error_message(invoke(["train", "--config", bad, "-o", tmp_path / "RUN"]))
    assert "unknown key(s) batchsize" in msg and "batch_size" in msg
    msg = error_message(invoke(["train", "--config", tmp_path / "absent.toml", "-o", tmp_path / "RUN"]))
    assert "cannot read config file" in msg
    typed = tmp_path / "typed.toml"
    typed.write_text(f'task = "folder:bandgap"\ndata = "{POSCARS}"\nepochs = "2"\n')
    assert "epochs must be an integer" in error_message(invoke(["train", "--config", typed, "-o", tmp_path / "RUN"]))
