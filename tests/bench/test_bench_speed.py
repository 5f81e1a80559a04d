"""``recinet bench speed``: a small real run on the bundled Matbench jdft2d task through the CLI.

Figures are checked for consistency only (positive, the extrapolation is the stated product,
parameter counts match independently built models, the paper's figures are there); never
against timing thresholds.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from recinet_cli.cli.app import app
from recinet_cli.model.config import ModelConfig
from recinet_cli.model.export import parameter_count
from recinet_cli.model.recinet import ReciNet

HIDDEN, BLOCKS, BATCH, SLICE = 32, 1, 16, 2
SMALL = ["--task", "matbench:jdft2d", "--device", "cpu", "--hidden", str(HIDDEN), "--blocks", str(BLOCKS),
         "--batch-size", str(BATCH), "--slice", str(SLICE), "--warmup", "1", "--featurize-n", "40",
         "--infer-n", "20", "--single-n", "4"]
#: The paper's Table 5 (ReciNet / ReciNet-MT rows, A100).
PAPER = {"time_per_epoch_s": 35.0, "epochs": 500, "total_hours": 4.8, "inference_ms": 8.2,
         "params_1_task": 3.3e6, "params_5_tasks": 16.5e6, "mt_params_5_tasks": 9.5e6,
         "mt_time_per_epoch_s": 69.0, "mt_inference_ms": 16.2, "train_structures": 44_578}


def _positive(value: object) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def _params(**config: object) -> int:
    torch.manual_seed(0)
    return parameter_count(ReciNet(ModelConfig.from_dict(config)))


@pytest.mark.slow
def test_bench_speed_command_small_run(tmp_path: Path) -> None:
    out = tmp_path / "speed.json"
    res = CliRunner().invoke(app, ["bench", "speed", *SMALL, "--json", str(out)])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "paper (A100)" in text and "ratio" in text and "NVIDIA A100" in text
    d = json.loads(out.read_text())
    assert d["task"] == "matbench:jdft2d" and d["resumed"] == []
    assert d["device"]["type"] == "cpu" and d["device"]["name"] and d["device"]["threads"] >= 1
    assert d["settings"]["hidden"] == HIDDEN and d["settings"]["blocks"] == BLOCKS
    assert d["dataset"]["preset"]["blocks"] == 3  # the paper preset (overridden here for speed)
    s = d["sections"]

    f = s["featurize"]
    assert f["structures"] + f["failed"] == 40 and f["structures"] > 0
    assert f["atoms"] >= f["structures"] and f["edges"] > f["atoms"]
    for key in ("seconds", "structures_per_second", "ms_per_structure"):
        assert _positive(f[key]), key
    assert f["structures_per_second"] == pytest.approx(f["structures"] / f["seconds"])

    t = s["training"]
    assert t["batch_size"] == BATCH and t["warmup_steps"] == 1
    assert t["steps_per_epoch"] == math.ceil(t["train_structures"] / BATCH) > SLICE
    assert t["measured_steps"] == len(t["step_seconds"]) == SLICE
    assert t["measured_structures"] == SLICE * BATCH and not t["whole_epoch_measured"]
    assert all(_positive(x) for x in t["step_seconds"]) and math.isfinite(t["final_loss"])
    assert t["measured_seconds"] == pytest.approx(sum(t["step_seconds"]))
    assert t["mean_step_seconds"] == pytest.approx(t["measured_seconds"] / SLICE)
    # the extrapolation is exactly the stated product
    assert t["epoch_seconds"] == pytest.approx(t["mean_step_seconds"] * t["steps_per_epoch"])
    assert t["train_ms_per_structure"] == pytest.approx(1e3 * t["epoch_seconds"] / t["train_structures"])
    i = s["inference"]
    assert t["val_seconds_estimate"] == pytest.approx(t["val_structures"] * i["batched_inputs_ms"] / 1e3)
    assert t["epoch_with_val_seconds"] == pytest.approx(t["epoch_seconds"] + t["val_seconds_estimate"])
    assert t["epochs"] == 500
    assert t["total_hours"] == pytest.approx(500 * t["epoch_with_val_seconds"] / 3600)

    assert i["split"] == "test" and i["batch_size"] == BATCH and i["structures"] == 20
    assert i["single_structures"] == 4 and i["atoms"] >= i["structures"] and i["kvectors"] > 0
    for key in ("batched_forward_ms", "batched_inputs_ms", "single_forward_ms", "single_inputs_ms",
                "gflop_per_material"):
        assert _positive(i[key]), key
    assert i["batched_inputs_ms"] >= i["batched_forward_ms"]
    assert i["single_inputs_ms"] >= i["single_forward_ms"]

    for m in (t["memory"], i["memory"]):
        assert m["method"] in ("peak RSS", "RSS sampled every 5 ms")
        assert m["peak_bytes"] >= m["baseline_bytes"] > 0
        assert m["delta_bytes"] == m["peak_bytes"] - m["baseline_bytes"]

    # parameter counts equal those of independently built models
    p = s["parameters"]
    task_model = _params(hidden=HIDDEN, blocks=BLOCKS, head="scalar", targets=["jdft2d"])
    assert p["task"] == p["one_task"] == task_model
    paper_one = _params(hidden=HIDDEN, blocks=4, head="scalar", targets=["formation_energy"])
    assert p["paper_one_task"] == paper_one and p["five_single_task"] == 5 * paper_one
    mt = _params(hidden=HIDDEN, blocks=3, head="mt-moe",
                 targets=["formation_energy", "bandgap_opt", "total_energy", "bandgap_mbj", "ehull"])
    assert p["mt"] == mt
    assert p["task_config"]["hidden"] == HIDDEN and p["mt_config"]["head"] == "mt-moe"

    # the paper's figures, and the comparison rows built from them
    for key, value in PAPER.items():
        assert d["paper"][key] == value, key
    rows = {r["name"]: r for r in d["figures"]}
    assert len(rows) == len(d["figures"])
    by_paper = {r["paper"]: r for r in d["figures"] if r["ratio"] is not None}
    assert {8.2, 3.3e6, 16.5e6, 9.5e6} <= set(by_paper)
    for r in d["figures"]:
        if r["ratio"] is not None:
            assert r["ratio"] == pytest.approx(r["ours"] / r["paper"])
    epoch_rows = [r for r in d["figures"] if r["name"].startswith("train time/epoch, extrapolated")]
    assert len(epoch_rows) == 1 and epoch_rows[0]["ours"] == pytest.approx(t["epoch_seconds"])
    assert epoch_rows[0]["paper"] == 35.0 and epoch_rows[0]["ratio"] is None  # another task: no ratio
    per_structure = next(r for r in d["figures"] if r["name"].startswith("train time per training structure"))
    assert per_structure["paper"] == pytest.approx(35.0 / 44_578 * 1e3)

    # the previous formulation vs the fast path: one whole epoch each on the same batches
    fp = s["fastpath"]
    ref, fast = fp["reference"], fp["fast"]
    assert ref["precision"] == "fp32" and fast["precision"] in ("fp32", "bf16")
    assert ref["steps"] == fast["steps"] == math.ceil(457 / BATCH)
    for side in (ref, fast):
        assert _positive(side["epoch_seconds"]) and _positive(side["infer_batch_ms"]) and _positive(side["infer_single_ms"])
        assert side["epoch_seconds"] == pytest.approx(side["train_seconds"] + side["val_seconds"])
    assert fast["edges_per_epoch"] < ref["edges_per_epoch"]  # duplicate edges merged
    assert fp["speedup"] == pytest.approx(ref["epoch_seconds"] / fast["epoch_seconds"])
    assert _positive(fp["useful_flops_per_epoch"]) and _positive(fp["matmul_fp32"])
    assert fp["utilisation"] == pytest.approx(fp["useful_flops_per_epoch"] / fast["train_seconds"] / fp["best_matmul"])
    assert "previous formulation" in text and "useful rate" in text

    # --resume keeps every measured section; other settings are refused
    again = CliRunner().invoke(app, ["bench", "speed", *SMALL, "--json", str(out), "--resume"])
    assert again.exit_code == 0, again.output
    d2 = json.loads(out.read_text())
    assert sorted(d2["resumed"]) == sorted(["featurize", "parameters", "inference", "training", "fastpath"])
    assert d2["sections"] == s
    other = [*SMALL[:-1], "5"]
    refused = CliRunner().invoke(app, ["bench", "speed", *other, "--json", str(out), "--resume"])
    assert refused.exit_code != 0 and "single_n" in refused.output


def test_peak_memory_sees_an_allocation() -> None:
    from recinet_cli.bench.speed import PeakMemory

    with PeakMemory(torch.device("cpu")) as mem:
        # 128 MiB, touched: above glibc's largest mmap threshold (32 MiB), so it is fresh
        # memory, not pages of an earlier free() that are still resident
        block = np.ones(128 * 2**20 // 8)
        del block
    assert mem.result is not None and mem.result.delta_bytes >= 100 * 2**20


def test_paper_constant_and_defaults() -> None:
    from recinet_cli.bench.speed import PAPER_TABLE5, SpeedSettings

    assert PAPER_TABLE5.inference_ms == 8.2 and PAPER_TABLE5.time_per_epoch_s == 35.0
    assert PAPER_TABLE5.train_ms_per_structure == pytest.approx(35e3 / 44_578)
    s = SpeedSettings(task="matbench:jdft2d")
    assert s.hidden is None and s.blocks is None and s.batch_size == 64  # the paper's config by default
