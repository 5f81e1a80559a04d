"""The HDF5 graph store: schema, lazy per-worker reading, preloading, PyG ``Data``."""

from __future__ import annotations

import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from torch_geometric.loader import DataLoader

from recinet_cli.featurize import FeaturizeConfig, featurize
from recinet_cli.store.dataset import H5GraphDataset
from recinet_cli.store.reader import GraphStore
from recinet_cli.store.schema import SCHEMA_VERSION
from recinet_cli.structures.graph import build_graph
from recinet_cli.structures.readers import read_structures
from tests.conftest import shared_path


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 70 real JARVIS POSCARs and 10 COD CIFs, featurized with band-gap labels."""
    out = tmp_path_factory.mktemp("store") / "graphs.h5"
    featurize(
        FeaturizeConfig(
            inputs=(str(shared_path("samples", "alignn_poscars")), str(shared_path("samples", "cgcnn_cifs"))),
            output=str(out),
            labels=str(shared_path("samples", "alignn_poscars", "id_prop.csv")),
        )
    )
    return out


def test_schema_attributes_and_ragged_layout(store_path: Path) -> None:
    with h5py.File(store_path, "r") as h5:
        assert h5.attrs["schema_version"] == SCHEMA_VERSION
        assert len(h5.attrs["featurizer_hash"]) == 16
        n = h5["structures/id"].shape[0]
        assert n == 80
        atom_ptr, edge_ptr = h5["structures/atom_ptr"][:], h5["structures/edge_ptr"][:]
        assert atom_ptr.shape == edge_ptr.shape == (n + 1,)
        assert atom_ptr[-1] == h5["atoms/numbers"].shape[0]
        assert edge_ptr[-1] == h5["edges/index"].shape[0]
        assert h5["edges/index"].compression == "gzip" and h5["edges/index"].chunks is not None
        assert not any(isinstance(v, h5py.Group) for v in h5["structures"].values())


def test_stored_graph_equals_a_fresh_build(store_path: Path) -> None:
    crystals, _ = read_structures([shared_path("samples", "cgcnn_cifs", "1000041.cif")])
    c = crystals[0]
    g = build_graph(c.lattice, c.frac)
    with GraphStore(store_path) as store:
        s = store[store.index_of("1000041")]
    np.testing.assert_array_equal(s.numbers, c.numbers)
    np.testing.assert_allclose(s.frac, c.frac)
    np.testing.assert_array_equal(s.edge_index, np.stack((g.edge_src, g.edge_dst), 1))
    np.testing.assert_array_equal(s.edge_image, g.edge_image)
    np.testing.assert_allclose(np.linalg.norm(s.edge_vectors, axis=1), g.distance, atol=1e-12)


def test_lazy_and_preloaded_agree_and_pickling_drops_the_handle(store_path: Path) -> None:
    lazy = GraphStore(store_path)
    _ = lazy[3]
    assert lazy._h5 is not None
    clone = pickle.loads(pickle.dumps(lazy))
    assert clone._h5 is None  # a worker opens its own handle on first access
    pre = GraphStore(store_path, preload=True)
    assert pre._h5 is None
    for i in (0, 17, len(lazy) - 1):
        a, b, c = lazy[i], pre[i], clone[i]
        assert a.id == b.id == c.id
        np.testing.assert_array_equal(a.edge_index, b.edge_index)
        np.testing.assert_array_equal(a.frac, c.frac)
        np.testing.assert_array_equal(a.targets, b.targets)
    lazy.close()


def test_targets_and_missing_labels(store_path: Path) -> None:
    with GraphStore(store_path) as store:
        assert store.target_names == ["target"]
        t = store.targets()[:, 0]
        assert np.isnan(t).sum() == 80 - 50  # 50 labelled POSCARs; the CIFs have no label
        assert store[store.index_of("POSCAR-JVASP-90856")].targets[0] == 0.0


def test_dataloader_with_worker_processes_batches_pyg_data(store_path: Path) -> None:
    ds = H5GraphDataset(store_path)
    loader = DataLoader(ds, batch_size=16, num_workers=2, shuffle=False)
    seen, atoms = 0, 0
    for batch in loader:
        seen += batch.num_graphs
        atoms += batch.num_nodes
        assert batch.lattice.shape == (batch.num_graphs, 3, 3)
        assert batch.y.shape == (batch.num_graphs, 1)
        assert batch.edge_index.max() < batch.num_nodes
        # edge vectors are consistent with positions, images and lattices
        src, dst = batch.edge_index
        lat = batch.lattice[batch.batch[src]]
        vec = batch.pos[dst] - batch.pos[src] + torch.einsum("ei,eij->ej", batch.edge_image.float(), lat)
        torch.testing.assert_close(vec, batch.edge_vec, atol=1e-4, rtol=0)
    assert seen == len(ds) == 80
    assert atoms == int(GraphStore(store_path).n_atoms().sum())


def test_not_a_store_is_a_clear_error(tmp_path: Path) -> None:
    from recinet_cli.errors import StoreError

    bad = tmp_path / "x.h5"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(StoreError, match="not a readable HDF5 file"):
        GraphStore(bad)
    with h5py.File(tmp_path / "other.h5", "w") as h5:
        h5["a"] = 1
    with pytest.raises(StoreError, match="not a recinet graph store"):
        GraphStore(tmp_path / "other.h5")
