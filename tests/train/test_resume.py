"""SIGKILL a training run mid-epoch, resume it, and compare with an uninterrupted run.

Runs in subprocesses exactly as a user would (``python -m recinet_cli.cli.app train``), on
the real JARVIS POSCARs bundled in ``examples/``. With ``--nprocs 2`` the same happens to a
2-process DDP job on gloo.
"""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT

POSCARS = ROOT / "examples" / "structures" / "jarvis_poscars"
EPOCHS = 5


def _cmd(out: Path, nprocs: int) -> list[str]:
    return [
        sys.executable, "-m", "recinet_cli.cli.app", "train", "--task", "folder:bandgap", "--data", str(POSCARS),
        "--epochs", str(EPOCHS), "--batch-size", "2", "--blocks", "2", "--hidden", "64", "--seed", "7",
        "--nprocs", str(nprocs), "--no-register", "-o", str(out),
    ]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"  # same arithmetic in every run
    return env


def _rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _run(out: Path, nprocs: int) -> None:
    proc = subprocess.run(_cmd(out, nprocs), env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _kill_mid_run(out: Path, nprocs: int) -> None:
    """Start the run and SIGKILL its whole process group while epoch 3 is under way."""
    proc = subprocess.Popen(_cmd(out, nprocs), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 300
    try:
        while len(_rows(out / "metrics.csv")) < 2:
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "training made no progress"
            time.sleep(0.02)
        time.sleep(random.uniform(0.1, 0.4))  # into epoch 3 (an epoch takes ~1 s)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.slow
@pytest.mark.parametrize("nprocs", [1, 2])
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted_run(tmp_path: Path, nprocs: int) -> None:
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    _run(ref, nprocs)
    _kill_mid_run(killed, nprocs)
    rows_at_kill = _rows(killed / "metrics.csv")
    assert 2 <= len(rows_at_kill) < EPOCHS, "the kill must land before the run finished"
    assert not (killed / "results.json").exists()

    resume = [sys.executable, "-m", "recinet_cli.cli.app", "train", "--resume", str(killed)]
    proc = subprocess.run(resume, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]

    want, got = _rows(ref / "metrics.csv"), _rows(killed / "metrics.csv")
    assert [r["epoch"] for r in got] == [str(e) for e in range(1, EPOCHS + 1)]
    assert [r["step"] for r in got] == [r["step"] for r in want]  # same number of optimiser steps
    for a, b in zip(want, got):
        for key in a:
            if key != "time_s":
                assert float(b[key]) == pytest.approx(float(a[key]), rel=1e-5, abs=1e-7), (a["epoch"], key)
    res_want = json.loads((ref / "results.json").read_text())
    res_got = json.loads((killed / "results.json").read_text())
    assert res_got["steps"] == res_want["steps"] == int(want[-1]["step"])
    assert res_got["best_epoch"] == res_want["best_epoch"]
    assert res_got["test"]["bandgap"]["mae"] == pytest.approx(res_want["test"]["bandgap"]["mae"], rel=1e-5)
    assert (killed / "model.safetensors").is_file()
