"""``recinet bench model``: the command end to end on real JARVIS structures, and its parts."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from recinet_cli.bench.model import (
    base_cell,
    cell_data,
    compare_autocast,
    jarvis_batch,
    make_supercell,
    measure_share,
    module_timer,
    supercell_shape,
)
from recinet_cli.cli.app import app
from recinet_cli.model.config import ModelConfig
from recinet_cli.model.recinet import ReciNet, prepare_inputs
from recinet_cli.model.reciprocal import ReciprocalUpdate
from recinet_cli.structures.graph import GraphParams
from tests.conftest import shared_path


def _jarvis() -> Path:
    return shared_path("jarvis", "dft_3d_subset_1743.json.gz")


@pytest.mark.slow
def test_bench_model_command_on_real_structures(tmp_path: Path) -> None:
    out = tmp_path / "model.json"
    args = ["bench", "model", "--data", str(_jarvis()), "--batch-size", "8", "--steps", "1"]
    args += ["--sizes", "5,50", "--blocks", "1", "--device", "cpu", "--json", str(out)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "FLOP utilisation" in res.output and "skipped: no CUDA" in res.output
    f = json.loads(out.read_text())

    assert f["config"]["blocks"] == 1 and f["config"]["hidden"] == 256 and f["config"]["kset"] == "sphere"
    assert len(f["batch_ids"]) == 8 and all(i.startswith("JVASP-") for i in f["batch_ids"])
    t = f["throughput"]
    assert t["batch_size"] == 8 and t["steps"] == 1 and len(t["step_seconds"]) == 1
    assert t["atoms"] > 8 and t["edges"] > t["atoms"] and t["pairs"] >= t["kvectors"] > 0
    for key in ("graphs_per_second", "flops_per_step", "achieved_flops", "matmul_rate", "utilisation",
                "utilisation_paired"):
        assert math.isfinite(t[key]) and t[key] > 0, key
    assert t["matmul_shape"] == [16384, 768, 256]
    assert t["flops_per_step"] == pytest.approx(sum(t["flops_by_op"].values()))
    assert t["utilisation"] < 2  # a sane ratio, not a unit slip
    assert math.isfinite(t["final_loss"])

    sizes = f["reciprocal_share"]["sizes"]
    assert [(s["kset"], s["target_atoms"]) for s in sizes] == [
        ("sphere", 5), ("sphere", 50), ("box", 5), ("box", 50)
    ]
    for s in sizes:
        assert s["error"] is None
        assert s["atoms"] % 5 == 0 and s["atoms"] == 5 * int(np.prod(s["supercell"]))
        assert 0 < s["share"] < 1
        assert 0 < s["reciprocal_seconds"] < s["forward_seconds"]
        assert s["pairs"] == s["atoms"] * s["kvectors"]
        assert s["goal_applies"] is True and isinstance(s["goal_met"], bool)
    box = [s for s in sizes if s["kset"] == "box"]
    assert {s["kvectors"] for s in box} == {62}  # box(2,2,2): (5^3 - 1) / 2
    sphere = [s for s in sizes if s["kset"] == "sphere"]
    assert sphere[1]["kvectors"] > sphere[0]["kvectors"]  # more k-vectors in a bigger cell

    assert f["autocast"]["skipped"] == "skipped: no CUDA"
    assert f["autocast"]["relative_loss_difference"] is None


def test_device_cuda_without_cuda_is_a_clear_error() -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    res = CliRunner().invoke(app, ["bench", "model", "--data", str(_jarvis()), "--device", "cuda"])
    assert res.exit_code != 0
    assert "CUDA is not available" in res.output


def test_bad_sizes_are_rejected() -> None:
    res = CliRunner().invoke(app, ["bench", "model", "--data", str(_jarvis()), "--sizes", "5,x"])
    assert res.exit_code != 0


def test_supercells_of_the_real_perovskite() -> None:
    jid, lattice, frac, elements = base_cell(str(_jarvis()))
    assert len(elements) == 5 and sorted(elements).count("O") == 3
    assert supercell_shape(5, 5) == (1, 1, 1)
    assert supercell_shape(5, 500) == (5, 5, 4)
    for target in (50, 200, 1000):
        n1, n2, n3 = supercell_shape(5, target)
        assert n1 >= n2 >= n3 and abs(5 * n1 * n2 * n3 - target) <= 0.25 * target
    lat, fr, nums = make_supercell(lattice, frac, np.arange(1, 6), (2, 3, 1))
    assert len(fr) == len(nums) == 30 and fr.min() >= 0 and fr.max() < 1
    np.testing.assert_allclose(lat, lattice * np.array([[2], [3], [1]]))
    # same Cartesian positions as the original cell's images
    cart = fr @ lat
    np.testing.assert_allclose(cart[:5], frac @ lattice, atol=1e-9)


def test_module_timer_and_memory_guard() -> None:
    jid, lattice, frac, elements = base_cell(str(_jarvis()))
    from ase.data import atomic_numbers

    data = cell_data(jid, lattice, frac, np.array([atomic_numbers[e] for e in elements]), GraphParams())
    torch.manual_seed(0)
    model = ReciNet(ModelConfig(blocks=2)).eval()
    from torch_geometric.data import Batch

    inputs = prepare_inputs(Batch.from_data_list([data]), model.config)
    with torch.no_grad(), module_timer(model, ReciprocalUpdate, torch.device("cpu")) as inside:
        model(**inputs)
    assert inside[0] > 0
    assert not model.backbone.blocks[0].reciprocal._forward_hooks  # hooks removed

    res = measure_share(model, data, torch.device("cpu"), min_repeats=2, max_repeats=2)
    assert res.repeats == 2 and res.share is not None and 0 < res.share < 1 and res.error is None
    skipped = measure_share(model, data, torch.device("cpu"), memory_fraction=0.0)
    assert skipped.share is None and skipped.error is not None and skipped.error.startswith("not run")


def test_autocast_comparison_runs_on_cpu_bf16() -> None:
    """The CUDA check's comparison, through CPU bf16 autocast (same code path)."""
    batch, _ = jarvis_batch(str(_jarvis()), 4)
    config = ModelConfig(blocks=1)
    inputs = prepare_inputs(batch, config)
    torch.manual_seed(0)
    model = ReciNet(config)
    target = torch.randn(4, 1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    r = compare_autocast(model, inputs, target, torch.bfloat16)
    assert r.skipped is None and r.dtype == "bfloat16"
    assert r.loss_fp32 is not None and r.loss_autocast is not None and r.loss_fp32 > 0
    assert r.relative_loss_difference is not None and r.relative_loss_difference < 0.05
    assert r.gradient_cosine is not None and r.gradient_cosine > 0.9
    # the phases and sums of the reciprocal block stayed float32, while autocast was active
    assert r.reciprocal_fp32 is True
    assert r.reciprocal_op_dtypes["cos"] == ["float32"] and r.reciprocal_op_dtypes["sin"] == ["float32"]
    assert any("bfloat16" in ds for ds in r.reciprocal_op_dtypes.values())
    # the model handed in is untouched (both runs use copies)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
