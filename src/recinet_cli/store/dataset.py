"""A PyTorch dataset over the HDF5 graph store yielding ``torch_geometric.data.Data``.

Batching is left to PyG (``torch_geometric.loader.DataLoader``): ``edge_index`` is offset
automatically, per-graph tensors (``lattice``, ``y``) are concatenated along dim 0.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from torch_geometric.data import Data

from recinet_cli.store.reader import GraphArrays, GraphStore


def to_data(g: GraphArrays, dtype: torch.dtype = torch.float32) -> Data:
    """Convert one stored structure to a PyG ``Data`` object.

    Fields (N atoms, E edges, T targets):
        ``atomic_numbers [N]`` long, ``frac [N,3]``, ``pos [N,3]`` Å, ``lattice [1,3,3]`` Å,
        ``edge_index [2,E]`` int64 (row 0 = source), ``edge_image [E,3]`` long,
        ``edge_vec [E,3]`` Å (computed in float64, then cast), ``y [1,T]`` (NaN = missing),
        ``sid`` (the structure id).
    """
    vec = g.edge_vectors
    # torch.tensor copies: the store may hand out read-only views of its preloaded arrays
    return Data(
        atomic_numbers=torch.tensor(g.numbers),
        frac=torch.tensor(g.frac, dtype=dtype),
        pos=torch.tensor(g.frac @ g.lattice, dtype=dtype),
        lattice=torch.tensor(g.lattice, dtype=dtype).unsqueeze(0),
        edge_index=torch.tensor(g.edge_index.T, dtype=torch.long),
        edge_image=torch.tensor(g.edge_image),
        edge_vec=torch.tensor(vec, dtype=dtype),
        y=torch.tensor(np.asarray(g.targets, dtype=np.float64), dtype=dtype).reshape(1, -1),
        sid=g.id,
        num_nodes=len(g.numbers),
    )


class H5GraphDataset(torch.utils.data.Dataset[Data]):
    """Graphs from a recinet HDF5 store.

    Args:
        path: the ``.h5`` file written by ``recinet featurize``.
        indices: optional subset (e.g. a split) of structure positions.
        preload: read the whole file into memory once (fast for small files); otherwise the
            file is opened lazily, once per DataLoader worker.
        dtype: floating dtype of the tensors.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        indices: Sequence[int] | None = None,
        preload: bool = False,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.store = GraphStore(path, preload=preload)
        self.indices = list(range(len(self.store))) if indices is None else list(indices)
        self.dtype = dtype

    @property
    def target_names(self) -> list[str]:
        return self.store.target_names

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Data:
        return to_data(self.store[self.indices[i]], self.dtype)
