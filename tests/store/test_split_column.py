"""The optional ``structures/split`` column: labels CSV -> featurize -> store -> ``h5`` dataset
-> ``recinet train`` (official split).

Everything runs on the 70 real JARVIS POSCARs bundled in ``examples/structures/jarvis_poscars``
(50 of them with real band gaps in ``id_prop.csv``).
"""

from __future__ import annotations

import csv
import json
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from recinet_cli.cli.app import app
from recinet_cli.datasets.h5 import H5Dataset
from recinet_cli.errors import PluginError, RecinetError, StoreError
from recinet_cli.featurize import FeaturizeConfig, featurize
from recinet_cli.labels import read_labels
from recinet_cli.store.reader import GraphStore
from recinet_cli.store.schema import SCHEMA_VERSION, SPLIT_DATASET
from recinet_cli.store.writer import GraphBatch, append_batch, create_store
from tests.conftest import ROOT
from tests.test_featurize import assert_same_content

POSCARS = ROOT / "examples" / "structures" / "jarvis_poscars"
SPLITS = ("train", "val", "test")
#: How the split column spells each split (mixed case on purpose: it is case-insensitive).
SPELLING = {"train": "Train", "val": "VAL", "test": "test", "": ""}


def _id_prop() -> list[tuple[str, str]]:
    """The real ``id_prop.csv`` rows: (file name, band gap text)."""
    with open(POSCARS / "id_prop.csv", newline="") as fh:
        return [(row[0], row[1]) for row in csv.reader(fh) if row]


def _split_for(k: int) -> str:
    """Deterministic split of the k-th labelled row: every 5th test, every 5th+1 val, the
    last 3 rows in no split, the rest train."""
    if k >= len(_id_prop()) - 3:
        return ""
    return {0: "test", 1: "val"}.get(k % 5, "train")


def expected_splits() -> dict[str, str]:
    """Structure id (file name without ``.vasp``) -> split, for the 50 labelled structures."""
    return {name.removesuffix(".vasp"): _split_for(k) for k, (name, _gap) in enumerate(_id_prop())}


def write_split_labels(path: Path) -> Path:
    """``id,bandgap (eV),split`` built from the real ``id_prop.csv``."""
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "bandgap (eV)", "split"])
        for k, (name, gap) in enumerate(_id_prop()):
            w.writerow([name, gap, SPELLING[_split_for(k)]])
    return path


def poscar_files() -> list[str]:
    return sorted(str(p) for p in POSCARS.glob("POSCAR-*.vasp"))


def run(inputs: list[str], out: Path, labels: Path | None, **kw: object) -> object:
    cfg = FeaturizeConfig(
        inputs=tuple(inputs), output=str(out), labels=str(labels) if labels else None, workers=1, **kw
    )
    return featurize(cfg)


@pytest.fixture(scope="module")
def labels_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_split_labels(tmp_path_factory.mktemp("labels") / "labels.csv")


@pytest.fixture(scope="module")
def split_store(tmp_path_factory: pytest.TempPathFactory, labels_csv: Path) -> Path:
    out = tmp_path_factory.mktemp("split_store") / "graphs.h5"
    report = run([str(POSCARS)], out, labels_csv)
    assert report.total_stored == 70
    return out


def test_split_column_is_read_and_is_not_a_target(labels_csv: Path) -> None:
    labels = read_labels(str(labels_csv))
    assert labels.names == ("bandgap",) and labels.units == ("eV",)
    assert labels.has_split
    exp = expected_splits()
    for sid, split in exp.items():
        assert labels.split_of(sid) == split  # alias without .vasp
        assert labels.split_of(sid + ".vasp") == split
        assert labels.lookup(sid).shape == (1,)
    assert labels.split_of("not-in-the-csv") == ""
    assert {s: list(exp.values()).count(s) for s in (*SPLITS, "")} == {"train": 27, "val": 10, "test": 10, "": 3}
    headerless = read_labels(str(POSCARS / "id_prop.csv"))
    assert not headerless.has_split and headerless.splits is None and headerless.split_of("POSCAR-JVASP-10") == ""


