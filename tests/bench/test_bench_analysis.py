"""``recinet bench moe`` and ``recinet bench curves`` end to end on real structures and a real
(tiny) training run, with the routing counted independently from the router logits."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

from recinet_cli.bench.moe import cosine_similarity, selection_frequencies
from recinet_cli.bench.plotting import INSTALL_HINT
from recinet_cli.bundle import load_bundle, save_bundle
from recinet_cli.inference import bundle_params, collate, featurize_crystals, model_inputs
from recinet_cli.structures.readers import read_structures
from tests.bundles import make_bundle
from tests.train.helpers import (
    POSCARS,
    TASK,
    TINY,
    error_message,
    invoke,
    isolated_env,
    session_cache,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TARGETS = ["bandgap_opt", "bandgap_mbj", "formation_energy"]
N_EXPERTS, TOP_K = 5, 2


def moe_bundle(path: Path, targets: Sequence[str] = TARGETS, counts: torch.Tensor | None = None) -> Path:
    """An ``mt-moe`` bundle with a random router: a fresh router's weights are all zero, so
    every score ties and the top-K pick would be arbitrary. ``counts``: stored selections."""
    make_bundle(path, targets, model={"head": "mt-moe", "head_options": {"n_experts": N_EXPERTS, "top_k": TOP_K}})
    net, info = load_bundle(path)
    torch.manual_seed(7)
    torch.nn.init.normal_(net.head.w_gate)
    if counts is not None:
        net.head.expert_counts.copy_(counts)
    return save_bundle(path, net, info)


def independent_counts(bundle: Path) -> tuple[np.ndarray, int]:
    """``[T, E]`` top-K selections recomputed from the router logits ``x · W_t`` over the
    example POSCARs (one batch, no use of the head's code or buffer), and the structure count."""
    net, info = load_bundle(bundle)
    crystals, _ = read_structures([POSCARS])
    batch = collate(featurize_crystals(crystals, bundle_params(info)))
    with torch.no_grad():
        x = net.backbone(**model_inputs(net, batch))  # [B, d]
        logits = torch.einsum("bd,tde->tbe", x, net.head.w_gate)  # [T, B, E]
    chosen = logits.topk(TOP_K, dim=-1).indices  # [T, B, K]
    counts = np.stack([np.bincount(chosen[t].reshape(-1).numpy(), minlength=N_EXPERTS) for t in range(len(TARGETS))])
    return counts.astype(float), len(crystals)


# --------------------------------------------------------------------------------- bench moe


def test_moe_frequencies_similarity_and_plot(tmp_path: Path) -> None:
    bundle = moe_bundle(tmp_path / "mt.safetensors")
    out, png = tmp_path / "moe.json", tmp_path / "fig4.png"
    res = invoke(["bench", "moe", bundle, POSCARS, "--json", out, "--plot", png])
    assert res.exit_code == 0, res.output
    assert "expert selection frequency" in res.output and "task similarity" in res.output
    assert f"wrote {png}" in res.output
    d = json.loads(out.read_text())

    expected, n = independent_counts(bundle)
    assert d["targets"] == TARGETS and d["n_experts"] == N_EXPERTS and d["top_k"] == TOP_K
    assert d["source"] == "structures" and d["structures"] == n == 70 and d["failed"] == []
    counts, freq, sim = (np.array(d[k]) for k in ("counts", "frequencies", "similarity"))
    np.testing.assert_array_equal(counts, expected)
    np.testing.assert_allclose(counts.sum(1), n * TOP_K)
    np.testing.assert_allclose(freq.sum(1), 1.0)
    np.testing.assert_allclose(freq, expected / (n * TOP_K))
    # the paper's definition: cosine similarity of the tasks' frequency vectors
    unit = freq / np.linalg.norm(freq, axis=1, keepdims=True)
    np.testing.assert_allclose(sim, unit @ unit.T, atol=1e-12)
    np.testing.assert_array_equal(sim, sim.T)
    np.testing.assert_allclose(np.diag(sim), 1.0)
    assert (sim >= 0).all() and (sim <= 1).all()
    i, j = np.unravel_index(np.argmax(sim - 2 * np.eye(3)), sim.shape)
    assert sorted(d["most_similar"]["tasks"]) == sorted([TARGETS[i], TARGETS[j]])
    gates = np.array(d["mean_gates"])
    np.testing.assert_allclose(gates.sum(1), 1.0, atol=1e-6)
    assert ((gates > 0) == (freq > 0)).all()  # a gate is non-zero exactly where an expert was chosen
    assert png.read_bytes()[:8] == PNG_SIGNATURE and png.stat().st_size > 5000


def test_moe_recorded_counts(tmp_path: Path) -> None:
    counts = torch.tensor([[4.0, 4, 0, 0, 0], [3, 5, 0, 0, 0], [0, 0, 0, 4, 4]])
    bundle = moe_bundle(tmp_path / "mt.safetensors", counts=counts)
    out = tmp_path / "moe.json"
    res = invoke(["bench", "moe", bundle, "--recorded", "--json", out])
    assert res.exit_code == 0, res.output
    d = json.loads(out.read_text())
    assert d["source"] == "recorded" and d["structures"] == 4 and d["mean_gates"] is None
    np.testing.assert_allclose(d["frequencies"][1], [3 / 8, 5 / 8, 0, 0, 0])
    np.testing.assert_allclose(d["similarity"][0][2], 0.0)
    np.testing.assert_allclose(d["similarity"][0][1], (12 + 20) / (np.sqrt(32) * np.sqrt(34)))
    assert "recorded" in error_message(invoke(["bench", "moe", bundle, "--recorded", POSCARS]))
    fresh = moe_bundle(tmp_path / "fresh.safetensors")
    assert "records no expert selections" in error_message(invoke(["bench", "moe", fresh, "--recorded"]))


def test_moe_refuses_other_heads_and_bad_inputs(tmp_path: Path) -> None:
    scalar = make_bundle(tmp_path / "gap.safetensors", ["bandgap_opt"])
    msg = error_message(invoke(["bench", "moe", scalar, POSCARS]))
    assert "'scalar'" in msg and "mt-moe" in msg
    msg = error_message(invoke(["bench", "moe", make_bundle(tmp_path / "ls.safetensors", TARGETS), POSCARS]))
    assert "'mt-ls'" in msg
    assert "no model 'nope'" in error_message(invoke(["bench", "moe", "nope"]))
    bundle = moe_bundle(tmp_path / "mt.safetensors")
    assert "no usable structures" in error_message(invoke(["bench", "moe", bundle, tmp_path / "missing"]))
    assert "--plot" in error_message(invoke(["bench", "moe", bundle, "--plot", tmp_path / "fig.jpg"]))


def test_frequency_and_cosine_helpers() -> None:
    counts = np.array([[2.0, 0.0, 2.0], [0.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    freq = selection_frequencies(counts)
    np.testing.assert_allclose(freq, [[0.5, 0, 0.5], [0, 0, 0], [0.5, 0.5, 0]])
    sim = cosine_similarity(freq)
    np.testing.assert_allclose(sim, [[1, 0, 0.5], [0, 0, 0], [0.5, 0, 1]], atol=1e-12)


# ------------------------------------------------------------------------------ bench curves


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One tiny real training run (the 50 labelled example POSCARs, 2 epochs)."""
    run = tmp_path_factory.mktemp("curves") / "run"
    with pytest.MonkeyPatch.context() as mp:
        isolated_env(mp, tmp_path_factory.mktemp("home"), session_cache(tmp_path_factory))
        res = invoke(["train", *TASK, *TINY, "-o", run, "--no-register"])
        assert res.exit_code == 0, res.output
        yield run


def test_curves_summary_json_and_plot(run_dir: Path, tmp_path: Path) -> None:
    out, png = tmp_path / "curves.json", tmp_path / "curves.png"
    res = invoke(["bench", "curves", run_dir, "--json", out, "--plot", png])
    assert res.exit_code == 0, res.output
    assert "best epoch" in res.output and "validation MAE per property" in res.output
    d = json.loads(out.read_text())
    with open(run_dir / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    val_loss = [float(r["val_loss"]) for r in rows]
    score = [float(r["val_score"]) for r in rows]
    mae = [float(r["val_mae_bandgap"]) for r in rows]
    assert d["epochs"] == len(rows) == 2
    assert d["best_val_loss_epoch"] == int(rows[int(np.argmin(val_loss))]["epoch"])
    assert d["best_val_loss"] == pytest.approx(min(val_loss))
    # the best epoch is the trainer's: lowest val_score, the epoch results.json reports
    assert d["best_epoch_by"] == "val_score"
    assert d["best_epoch"] == int(rows[int(np.argmin(score))]["epoch"])
    assert d["best_epoch"] == d["results_best_epoch"] == json.loads((run_dir / "results.json").read_text())["best_epoch"]
    p = d["properties"]["bandgap"]
    assert p["best_val_mae"] == pytest.approx(min(mae)) and p["final_val_mae"] == pytest.approx(mae[-1])
    assert d["final_lr"] == pytest.approx(float(rows[-1]["lr"]))
    assert d["series"]["val_loss"] == pytest.approx(val_loss)
    assert png.read_bytes()[:8] == PNG_SIGNATURE and png.stat().st_size > 5000
    # the metrics file itself is accepted too
    res = invoke(["bench", "curves", run_dir / "metrics.csv", "--json", out])
    assert res.exit_code == 0, res.output
    assert json.loads(out.read_text())["best_epoch"] == d["best_epoch"]


def test_plots_need_matplotlib(run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    png = tmp_path / "curves.png"
    assert error_message(invoke(["bench", "curves", run_dir, "--plot", png])) == INSTALL_HINT
    assert not png.exists()
    bundle = moe_bundle(tmp_path / "mt.safetensors")
    assert error_message(invoke(["bench", "moe", bundle, "--plot", png])) == INSTALL_HINT
    out = tmp_path / "curves.json"
    res = invoke(["bench", "curves", run_dir, "--json", out])  # tables and JSON need no plotting
    assert res.exit_code == 0, res.output
    assert json.loads(out.read_text())["epochs"] == 2


def test_curves_bad_run_directories(tmp_path: Path) -> None:
    assert "no such run directory" in error_message(invoke(["bench", "curves", tmp_path / "missing"]))
    assert "no metrics.csv" in error_message(invoke(["bench", "curves", tmp_path]))
    other = tmp_path / "notes.txt"
    other.write_text("hello\n")
    assert "not a run directory" in error_message(invoke(["bench", "curves", other]))
    metrics = tmp_path / "metrics.csv"
    metrics.write_text("")
    assert "empty" in error_message(invoke(["bench", "curves", tmp_path]))
    metrics.write_text("a,b\n1,2\n")
    assert "missing column(s) epoch, val_loss" in error_message(invoke(["bench", "curves", tmp_path]))
    metrics.write_text("epoch,val_loss\n")
    assert "no epoch has finished" in error_message(invoke(["bench", "curves", tmp_path]))
    metrics.write_text("epoch,val_loss\n1,oops\n")
    assert "line 2: val_loss = 'oops'" in error_message(invoke(["bench", "curves", tmp_path]))
    metrics.write_text("epoch,val_loss\n1,0.5,7\n")
    assert "line 2: 3 values for 2 columns" in error_message(invoke(["bench", "curves", tmp_path]))
    # a minimal file (no val_score, no properties) still summarises, by val_loss
    metrics.write_text("epoch,val_loss\n1,0.5\n2,0.25\n3,0.4\n")
    out = tmp_path / "c.json"
    res = invoke(["bench", "curves", tmp_path, "--json", out])
    assert res.exit_code == 0, res.output
    d = json.loads(out.read_text())
    assert d["best_epoch"] == 2 and d["best_epoch_by"] == "val_loss" and d["properties"] == {}
