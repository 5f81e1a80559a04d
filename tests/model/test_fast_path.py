"""The fast training path computes the same function as the paper's literal form.

Covers the factorised local conv (vs the ``[h_i || h_j || v_ij]`` concatenation), merged
duplicate edges (vs the full multigraph, in training mode with BatchNorm statistics, in eval
mode and in the gradients), bf16 row bucketing (vs a plain product), the precision choice,
and a bundle written by the code before these changes (loads and predicts the same).
All on real crystals: the JARVIS dft_3d subset, the sample files and ``examples/structures``.
"""

from __future__ import annotations

import copy
import csv
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch_geometric.data import Batch, Data

from recinet_cli.model import precision as prec
from recinet_cli.model.config import ModelConfig
from recinet_cli.model.edges import merge_duplicate_edges, weighted_batch_norm
from recinet_cli.model.linear import BUCKETS_PER_OCTAVE, MIN_BUCKET, bucket_rows, bucketed_linear
from recinet_cli.model.local_conv import PotNetConv
from recinet_cli.model.recinet import ReciNet, masked_l1, prepare_inputs
from tests.model.test_model import jarvis_data

ROOT = Path(__file__).resolve().parents[2]
LEGACY = ROOT / "tests" / "data" / "legacy"


@pytest.fixture(scope="module")
def jarvis_batch(jarvis_entries: list[dict[str, Any]]) -> Batch:
    """48 real JARVIS crystals (formation energy labels), one batch."""
    picked = [e for e in jarvis_entries if len(e["atoms"]["elements"]) <= 24][:48]
    datas: list[Data] = []
    for e in picked:
        d = jarvis_data(e)
        d.y = d.y[:, :1]
        datas.append(d)
    return Batch.from_data_list(datas)


def _model(seed: int = 0, **overrides: Any) -> ReciNet:
    torch.manual_seed(seed)
    config = ModelConfig(hidden=64, blocks=2, targets=("formation_energy",), **overrides)
    return ReciNet(config)


