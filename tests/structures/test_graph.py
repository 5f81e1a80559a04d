"""Tests for the SPEC §1 periodic k-NN graph (``recinet_cli.structures.graph``).

The golden edges come from an independent reference, jarvis-tools
(``nearest_neighbor_edges(cutoff=4, max_neighbors=16, use_canonize=False)`` followed by
``build_undirected_edgedata``, wrapped in :func:`recinet_cli.bench.reference.reference_edges`),
run on real JARVIS structures from ``../shared/data``.

Two things make an exact comparison impossible, and both are handled explicitly below:

* jarvis-tools' ``Lattice`` rounds the lattice matrix to 5 decimals (``round_off=5``) for the
  atoms' Cartesian positions but uses the unrounded matrix for the image offsets, so on a raw
  JARVIS lattice its own distances are inconsistent by ~1e-6 Å. Every parity test therefore
  feeds BOTH builders the lattice already rounded to 5 decimals; the reference is then
  self-consistent and rounds nothing further.
* The reference keeps ``d <= d16`` with an exact float comparison, we keep
  ``d <= d16 + tie_tol`` (default 1e-8 Å). Where symmetry makes several distances equal up
  to float noise (~1e-15 Å), the reference keeps whichever copies the noise happens to put
  below d16; we keep them all. So our edge multiset is a superset of the reference's, and
  every extra edge must be such a tie: within tie_tol of the reference's d16, and in
  practice within float noise (1e-9 Å; one documented exception, see the parity test).
"""

from __future__ import annotations

import itertools
import json
import time
import zipfile
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from recinet_cli.bench.reference import reference_edges
from recinet_cli.errors import StructureError
from recinet_cli.structures.crystal import wrap_fractional
from recinet_cli.structures.graph import GraphParams, PeriodicGraph, build_graph, edge_vectors
from tests.conftest import jarvis_cell, shared_path

Key = tuple[int, int, tuple[int, int, int]]

K = 16  # max_neighbors of the reference
NOISE_TIE = 1e-9  # Å: float noise; an extra edge is normally this close to the reference's d16
DIST_TOL = 1e-6  # Å: our float64 distances vs the reference's float32 edge vectors

# Real, high-symmetry JARVIS cells (space groups found with pymatgen, symprec 1e-3).
SYMMETRIC_JIDS = {
    "JVASP-14741": "TiN rocksalt, Fm-3m, 2 atoms",
    "JVASP-119956": "BaVO3 cubic perovskite, Pm-3m, 5 atoms",
    "JVASP-143": "GaS layered, P6_3/mmc, 8 atoms",
    "JVASP-131": "SnS2 layered CdI2-type, P-3m1, 3 atoms",
    "JVASP-816": "Al fcc, 1 atom",
}


# --------------------------------------------------------------------------- helpers


def _keys(src: np.ndarray, dst: np.ndarray, image: np.ndarray) -> list[Key]:
    return [
        (int(s), int(d), (int(n[0]), int(n[1]), int(n[2])))
        for s, d, n in zip(src.tolist(), dst.tolist(), image.tolist(), strict=True)
    ]



def _entry(entries: list[dict[str, Any]], jid: str) -> dict[str, Any]:
    for entry in entries:
        if entry["jid"] == jid:
            return entry
    raise AssertionError(f"{jid} is not in the JARVIS subset")


