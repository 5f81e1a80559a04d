"""The ``matbench`` dataset plugin against the real Matbench data in ``../shared/data/matbench``.

The jdft2d task is bundled complete, so it loads offline; other tasks are exercised with
small, real task files built in ``tmp_path`` from jdft2d rows (renamed to the other task's
ids and target column), passed as ``data=``, through the environment variable, or
"downloaded" from a ``file://`` URL into the (isolated) cache.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from recinet_matbench import MatbenchDataset, MatbenchWarning
from recinet_matbench.splits import (
    fold_split,
    official_test_folds,
    recipe_test_folds,
    val_count,
)
from recinet_matbench.tasks import BUNDLED_SHA256, SOURCES, data_file, resolve

from recinet_cli.contracts import DATASETS_GROUP, DatasetSplit
from recinet_cli.download import DownloadError
from recinet_cli.errors import PluginError
from recinet_cli.paths import cache_dir
from recinet_cli.registry import clear_cache, discover, get_dataset

STRUCTURE_REGRESSION = (
    "dielectric",
    "jdft2d",
    "log_gvrh",
    "log_kvrh",
    "mp_e_form",
    "mp_gap",
    "perovskites",
    "phonons",
)
N_JDFT2D = 636


def _read_gz_json(path: Path) -> Any:
    return json.loads(gzip.decompress(path.read_bytes()))


def _load(task: str, **kw: Any) -> DatasetSplit:
    return MatbenchDataset().load([task], **kw)


@pytest.fixture(scope="module")
def jdft2d_folds() -> dict[int, DatasetSplit]:
    """The bundled jdft2d task loaded for each of the five folds."""
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("RECINET_MATBENCH_JDFT2D", raising=False)
        return {k: _load("jdft2d", fold=k) for k in range(5)}


@pytest.fixture
def shared_jdft2d(shared_data: Path) -> dict[str, Any]:
    """The real jdft2d table (pandas split: index, columns, data)."""
    return _read_gz_json(shared_data / "matbench" / "matbench_jdft2d.json.gz")


@pytest.fixture
def shared_folds(shared_data: Path) -> dict[str, dict[str, list[str]]]:
    """The official test folds of every Matbench v0.1 task."""
    return _read_gz_json(shared_data / "matbench" / "matbench_v0.1_test_folds.json.gz")


def _task_file(
    path: Path, table: dict[str, Any], rows: slice, ids: list[str], target: str, compress: bool = True
) -> Path:
    """Write real jdft2d ``rows`` as a pandas-split file (gzipped unless ``compress=False``)
    with ``ids`` as index and ``target`` as the target column."""
    data = table["data"][rows]
    assert len(ids) == len(data)
    raw = json.dumps({"index": ids, "columns": ["structure", target], "data": data}).encode()
    path.write_bytes(gzip.compress(raw) if compress else raw)
    return path


def _phonons_file(path: Path, table: dict[str, Any], n: int = 20) -> Path:
    """The first ``n`` jdft2d rows as a (partial) phonons task file, ids mb-phonons-0001..."""
    ids = [f"mb-phonons-{i:04d}" for i in range(1, n + 1)]
    return _task_file(path, table, slice(0, n), ids, "last phdos peak")


# ---------------------------------------------------------------------------------------
# Discovery, properties, presets
# ---------------------------------------------------------------------------------------


def test_entry_point_is_discovered() -> None:
    clear_cache()
    ds = get_dataset("matbench")
    assert isinstance(ds, MatbenchDataset)
    assert (ds.name, ds.dataset_version, ds.folds) == ("matbench", "v0.1", 5)
    entry = discover(DATASETS_GROUP)["matbench"]
    assert entry.distribution == "recinet-matbench"
    assert entry.value == "recinet_matbench:MatbenchDataset"


def test_properties_follow_official_metadata(shared_data: Path) -> None:
    meta = json.loads((shared_data / "matbench" / "matbench_v0.1_dataset_metadata.json").read_text())
    props = MatbenchDataset().properties()
    assert tuple(p.name for p in props) == STRUCTURE_REGRESSION
    for p in props:
        entry = meta[f"matbench_{p.name}"]
        assert (entry["input_type"], entry["task_type"]) == ("structure", "regression")
        assert p.size == entry["n_samples"]
        assert p.unit == ("" if entry["unit"] == "unitless" else entry["unit"])
        assert p.aliases == (f"matbench_{p.name}", entry["target"])
    by_name = {p.name: p for p in props}
    assert (by_name["jdft2d"].unit, by_name["jdft2d"].size) == ("meV/atom", 636)
    assert (by_name["mp_e_form"].unit, by_name["mp_e_form"].size) == ("eV/atom", 132752)


def test_bundled_metadata_is_the_official_file(shared_data: Path) -> None:
    shared = shared_data / "matbench" / "matbench_v0.1_dataset_metadata.json"
    assert data_file("matbench_v0.1_dataset_metadata.json").read_bytes() == shared.read_bytes()


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("jdft2d", "jdft2d"),
        ("matbench_jdft2d", "jdft2d"),
        ("exfoliation_en", "jdft2d"),
        ("MATBENCH_JDFT2D", "jdft2d"),
        ("gap pbe", "mp_gap"),
        ("log10(K_VRH)", "log_kvrh"),
        ("last phdos peak", "phonons"),
        ("n", "dielectric"),
        ("matbench_mp_e_form", "mp_e_form"),
    ],
)
def test_aliases_resolve(name: str, canonical: str) -> None:
    assert MatbenchDataset().property_info(name).name == canonical


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("expt_gap", "composition-only"),
        ("matbench_steels", "composition-only"),
        ("gfa", "composition-only"),
        ("mp_is_metal", "classification"),
        ("matbench_glass", "classification"),
    ],
)
def test_composition_and_classification_tasks_are_refused(name: str, reason: str) -> None:
    with pytest.raises(PluginError, match=reason) as info:
        MatbenchDataset().property_info(name)
    assert "ReciNet needs crystal structures and a regression target" in str(info.value)
    with pytest.raises(PluginError, match=reason):
        MatbenchDataset().load([name])


def test_ambiguous_and_unknown_properties() -> None:
    with pytest.raises(PluginError, match="several tasks .mp_e_form, perovskites."):
        MatbenchDataset().property_info("e_form")
    with pytest.raises(PluginError, match="no property 'band_gap'; valid: dielectric, jdft2d"):
        MatbenchDataset().property_info("band_gap")
    with pytest.raises(PluginError, match="no property"):
        MatbenchDataset().load(["band_gap"])


def test_presets() -> None:
    ds = MatbenchDataset()
    assert ds.preset(["jdft2d"]) == {"blocks": 3, "epochs": 500, "lr": 1e-3}
    assert ds.preset(["mp_e_form"]) == {"blocks": 5, "epochs": 500, "lr": 4e-4}
    assert ds.preset(["phonons"]) == {}
    assert ds.preset(["jdft2d", "mp_e_form"]) == {}
    ds.preset(["jdft2d"])["lr"] = 1.0  # a copy: the table is not changed
    assert ds.preset(["jdft2d"])["lr"] == 1e-3


# ---------------------------------------------------------------------------------------
# The bundled jdft2d task
# ---------------------------------------------------------------------------------------


def test_bundled_jdft2d_is_the_shared_file(shared_data: Path) -> None:
    bundled = data_file("matbench_jdft2d.json.gz").read_bytes()
    assert bundled == (shared_data / "matbench" / "matbench_jdft2d.json.gz").read_bytes()
    assert hashlib.sha256(bundled).hexdigest() == BUNDLED_SHA256["jdft2d"]
    # Not byte-identical to the official download (re-serialized), so a download of
    # matbench_jdft2d is checked against matminer's hash, never against the bundled one.
    assert SOURCES["matbench_jdft2d"][1] != BUNDLED_SHA256["jdft2d"]


def test_jdft2d_loads_official_structures_and_targets(
    jdft2d_folds: dict[int, DatasetSplit], shared_jdft2d: dict[str, Any]
) -> None:
    split = jdft2d_folds[0]
    assert (split.name, split.version, split.property_names) == ("matbench", "v0.1", ("jdft2d",))
    assert split.properties[0].unit == "meV/atom"
    ids = [c.id for c in split.structures]
    assert ids == shared_jdft2d["index"] and len(ids) == N_JDFT2D
    assert split.targets.shape == (N_JDFT2D, 1) and split.targets.dtype == np.float64
    k = shared_jdft2d["columns"].index("exfoliation_en")
    expected = np.array([row[k] for row in shared_jdft2d["data"]])
    np.testing.assert_array_equal(split.targets[:, 0], expected)
    for i in (0, 99, 635):  # spot checks against the shared file
        assert split.targets[i, 0] == shared_jdft2d["data"][i][k]
    assert split.targets[0, 0] == pytest.approx(63.593833333333016)
    assert split.targets[99, 0] == pytest.approx(221.50642857142878)


def test_jdft2d_structure_matches_pymatgen_dict(
    jdft2d_folds: dict[int, DatasetSplit], shared_jdft2d: dict[str, Any]
) -> None:
    from pymatgen.core import Element

    crystal = jdft2d_folds[0].structures[0]
    d = shared_jdft2d["data"][0][shared_jdft2d["columns"].index("structure")]
    assert crystal.id == "mb-jdft2d-001"
    assert crystal.source == "matbench_jdft2d.json.gz:mb-jdft2d-001"
    np.testing.assert_allclose(crystal.lattice, d["lattice"]["matrix"])
    numbers = [Element(s["species"][0]["element"]).Z for s in d["sites"]]
    assert crystal.numbers.tolist() == numbers
    abc = np.array([s["abc"] for s in d["sites"]])
    np.testing.assert_allclose(crystal.frac, abc - np.floor(abc), atol=1e-12)


def test_fold_splits_partition_the_task(jdft2d_folds: dict[int, DatasetSplit]) -> None:
    all_ids = {c.id for c in jdft2d_folds[0].structures}
    tests: list[set[str]] = []
    for k, split in jdft2d_folds.items():
        s = split.split
        assert sorted(s) == ["test", "train", "val"]
        assert len(s["test"]) == (128 if k == 0 else 127)
        train, val, test = set(s["train"]), set(s["val"]), set(s["test"])
        assert len(train) + len(val) + len(test) == N_JDFT2D
        assert train | val | test == all_ids
        assert not (train & val or train & test or val & test)
        assert len(val) == 51  # round(0.1 * 508 or 509)
        pool = sorted(train | val)  # the documented carve-out: RandomState(18012019 + fold)
        order = np.random.RandomState(18012019 + k).permutation(len(pool))
        assert s["val"] == sorted(pool[i] for i in order[:51])
        assert all(v == sorted(v) for v in s.values())
        tests.append(test)
    assert set().union(*tests) == all_ids  # the test folds cover the task once
    assert sum(len(t) for t in tests) == N_JDFT2D
    assert jdft2d_folds[0].split["val"] != jdft2d_folds[1].split["val"]


def test_split_is_stable_and_fold_defaults_to_zero(jdft2d_folds: dict[int, DatasetSplit]) -> None:
    again = _load("jdft2d")  # fold=None
    assert again.split == jdft2d_folds[0].split
    np.testing.assert_array_equal(again.targets, jdft2d_folds[0].targets)


def test_fold4_test_ids_are_official(
    jdft2d_folds: dict[int, DatasetSplit], shared_folds: dict[str, dict[str, list[str]]]
) -> None:
    assert jdft2d_folds[4].split["test"] == sorted(shared_folds["matbench_jdft2d"]["fold_4"])
    for k in range(5):
        assert jdft2d_folds[k].split["test"] == sorted(shared_folds["matbench_jdft2d"][f"fold_{k}"])


# ---------------------------------------------------------------------------------------
# Bundled folds
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", STRUCTURE_REGRESSION)
def test_bundled_folds_equal_official_file(
    task: str, shared_folds: dict[str, dict[str, list[str]]]
) -> None:
    official = shared_folds[f"matbench_{task}"]
    bundled = official_test_folds(resolve(task))
    assert bundled == [sorted(official[f"fold_{k}"]) for k in range(5)]
    assert sum(len(f) for f in bundled) == resolve(task).n_samples


def test_bundled_jdft2d_folds_follow_the_readme_recipe(shared_jdft2d: dict[str, Any]) -> None:
    ids = shared_jdft2d["index"]  # mbid order
    assert ids == sorted(ids)
    assert recipe_test_folds(ids) == official_test_folds(resolve("jdft2d"))
    assert recipe_test_folds(ids, seed=1) != official_test_folds(resolve("jdft2d"))


def test_bundled_folds_keep_only_structure_regression_tasks() -> None:
    table = json.loads(gzip.decompress(data_file("matbench_v0.1_test_folds_structure_regression.json.gz").read_bytes()))
    assert sorted(table) == [f"matbench_{t}" for t in STRUCTURE_REGRESSION]


def test_val_carve_out_rule() -> None:
    assert [val_count(n) for n in (0, 1, 2, 9, 10, 14, 15, 508, 509)] == [0, 0, 1, 1, 1, 1, 2, 51, 51]
    ids = [f"mb-x-{i:02d}" for i in range(30)]
    split = fold_split(ids, ["mb-x-00", "mb-x-07", "not-loaded"], fold=2)
    assert split["test"] == ["mb-x-00", "mb-x-07"]
    assert len(split["val"]) == 3 and len(split["train"]) == 25
    assert split == fold_split(list(reversed(ids)), ["mb-x-07", "mb-x-00"], fold=2)


# ---------------------------------------------------------------------------------------
# Argument errors
# ---------------------------------------------------------------------------------------


def test_exactly_one_task() -> None:
    with pytest.raises(PluginError, match="separate datasets"):
        MatbenchDataset().load(["jdft2d", "phonons"])
    with pytest.raises(PluginError, match="exactly one task"):
        MatbenchDataset().load([])


@pytest.mark.parametrize("fold", [-1, 5, 7, "1", 1.0, True])
def test_invalid_fold(fold: Any) -> None:
    with pytest.raises(PluginError, match=r"fold must be 0\.\.4"):
        _load("jdft2d", fold=fold)


# ---------------------------------------------------------------------------------------
# Other tasks: download, local copies
# ---------------------------------------------------------------------------------------


def test_other_task_without_network_or_copy_is_download_error(monkeypatch: pytest.MonkeyPatch) -> None:
    url = "http://127.0.0.1:9/matbench_phonons.json.gz"  # the discard port: refused at once
    monkeypatch.setitem(SOURCES, "matbench_phonons", (url, SOURCES["matbench_phonons"][1]))
    monkeypatch.delenv("RECINET_MATBENCH_PHONONS", raising=False)
    with pytest.raises(DownloadError) as info:
        _load("phonons")
    message = str(info.value)
    assert url in message and "RECINET_MATBENCH_PHONONS" in message and "--data FILE" in message
    assert not list((cache_dir() / "downloads").glob("matbench_phonons*"))


def test_missing_local_copy_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "matbench_phonons.json.gz"
    with pytest.raises(DownloadError, match=f"{missing}: no such file"):
        _load("phonons", data=missing)


def _check_partial_phonons(split: DatasetSplit, table: dict[str, Any], name: str) -> None:
    """A 20-row phonons split built from jdft2d rows: ids, targets, fold-0 test set."""
    ids = [c.id for c in split.structures]
    assert ids == [f"mb-phonons-{i:04d}" for i in range(1, 21)]
    assert split.property_names == ("phonons",) and split.properties[0].unit == "cm^-1"
    k = table["columns"].index("exfoliation_en")
    np.testing.assert_array_equal(split.targets[:, 0], [row[k] for row in table["data"][:20]])
    official = set(official_test_folds(resolve("phonons"))[0])
    assert split.split["test"] == [i for i in ids if i in official]
    assert len(split.split["train"]) + len(split.split["val"]) + len(split.split["test"]) == 20
    assert split.structures[0].source == f"{name}:mb-phonons-0001"


def _check_partial_phonons_fold(split: DatasetSplit, fold: int) -> None:
    """The test ids of a partial phonons split are the loaded ids in official fold ``fold``."""
    official = set(official_test_folds(resolve("phonons"))[fold])
    assert split.split["test"] == [c.id for c in split.structures if c.id in official]


def test_other_task_from_local_file(tmp_path: Path, shared_jdft2d: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(SOURCES, "matbench_phonons", ("http://127.0.0.1:9/x", "0" * 64))
    path = _phonons_file(tmp_path / "phonons_part.json.gz", shared_jdft2d)
    with pytest.warns(MatbenchWarning, match="20 of the 1265 entries"):
        split = _load("phonons", data=path)
    _check_partial_phonons(split, shared_jdft2d, "phonons_part.json.gz")


def test_other_task_from_env_var(tmp_path: Path, shared_jdft2d: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(SOURCES, "matbench_phonons", ("http://127.0.0.1:9/x", "0" * 64))
    path = _phonons_file(tmp_path / "env.json.gz", shared_jdft2d)
    monkeypatch.setenv("RECINET_MATBENCH_PHONONS", str(path))
    with pytest.warns(MatbenchWarning):
        split = _load("phonons", fold=3)
    _check_partial_phonons_fold(split, 3)


def test_other_task_downloaded_into_cache(
    tmp_path: Path, shared_jdft2d: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _phonons_file(tmp_path / "served.json.gz", shared_jdft2d)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    monkeypatch.setitem(SOURCES, "matbench_phonons", (path.as_uri(), sha))
    monkeypatch.delenv("RECINET_MATBENCH_PHONONS", raising=False)
    with pytest.warns(MatbenchWarning):
        split = _load("phonons")
    cached = cache_dir() / "downloads" / "matbench_phonons.json.gz"
    assert cached.read_bytes() == path.read_bytes()
    _check_partial_phonons(split, shared_jdft2d, "matbench_phonons.json.gz")
    path.unlink()  # the second load comes from the cache
    with pytest.warns(MatbenchWarning):
        assert _load("phonons").split == split.split


def test_wrong_file_for_task_is_refused(tmp_path: Path, shared_data: Path, shared_jdft2d: dict[str, Any]) -> None:
    jdft2d = shared_data / "matbench" / "matbench_jdft2d.json.gz"
    with pytest.raises(PluginError, match="no column 'last phdos peak'.*matbench_phonons"):
        _load("phonons", data=jdft2d)
    foreign = _task_file(
        tmp_path / "foreign.json.gz", shared_jdft2d, slice(0, 3), shared_jdft2d["index"][:3], "last phdos peak"
    )
    with pytest.raises(PluginError, match="not matbench_phonons mbids"):
        _load("phonons", data=foreign)
    garbage = tmp_path / "garbage.json.gz"
    garbage.write_bytes(b"\x1f\x8bnot gzip")
    with pytest.raises(PluginError, match="not a Matbench task file"):
        _load("phonons", data=garbage)


def test_data_overrides_bundled_jdft2d(tmp_path: Path, shared_jdft2d: dict[str, Any]) -> None:
    ids = shared_jdft2d["index"][10:20]
    path = _task_file(tmp_path / "jdft2d_10.json", shared_jdft2d, slice(10, 20), ids, "exfoliation_en", compress=False)
    with pytest.warns(MatbenchWarning, match="10 of the 636"):
        split = _load("jdft2d", data=path)
    assert [c.id for c in split.structures] == ids
    k = shared_jdft2d["columns"].index("exfoliation_en")
    np.testing.assert_array_equal(split.targets[:, 0], [row[k] for row in shared_jdft2d["data"][10:20]])
