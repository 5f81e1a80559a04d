"""DDP on CPU (gloo): ``--nprocs 2`` and ``torchrun`` take the same code path as ``--gpus N``."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

POSCARS = ROOT / "examples" / "structures" / "jarvis_poscars"
ARGS = ["--task", "folder:bandgap", "--data", str(POSCARS), "--epochs", "3", "--batch-size", "4",
        "--blocks", "1", "--hidden", "32", "--seed", "3"]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _check_run(out: Path, world: int) -> None:
    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]  # rank 0 alone writes: no duplicate rows
    data = json.loads((out / "data.json").read_text())
    n_train = data["sizes"]["train"]
    per_rank = math.ceil(n_train / world)  # DistributedSampler pads to equal shares
    steps_per_epoch = math.ceil(per_rank / 4)
    assert int(rows[-1]["step"]) == 3 * steps_per_epoch  # each rank sees 1/world of the data
    results = json.loads((out / "results.json").read_text())
    best = rows[results["best_epoch"] - 1]
    # the per-epoch validation MAE is summed over both ranks' shards; the final one is rank 0
    # evaluating the whole split with the best weights: equal when the reduction is right
    assert float(best["val_mae_bandgap"]) == pytest.approx(results["val"]["bandgap"]["mae"], rel=1e-5)
    with open(out / "test_predictions.csv", newline="") as f:
        preds = list(csv.DictReader(f))
    assert len(preds) == data["sizes"]["test"] == results["test"]["bandgap"]["n"]
    assert len({p["id"] for p in preds}) == len(preds)


@pytest.mark.slow
def test_two_process_gloo_run_reduces_metrics_and_writes_once(tmp_path: Path) -> None:
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "recinet_cli.cli.app", "train", *ARGS, "--nprocs", "2", "-o", str(out)]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _check_run(out, 2)
    assert proc.stdout.count("run: ") == 1  # only rank 0 prints the summary
    assert proc.stdout.count("model: folder-bandgap") == 1  # one registration, by rank 0


@pytest.mark.slow
def test_torchrun_environment_is_picked_up(tmp_path: Path) -> None:
    out = tmp_path / "run"
    from recinet_cli.train.distributed import free_port

    port = str(free_port())
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port,
           "-m", "recinet_cli.cli.app", "train", *ARGS, "--no-register", "-o", str(out)]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _check_run(out, 2)
    assert proc.stdout.count("run: ") == 1  # only rank 0 prints the summary
