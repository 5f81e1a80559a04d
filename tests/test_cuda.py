"""CUDA paths: the same code as the CPU tests, on a GPU (``pytest -m cuda``).

Skipped, with the reason, on machines without CUDA; ``tools/gpu_check/run.sh`` runs them on
a GPU machine. Their CPU twins are tests/model/test_fast_path.py and tests/train/.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch_geometric.data import Batch
from typer.testing import CliRunner

from recinet_cli.model.config import ModelConfig
from recinet_cli.model.precision import resolve_precision
from recinet_cli.model.recinet import ReciNet, prepare_inputs
from recinet_cli.train.step import make_optimizer, train_step
from tests.model.test_model import jarvis_data

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine"),
]


@pytest.fixture(scope="module")
def batch(jarvis_entries: list[dict[str, Any]]) -> Batch:
    datas = []
    for e in [e for e in jarvis_entries if len(e["atoms"]["elements"]) <= 24][:32]:
        d = jarvis_data(e)
        d.y = d.y[:, :1]
        datas.append(d)
    return Batch.from_data_list(datas)


def _model() -> ReciNet:
    torch.manual_seed(0)
    return ReciNet(ModelConfig(hidden=64, blocks=2, targets=("formation_energy",)))


def test_cuda_forward_equals_cpu(batch: Batch) -> None:
    cpu = _model().eval()
    gpu = _model().eval().cuda()
    with torch.no_grad():
        a = cpu(**prepare_inputs(batch, cpu.config, merge_edges=True))
        b = gpu(**prepare_inputs(batch.cuda(), gpu.config, merge_edges=True)).cpu()
    assert float((a - b).abs().max()) < 1e-4 * max(1.0, float(a.abs().max()))


def test_cuda_bf16_step_tracks_fp32(batch: Batch) -> None:
    assert resolve_precision("auto", "cuda") == ("bf16" if torch.cuda.is_bf16_supported() else "fp32")
    losses = {}
    for precision in ("fp32", "bf16"):
        net = _model().cuda()
        net.set_scaler(torch.zeros(1), torch.ones(1))
        opt = make_optimizer(net, 1e-3, 1e-5)
        out = train_step(net, batch.cuda(), net.config, opt, None, precision)
        losses[precision] = float(out.loss)
    assert math.isfinite(losses["bf16"]) and abs(losses["bf16"] - losses["fp32"]) < 0.05 * losses["fp32"]


def test_cuda_train_and_predict_cli(tmp_path: Path) -> None:
    from recinet_cli.cli.app import app

    run = tmp_path / "run"
    res = CliRunner().invoke(app, ["train", "--task", "example:exfoliation_energy", "--epochs", "2", "--hidden", "32",
                                   "--device", "cuda", "--out", str(run), "--no-register"])
    assert res.exit_code == 0, res.output
    assert "precision bf16" in res.output or "precision fp32" in res.output
    out = tmp_path / "p.csv"
    root = Path(__file__).resolve().parents[1]
    res = CliRunner().invoke(app, ["predict", str(root / "examples" / "structures"), "--model",
                                   str(run / "model.safetensors"), "--device", "cuda", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert len(out.read_text().splitlines()) == 81