def _rounded_cell(entry: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """A JARVIS cell with its lattice rounded to 5 decimals (see the module docstring)."""
    lattice, frac, elements = jarvis_cell(entry)
    return np.round(lattice, 5), frac, elements


def _graph_keys(g: PeriodicGraph) -> list[Key]:
    return _keys(g.edge_src, g.edge_dst, g.edge_image)


@dataclass(frozen=True)
class Parity:
    """How our graph differs from the reference's (it never lacks one of its edges).

    Attributes:
        n_extra: directed edges we keep beyond the reference's multiset.
        max_gap: largest |d - d16| over those extra edges, in Å (0.0 when none), where d16
            is the reference's 16th-neighbour distance of the edge's atom.
    """

    n_extra: int
    max_gap: float


def assert_parity(
    lattice: np.ndarray,
    frac: np.ndarray,
    elements: Sequence[str],
    params: GraphParams | None = None,
) -> Parity:
    """Check our graph against jarvis-tools and report the tie edges it adds.

    Asserts: nothing of the reference is missing; every extra directed edge lies within
    ``params.tie_tol`` of the 16th-neighbour distance of one of its atoms (so it is a tie the
    reference split by less than the tolerance); the extras come in i->j / j->i pairs;
    distances and edge vectors match the reference on the shared edges.
    """
    params = params or GraphParams()
    r_src, r_dst, r_img, r_vec = reference_edges(lattice, frac, elements)
    g = build_graph(lattice, frac, params)
    ref_keys = _keys(r_src, r_dst, r_img)
    our_keys = _graph_keys(g)
    ref, ours = Counter(ref_keys), Counter(our_keys)

    missing = ref - ours
    assert not missing, f"edges of the reference missing from ours: {list(missing.items())[:5]}"
    extra = ours - ref

    # Distances and vectors on every edge we share with the reference (keys are exact
    # integers; identical keys have identical geometry). The reference's vectors are
    # float32, hence the 1e-6 Å tolerance.
    our_dist = dict(zip(our_keys, g.distance.tolist(), strict=True))
    our_vec = edge_vectors(lattice, frac, g.edge_src, g.edge_dst, g.edge_image)
    our_vec_by_key = dict(zip(our_keys, our_vec, strict=True))
    ref_dist = np.linalg.norm(r_vec, axis=1)
    ours_on_ref = np.array([our_dist[k] for k in ref_keys])
    np.testing.assert_allclose(ours_on_ref, ref_dist, rtol=0, atol=DIST_TOL)
    np.testing.assert_allclose(
        np.array([our_vec_by_key[k] for k in ref_keys]).reshape(-1, 3),
        r_vec.reshape(-1, 3),
        rtol=0,
        atol=DIST_TOL,
    )

    max_gap = 0.0
    if extra:
        # The reference emits each kept (i, j, n) of atom i's list as i->j followed by j->i,
        # so its even-numbered edges are exactly the kept candidates of their source atom,
        # and the largest of those is the reference's 16th-neighbour distance d16 of i.
        # d16 is recomputed in float64 from the integer keys (the reference's vectors are
        # float32 and could not resolve 1e-9 Å). An extra i->j edge may come from either
        # atom's list (we add both directions), so it must tie d16 of i or of j.
        assert np.array_equal(r_src[1::2], r_dst[0::2])
        assert np.array_equal(r_img[1::2], -r_img[0::2])
        fwd_src, fwd_dst, fwd_img = r_src[0::2], r_dst[0::2], r_img[0::2]
        fwd_d = np.linalg.norm(edge_vectors(lattice, frac, fwd_src, fwd_dst, fwd_img), axis=1)
        d16 = np.zeros(len(frac))
        np.maximum.at(d16, fwd_src, fwd_d)
        assert (np.bincount(fwd_src, minlength=len(frac)) >= K).all()
        for (i, j, n), count in extra.items():
            reverse = (j, i, (-n[0], -n[1], -n[2]))
            assert extra[reverse] == count, f"extra edge {(i, j, n)} has no reverse partner"
            d = our_dist[(i, j, n)]
            gap = min(abs(d - d16[i]), abs(d - d16[j]))
            assert gap <= params.tie_tol + 1e-12, (
                f"extra edge {(i, j, n)} at {d!r} Å is not a tie of "
                f"d16 = {d16[i]!r} / {d16[j]!r} Å (gap {gap:.3g} Å)"
            )
            max_gap = max(max_gap, float(gap))
    return Parity(n_extra=sum(extra.values()), max_gap=max_gap)


def _differs_from_reference(
    lattice: np.ndarray, frac: np.ndarray, elements: Sequence[str], params: GraphParams
) -> bool:
    """Whether our edge multiset differs from the reference's at all (no assertions)."""
    r_src, r_dst, r_img, _ = reference_edges(lattice, frac, elements)
    g = build_graph(lattice, frac, params)
    return Counter(_keys(r_src, r_dst, r_img)) != Counter(_graph_keys(g))


def _load_2d_monolayers(count: int) -> list[tuple[str, np.ndarray, np.ndarray, list[str]]]:
    """``count`` JARVIS-2D monolayers (OPTIMADE records), evenly spaced over the file."""
    path = shared_path("jarvis", "dft_2d_1076.json.zip")
    with zipfile.ZipFile(path) as zf:
        records = json.loads(zf.read("dft2d.json"))
    out = []
    for rec in records[:: max(1, len(records) // count)][:count]:
        attrs = rec["attributes"]
        lattice = np.round(np.asarray(attrs["lattice_vectors"], dtype=np.float64), 5)
        cart = np.asarray(attrs["cartesian_site_positions"], dtype=np.float64)
        frac = wrap_fractional(np.linalg.solve(lattice.T, cart.T).T)
        out.append((str(rec["id"]), lattice, frac, list(attrs["species_at_sites"])))
    return out


# --------------------------------------------------------------------------- parity


@pytest.mark.slow
def test_parity_with_jarvis_tools_on_real_structures(
    jarvis_entries: list[dict[str, Any]],
) -> None:
    """Edge multiset, distances and vectors equal the reference on 300 real structures."""
    sample = jarvis_entries[:300]
    differ: list[str] = []
    wide_ties: dict[str, float] = {}  # extra edges tied to d16 by more than float noise
    n_differ_exact = 0  # with tie_tol = 0.0, for information only
    t0 = time.perf_counter()
    for entry in sample:
        lattice, frac, elements = _rounded_cell(entry)
        parity = assert_parity(lattice, frac, elements)
        if parity.n_extra:
            differ.append(entry["jid"])
        if parity.max_gap > NOISE_TIE:
            wide_ties[entry["jid"]] = parity.max_gap
        if _differs_from_reference(lattice, frac, elements, GraphParams(tie_tol=0.0)):
            n_differ_exact += 1
    elapsed = time.perf_counter() - t0
    print(
        f"\nparity: {len(differ)}/{len(sample)} graphs differ from jarvis-tools with the "
        f"default tie_tol={GraphParams().tie_tol:g} Å (ours a superset, only ties), "
        f"{n_differ_exact}/{len(sample)} with tie_tol=0.0; ties wider than "
        f"{NOISE_TIE:g} Å: {wide_ties} ({elapsed:.1f} s)"
    )
    # Observed on the first 300: 53 differ (~18 %), each only by extra tie edges at d16,
    # 52 of them float noise (<= 3e-15 Å). With tie_tol=0.0, 40 differ, in both directions
    # (noise then also drops edges the reference keeps). With tie_tol=1e-4 Å, 205/300 (68 %)
    # differ, most by merging physically distinct near-ties. Bound with margin:
    assert len(differ) <= 75
    # The one wider tie, JVASP-103327 (V2OsW, primitive fcc), gap 7.8e-9 Å: an exact tie of
    # the raw lattice (|a| = |b| = |c|) that rounding the lattice to 5 decimals for the
    # reference (module docstring) splits by 7.8e-9 Å, less than tie_tol = 1e-8 Å.
    assert set(wide_ties) <= {"JVASP-103327"}, wide_ties


@pytest.mark.slow
def test_parity_on_2d_monolayers_with_vacuum() -> None:
    """Real JARVIS-2D monolayers (c = 20-45 Å, mostly vacuum): the search radius must grow."""
    layers = _load_2d_monolayers(20)
    assert len(layers) == 20
    n_differ = 0
    for _jid, lattice, frac, elements in layers:
        parity = assert_parity(lattice, frac, elements)
        assert parity.max_gap <= NOISE_TIE
        n_differ += parity.n_extra > 0
    print(f"\n2D parity: {n_differ}/{len(layers)} monolayers differ by float-noise ties")


def test_parity_on_one_atom_cells(jarvis_entries: list[dict[str, Any]]) -> None:
    """Real one-atom cells: every edge is a self-image loop, and parity holds."""
    singles = [e for e in jarvis_entries if len(e["atoms"]["elements"]) == 1]
    assert len(singles) >= 5
    for entry in singles:
        lattice, frac, elements = _rounded_cell(entry)
        assert assert_parity(lattice, frac, elements).max_gap <= NOISE_TIE
        g = build_graph(lattice, frac)
        assert g.n_edges >= K
        assert (g.edge_src == 0).all() and (g.edge_dst == 0).all()
        assert np.abs(g.edge_image).sum(axis=1).min() > 0  # no (0, 0, 0) self pair


@pytest.mark.slow
def test_parity_on_500_atom_supercell(jarvis_entries: list[dict[str, Any]]) -> None:
    """A 5x5x5 supercell (500 atoms) of real L1_2 AlNi3 (JVASP-11968) equals the reference."""
    lattice, frac, elements = jarvis_cell(_entry(jarvis_entries, "JVASP-11968"))
    assert len(frac) == 4
    reps = 5
    shifts = np.array(list(itertools.product(range(reps), repeat=3)), dtype=np.float64)
    super_frac = ((frac[None, :, :] + shifts[:, None, :]) / reps).reshape(-1, 3)
    super_elements = elements * len(shifts)
    super_lattice = np.round(reps * lattice, 5)  # what jarvis-tools would round it to
    assert len(super_frac) == 500
    parity = assert_parity(super_lattice, super_frac, super_elements)
    assert parity.max_gap <= NOISE_TIE
    print(f"\n500-atom supercell: {parity.n_extra} extra float-noise tie edges")
    g = build_graph(super_lattice, super_frac)
    assert np.bincount(g.edge_src, minlength=500).min() >= K


# --------------------------------------------------------------------------- invariances


@dataclass(frozen=True)
class Transformed:
    """A transformed copy of a cell and how to map its graph back to the original.

    New atom ``a`` is old atom ``perm[a]``; the new fractional coordinates are
    ``frac[perm] @ inv(basis) + shift - wraps`` (``wraps`` integer), the new lattice
    ``basis @ lattice @ rot.T``; a new edge (a, b, n') is the old edge
    (perm[a], perm[b], (n' - wraps[b] + wraps[a]) @ basis).
    """

    lattice: np.ndarray
    frac: np.ndarray
    perm: np.ndarray
    wraps: np.ndarray
    basis: np.ndarray


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _transform(
    lattice: np.ndarray,
    frac: np.ndarray,
    *,
    rot: np.ndarray | None = None,
    basis: np.ndarray | None = None,
    shift: np.ndarray | None = None,
    perm: np.ndarray | None = None,
    atom_image: tuple[int, np.ndarray] | None = None,
    wrap: bool = False,
) -> Transformed:
    n = len(frac)
    rot = np.eye(3) if rot is None else rot
    basis = np.eye(3, dtype=np.int64) if basis is None else basis
    perm = np.arange(n) if perm is None else perm
    new_lattice = basis @ lattice @ rot.T
    unwrapped = frac[perm] @ np.linalg.inv(basis)
    if shift is not None:
        unwrapped = unwrapped + shift
    new_frac = wrap_fractional(unwrapped) if wrap else unwrapped.copy()
    if atom_image is not None:
        k, offset = atom_image
        new_frac[k] = new_frac[k] + offset
    wraps = np.rint(unwrapped - new_frac).astype(np.int64)
    np.testing.assert_allclose(unwrapped - new_frac, wraps, atol=1e-12)
    return Transformed(new_lattice, new_frac, perm, wraps, np.asarray(basis, dtype=np.int64))


def _canonical(
    g: PeriodicGraph, t: Transformed | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(src, dst, image, distance) in the original cell's indices and basis, key-sorted."""
    src = g.edge_src.astype(np.int64)
    dst = g.edge_dst.astype(np.int64)
    img = g.edge_image.astype(np.int64)
    if t is not None:
        img = (img - t.wraps[dst] + t.wraps[src]) @ t.basis
        src, dst = t.perm[src], t.perm[dst]
    order = np.lexsort((g.distance, img[:, 2], img[:, 1], img[:, 0], dst, src))
    return src[order], dst[order], img[order], g.distance[order]


def _same_graph(a: PeriodicGraph, b: PeriodicGraph, t: Transformed) -> bool:
    """Exactly the same multigraph (keys mapped back), distances equal to 1e-9 Å."""
    sa, da, ia, la = _canonical(a)
    sb, db, ib, lb = _canonical(b, t)
    return (
        len(sa) == len(sb)
        and np.array_equal(sa, sb)
        and np.array_equal(da, db)
        and np.array_equal(ia, ib)
        and bool(np.allclose(la, lb, rtol=0, atol=1e-9))
    )


_SHEAR = np.array([[1, 1, 0], [0, 1, 0], [0, 0, 1]], dtype=np.int64)


def _make_transform(
    name: str, lattice: np.ndarray, frac: np.ndarray, rng: np.random.Generator
) -> Transformed:
    n = len(frac)
    if name == "rotation":
        return _transform(lattice, frac, rot=_random_rotation(rng))
    if name == "translation":
        return _transform(lattice, frac, shift=rng.uniform(-1, 1, size=3), wrap=True)
    if name == "wrap_atom":
        return _transform(lattice, frac, atom_image=(n - 1, np.array([1.0, 0.0, -1.0])))
    if name == "permutation":
        return _transform(lattice, frac, perm=rng.permutation(n))
    if name == "basis":  # L' = [l1 + l2, l2, l3]
        return _transform(lattice, frac, basis=_SHEAR, wrap=True)
    if name == "all":
        return _transform(
            lattice,
            frac,
            rot=_random_rotation(rng),
            basis=_SHEAR,
            shift=rng.uniform(-1, 1, size=3),
            perm=rng.permutation(n),
            wrap=True,
        )
    raise AssertionError(name)


TRANSFORMS = ["rotation", "translation", "wrap_atom", "permutation", "basis", "all"]


@pytest.mark.parametrize("name", TRANSFORMS)
@pytest.mark.parametrize("jid", sorted(SYMMETRIC_JIDS))
def test_graph_invariances_on_symmetric_crystals(
    jarvis_entries: list[dict[str, Any]], jid: str, name: str
) -> None:
    """Rotation, translation, re-imaging, permutation and re-basing give the same graph."""
    lattice, frac, _ = jarvis_cell(_entry(jarvis_entries, jid))
    rng = np.random.default_rng(zlib.crc32(f"{jid}/{name}".encode()))
    original = build_graph(lattice, frac)
    for _ in range(3):
        t = _make_transform(name, lattice, frac, rng)
        transformed = build_graph(t.lattice, t.frac)
        assert _same_graph(original, transformed, t), f"{jid} ({SYMMETRIC_JIDS[jid]}): {name}"
        # The weaker, image-free form: the multiset of (src, dst, distance) is unchanged.
        sa, da, _, la = _canonical(original)
        sb, db, _, lb = _canonical(transformed, t)
        weak_a = zip(sa.tolist(), da.tolist(), np.round(la, 6).tolist(), strict=True)
        weak_b = zip(sb.tolist(), db.tolist(), np.round(lb, 6).tolist(), strict=True)
        assert Counter(weak_a) == Counter(weak_b)


def test_tie_tolerance_is_what_makes_the_graph_invariant(
    jarvis_entries: list[dict[str, Any]],
) -> None:
    """Negative control: with ``tie_tol=0.0`` float noise changes some graphs; by default none.

    Each of 100 real structures gets a random rotation + re-basing + translation +
    permutation; the graph of the copy is compared with the original's.
    """
    rng = np.random.default_rng(20240518)
    exact = GraphParams(tie_tol=0.0)
    changed_exact: list[str] = []
    changed_default: list[str] = []
    for entry in jarvis_entries[:100]:
        lattice, frac, _ = jarvis_cell(entry)
        t = _make_transform("all", lattice, frac, rng)
        if not _same_graph(
            build_graph(lattice, frac, exact), build_graph(t.lattice, t.frac, exact), t
        ):
            changed_exact.append(entry["jid"])
        if not _same_graph(build_graph(lattice, frac), build_graph(t.lattice, t.frac), t):
            changed_default.append(entry["jid"])
    print(
        f"\ninvariance control: tie_tol=0.0 changed {len(changed_exact)}/100 graphs "
        f"({', '.join(changed_exact[:8])}...), default changed {len(changed_default)}/100"
    )
    assert changed_default == []
    assert changed_exact, "tie_tol=0.0 changed nothing: the control cannot fail as expected"


# --------------------------------------------------------------------------- unit tests


@pytest.fixture(scope="module")
def small_cells(jarvis_entries: list[dict[str, Any]]) -> list[tuple[np.ndarray, np.ndarray]]:
    """A handful of real cells, 1 to 12 atoms."""
    cells = [jarvis_cell(_entry(jarvis_entries, jid))[:2] for jid in SYMMETRIC_JIDS]
    cells += [jarvis_cell(e)[:2] for e in jarvis_entries[:40:4]]
    return cells


def test_dtypes_shapes_and_canonical_order(
    small_cells: list[tuple[np.ndarray, np.ndarray]],
) -> None:
    for lattice, frac in small_cells:
        g = build_graph(lattice, frac)
        assert g.edge_src.dtype == np.int32 and g.edge_dst.dtype == np.int32
        assert g.edge_image.dtype == np.int16 and g.edge_image.shape == (g.n_edges, 3)
        assert g.distance.dtype == np.float64 and g.distance.shape == (g.n_edges,)
        order = np.lexsort(
            (g.edge_image[:, 2], g.edge_image[:, 1], g.edge_image[:, 0], g.edge_dst, g.edge_src)
        )
        assert np.array_equal(order, np.arange(g.n_edges)), "edges not in canonical order"


def test_every_atom_has_k_outgoing_edges_and_edges_pair_up(
    small_cells: list[tuple[np.ndarray, np.ndarray]],
) -> None:
    """Each kept (i, j, n) gives i->j, so every atom is the source of >= 16 edges; and each
    directed edge has its reverse (j, i, -n) equally often."""
    for lattice, frac in small_cells:
        g = build_graph(lattice, frac)
        assert np.bincount(g.edge_src, minlength=len(frac)).min() >= K
        forward = Counter(_graph_keys(g))
        backward = Counter(_keys(g.edge_dst, g.edge_src, -g.edge_image.astype(np.int64)))
        assert forward == backward
        assert (g.distance > GraphParams().min_dist).all()


def test_edge_vectors_match_distances(small_cells: list[tuple[np.ndarray, np.ndarray]]) -> None:
    for lattice, frac in small_cells:
        g = build_graph(lattice, frac)
        vec = edge_vectors(lattice, frac, g.edge_src, g.edge_dst, g.edge_image)
        assert vec.shape == (g.n_edges, 3)
        np.testing.assert_allclose(np.linalg.norm(vec, axis=1), g.distance, rtol=0, atol=1e-9)


def test_default_tie_tolerance_is_float_noise_only() -> None:
    params = GraphParams()
    assert params.tie_tol == 1e-8
    assert params.max_neighbors == K and params.cutoff == 4.0
    assert params.as_dict()["tie_tol"] == 1e-8
    with pytest.raises(ValueError, match="tie_tol"):
        GraphParams(tie_tol=-1.0)


def test_overlapping_atoms_raise(jarvis_entries: list[dict[str, Any]]) -> None:
    """A real cell with an extra atom 0.1 Å from atom 0 is refused."""
    lattice, frac, _ = jarvis_cell(_entry(jarvis_entries, "JVASP-119956"))
    near = (frac[0] @ lattice + np.array([0.1, 0.0, 0.0])) @ np.linalg.inv(lattice)
    bad = np.vstack([frac, near])
    with pytest.raises(StructureError, match="overlapping"):
        build_graph(lattice, bad)