def _step(model: ReciNet, batch: Batch, merge: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One training-mode forward + backward; (prediction, gradients by parameter name)."""
    model.train()
    model.zero_grad(set_to_none=True)
    out = model(**prepare_inputs(batch, model.config, merge_edges=merge), standardized=True)
    masked_l1(out, (batch.y - 0.1) / 2.0).backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return out.detach(), grads


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().abs().max() / max(1.0, float(b.detach().abs().max())))


# ------------------------------------------------------------------ factorised local conv


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_factorised_conv_equals_concatenation(jarvis_batch: Batch, mode: str) -> None:
    """``W_i h_i + W_j h_j + W_v v`` (per-node products gathered per edge) equals the first
    layer on ``[h_i || h_j || v_ij]``, forward and backward, on a real batch."""
    torch.manual_seed(3)
    conv = PotNetConv(64).train(mode == "train")
    ref = copy.deepcopy(conv)
    inputs = prepare_inputs(jarvis_batch, ModelConfig(hidden=64))
    n, e = jarvis_batch.num_nodes, inputs["edge_index"].shape[1]
    h = torch.randn(n, 64, requires_grad=True)
    v = torch.randn(e, 64, requires_grad=True)
    h2, v2 = h.detach().clone().requires_grad_(), v.detach().clone().requires_grad_()
    a = conv(h, v, inputs["edge_index"])
    b = ref.forward_concat(h2, v2, inputs["edge_index"])
    assert _rel(a, b) < 1e-5
    a.square().sum().backward()
    b.square().sum().backward()
    assert _rel(h.grad, h2.grad) < 1e-4 and _rel(v.grad, v2.grad) < 1e-4
    for (name, p), q in zip(conv.named_parameters(), ref.parameters()):
        if name != "gate_mlp.2.bias":  # before a training-mode BatchNorm: gradient is round-off
            assert _rel(p.grad, q.grad) < 1e-4, name
    # same parameters: the concatenated layout of the state dict is kept
    assert conv.gate_mlp[0].weight.shape == (64, 3 * 64)


# ------------------------------------------------------------------ merged duplicate edges


def test_merge_duplicate_edges_keeps_every_edge(jarvis_batch: Batch) -> None:
    """Each merged edge stands for ``weight`` original edges with the same target, source and
    length; the weights add up to E; real batches have many duplicates."""
    inputs = prepare_inputs(jarvis_batch, ModelConfig())
    ei, length = inputs["edge_index"], inputs["edge_len"]
    merged, mlen, weight = merge_duplicate_edges(ei, length, jarvis_batch.num_nodes)
    assert float(weight.sum()) == ei.shape[1]
    assert merged.shape[1] < 0.75 * ei.shape[1]  # measured: about 40-55 % remain
    original: dict[tuple[int, int, float], int] = {}
    for s, d, x in zip(ei[0].tolist(), ei[1].tolist(), length.tolist()):
        original[(d, s, x)] = original.get((d, s, x), 0) + 1
    got = {(d, s, x): int(w) for s, d, x, w in zip(merged[0].tolist(), merged[1].tolist(), mlen.tolist(), weight.tolist())}
    assert got == original
    assert torch.all(merged[1][1:] >= merged[1][:-1])  # sorted by target
    # batches too large for the packed 64-bit key take the row-wise path: the same result
    big = merge_duplicate_edges(ei, length, 50_000)
    assert torch.equal(big[0], merged) and torch.equal(big[1], mlen) and torch.equal(big[2], weight)


def test_weighted_batch_norm_equals_expanded_rows() -> None:
    """Weighted statistics and running-stat updates equal BatchNorm on the repeated rows."""
    torch.manual_seed(0)
    x = torch.randn(50, 8) * 3 + 1
    w = torch.randint(1, 4, (50,)).float()
    bn_a, bn_b = torch.nn.BatchNorm1d(8), torch.nn.BatchNorm1d(8)
    with torch.no_grad():
        bn_a.weight.uniform_(0.5, 1.5)
        bn_a.bias.uniform_(-1, 1)
    bn_b.load_state_dict(bn_a.state_dict())
    expanded = bn_b(x.repeat_interleave(w.long(), dim=0))
    got = weighted_batch_norm(bn_a, x, w)
    first = torch.cumsum(w.long(), 0) - w.long()
    assert _rel(got, expanded[first]) < 1e-5
    assert _rel(bn_a.running_mean, bn_b.running_mean) < 1e-6
    assert _rel(bn_a.running_var, bn_b.running_var) < 1e-6
    bn_a.eval(), bn_b.eval()
    assert _rel(weighted_batch_norm(bn_a, x, w), bn_b(x)) < 1e-6


@pytest.mark.parametrize("kset", ["sphere", "box"])
def test_merged_edges_same_function(jarvis_batch: Batch, kset: str) -> None:
    """With merged edges and multiplicity weights the network is the same function: the
    training-mode output, every gradient, the BatchNorm running statistics after the step and
    the eval-mode output all equal the full multigraph's."""
    full, merged = _model(kset=kset), _model(kset=kset)
    y_full, g_full = _step(full, jarvis_batch, merge=False)
    y_merged, g_merged = _step(merged, jarvis_batch, merge=True)
    assert _rel(y_merged, y_full) < 1e-5
    assert set(g_full) == set(g_merged)
    # float32 round-off of a different summation order; tolerance relative to each gradient,
    # floored at 1 % of the largest one (biases before a BatchNorm have ~0 gradients)
    top = max(float(g.abs().max()) for g in g_full.values())
    for name, g in g_full.items():
        if name.endswith("gate_mlp.2.bias"):  # mathematically 0 (a shift a training-mode BN removes)
            assert float(g.abs().max()) < 1e-2 * top and float(g_merged[name].abs().max()) < 1e-2 * top
            continue
        scale = max(float(g.abs().max()), 1e-2 * top)
        assert float((g_merged[name] - g).abs().max()) < 1e-3 * scale, name
    for (name, a), b in zip(full.state_dict().items(), merged.state_dict().values()):
        if a.is_floating_point():
            assert _rel(b, a) < 1e-4, name  # float32 summation order (measured 1.3e-5)
    full.eval(), merged.eval()
    with torch.no_grad():
        a = full(**prepare_inputs(jarvis_batch, full.config))
        b = merged(**prepare_inputs(jarvis_batch, merged.config, merge_edges=True))
    assert _rel(b, a) < 1e-5


# ------------------------------------------------------------------ bf16 row buckets


def test_bucket_rows_bounds_padding_and_shape_count() -> None:
    """Buckets are >= n, waste at most 1/8 beyond the minimum, and a ragged range of sizes
    maps onto a handful of shapes."""
    for n in range(1, 70000, 7):
        m = bucket_rows(n)
        assert m >= n and (n <= MIN_BUCKET or m <= n * (1 + 1 / BUCKETS_PER_OCTAVE))
        assert bucket_rows(m) == m
    sizes = {bucket_rows(n) for n in range(12000, 18000)}
    assert len(sizes) <= 2 * BUCKETS_PER_OCTAVE // 2 + 2


class _MatmulShapes(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.rows: list[int] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        if func in (torch.ops.aten.mm.default, torch.ops.aten.addmm.default):
            a = args[1] if func is torch.ops.aten.addmm.default else args[0]
            self.rows.append(int(a.shape[0]))
        return func(*args, **(kwargs or {}))


def test_bucketed_linear_pads_bf16_rows_only_and_keeps_values() -> None:
    """Under CPU bf16 autocast the product's rows are padded to a bucket and the result (and
    its gradient) equals the plain product; in fp32 nothing is padded."""
    torch.manual_seed(0)
    x = torch.randn(1001, 32, requires_grad=True)
    w = torch.randn(16, 32, requires_grad=True)
    b = torch.randn(16)
    with _MatmulShapes() as seen, torch.autocast("cpu", dtype=torch.bfloat16):
        y = bucketed_linear(x, w, b)
    assert y.shape == (1001, 16) and seen.rows == [bucket_rows(1001)] and bucket_rows(1001) > 1001
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = F.linear(x, w, b)
    assert _rel(y.float(), ref.float()) < 1e-2
    gy = torch.randn(1001, 16)
    gx_pad, gw_pad = torch.autograd.grad(y.float(), (x, w), gy)
    gx, gw = torch.autograd.grad(ref.float(), (x, w), gy)
    assert _rel(gx_pad, gx) < 1e-2 and _rel(gw_pad, gw) < 1e-2
    with _MatmulShapes() as seen:
        bucketed_linear(x, w, b)
    assert seen.rows == [1001]


def test_bf16_training_step_tracks_fp32(jarvis_batch: Batch) -> None:
    """A bf16-autocast step (merged edges, buckets) gives the fp32 step's loss within bf16
    round-off, and the same direction of the gradient."""
    a, b = _model(), _model()
    y32, g32 = _step(a, jarvis_batch, merge=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y16, g16 = _step(b, jarvis_batch, merge=True)
    assert _rel(y16.float(), y32) < 0.05
    flat32 = torch.cat([g.flatten() for g in g32.values()])
    flat16 = torch.cat([g16[n].float().flatten() for n in g32])
    assert float(F.cosine_similarity(flat32, flat16, dim=0)) > 0.95  # measured 0.984


# ------------------------------------------------------------------ precision


def test_precision_auto_follows_the_hardware(monkeypatch: pytest.MonkeyPatch) -> None:
    assert set(prec.cpu_bf16_flags()) <= set(prec.BF16_CPU_FLAGS)  # reads /proc/cpuinfo safely
    monkeypatch.setattr(prec, "cpu_bf16_flags", lambda: ("avx512_bf16",))
    assert prec.resolve_precision("auto", "cpu") == "bf16"
    assert "avx512_bf16" in prec.describe("auto", "bf16", "cpu")
    monkeypatch.setattr(prec, "cpu_bf16_flags", lambda: ())
    assert prec.resolve_precision("auto", "cpu") == "fp32"
    assert prec.resolve_precision("bf16", "cpu") == "bf16"
    assert prec.resolve_precision("fp32", "cpu") == "fp32"
    with pytest.raises(Exception, match="auto, fp32 or bf16"):
        prec.resolve_precision("fp16", "cpu")


# ------------------------------------------------------------------ bundles written before


def _legacy_predictions() -> dict[str, float]:
    with open(LEGACY / "exfoliation-402bbe3-predictions.csv") as fh:
        return {r["id"]: float(r["exfoliation_energy"]) for r in csv.DictReader(fh)}


@pytest.mark.parametrize(("precision", "tol"), [("fp32", 1e-5), ("bf16", 5e-2)])
def test_bundle_written_before_predicts_the_same(precision: str, tol: float) -> None:
    """The bundle trained and written by commit 402bbe3 (concatenated conv, full multigraph)
    loads and predicts what that code predicted for examples/structures: to float32 round-off
    in fp32, within bf16 round-off in bf16."""
    from recinet_cli.prediction import predict

    expected = _legacy_predictions()
    result = predict([ROOT / "examples" / "structures"], models=[str(LEGACY / "exfoliation-402bbe3.safetensors")],
                     precision=precision, workers=0)
    got = {r["id"]: r["exfoliation_energy"] for r in result.rows}
    assert result.precision == precision and set(got) == set(expected) and len(got) == 80
    scale = max(abs(v) for v in expected.values())
    worst = max(abs(got[k] - v) for k, v in expected.items()) / scale
    assert worst < tol and all(math.isfinite(v) for v in got.values())
    assert np.corrcoef(list(got.values()), [expected[k] for k in got])[0, 1] > 0.999