def test_stored_column_and_graphstore_splits(split_store: Path) -> None:
    exp = expected_splits()
    with h5py.File(split_store, "r") as h5:
        assert h5.attrs["schema_version"] == SCHEMA_VERSION == 1
        assert json.loads(h5.attrs["target_names"]) == ["bandgap"]
        ds = h5[SPLIT_DATASET]
        assert ds.shape == h5["structures/id"].shape == (70,)
        assert h5py.check_string_dtype(ds.dtype) is not None
        ids = h5["structures/id"].asstr()[:].tolist()
        column = ds.asstr()[:].tolist()
    assert column == [exp.get(sid, "") for sid in ids]  # the 20 unlabelled structures: ""
    assert set(column) == {"train", "val", "test", ""}
    for preload in (False, True):
        with GraphStore(split_store, preload=preload) as store:
            assert store.ids == ids
            assert store.splits() == column
            clone = pickle.loads(pickle.dumps(store))
            assert clone.splits() == column
            clone.close()
            # targets line up with the split column
            gaps = dict(_id_prop())
            for sid, split in zip(store.ids, column):
                if split:
                    assert store[store.index_of(sid)].targets[0] == pytest.approx(float(gaps[sid + ".vasp"]))


def test_h5_dataset_returns_the_official_split(split_store: Path) -> None:
    ds = H5Dataset().load(["bandgap"], data=split_store)
    exp = expected_splits()
    with GraphStore(split_store) as store:
        order = store.ids
    assert set(ds.split) == set(SPLITS)
    for s in SPLITS:
        want = [sid for sid in order if exp.get(sid) == s]
        assert ds.split[s] == want and want
    in_split = {sid for members in ds.split.values() for sid in members}
    assert len(in_split) == 47 == sum(len(v) for v in ds.split.values())  # disjoint, 3 + 20 in none
    assert len(ds.structures) == 70 and ds.targets.shape == (70, 1)


def test_resumed_run_keeps_the_column(tmp_path: Path, labels_csv: Path, split_store: Path) -> None:
    """Killed mid-run (after several shards) and rerun: same file as an uninterrupted run."""

    class Boom(Exception):
        pass

    class DieAfter:
        def __init__(self, n: int) -> None:
            self.n, self.done = n, 0

        def start(self, total_files: int, skipped: int) -> None:
            pass

        def advance(self, files: int, structures: int, failed: int) -> None:
            self.done += files
            if self.done >= self.n:
                raise Boom

        def stop(self) -> None:
            pass

    out = tmp_path / "resumed.h5"
    cfg = FeaturizeConfig(inputs=(str(POSCARS),), output=str(out), labels=str(labels_csv), workers=1, shard_size=7)
    with pytest.raises(Boom):
        featurize(cfg, progress=DieAfter(30))
    shards = sorted((tmp_path / "resumed.h5.partial").glob("shard-*.h5"))
    assert len(shards) == 4 and not out.exists()
    for shard in shards:  # every shard carries the split column, aligned with its ids
        with h5py.File(shard, "r") as h5:
            assert h5[SPLIT_DATASET].shape == h5["structures/id"].shape
    report = featurize(cfg)
    assert report.files_skipped == 28 and report.total_stored == 70
    assert_same_content(out, split_store)


def test_appended_run_keeps_the_column(tmp_path: Path, labels_csv: Path, split_store: Path) -> None:
    files = poscar_files()
    out = tmp_path / "appended.h5"
    run(files[:25], out, labels_csv)
    with GraphStore(out) as store:
        assert len(store) == 25 and store.splits() == [expected_splits().get(s, "") for s in store.ids]
    run(files, out, labels_csv)
    whole = tmp_path / "whole.h5"
    run(files, whole, labels_csv)
    assert_same_content(out, whole)
    with GraphStore(out) as store, GraphStore(split_store) as ref:
        assert len(store) == 70
        assert dict(zip(store.ids, store.splits())) == dict(zip(ref.ids, ref.splits()))


def test_appending_with_or_without_a_split_column_is_refused(tmp_path: Path, labels_csv: Path) -> None:
    files = poscar_files()
    plain = tmp_path / "plain.csv"
    plain.write_text("id,bandgap (eV)\n" + "".join(f"{name},{gap}\n" for name, gap in _id_prop()))
    assert not read_labels(str(plain)).has_split and read_labels(str(plain)).names == ("bandgap",)
    with_split, without = tmp_path / "with.h5", tmp_path / "without.h5"
    run(files[:10], with_split, labels_csv)
    run(files[:10], without, plain)
    with pytest.raises(StoreError, match="has a 'split' column but this run's labels have none"):
        run(files, with_split, plain)
    with pytest.raises(StoreError, match="has no 'split' column but this run's labels have one"):
        run(files, without, labels_csv)
    with GraphStore(with_split) as store:
        assert len(store) == 10  # untouched


