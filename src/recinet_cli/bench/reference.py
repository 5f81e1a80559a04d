"""The jarvis-tools reference graph builder, used by the edge-parity test and the benchmark.

jarvis-tools is a test/benchmark-only dependency (``pip install recinet[bench]``). Its
``jarvis.core.graphs`` module imports DGL at module level although the two functions we
call never use it; when DGL is absent an empty placeholder module is registered so the
import succeeds. Nothing of DGL is executed.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Sequence

import numpy as np

from recinet_cli.errors import RecinetError


def _graphs_module() -> types.ModuleType:
    try:
        import jarvis.core.graphs as graphs
    except ModuleNotFoundError as exc:
        if exc.name == "dgl":
            placeholder = types.ModuleType("dgl")
            placeholder.DGLGraph = type("DGLGraph", (), {})  # only used in annotations
            sys.modules.setdefault("dgl", placeholder)
            import jarvis.core.graphs as graphs
        elif exc.name and exc.name.startswith("jarvis"):
            raise RecinetError(
                "the jarvis-tools reference is not installed: pip install 'recinet[bench]'"
            ) from exc
        else:
            raise
    return graphs


def reference_edges(
    lattice: np.ndarray,
    frac: np.ndarray,
    elements: Sequence[str],
    cutoff: float = 4.0,
    max_neighbors: int = 16,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Edges exactly as PotNet/Matformer/ALIGNN build them with jarvis-tools.

    ``nearest_neighbor_edges(cutoff, max_neighbors, use_canonize=False)`` followed by
    ``build_undirected_edgedata``.

    Returns:
        ``(src [E], dst [E], image [E, 3] int, vector [E, 3] float64 Å)``, in the reference's
        own order.
    """
    graphs = _graphs_module()
    from jarvis.core.atoms import Atoms

    atoms = Atoms(lattice_mat=np.asarray(lattice), coords=np.asarray(frac), elements=list(elements), cartesian=False)
    edges = graphs.nearest_neighbor_edges(
        atoms=atoms, cutoff=cutoff, max_neighbors=max_neighbors, use_canonize=False
    )
    u, v, r = graphs.build_undirected_edgedata(atoms=atoms, edges=edges)
    images: list[tuple[int, int, int]] = []
    for _pair, imgs in edges.items():  # same iteration order as build_undirected_edgedata
        for img in imgs:
            n = tuple(int(x) for x in img)
            images.append(n)
            images.append((-n[0], -n[1], -n[2]))
    return (
        u.numpy().astype(np.int64),
        v.numpy().astype(np.int64),
        np.asarray(images, dtype=np.int64).reshape(-1, 3),
        r.double().numpy(),
    )
