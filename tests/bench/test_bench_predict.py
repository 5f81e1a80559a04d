"""``recinet bench predict``: a small real run from MP CIF files through the CLI, and its parts.

Figures are checked for consistency only (counts add up, rates are positive and finite,
ratios are sane); never against timing thresholds.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from recinet_cli.bench.predict import write_untrained_bundle
from recinet_cli.bundle import load_bundle, read_bundle_info
from recinet_cli.cli.app import app
from recinet_cli.model.config import ModelConfig
from recinet_cli.prediction.engine import default_workers
from tests.conftest import shared_path


def _mp() -> Path:
    return shared_path("mp", "mp_36k.jsonl.gz")


def _positive(value: object) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.mark.slow
def test_bench_predict_command_on_real_cifs(tmp_path: Path) -> None:
    n, batch = 40, 16
    out = tmp_path / "predict.json"
    args = ["bench", "predict", "--data", str(_mp()), "--n", str(n), "--batch-size", str(batch),
            "--workers", "1", "--warmup", "2", "--single", "20", "--device", "cpu", "--json", str(out)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())  # rich wraps long titles at the console width
    assert "throughput does not depend on the weights" in text
    assert "FLOP utilisation" in text and "GPU only" in text
    f = json.loads(out.read_text())

    assert f["n"] == n and f["untrained"] is True and f["device"] == "cpu"
    assert f["workers"] == 1 and f["batch_size"] == batch and f["threads"] >= 1
    paper = ModelConfig()
    assert f["model_config"]["hidden"] == paper.hidden and f["model_config"]["blocks"] == paper.blocks

    e = f["end_to_end"]
    assert e["inputs"] == n and e["rows"] == n
    assert e["predicted"] == n - e["failed"] > 0
    assert e["predicted"] <= e["structures"] <= n  # featurized; a non-finite prediction also fails
    assert e["atoms"] >= e["structures"] and e["edges"] > e["atoms"]
    for key in ("wall_seconds", "parse_seconds", "featurize_seconds", "model_seconds", "structures_per_second",
                "ms_per_structure", "atoms_per_structure", "edges_per_structure"):
        assert _positive(e[key]), key
    assert e["parse_seconds"] + e["featurize_seconds"] + e["model_seconds"] > 0
    # the split adds up: one worker's CPU seconds and the main process's model seconds each
    # fit in the wall clock; the throughput is the predicted structures over the wall clock
    assert e["parse_seconds"] + e["featurize_seconds"] <= e["workers"] * e["wall_seconds"]
    assert e["model_seconds"] <= e["wall_seconds"]
    assert e["outside_model_seconds"] == pytest.approx(e["wall_seconds"] - e["model_seconds"])
    assert e["structures_per_second"] == pytest.approx(e["predicted"] / e["wall_seconds"])
    assert e["model_ms_per_structure"] == pytest.approx(1e3 * e["model_seconds"] / e["structures"])

    w = f["warmup"]
    assert w["inputs"] == 2 and w["rows"] == 2 and _positive(w["wall_seconds"])

    fo = f["featurize_only"]
    assert fo["files"] == n and fo["structures"] + fo["failed"] == n and fo["in_process"] is True
    assert fo["structures"] == e["structures"]  # same files, same featurizer
    assert _positive(fo["wall_seconds"]) and fo["parse_seconds"] + fo["featurize_seconds"] <= fo["wall_seconds"]
    assert _positive(f["featurize_share_of_wall"])

    b = f["model_only"]["batched"]
    assert b["structures"] == e["structures"] and b["batch_size"] == batch
    assert b["batches"] == math.ceil(b["structures"] / batch) == len(b["forward_batch_seconds"])
    assert b["atoms"] == e["atoms"] and b["edges"] == e["edges"]  # the same graphs as the pipeline
    assert b["pairs"] >= b["kvectors"] > 0
    assert b["forward_seconds"] == pytest.approx(sum(b["forward_batch_seconds"]))
    assert b["flops"] == pytest.approx(sum(b["batch_flops"])) == pytest.approx(sum(b["flops_by_op"].values()))
    assert len(b["matmul_rates"]) == b["batches"] + 1  # before the first batch, then after each
    assert len(b["batch_matmul_rates"]) == b["batches"] and all(_positive(r) for r in b["batch_matmul_rates"])
    for key in ("forward_seconds", "flops", "achieved_flops", "ms_per_material", "structures_per_second"):
        assert _positive(b[key]), key
    assert b["ms_per_material"] == pytest.approx(1e3 * b["forward_seconds"] / b["structures"])
    assert b["ms_per_material_with_inputs"] >= b["ms_per_material"]

    s = f["model_only"]["single"]
    assert s["batch_size"] == 1 and s["structures"] == s["batches"] == batch  # 20 rounded to whole batches
    assert _positive(s["ms_per_material"])
    # per-structure FLOPs are the same batched or not, up to the reciprocal block's padding
    per_single = s["flops"] / s["structures"]
    assert 0.5 < per_single / (b["flops"] / b["structures"]) < 2

    fl = f["flops"]
    m, k, nn = fl["matmul_shape"]
    # the local conv's per-edge products dominate: [E', d] @ [d, 2d] (factorised first layers)
    # or [E', d] @ [d, d] (second layers and the edge embedding)
    assert k == paper.hidden and nn in (paper.hidden, 2 * paper.hidden)
    assert fl["matmul_shares"][0]["k"] == k and fl["matmul_shares"][0]["share"] > 0.3
    assert sum(x["share"] for x in fl["matmul_shares"]) <= 1 + 1e-9
    assert _positive(fl["matmul_rate"]) and _positive(fl["per_structure"])
    for key in ("utilisation", "utilisation_paired", "utilisation_model_stage", "utilisation_single"):
        assert 0 < fl[key] <= 1.5, key
    assert fl["utilisation"] == pytest.approx(b["achieved_flops"] / fl["matmul_rate"])
    assert fl["goal"] == 0.3 and fl["goal_met"] == (fl["utilisation"] >= 0.3)

    ms = f["ms_per_material"]
    assert ms["single"] == pytest.approx(s["ms_per_material"])
    assert ms["batched_same_structures_as_single"] == pytest.approx(1e3 * b["forward_batch_seconds"][0] / batch)
    assert ms["paper"] == 8.2 and ms["goal"] == 2.0
    assert ms["goal_applies"] is False and ms["goal_met"] is None  # a GPU goal; this ran on CPU
    assert ms["batched"] == pytest.approx(b["ms_per_material"])
    assert ms["speedup_vs_paper"] == pytest.approx(8.2 / b["ms_per_material"])


def test_untrained_bundle_is_the_paper_model(tmp_path: Path) -> None:
    path = write_untrained_bundle(tmp_path / "m.safetensors", seed=3)
    info = read_bundle_info(path)
    assert info["targets"] == [{"name": "formation_energy", "unit": "eV/atom",
                                "aliases": ["formation_energy_peratom", "ef"]}]
    model, _ = load_bundle(path)
    assert model.config == ModelConfig(head="scalar", targets=("formation_energy",))
    again, _ = load_bundle(write_untrained_bundle(tmp_path / "again.safetensors", seed=3))
    for (k, v), (_, u) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(v, u), k  # seeded


def test_default_workers_follow_recinet_predict() -> None:
    assert default_workers(10, 64) == 0
    assert default_workers(1000, 64) >= 1


def test_bad_options_are_clear_errors() -> None:
    res = CliRunner().invoke(app, ["bench", "predict", "--data", str(_mp()), "--batch-size", "0"])
    assert res.exit_code != 0
    res = CliRunner().invoke(app, ["bench", "predict", "--data", "/nonexistent/mp.jsonl.gz"])
    assert res.exit_code != 0 and "no such file" in res.output
    if not torch.cuda.is_available():
        res = CliRunner().invoke(app, ["bench", "predict", "--data", str(_mp()), "--n", "2", "--device", "cuda"])
        assert res.exit_code != 0 and "CUDA is not available" in res.output