def test_file_without_split_column_behaves_as_before(tmp_path: Path) -> None:
    out = tmp_path / "old.h5"
    run([str(POSCARS)], out, POSCARS / "id_prop.csv")
    with h5py.File(out, "r") as h5:
        assert SPLIT_DATASET not in h5
        assert set(h5["structures"]) == {"id", "source", "formula", "lattice", "atom_ptr", "edge_ptr", "targets"}
    for preload in (False, True):
        with GraphStore(out, preload=preload) as store:
            assert store.splits() is None
    ds = H5Dataset().load(["target"], data=out)
    assert ds.split == {}
    assert len(ds.structures) == 70


def test_writer_pads_and_refuses_split_values(tmp_path: Path) -> None:
    """A batch without splits goes into a store with the column as ""; the reverse is refused
    unless every value is empty."""
    lattice, numbers, frac = np.eye(3) * 4.0, np.array([11]), np.zeros((1, 3))
    edges, images = np.zeros((1, 2)), np.array([[1, 0, 0]])
    with create_store(str(tmp_path / "a.h5"), {"k": 1}, with_split=True) as h5:
        b = GraphBatch()
        b.add_graph("x", "x.cif", "Na", lattice, numbers, frac, edges, images)
        append_batch(h5, b)
        assert h5[SPLIT_DATASET].asstr()[:].tolist() == [""]
    with create_store(str(tmp_path / "b.h5"), {"k": 1}) as h5:
        b = GraphBatch(has_split=True)
        b.add_graph("x", "x.cif", "Na", lattice, numbers, frac, edges, images, split="train")
        with pytest.raises(ValueError, match="no structures/split dataset"):
            append_batch(h5, b)
    with pytest.raises(ValueError, match="no split column"):
        GraphBatch().add_graph("x", "x.cif", "Na", lattice, numbers, frac, edges, images, split="val")


@pytest.mark.parametrize("value", ["validation", "training", "1"])
def test_bad_split_value_is_a_one_line_error(tmp_path: Path, labels_csv: Path, value: str) -> None:
    lines = labels_csv.read_text().splitlines()
    name, gap, _ = lines[6].split(",")
    lines[6] = f"{name},{gap},{value}"
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(RecinetError) as exc:
        read_labels(str(bad))
    msg = str(exc.value)
    assert msg == f"{bad}:7: invalid split {value!r}; expected train, val, test or empty"
    res = CliRunner().invoke(app, ["featurize", str(POSCARS), "-o", str(tmp_path / "g.h5"), "-j", "1", "--labels", str(bad)])
    assert res.exit_code != 0
    errors = [line for line in res.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [f"error: {msg}"], res.stderr
    assert "Traceback" not in res.output
    assert not (tmp_path / "g.h5").exists()


def test_a_split_with_no_structure_is_a_plugin_error(tmp_path: Path) -> None:
    labels = tmp_path / "labels.csv"
    rows = _id_prop()
    labels.write_text("id,bandgap (eV),split\n" + "".join(
        f"{name},{gap},{'train' if k % 2 else 'test'}\n" for k, (name, gap) in enumerate(rows)
    ))
    out = tmp_path / "noval.h5"
    run([str(POSCARS)], out, labels)
    with pytest.raises(PluginError, match=r"no structure is assigned to val \(train 25, val 0, test 25; 20 unassigned\)"):
        H5Dataset().load(["bandgap"], data=out)


def test_train_uses_the_stored_split_as_official(tmp_path: Path, split_store: Path) -> None:
    run_dir = tmp_path / "RUN"
    res = CliRunner().invoke(app, [
        "train", "--task", "h5:bandgap", "--data", str(split_store), "--epochs", "1", "--batch-size", "4",
        "--blocks", "1", "--hidden", "32", "--no-register", "-o", str(run_dir),
    ])
    assert res.exit_code == 0, res.output
    data = json.loads((run_dir / "data.json").read_text())
    assert data["dataset"] == "h5"
    assert data["split"] == "official"
    gaps = {name.removesuffix(".vasp"): float(gap) for name, gap in _id_prop()}
    exp = expected_splits()
    want = {s: sum(1 for sid, split in exp.items() if split == s and np.isfinite(gaps[sid])) for s in SPLITS}
    assert data["sizes"] == want == {"train": 27, "val": 10, "test": 10}
