"""Benchmark: our graph builder against the jarvis-tools reference, side by side.

Both builders get the same structures. The lattice is rounded to 5 decimals first: jarvis-tools
rounds it internally (``Lattice(round_off=5)``) for atom positions but not for image offsets,
so on unrounded lattices its distances carry ~1e-6 Å errors; with a pre-rounded lattice the
reference is self-consistent and the comparison is about the algorithm.
"""

from __future__ import annotations

import gzip
import json
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from recinet_cli.bench.reference import reference_edges
from recinet_cli.structures.crystal import wrap_fractional
from recinet_cli.structures.graph import GraphParams, PeriodicGraph, build_graph, edge_vectors


@dataclass
class GraphBenchResult:
    """Figures of one run (times in seconds for all structures)."""

    structures: int = 0
    atoms: int = 0
    edges: int = 0
    seconds_ours: float = 0.0
    seconds_reference: float = 0.0
    identical: int = 0
    tie_supersets: int = 0
    other_differences: int = 0
    max_tie_gap: float = 0.0
    max_distance_error: float = 0.0
    differing_ids: list[str] = field(default_factory=list)

    @property
    def speedup(self) -> float:
        return self.seconds_reference / self.seconds_ours if self.seconds_ours else float("nan")

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "speedup": self.speedup}


def jarvis_cells(path: str, limit: int | None = None) -> Iterable[tuple[str, np.ndarray, np.ndarray, list[str]]]:
    """(jid, lattice rounded to 5 decimals, wrapped frac, elements) from a JARVIS json.gz."""
    with gzip.open(path, "rt") as fh:
        entries = json.load(fh)
    for e in entries[:limit]:
        a = e["atoms"]
        lattice = np.round(np.asarray(a["lattice_mat"], dtype=np.float64), 5)
        coords = np.asarray(a["coords"], dtype=np.float64)
        frac = np.linalg.solve(lattice.T, coords.T).T if a["cartesian"] else coords
        frac = wrap_fractional(frac)
        yield e["jid"], lattice, frac, list(a["elements"])


def edge_keys(src: np.ndarray, dst: np.ndarray, image: np.ndarray) -> list[tuple[int, ...]]:
    """``(source, target, n1, n2, n3)`` per edge, for multiset comparisons."""
    return list(zip(src.tolist(), dst.tolist(), *np.asarray(image).T.tolist()))


def classify(
    lattice: np.ndarray,
    frac: np.ndarray,
    g: PeriodicGraph,
    reference: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    tie_tol: float,
) -> tuple[str, float, float]:
    """Compare our graph with the reference's edges of the same cell.

    Returns:
        (outcome, max tie gap Å, max edge-length difference Å) where outcome is
        ``identical``, ``tie_superset`` (ours adds only edges whose length equals an end
        atom's k-th distance to within ``tie_tol``) or ``different``.
    """
    src, dst, img, vec = reference
    our_keys = edge_keys(g.edge_src, g.edge_dst, g.edge_image)
    ref_keys = edge_keys(src, dst, img)
    ours, ref = Counter(our_keys), Counter(ref_keys)
    our_dist = dict(zip(our_keys, g.distance))
    ref_dist = dict(zip(ref_keys, np.linalg.norm(vec, axis=1)))
    err = max((abs(our_dist[k] - ref_dist[k]) for k in ref_dist if k in our_dist), default=0.0)
    if ours == ref:
        return "identical", 0.0, err
    if ref - ours:
        return "different", float("nan"), err
    # The reference's k-th distance per atom = its longest *forward* edge (even positions of
    # its list; odd positions are the reversed copies). An extra edge of ours is a tie when its
    # length equals the k-th distance of the atom at either end.
    # jarvis-tools returns float32 vectors, so its lengths are recomputed in float64 here.
    ref64 = np.linalg.norm(edge_vectors(lattice, frac, src, dst, img), axis=1)
    kth = np.zeros(len(frac))
    for (s, *_rest), d in zip(ref_keys[::2], ref64[::2]):
        kth[s] = max(kth[s], d)
    gap = max(min(abs(our_dist[k] - kth[k[0]]), abs(our_dist[k] - kth[k[1]])) for k in ours - ref)
    return ("tie_superset" if gap <= tie_tol + 1e-12 else "different"), gap, err


def run_graph_bench(path: str, limit: int | None = None, params: GraphParams = GraphParams()) -> GraphBenchResult:
    """Compare builders on the JARVIS structures of ``path`` (the first ``limit``).

    Each builder runs over all structures in its own timed pass (so neither disturbs the
    other's caches); the graphs are compared afterwards.
    """
    cells = list(jarvis_cells(path, limit))
    t0 = time.perf_counter()
    ours = [build_graph(lattice, frac, params) for _, lattice, frac, _ in cells]
    t1 = time.perf_counter()
    refs = [
        reference_edges(lattice, frac, elements, params.cutoff, params.max_neighbors)
        for _, lattice, frac, elements in cells
    ]
    t2 = time.perf_counter()
    res = GraphBenchResult(seconds_ours=t1 - t0, seconds_reference=t2 - t1)
    for (jid, lattice, frac, _), g, ref in zip(cells, ours, refs):
        outcome, gap, err = classify(lattice, frac, g, ref, params.tie_tol)
        res.structures += 1
        res.atoms += len(frac)
        res.edges += g.n_edges
        res.max_distance_error = max(res.max_distance_error, err)
        if outcome == "identical":
            res.identical += 1
        elif outcome == "tie_superset":
            res.tie_supersets += 1
            res.max_tie_gap = max(res.max_tie_gap, gap)
            res.differing_ids.append(jid)
        else:
            res.other_differences += 1
            res.differing_ids.append(jid)
    return res
