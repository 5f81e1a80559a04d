"""Tests of the ReciNet network (SPEC §1-5 and the §8 invariances) on real crystal structures.

Tolerance: the model runs in float32. Predictions that must agree (invariances, batching,
reloading) are compared with ``atol = 1e-4 * max(1, max|y|)``, i.e. 1e-4 relative to the
output scale (see :func:`assert_same`); the invariance tests apply the same rule to the pooled
graph vector and to the crystal-mean of each reciprocal update (scale = max|.| of that
quantity). Float32 round-off measured here is ~1e-7 (prediction) to ~1e-6 (updates) relative.

Crystals come from the shared sample files (COD CIFs, JARVIS POSCARs) and the JARVIS dft_3d
subset; every transformed crystal gets its own graph, built by the project's featurizer.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from pymatgen.core import Element
from torch import Tensor
from torch_geometric.data import Batch, Data

from recinet_cli.errors import RecinetError
from recinet_cli.featurize import featurize_crystal
from recinet_cli.model.config import ModelConfig
from recinet_cli.model.heads.moe import MoEDecoder
from recinet_cli.model.kvectors import box_vectors, kvector_set, reciprocal_inputs
from recinet_cli.model.recinet import INPUT_NAMES, ReciNet, masked_l1, prepare_inputs
from recinet_cli.model.reciprocal import ReciprocalUpdate
from recinet_cli.store.dataset import to_data
from recinet_cli.store.reader import GraphArrays
from recinet_cli.structures.crystal import Crystal, wrap_fractional
from recinet_cli.structures.graph import GraphParams
from recinet_cli.structures.readers import read_structures
from tests.conftest import jarvis_cell, shared_path

#: Relative float32 tolerance (times max(1, output scale)) for "same prediction".
REL_TOL = 1e-4

#: A small, fast configuration (the default one is used where noted).
SMALL = ModelConfig(hidden=64, blocks=2)

#: (lattice [3,3] Å, frac [N,3], atomic numbers [N]).
Cell = tuple[np.ndarray, np.ndarray, np.ndarray]

#: Real sample structures used below (file stem -> file under ../shared/data/samples).
SAMPLES = {
    "NaCl": ("cgcnn_cifs", "1000041.cif"),  # cubic Fm-3m, 8 atoms (conventional cell)
    "hex": ("cgcnn_cifs", "1101051.cif"),  # hexagonal P6_3mc, 4 atoms
    "mono": ("alignn_poscars", "POSCAR-JVASP-98224.vasp"),  # monoclinic P2_1/m, 10 atoms
    "tric": ("alignn_poscars", "POSCAR-JVASP-97570.vasp"),  # triclinic P-1, 22 atoms
    "slab": ("alignn_poscars", "POSCAR-JVASP-14441.vasp"),  # CoO2 monolayer, c = 24.6 Å vacuum
    "one": ("alignn_poscars", "POSCAR-JVASP-21210.vasp"),  # Xe, one atom (fcc primitive)
}

#: JARVIS targets for the multi-task tests (missing values "na" -> NaN).
JARVIS_TARGETS = ("formation_energy_peratom", "optb88vdw_bandgap", "mbj_bandgap")


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def cell_data(cell: Cell, targets: Sequence[float] = (math.nan,), sid: str = "x") -> Data:
    """A PyG ``Data`` for one crystal, its graph built now on the coordinates *as given*
    (no wrapping, so an atom moved into another image keeps its image)."""
    lattice, frac, numbers = cell
    crystal = Crystal.create(
        sid, sid, np.array(lattice), np.array(frac), np.array(numbers), wrap=False
    )
    rec = featurize_crystal(crystal, GraphParams())
    arrays = GraphArrays(
        sid,
        rec.lattice,
        rec.numbers,
        rec.frac,
        rec.edge_index,
        rec.edge_image,
        np.asarray(targets, dtype=np.float64),
    )
    return to_data(arrays)


def batch_of(datas: Sequence[Data]) -> Batch:
    """PyG batch of ``datas``."""
    return Batch.from_data_list(list(datas))


def predict(model: ReciNet, datas: Sequence[Data]) -> Tensor:
    """Eval-mode physical-unit predictions ``[B, T]`` (no gradient)."""
    assert not model.training
    with torch.no_grad():
        return model(**prepare_inputs(batch_of(datas), model.config))


def assert_same(a: Tensor, b: Tensor, what: str, scale: float | None = None) -> None:
    """Equal to float32 tolerance: ``|a - b| <= 1e-4 * max(1, scale)``, ``scale`` defaulting
    to ``max|a|``."""
    a, b = a.detach(), b.detach()
    scale = max(1.0, float(a.abs().max()) if scale is None else scale)
    err = float((a - b).abs().max())
    assert err <= REL_TOL * scale, f"{what}: max |diff| {err:.3g} > {REL_TOL * scale:.3g}"


@contextmanager
def reciprocal_outputs(model: ReciNet) -> Iterator[list[Tensor]]:
    """Collect the output of every :class:`ReciprocalUpdate` call while the block is open."""
    captured: list[Tensor] = []
    hooks = [
        m.register_forward_hook(lambda _m, _i, out: captured.append(out))
        for m in model.modules()
        if isinstance(m, ReciprocalUpdate)
    ]
    try:
        yield captured
    finally:
        for h in hooks:
            h.remove()


def probe(model: ReciNet, datas: Sequence[Data]) -> dict[str, Tensor]:
    """Eval-mode prediction ``y [B, T]``, pooled graph vector ``x [B, d]`` and the per-crystal
    mean of every block's reciprocal update ``u [B, blocks * d]`` (the long-range stream on
    its own: invariance errors there are not drowned by the local conv)."""
    assert not model.training
    batch = batch_of(datas)
    with reciprocal_outputs(model) as updates, torch.no_grad():
        inputs = prepare_inputs(batch, model.config)
        y = model(**inputs)
        x = model.backbone(**inputs)
    n_graphs = len(datas)
    counts = torch.bincount(batch.batch, minlength=n_graphs).unsqueeze(1)
    pooled = [
        torch.zeros(n_graphs, u.shape[1]).index_add_(0, batch.batch, u) / counts
        for u in updates[: len(updates) // 2]  # hooks fired for model(...) and backbone(...)
    ]
    u = torch.cat(pooled, 1) if pooled else torch.zeros(n_graphs, 0)
    return {"y": y, "x": x, "u": u}


def max_diff(a: Tensor, b: Tensor) -> float:
    return float((a - b).abs().max())


def jarvis_targets(entry: dict[str, Any]) -> list[float]:
    """The :data:`JARVIS_TARGETS` of an entry ("na" -> NaN)."""
    out = []
    for key in JARVIS_TARGETS:
        v = entry.get(key)
        out.append(float(v) if isinstance(v, (int, float)) else math.nan)
    return out


def jarvis_data(entry: dict[str, Any]) -> Data:
    lattice, frac, elements = jarvis_cell(entry)
    numbers = np.array([Element(s).Z for s in elements], dtype=np.int64)
    return cell_data((lattice, frac, numbers), jarvis_targets(entry), entry["jid"])


# --- symmetry operations on a cell (SPEC §8) ---------------------------------------------


def _rotation() -> np.ndarray:
    """A fixed proper rotation (Rodrigues, axis (1, 2, 3), 0.7 rad)."""
    axis = np.array([1.0, 2.0, 3.0]) / math.sqrt(14.0)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(0.7) * k + (1 - math.cos(0.7)) * k @ k


def rotated(c: Cell) -> Cell:
    """Rotate the Cartesian frame: lattice rows ``L @ R.T``; frac unchanged."""
    return c[0] @ _rotation().T, c[1], c[2]


def translated(c: Cell) -> Cell:
    """Shift every atom by the same fractional vector, then wrap."""
    return c[0], wrap_fractional(c[1] + np.array([0.3141, -0.2718, 0.5772])), c[2]


def image_moved(c: Cell) -> Cell:
    """Move the last atom into another lattice image (not wrapped back)."""
    frac = c[1].copy()
    frac[-1] += np.array([1.0, -2.0, 3.0])
    return c[0], frac, c[2]


def permuted(c: Cell) -> Cell:
    """Reverse-and-roll permutation of atom order."""
    perm = np.roll(np.arange(len(c[2]))[::-1], 1)
    return c[0], c[1][perm], c[2][perm]


REBASE = np.array([[1.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])


def rebased(c: Cell) -> Cell:
    """Equivalent basis ``L' = M @ L`` (rows l1 + l2, l2, l3), ``frac' = frac @ inv(M)``, wrapped."""
    return REBASE @ c[0], wrap_fractional(c[1] @ np.linalg.inv(REBASE)), c[2]


def supercell(reps: tuple[int, int, int]) -> Callable[[Cell], Cell]:
    """``reps[0] x reps[1] x reps[2]`` supercell."""

    def make(c: Cell) -> Cell:
        r = np.array(reps, dtype=np.float64)
        shifts = (
            np.array(np.meshgrid(*(np.arange(n) for n in reps), indexing="ij")).reshape(3, -1).T
        )
        frac = ((c[1][None, :, :] + shifts[:, None, :]) / r).reshape(-1, 3)
        return r[:, None] * c[0], frac, np.tile(c[2], len(shifts))

    return make


TRANSFORMS: dict[str, Callable[[Cell], Cell]] = {
    "rotation": rotated,
    "translation": translated,
    "atom in another image": image_moved,
    "permutation": permuted,
    "basis l1+l2": rebased,
    "supercell 2x1x1": supercell((2, 1, 1)),
    "supercell 2x2x2": supercell((2, 2, 2)),
}


def brute_force_sphere(lattice: np.ndarray, gmax: float) -> tuple[set[tuple[int, ...]], np.ndarray]:
    """Every integer n != 0 with ``|n @ B| <= gmax`` (both of each ± pair) and their |G|."""
    recip = 2.0 * math.pi * np.linalg.inv(lattice).T
    r = int(math.ceil(gmax * np.linalg.norm(lattice, axis=1).max() / (2 * math.pi))) + 2
    rng = np.arange(-r, r + 1)
    n = np.array(np.meshgrid(rng, rng, rng, indexing="ij")).reshape(3, -1).T
    norm = np.linalg.norm(n @ recip, axis=1)
    keep = (norm <= gmax) & n.any(axis=1)
    return {tuple(int(x) for x in v) for v in n[keep]}, norm[keep]


def shortest_g(lattice: np.ndarray) -> float:
    """Length of the shortest non-zero reciprocal-lattice vector (Å^-1)."""
    recip = 2.0 * math.pi * np.linalg.inv(lattice).T
    rng = np.arange(-3, 4)
    n = np.array(np.meshgrid(rng, rng, rng, indexing="ij")).reshape(3, -1).T
    n = n[n.any(axis=1)]
    return float(np.linalg.norm(n @ recip, axis=1).min())


def train_steps(
    model: ReciNet, datas: Sequence[Data], steps: int = 5, lr: float = 3e-3
) -> list[float]:
    """A few Adam steps (train mode) on the standardised masked L1 loss; leaves eval mode."""
    batch = batch_of(datas)
    inputs = prepare_inputs(batch, model.config)
    y = batch.y
    model.set_scaler(torch.nanmean(y, 0), torch.from_numpy(np.nanstd(y.numpy(), 0)))
    target = (y - model.target_mean) / model.target_std
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = masked_l1(model.standardized(**inputs), target) + model.aux_loss()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    model.eval()
    return losses


# --------------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cells() -> dict[str, Cell]:
    """The :data:`SAMPLES` crystals as (lattice, frac, numbers)."""
    paths = [shared_path("samples", folder, name) for folder, name in SAMPLES.values()]
    crystals, failures = read_structures(paths)
    assert not failures, failures
    by_stem = {Path(c.source).stem: c for c in crystals}
    out = {}
    for key, (_, name) in SAMPLES.items():
        c = by_stem[Path(name).stem]
        out[key] = (c.lattice, c.frac, c.numbers)
    assert len(out["one"][2]) == 1 and np.linalg.norm(out["slab"][0][2]) > 20.0
    return out


@pytest.fixture(scope="module")
def mixed_batch(cells: dict[str, Cell]) -> list[Data]:
    """One-atom cell, 2D slab with vacuum, cubic, triclinic: mixed sizes (1, 3, 8, 22 atoms)."""
    return [cell_data(cells[k], sid=k) for k in ("one", "slab", "NaCl", "tric")]


@pytest.fixture(scope="module")
def train_set(jarvis_entries: list[dict[str, Any]]) -> list[Data]:
    """12 small real JARVIS crystals with their three targets (some mbj gaps missing)."""
    picked = [e for e in jarvis_entries if len(e["atoms"]["elements"]) <= 8][:12]
    return [jarvis_data(e) for e in picked]


@pytest.fixture(scope="module")
def random_model() -> ReciNet:
    """Small sphere model with random weights, eval mode."""
    torch.manual_seed(0)
    return ReciNet(SMALL).eval()


@pytest.fixture(scope="module")
def trained_model(train_set: list[Data], mixed_batch: list[Data]) -> ReciNet:
    """Small sphere model after 5 Adam steps on real JARVIS formation energies, eval mode."""
    torch.manual_seed(0)
    config = replace(SMALL, targets=("formation_energy",))
    model = ReciNet(config)
    before = predict(model.eval(), mixed_batch)
    data = [d.clone() for d in train_set]
    for d in data:
        d.y = d.y[:, :1]
    losses = train_steps(model, data)
    assert all(math.isfinite(v) for v in losses)
    after = predict(model, mixed_batch)
    assert max_diff(before, after) > 1e-3, "training did not change the model"
    return model


@pytest.fixture(scope="module")
def invariance_cases(cells: dict[str, Cell]) -> dict[str, list[tuple[str, Data]]]:
    """Per crystal: the original and every :data:`TRANSFORMS` image, each with its own graph."""
    out = {}
    for key in ("NaCl", "hex", "mono", "tric", "slab", "one"):
        cell = cells[key]
        out[key] = [("original", cell_data(cell))] + [
            (name, cell_data(t(cell))) for name, t in TRANSFORMS.items()
        ]
    return out


# --------------------------------------------------------------------------------------------
# 1. shapes and dtypes
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "n_targets"), [("scalar", 1), ("scalar", 3), ("mt-ls", 3), ("mt-moe", 3)]
)
def test_output_shape_dtype_and_batching(
    mixed_batch: list[Data], head: str, n_targets: int
) -> None:
    """``[B, T]`` float32 finite output for a mixed batch (one-atom cell, slab, 8 and 22
    atoms), in train and eval mode; in eval mode each row equals the crystal predicted alone."""
    torch.manual_seed(1)
    targets = tuple(f"t{i}" for i in range(n_targets))
    model = ReciNet(replace(SMALL, head=head, targets=targets))
    inputs = prepare_inputs(batch_of(mixed_batch), model.config)
    assert set(inputs) == set(INPUT_NAMES)
    model.train()
    y_train = model(**inputs)
    assert y_train.shape == (len(mixed_batch), n_targets) and y_train.dtype == torch.float32
    assert torch.isfinite(y_train).all()
    aux = model.aux_loss().detach()
    assert aux.shape == () and torch.isfinite(aux) and float(aux) >= 0.0
    if head == "mt-moe":
        assert float(aux) > 0.0

    model.eval()
    y = predict(model, mixed_batch)
    assert y.shape == (len(mixed_batch), n_targets) and y.dtype == torch.float32
    assert torch.isfinite(y).all()
    with torch.no_grad():  # predict() merges duplicate edges: the same numbers to float32 tolerance
        merged = model(**prepare_inputs(batch_of(mixed_batch), model.config, merge_edges=True))
        assert torch.equal(model.predict(batch_of(mixed_batch)), merged)
    assert_same(merged, y, f"{head}: merged vs full multigraph")
    for i, d in enumerate(mixed_batch):
        assert_same(y[i : i + 1], predict(model, [d]), f"{head}: crystal {i} batched vs alone")


def test_default_config_output(mixed_batch: list[Data]) -> None:
    """The default configuration (hidden 256, 4 blocks, sphere gmax 2.5) on the mixed batch."""
    torch.manual_seed(2)
    model = ReciNet(ModelConfig()).eval()
    y = predict(model, mixed_batch)
    assert y.shape == (4, 1) and y.dtype == torch.float32 and torch.isfinite(y).all()
    assert_same(y[1:2], predict(model, [mixed_batch[1]]), "default config: slab batched vs alone")


# --------------------------------------------------------------------------------------------
# 2. invariances (SPEC §8)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("state", ["random", "trained"])
@pytest.mark.parametrize("crystal", ["NaCl", "hex", "mono", "tric", "slab", "one"])
def test_invariances(
    request: pytest.FixtureRequest,
    invariance_cases: dict[str, list[tuple[str, Data]]],
    state: str,
    crystal: str,
) -> None:
    """Rotation, translation, image wrapping, permutation, basis change and 2x1x1 / 2x2x2
    supercells leave the (eval-mode) prediction unchanged, before and after training; so do
    the pooled graph vector and the crystal-mean of each reciprocal update (which would show
    e.g. a missing 1/N_m at ~1e-2 relative, where the prediction moves only ~1e-4)."""
    model: ReciNet = request.getfixturevalue(f"{state}_model")
    cases = invariance_cases[crystal]
    out = probe(model, [d for _, d in cases])
    assert out["u"].shape[1] == SMALL.blocks * SMALL.hidden
    for key, value in out.items():
        scale = float(value.abs().max())
        for i, (name, _) in enumerate(cases[1:], start=1):
            assert_same(
                value[0:1], value[i : i + 1], f"{state} model, {crystal}, {name}, {key}", scale
            )


def test_transforms_really_change_the_input(
    invariance_cases: dict[str, list[tuple[str, Data]]],
) -> None:
    """Guard against vacuous invariance tests: each transform changes what the model sees."""
    cases = dict(invariance_cases["tric"])
    orig = cases["original"]
    assert not torch.allclose(cases["rotation"].lattice, orig.lattice)
    assert not torch.allclose(cases["translation"].frac, orig.frac)
    assert (cases["atom in another image"].frac - orig.frac).abs().max() > 0.5
    assert not torch.equal(cases["permutation"].atomic_numbers, orig.atomic_numbers)
    assert not torch.allclose(cases["basis l1+l2"].lattice, orig.lattice)
    assert cases["supercell 2x2x2"].num_nodes == 8 * orig.num_nodes
    assert cases["supercell 2x1x1"].num_nodes == 2 * orig.num_nodes
    # the basis change really changes the integer k-vectors of the sphere set
    n0 = {
        tuple(v) for v in kvector_set(orig.lattice.double(), "sphere", 2.5, (2, 2, 2))[0].tolist()
    }
    n1 = {
        tuple(v)
        for v in kvector_set(cases["basis l1+l2"].lattice.double(), "sphere", 2.5, (2, 2, 2))[
            0
        ].tolist()
    }
    assert len(n0) == len(n1) and n0 != n1


# --------------------------------------------------------------------------------------------
# 3. the box k-set is not basis-invariant
# --------------------------------------------------------------------------------------------


def test_box_kset_is_not_basis_invariant(cells: dict[str, Cell]) -> None:
    """With ``kset="box"`` the equivalent basis L' = [l1+l2, l2, l3] changes the prediction by
    clearly more than the tolerance (it picks other k-vectors), while the sphere set agrees to
    float round-off; both are rotation-invariant.

    "Clearly": > 10x the tolerance on the prediction and > 100x on the pooled graph vector
    (random weights give small head outputs; the sphere set's differences are ~1e-7).
    """
    keys = ("hex", "mono", "tric", "slab")
    n = len(keys)
    datas = (
        [cell_data(cells[k]) for k in keys]
        + [cell_data(rebased(cells[k])) for k in keys]
        + [cell_data(rotated(cells[k])) for k in keys]
    )
    for kset in ("sphere", "box"):
        torch.manual_seed(3)
        model = ReciNet(replace(SMALL, kset=kset, box=(2, 2, 2))).eval()
        inputs = prepare_inputs(batch_of(datas), model.config)
        with torch.no_grad():
            y = model(**inputs)
            x = model.backbone(**inputs)  # [3n, d] pooled graph vectors
        assert_same(y[:n], y[2 * n :], f"{kset}: rotation")
        assert_same(x[:n], x[2 * n :], f"{kset}: rotation (graph vector)")
        tol_y = REL_TOL * max(1.0, float(y.abs().max()))
        tol_x = REL_TOL * max(1.0, float(x.abs().max()))
        dy, dx = max_diff(y[:n], y[n : 2 * n]), max_diff(x[:n], x[n : 2 * n])
        if kset == "sphere":
            assert dy <= tol_y and dx <= tol_x, (
                f"sphere k-set not basis-invariant: {dy:.3g}, {dx:.3g}"
            )
        else:
            assert dy > 10 * tol_y, (
                f"box: basis change moved the prediction only {dy:.3g} (tol {tol_y:.3g})"
            )
            assert dx > 100 * tol_x, (
                f"box: basis change moved the graph vector only {dx:.3g} (tol {tol_x:.3g})"
            )


# --------------------------------------------------------------------------------------------
# 4. gradients
# --------------------------------------------------------------------------------------------


def _backward(model: ReciNet, datas: Sequence[Data]) -> None:
    batch = batch_of(datas)
    model.train()
    model.zero_grad(set_to_none=True)
    pred = model.standardized(**prepare_inputs(batch, model.config))
    loss = masked_l1(pred, batch.y[:, : pred.shape[1]]) + model.aux_loss()
    loss.backward()


def test_gradients_reach_every_parameter_default_model(train_set: list[Data]) -> None:
    """Default config (sphere, 4 blocks, 256): one backward on real data gives every
    parameter a non-zero gradient."""
    torch.manual_seed(4)
    model = ReciNet(ModelConfig())
    _backward(model, train_set[:8])
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name}: no gradient"
        assert p.grad.abs().sum() > 0, f"{name}: gradient is all zero"


@pytest.mark.parametrize("kset", ["sphere", "box"])
def test_no_unused_parameters(train_set: list[Data], kset: str) -> None:
    """Every registered parameter takes part in the forward pass (needed e.g. by DDP
    without ``find_unused_parameters``, and for honest parameter counts)."""
    torch.manual_seed(4)
    model = ReciNet(replace(SMALL, kset=kset))
    _backward(model, train_set[:8])
    unused = [name for name, p in model.named_parameters() if p.grad is None]
    assert not unused, f"parameters without gradient: {unused}"


def test_gradients_moe_head(train_set: list[Data]) -> None:
    """mt-moe, train mode: every non-expert parameter gets a non-zero gradient; experts the
    routers selected in this batch do too; unselected experts get exactly zero."""
    torch.manual_seed(5)
    model = ReciNet(replace(SMALL, head="mt-moe", targets=JARVIS_TARGETS))
    head = model.head
    assert isinstance(head, MoEDecoder)
    head.reset_counts()
    _backward(model, train_set)
    selected = head.expert_counts.sum(0) > 0  # [E]
    assert int(selected.sum()) >= head.top_k
    assert float(head.expert_counts.sum()) == len(train_set) * len(JARVIS_TARGETS) * head.top_k
    for name, p in model.named_parameters():
        if ".experts." in name:
            e = int(name.split(".experts.")[1].split(".")[0])
            if selected[e]:
                assert p.grad is not None and p.grad.abs().sum() > 0, (
                    f"{name}: selected, no gradient"
                )
            else:
                assert p.grad is None or p.grad.abs().sum() == 0, (
                    f"{name}: unselected, has gradient"
                )
        else:
            assert p.grad is not None, f"{name}: no gradient"
            assert p.grad.abs().sum() > 0, f"{name}: gradient is all zero"


# --------------------------------------------------------------------------------------------
# 5. the "w/o reciprocal" ablation
# --------------------------------------------------------------------------------------------


def _is_reciprocal(name: str) -> bool:
    return "reciprocal" in name or "global_init" in name


def test_ablation_drops_exactly_the_reciprocal_parameters(mixed_batch: list[Data]) -> None:
    """``reciprocal=False``: no reciprocal / W_r parameters, the rest identical, and the model
    runs on the empty k inputs :func:`prepare_inputs` gives."""
    full = ReciNet(SMALL)
    abl = ReciNet(replace(SMALL, reciprocal=False))
    full_params = dict(full.named_parameters())
    abl_params = dict(abl.named_parameters())
    assert not [n for n in abl_params if _is_reciprocal(n)]
    assert any(_is_reciprocal(n) for n in full_params)
    assert set(abl_params) == {n for n in full_params if not _is_reciprocal(n)}
    n_rec = sum(p.numel() for n, p in full_params.items() if _is_reciprocal(n))
    n_full = sum(p.numel() for p in full.parameters())
    n_abl = sum(p.numel() for p in abl.parameters())
    assert n_rec > 0 and n_full - n_abl == n_rec
    for n, p in abl_params.items():
        assert p.shape == full_params[n].shape, n

    inputs = prepare_inputs(batch_of(mixed_batch), abl.config)
    assert inputs["k_int"].shape == (0, 3) and inputs["k_norm"].shape == (0,)
    for key in ("k_slot", "pair_atom", "pair_k"):
        assert inputs[key].numel() == 0 and inputs[key].dtype == torch.long
    with torch.no_grad():
        y = abl.eval()(**inputs)
    assert y.shape == (4, 1) and torch.isfinite(y).all()


# --------------------------------------------------------------------------------------------
# 6. configuration
# --------------------------------------------------------------------------------------------


def test_config_from_dict_rejects_unknown_keys() -> None:
    with pytest.raises(RecinetError) as exc:
        ModelConfig.from_dict({"hidden": 64, "colour": "red", "n_blocks": 3})
    msg = str(exc.value)
    assert "colour" in msg and "n_blocks" in msg and "hidden" in msg  # valid keys are listed


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("kset", "foo"),
        ("gmax", 0.0),
        ("gmax", -1.0),
        ("gmax", math.nan),
        ("blocks", 0),
        ("hidden", 0),
        ("box", (0, 0, 0)),
        ("box", (1, -1, 1)),
        ("filter_rbf", 0),
        ("targets", ("a", "a")),
        ("targets", ()),
    ],
)
def test_config_validation_names_the_field(field: str, value: object) -> None:
    with pytest.raises(RecinetError, match=field):
        ModelConfig(**{field: value})  # type: ignore[arg-type]
    with pytest.raises(RecinetError, match=field):
        ModelConfig.from_dict({field: value})


@pytest.mark.parametrize(
    "config",
    [
        ModelConfig(),
        ModelConfig(
            hidden=64,
            blocks=3,
            kset="box",
            box=(1, 2, 3),
            gmax=3.0,
            reciprocal=False,
            head="mt-moe",
            head_options={"top_k": 3, "n_experts": 6},
            targets=("a", "b", "c"),
        ),
    ],
)
def test_config_json_round_trip(config: ModelConfig) -> None:
    text = json.dumps(config.to_dict())
    back = ModelConfig.from_dict(json.loads(text))
    assert back == config
    assert back.to_dict() == config.to_dict()
    assert isinstance(back.box, tuple) and isinstance(back.targets, tuple)


# --------------------------------------------------------------------------------------------
# 7. scaler and state dict
# --------------------------------------------------------------------------------------------


def test_scaler_and_state_dict_round_trip(mixed_batch: list[Data], tmp_path: Path) -> None:
    """forward == standardized * std + mean; a reloaded state dict (weights_only) reproduces
    the predictions exactly, scaler buffers included."""
    config = replace(SMALL, head="mt-ls", targets=("a", "b", "c"))
    torch.manual_seed(6)
    model = ReciNet(config).eval()
    mean, std = torch.tensor([1.5, -2.0, 300.0]), torch.tensor([0.5, 2.0, 40.0])
    model.set_scaler(mean, std)
    inputs = prepare_inputs(batch_of(mixed_batch), config)
    with torch.no_grad():
        y = model(**inputs)
        s = model.standardized(**inputs)
    torch.testing.assert_close(y, s * std + mean, rtol=1e-6, atol=1e-6)
    assert float((y - mean).abs().max()) > 0  # not a constant output

    path = tmp_path / "model.pt"
    torch.save(model.state_dict(), path)
    state = torch.load(path, weights_only=True)
    assert torch.equal(state["target_mean"], mean) and torch.equal(state["target_std"], std)
    torch.manual_seed(7)
    fresh = ReciNet(config).eval()
    with torch.no_grad():
        assert max_diff(fresh(**inputs), y) > 1e-3  # different before loading
        fresh.load_state_dict(state)
        assert torch.equal(fresh(**inputs), y)


def test_set_scaler_sanitises_std() -> None:
    """Zero or NaN std becomes 1 and NaN mean 0 (a target missing from the training split)."""
    model = ReciNet(replace(SMALL, targets=("a", "b", "c")))
    model.set_scaler(torch.tensor([1.0, math.nan, 2.0]), torch.tensor([0.0, math.nan, 3.0]))
    assert torch.equal(model.target_mean, torch.tensor([1.0, 0.0, 2.0]))
    assert torch.equal(model.target_std, torch.tensor([1.0, 1.0, 3.0]))


# --------------------------------------------------------------------------------------------
# 8. masked L1
# --------------------------------------------------------------------------------------------


def test_masked_l1_ignores_missing_targets(jarvis_entries: list[dict[str, Any]]) -> None:
    """Real JARVIS multi-task labels with gaps ("na" mbj gaps): masked entries change neither
    the loss nor receive gradient; the loss is the MAE over the present entries."""
    rows = [jarvis_targets(e) for e in jarvis_entries[:12]]
    target = torch.tensor(rows, dtype=torch.float32)
    missing = torch.isnan(target)
    assert missing.any() and (~missing).any()
    torch.manual_seed(8)
    pred = torch.randn(target.shape, requires_grad=True)
    loss = masked_l1(pred, target)
    loss.backward()
    expected = (pred.detach() - target).abs()[~missing].mean()
    torch.testing.assert_close(loss.detach(), expected)
    assert torch.isfinite(loss)
    assert pred.grad is not None
    assert (pred.grad[missing] == 0).all() and (pred.grad[~missing] != 0).all()

    moved = pred.detach().clone()
    moved[missing] += 1000.0
    assert torch.equal(masked_l1(moved, target), loss.detach())

    all_missing = torch.full_like(target, math.nan)
    p = pred.detach().clone().requires_grad_(True)
    empty = masked_l1(p, all_missing)
    empty.backward()
    assert float(empty.detach()) == 0.0 and p.grad is not None and (p.grad == 0).all()


# --------------------------------------------------------------------------------------------
# 9. k-vectors
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gmax", [1.3, 2.5, 3.7])
@pytest.mark.parametrize("crystal", ["NaCl", "tric"])
def test_sphere_kset_matches_brute_force(cells: dict[str, Cell], crystal: str, gmax: float) -> None:
    """Sphere set of a real cubic (and a triclinic) crystal: the same vectors as a brute-force
    enumeration, one of each ±G pair, |G| values equal."""
    lattice = cells[crystal][0]
    n, norm, owner, slot = kvector_set(torch.tensor(lattice)[None], "sphere", gmax, (2, 2, 2))
    full, full_norm = brute_force_sphere(lattice, gmax)
    got = [tuple(v) for v in n.tolist()]
    assert len(got) == len(set(got)), "duplicate k-vectors"
    assert not {tuple(-x for x in v) for v in got} & set(got), "both G and -G present"
    assert set(got) | {tuple(-x for x in v) for v in got} == full
    assert 2 * len(got) == len(full)
    np.testing.assert_allclose(
        np.sort(np.repeat(norm.numpy(), 2)), np.sort(full_norm), rtol=1e-12, atol=1e-12
    )
    recip = 2.0 * math.pi * np.linalg.inv(lattice).T
    np.testing.assert_allclose(norm.numpy(), np.linalg.norm(n.numpy() @ recip, axis=1), rtol=1e-12)
    assert (owner == 0).all() and (slot == 0).all()


def test_sphere_count_cubic_by_hand(cells: dict[str, Cell]) -> None:
    """NaCl conventional cube a: |G| = 2π|n|/a, so the count is the number of integer
    vectors with 0 < |n|^2 <= (gmax a / 2π)^2, halved."""
    lattice = cells["NaCl"][0]
    a = float(np.linalg.norm(lattice[0]))
    np.testing.assert_allclose(np.abs(lattice), a * np.eye(3), atol=1e-6)
    gmax = 2.5
    r2 = (gmax * a / (2 * math.pi)) ** 2
    rng = range(-5, 6)
    count = sum(1 for i in rng for j in rng for k in rng if 0 < i * i + j * j + k * k <= r2)
    n, _, _, _ = kvector_set(torch.tensor(lattice)[None], "sphere", gmax, (2, 2, 2))
    assert len(n) == count // 2


def test_batched_kvectors_and_pairs(cells: dict[str, Cell]) -> None:
    """Batched: each crystal's vectors equal its own set, grouped in batch order, and the
    (atom, k) pairs are exactly all pairs within each crystal."""
    keys = ("one", "slab", "NaCl", "tric")
    datas = [cell_data(cells[k]) for k in keys]
    batch = batch_of(datas)
    lattice = batch.lattice.reshape(-1, 3, 3).double()
    n, _, owner, _ = kvector_set(lattice, "sphere", 2.5, (2, 2, 2))
    assert torch.equal(owner, torch.sort(owner).values)
    for m, key in enumerate(keys):
        alone, _, _, _ = kvector_set(torch.tensor(cells[key][0])[None], "sphere", 2.5, (2, 2, 2))
        assert torch.equal(n[owner == m], alone), key
    rec = reciprocal_inputs(lattice, batch.batch, "sphere", 2.5, (2, 2, 2))
    atoms = torch.bincount(batch.batch)
    ks = torch.bincount(owner, minlength=len(keys))
    assert len(rec.pair_atom) == int((atoms * ks).sum())
    assert torch.equal(batch.batch[rec.pair_atom], owner[rec.pair_k])
    pairs = set(zip(rec.pair_atom.tolist(), rec.pair_k.tolist()))
    assert len(pairs) == len(rec.pair_atom)


def test_box_kset_count_and_uniqueness() -> None:
    for half in ((2, 2, 2), (1, 2, 3), (0, 0, 2)):
        n = box_vectors(half)
        total = (2 * half[0] + 1) * (2 * half[1] + 1) * (2 * half[2] + 1)
        assert len(n) == (total - 1) // 2
        got = {tuple(v) for v in n.tolist()}
        assert len(got) == len(n) and (0, 0, 0) not in got
        assert not {tuple(-x for x in v) for v in got} & got
        assert (n.abs() <= torch.tensor(half)).all()


def _zero_k_setup(cells: dict[str, Cell]) -> tuple[ReciNet, list[Data], float]:
    """Small model with gmax below the one-atom cell's shortest |G| (but above the slab's)."""
    g_one = shortest_g(cells["one"][0])
    gmax = 0.9 * g_one
    assert shortest_g(cells["slab"][0]) < gmax
    torch.manual_seed(9)
    model = ReciNet(replace(SMALL, gmax=gmax)).eval()
    return model, [cell_data(cells["one"]), cell_data(cells["slab"])], gmax


def test_crystal_without_kvectors(cells: dict[str, Cell]) -> None:
    """A tiny cell with gmax below its shortest |G| gets no k-vectors; the model still runs,
    alone and batched with a crystal that has some, and the Fourier sum (before W_mix) of
    its atoms is exactly zero."""
    model, datas, gmax = _zero_k_setup(cells)
    batch = batch_of(datas)
    inputs = prepare_inputs(batch, model.config)
    owner = kvector_set(batch.lattice.reshape(-1, 3, 3), "sphere", gmax, (2, 2, 2))[2]
    assert int((owner == 0).sum()) == 0 and int((owner == 1).sum()) > 0

    captured: list[tuple[Tensor, Tensor]] = []
    hooks = [
        m.mix.register_forward_hook(lambda _m, i, o: captured.append((i[0], o)))
        for m in model.modules()
        if isinstance(m, ReciprocalUpdate)
    ]
    try:
        with torch.no_grad():
            y = model(**inputs)
    finally:
        for h in hooks:
            h.remove()
    assert y.shape == (2, 1) and torch.isfinite(y).all()
    one_atoms = batch.batch == 0
    assert len(captured) == SMALL.blocks
    for total, _ in captured:
        assert (total[one_atoms] == 0).all()
        assert total[~one_atoms].abs().sum() > 0
    assert_same(y[:1], predict(model, datas[:1]), "zero-k crystal batched vs alone")
    alone = prepare_inputs(batch_of(datas[:1]), model.config)
    assert alone["k_int"].shape == (0, 3) and alone["pair_atom"].numel() == 0


def test_reciprocal_update_is_zero_without_kvectors(cells: dict[str, Cell]) -> None:
    """SPEC §3: h~ = W_mix(Σ_G ...); with no k-vectors the sum is empty and the update is 0."""
    model, datas, _ = _zero_k_setup(cells)
    batch = batch_of(datas[:1])
    with reciprocal_outputs(model) as captured, torch.no_grad():
        model(**prepare_inputs(batch, model.config))
    assert captured and all((u == 0).all() for u in captured)


# --------------------------------------------------------------------------------------
# the two forms of the reciprocal transform (dense per crystal group in eager mode,
# pair lists in scripted/exported code) compute the same thing
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kset", ["sphere", "box"])
def test_dense_and_pair_transforms_agree(train_set: list[Data], cells: dict[str, Cell], kset: str) -> None:
    big = supercell((3, 3, 2))(cells["NaCl"])  # 144 atoms next to small cells in one batch
    datas = [*train_set[:12], cell_data(big, (math.nan,) * len(JARVIS_TARGETS)), *train_set[12:20]]
    batch = batch_of(datas)
    cfg = replace(SMALL, kset=kset)
    inp = prepare_inputs(batch, cfg)
    block = ReciNet(cfg).backbone.blocks[0].reciprocal
    torch.manual_seed(0)
    g = torch.randn(batch.num_nodes, cfg.hidden)
    inv = inp["inv_natoms"][inp["node_graph"]]
    args = (inp["frac"], inv, inp["k_int"], inp["k_norm"], inp["k_slot"])
    pairs = block.transform_pairs(g, *args, inp["pair_atom"], inp["pair_k"])
    dense = block.transform_dense(inp["node_graph"], g, *args, inp["pair_atom"])
    assert_same(dense, pairs, f"dense vs pair transform ({kset})")
    assert pairs.abs().max() > 1e-3  # a non-trivial comparison


def test_crystal_groups_cover_every_atom_and_bound_the_waste() -> None:
    from recinet_cli.model.reciprocal import crystal_groups

    atoms = [1, 5, 8, 500, 3, 0 + 2, 40]
    ks = [0, 9, 30, 746, 4, 1, 61]
    groups = crystal_groups(atoms, ks)
    assert groups[0][0] == 0 and groups[-1][1] == sum(atoms) and groups[-1][3] == sum(ks)
    for (_, a1, _, k1), (b0, _, l0, _) in zip(groups, groups[1:]):
        assert a1 == b0 and k1 == l0
    starts = np.cumsum([0, *atoms])
    kstarts = np.cumsum([0, *ks])
    for a0, a1, k0, k1 in groups:  # zero blocks cost at most 8x the useful work
        members = [m for m in range(len(atoms)) if a0 <= starts[m] < a1]
        useful = sum(atoms[m] * ks[m] for m in members)
        assert (a1 - a0) * (k1 - k0) <= max(65536, 8 * useful) or len(members) == 1
        assert kstarts[members[0]] == k0 and kstarts[members[-1] + 1] == k1
    many_small = crystal_groups([5] * 64, [10] * 64)
    assert len(many_small) > 1  # 64 small crystals are not one 320 x 640 block
