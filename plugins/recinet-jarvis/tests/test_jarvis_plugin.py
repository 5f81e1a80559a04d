"""Tests of the ``jarvis`` and ``jarvis_2d`` dataset plugins on real JARVIS data."""

from __future__ import annotations

import dataclasses
import gzip
import json
import math
import random
import socket
import time
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from recinet_jarvis import JarvisDataWarning, JarvisDFT2D, JarvisDFT3D
from recinet_jarvis._io import entry_value, parse_value
from recinet_jarvis.splits import LEADERBOARD_FILES, build_split_file, shipped_splits

from recinet_cli.contracts import DatasetSplit
from recinet_cli.datasets.common import read_leaderboard, read_split_file, seeded_split
from recinet_cli.download import DownloadError
from recinet_cli.errors import PluginError
from recinet_cli.registry import discover, get_dataset

KEYS = {
    "formation_energy": "formation_energy_peratom",
    "bandgap_opt": "optb88vdw_bandgap",
    "total_energy": "optb88vdw_total_energy",
    "bandgap_mbj": "mbj_bandgap",
    "ehull": "ehull",
    "bulk_modulus": "bulk_modulus_kv",
    "shear_modulus": "shear_modulus_gv",
    "exfoliation_energy": "exfoliation_energy",
}
LEADERBOARD_SIZES = {
    "formation_energy": (44569, 5572, 5572),
    "bandgap_opt": (44569, 5572, 5572),
    "total_energy": (44569, 5572, 5572),
    "bandgap_mbj": (14535, 1817, 1815),
    "ehull": (44290, 5537, 5537),
    "bulk_modulus": (15744, 1968, 1968),
    "shear_modulus": (15744, 1968, 1968),
    "exfoliation_energy": (650, 81, 81),
}
PARTS = ("train", "val", "test")


@pytest.fixture(scope="module")
def subset_entries() -> list[dict[str, Any]]:
    path = Path(__file__).resolve().parents[4] / "shared/data/jarvis/dft_3d_subset_1743.json.gz"
    if not path.is_file():
        pytest.skip(f"shared data not found at {path}")
    with gzip.open(path, "rt") as fh:
        return json.load(fh)


@pytest.fixture
def subset_path(shared_data: Path) -> Path:
    return shared_data / "jarvis" / "dft_3d_subset_1743.json.gz"


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("RECINET_JARVIS_DFT_3D", "RECINET_JARVIS_DFT_2D"):
        monkeypatch.delenv(var, raising=False)


def _sizes(split: dict[str, list[str]]) -> tuple[int, int, int]:
    return tuple(len(split[p]) for p in PARTS)  # type: ignore[return-value]


def _assert_disjoint(split: dict[str, list[str]]) -> None:
    sets = [set(split[p]) for p in PARTS]
    assert sum(len(s) for s in sets) == len(set().union(*sets))
    assert all(len(split[p]) == len(sets[i]) for i, p in enumerate(PARTS))


# --------------------------------------------------------------------------------------
# Registry, properties, presets
# --------------------------------------------------------------------------------------


def test_entry_points_are_discovered() -> None:
    assert isinstance(get_dataset("jarvis"), JarvisDFT3D)
    assert isinstance(get_dataset("jarvis_2d"), JarvisDFT2D)
    entries = discover("recinet.datasets")
    assert entries["jarvis"].distribution == "recinet-jarvis"
    assert entries["jarvis_2d"].value == "recinet_jarvis:JarvisDFT2D"
    assert get_dataset("jarvis").dataset_version == "dft_3d_2021-08-18"
    assert get_dataset("jarvis_2d").dataset_version == "dft_2d_2021-03-12"
    assert get_dataset("jarvis").folds == 0


def test_properties_units_sizes() -> None:
    ds = get_dataset("jarvis")
    info = {p.name: p for p in ds.properties()}
    assert list(info) == list(KEYS)
    units = {name: p.unit for name, p in info.items()}
    assert units == {
        "formation_energy": "eV/atom",
        "bandgap_opt": "eV",
        "total_energy": "eV/atom",
        "bandgap_mbj": "eV",
        "ehull": "eV",
        "bulk_modulus": "GPa",
        "shear_modulus": "GPa",
        "exfoliation_energy": "meV/atom",
    }
    sizes = {name: p.size for name, p in info.items()}
    assert sizes == {name: sum(n) for name, n in LEADERBOARD_SIZES.items()}
    assert sizes["ehull"] == 55364
    for name, key in KEYS.items():
        assert key == name or key in info[name].aliases
    assert all(p.size is None for p in get_dataset("jarvis_2d").properties())


@pytest.mark.parametrize(
    ("alias", "name"),
    [
        ("mbj_bandgap", "bandgap_mbj"),
        ("optb88vdw_bandgap", "bandgap_opt"),
        ("e_form", "formation_energy"),
        ("formation_energy_peratom", "formation_energy"),
        ("e_hull", "ehull"),
        ("EHULL", "ehull"),
        ("optb88vdw_total_energy", "total_energy"),
        ("bulk_modulus_kv", "bulk_modulus"),
        ("shear_modulus_gv", "shear_modulus"),
        ("exfoliation_en", "exfoliation_energy"),
    ],
)
def test_aliases(alias: str, name: str) -> None:
    assert get_dataset("jarvis").property_info(alias).name == name


def test_aliases_are_unambiguous() -> None:
    names: list[str] = []
    for p in get_dataset("jarvis").properties():
        names += [p.name.casefold(), *(a.casefold() for a in p.aliases)]
    assert len(names) == len(set(names))


def test_unknown_property_lists_valid_ones(subset_path: Path) -> None:
    ds = get_dataset("jarvis")
    with pytest.raises(PluginError, match="no property 'band_gap_hse'.*formation_energy.*exfoliation_energy"):
        ds.load(["band_gap_hse"], data=subset_path)
    with pytest.raises(PluginError, match="more than once"):
        ds.load(["ehull", "e_hull"], data=subset_path)


def test_fold_is_rejected(subset_path: Path) -> None:
    for name in ("jarvis", "jarvis_2d"):
        with pytest.raises(PluginError, match="fold"):
            get_dataset(name).load(["formation_energy"], data=subset_path, fold=0)


def test_presets() -> None:
    ds = get_dataset("jarvis")
    assert ds.preset(["formation_energy"]) == {"blocks": 4, "epochs": 500, "lr": 8e-4}
    assert ds.preset(["bandgap_opt"]) == {"blocks": 4, "epochs": 500, "lr": 6e-4}
    assert ds.preset(["bandgap_mbj"]) == {"blocks": 3, "epochs": 500, "lr": 1e-3}
    assert ds.preset(["total_energy"]) == {"blocks": 4, "epochs": 500, "lr": 8e-4}
    assert ds.preset(["ehull"]) == {"blocks": 5, "epochs": 500, "lr": 6e-4}
    assert ds.preset(["e_hull"]) == {"blocks": 5, "epochs": 500, "lr": 6e-4}
    five = ["formation_energy", "bandgap_opt", "bandgap_mbj", "total_energy", "ehull"]
    assert ds.preset(five) == {"blocks": 3, "epochs": 500, "lr": 8e-4}
    assert ds.preset(["bulk_modulus"]) == {}
    assert ds.preset(["exfoliation_energy"]) == {}
    assert get_dataset("jarvis_2d").preset(["exfoliation_energy"]) == {}


# --------------------------------------------------------------------------------------
# Shipped splits
# --------------------------------------------------------------------------------------


def test_shipped_split_sizes() -> None:
    splits = shipped_splits()
    assert set(splits) == set(KEYS)
    for name, sizes in LEADERBOARD_SIZES.items():
        assert _sizes(splits[name]) == sizes, name
    # identical leaderboard tasks share their lists
    assert splits["formation_energy"] == splits["bandgap_opt"] == splits["total_energy"]
    assert splits["bulk_modulus"] == splits["shear_modulus"]
    assert splits["ehull"] != splits["formation_energy"]
    assert "JVASP-33661" in splits["ehull"]["train"] and "JVASP-8413" in splits["ehull"]["test"]


def test_shipped_splits_equal_the_leaderboard_zips(shared_data: Path, tmp_path: Path) -> None:
    board = shared_data / "jarvis" / "leaderboard_splits"
    shipped = shipped_splits()
    for name, fname in LEADERBOARD_FILES.items():
        ref = read_leaderboard(board / fname)
        for part in PARTS:
            assert sorted(shipped[name][part]) == sorted(ref[part]), (name, part)
    # the regeneration script reproduces the shipped file byte for byte
    out = tmp_path / "splits.json.gz"
    sizes = build_split_file(board, out)
    assert sizes["ehull"] == {"train": 44290, "val": 5537, "test": 5537}
    assert read_split_file(out) == shipped
    packaged = Path(__import__("recinet_jarvis").__file__).parent / "data" / "dft_3d_2021_splits.json.gz"
    assert out.read_bytes() == packaged.read_bytes()


def test_subset_split_fields_agree_with_shipped_lists(subset_entries: list[dict[str, Any]]) -> None:
    shipped = shipped_splits()
    where = {name: {sid: part for part in PARTS for sid in shipped[name][part]} for name in KEYS}
    checked = 0
    for entry in subset_entries:
        for name, key in KEYS.items():
            field = entry[f"split_{key}"]
            got = where[name].get(entry["jid"], "na")
            assert got == field, (entry["jid"], name, field, got)
            checked += field != "na"
    assert checked > 9000


# --------------------------------------------------------------------------------------
# Loading dft_3d
# --------------------------------------------------------------------------------------


def test_load_subset_all_properties(
    subset_path: Path, subset_entries: list[dict[str, Any]], no_env: None
) -> None:
    ds = get_dataset("jarvis")
    with warnings.catch_warnings():
        warnings.simplefilter("error", JarvisDataWarning)
        got = ds.load(list(KEYS), data=subset_path)
    assert isinstance(got, DatasetSplit)
    assert got.name == "jarvis" and got.version == "dft_3d_2021-08-18"
    assert got.property_names == tuple(KEYS)
    assert len(got.structures) == 1743
    assert got.targets.shape == (1743, 8) and got.targets.dtype == np.float64
    assert got.split == {}
    missing = dict(zip(KEYS, np.isnan(got.targets).sum(axis=0).tolist()))
    assert missing == {
        "formation_energy": 0, "bandgap_opt": 0, "total_energy": 0, "bandgap_mbj": 647,
        "ehull": 12, "bulk_modulus": 328, "shear_modulus": 328, "exfoliation_energy": 931,
    }
    row = {c.id: i for i, c in enumerate(got.structures)}
    first = got.structures[row["JVASP-10"]]
    assert first.n_atoms == 3 and sorted(first.numbers.tolist()) == [23, 34, 34]
    assert got.targets[row["JVASP-10"]].tolist() == pytest.approx(
        [-0.71026, 0.0, -3.87823, 0.0, 1.875230311111111, 48.79, 33.05, 83.78]
    )
    for entry in subset_entries:
        i = row[entry["jid"]]
        for j, key in enumerate(KEYS.values()):
            raw = entry[key]
            if raw == "na":
                assert math.isnan(got.targets[i, j])
            else:
                assert got.targets[i, j] == raw
    # each property's split is the subset's split_<key> field, restricted to labelled ids
    for name, key in KEYS.items():
        split = got.property_splits[name]
        _assert_disjoint(split)
        for part in PARTS:
            expected = {e["jid"] for e in subset_entries if e[f"split_{key}"] == part}
            assert set(split[part]) == expected, (name, part)
    assert _sizes(got.property_splits["exfoliation_energy"]) == (650, 81, 81)
    assert _sizes(got.property_splits["ehull"]) == (1384, 178, 169)
    assert got.split_of("ehull") is got.property_splits["ehull"]


def test_load_keeps_only_structures_with_a_requested_label(subset_path: Path, no_env: None) -> None:
    got = get_dataset("jarvis").load(["exfoliation_energy", "mbj_bandgap"], data=subset_path)
    assert got.property_names == ("exfoliation_energy", "bandgap_mbj")
    labelled = ~np.isnan(got.targets)
    assert labelled.any(axis=1).all()
    assert labelled[:, 0].sum() == 812 and labelled[:, 1].sum() == 1096
    assert len(got.structures) == int(labelled.any(axis=1).sum()) < 1743


def test_local_copy_from_environment(
    subset_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RECINET_JARVIS_DFT_3D", str(subset_path))
    got = get_dataset("jarvis").load(["ehull"])
    assert len(got.structures) == 1731


def test_plain_gzip_and_zip_files_load_alike(
    subset_entries: list[dict[str, Any]], tmp_path: Path, no_env: None
) -> None:
    sample = subset_entries[::40]
    text = json.dumps(sample)
    plain = tmp_path / "dft3d.json"
    plain.write_text(text)
    gz = tmp_path / "dft3d.json.gz"
    gz.write_bytes(gzip.compress(text.encode()))
    zp = tmp_path / "dft3d.zip"
    with zipfile.ZipFile(zp, "w") as zf:
        zf.writestr("jdft_3d-8-18-2021.json", text)
    results = [get_dataset("jarvis").load(["formation_energy", "ehull"], data=p) for p in (plain, gz, zp)]
    ids = [[c.id for c in r.structures] for r in results]
    assert ids[0] == ids[1] == ids[2] == [e["jid"] for e in sample]
    for r in results[1:]:
        np.testing.assert_array_equal(r.targets, results[0].targets)
        assert r.property_splits == results[0].property_splits


def test_bad_structures_and_duplicates_are_skipped_with_one_warning(
    subset_entries: list[dict[str, Any]], tmp_path: Path, no_env: None
) -> None:
    sample = [dict(e) for e in subset_entries[:30]]
    for e in sample[3:6]:
        e["atoms"] = {**e["atoms"], "elements": ["Xx"] * len(e["atoms"]["elements"])}
    sample[7]["atoms"] = {"coords": []}  # malformed
    sample.append(dict(sample[10], formation_energy_peratom=123.0))  # duplicate jid
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(sample))
    with pytest.warns(JarvisDataWarning) as record:
        got = get_dataset("jarvis").load(["formation_energy"], data=path)
    messages = [str(w.message) for w in record]
    assert len(messages) == 2
    assert "skipped 4 entries" in messages[0] and sample[3]["jid"] in messages[0]
    assert "Xx" in messages[0]
    assert "1 duplicate id" in messages[1] and sample[10]["jid"] in messages[1]
    assert len(got.structures) == 30 - 4
    row = {c.id: i for i, c in enumerate(got.structures)}
    assert got.targets[row[sample[10]["jid"]], 0] == sample[10]["formation_energy_peratom"] != 123.0


def test_overlapping_official_ids_end_up_in_one_part(tmp_path: Path, subset_entries: list[dict[str, Any]]) -> None:
    # JVASP-116461 is in both the train and test list of the ehull leaderboard split
    shipped = shipped_splits()["ehull"]
    assert "JVASP-116461" in shipped["train"] and "JVASP-116461" in shipped["test"]
    entry = dict(subset_entries[0], jid="JVASP-116461", ehull=0.1)
    path = tmp_path / "dup.json"
    path.write_text(json.dumps([entry, subset_entries[1]]))
    got = get_dataset("jarvis").load(["ehull"], data=path)
    split = got.property_splits["ehull"]
    assert split["test"] == ["JVASP-116461"] and "JVASP-116461" not in split["train"]


def test_missing_values_become_nan() -> None:
    for raw in ("na", None, "", "n/a", -99999, "-99999", True, [1.0]):
        assert math.isnan(parse_value(raw)), raw
    assert parse_value("1.5") == 1.5 and parse_value(0) == 0.0
    entry = {"a": 1.0, "attributes": {"_jarvis_b": "2.5", "c": 3}}
    assert entry_value(entry, "a") == 1.0
    assert entry_value(entry, "b") == 2.5
    assert entry_value(entry, "c") == 3.0
    assert math.isnan(entry_value(entry, "absent"))


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("cls", [JarvisDFT3D, JarvisDFT2D])
def test_no_local_copy_and_no_network_raises_download_error(
    cls: type[JarvisDFT3D], monkeypatch: pytest.MonkeyPatch, no_env: None
) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/jarvis.zip"
    monkeypatch.setattr(cls, "remote", dataclasses.replace(cls.remote, url=url))
    start = time.monotonic()
    with pytest.raises(DownloadError, match="127.0.0.1"):
        cls().load(["formation_energy"])
    assert time.monotonic() - start < 10
    with pytest.raises(DownloadError, match="no such file"):
        cls().load(["formation_energy"], data=Path("/nonexistent/jdft_3d.json.zip"))


# --------------------------------------------------------------------------------------
# jarvis_2d
# --------------------------------------------------------------------------------------


@pytest.fixture
def dft2d_path(shared_data: Path) -> Path:
    return shared_data / "jarvis" / "dft_2d_1076.json.zip"


def test_seeded_split_is_the_alignn_procedure() -> None:
    n = 748
    state = random.getstate()
    train, val, test = seeded_split(n)
    assert random.getstate() == state  # the global generator is left alone
    ids = list(np.arange(n))  # the reference: random.seed(123); random.shuffle(list(np.arange(n)))
    random.seed(123)
    random.shuffle(ids)
    random.setstate(state)
    n_train, n_val, n_test = int(0.8 * n), int(0.1 * n), int(0.1 * n)
    assert (len(train), len(val), len(test)) == (598, 74, 74) == (n_train, n_val, n_test)
    assert train == [int(i) for i in ids[:n_train]]
    assert val == [int(i) for i in ids[-(n_val + n_test) : -n_test]]
    assert test == [int(i) for i in ids[-n_test:]]
    assert seeded_split(5450, n_train=4664, n_val=393, n_test=393)[2] == [
        int(i) for i in _reference_shuffle(5450)[-393:]
    ]
    with pytest.raises(ValueError):
        seeded_split(10, n_train=8, n_val=2, n_test=2)


def _reference_shuffle(n: int) -> list[Any]:
    ids = list(np.arange(n))
    state = random.getstate()
    random.seed(123)
    random.shuffle(ids)
    random.setstate(state)
    return ids


def test_load_dft2d_optimade_file(dft2d_path: Path, no_env: None) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", JarvisDataWarning)
        got = get_dataset("jarvis_2d").load(["exfoliation_energy", "bandgap_opt", "ehull"], data=dft2d_path)
    assert got.version == "dft_2d_2021-03-12" and got.split == {}
    assert len(got.structures) == 1076
    labelled = (~np.isnan(got.targets)).sum(axis=0).tolist()
    assert labelled == [748, 1076, 0]
    row = {c.id: i for i, c in enumerate(got.structures)}
    i = row["JVASP-13526"]
    assert got.targets[i, 0] == pytest.approx(77.17662499999989)
    assert got.targets[i, 1] == pytest.approx(4.067)
    assert sorted(got.structures[i].numbers.tolist()) == [35] * 12 + [39] * 4
    exf = got.property_splits["exfoliation_energy"]
    _assert_disjoint(exf)
    assert _sizes(exf) == (598, 74, 74)
    assert _sizes(got.property_splits["bandgap_opt"]) == (860, 107, 107)
    assert _sizes(got.property_splits["ehull"]) == (0, 0, 0)
    # the split is the seeded shuffle of the labelled entries in file order
    with zipfile.ZipFile(dft2d_path) as zf:
        entries = json.loads(zf.read(zf.namelist()[0]))
    order = [e["jid"] for e in entries if e["exfoliation_energy"] != -99999]
    ref = _reference_shuffle(len(order))
    assert exf["test"] == [order[k] for k in ref[-74:]]
    assert exf["train"] == [order[k] for k in ref[:598]]
    again = get_dataset("jarvis_2d").load(["exfoliation_energy"], data=dft2d_path)
    assert again.property_splits["exfoliation_energy"] == exf


def test_dft2d_pure_optimade_form_matches(dft2d_path: Path, tmp_path: Path, no_env: None) -> None:
    with zipfile.ZipFile(dft2d_path) as zf:
        entries = json.loads(zf.read(zf.namelist()[0]))[:120]
    optimade = []
    for e in entries:
        attrs = dict(e["attributes"])
        for key in KEYS.values():
            attrs[f"_jarvis_{key}"] = e[key]
        optimade.append({"id": e["id"], "type": "structures", "attributes": attrs})
    path = tmp_path / "optimade.json"
    path.write_text(json.dumps({"data": optimade}))
    props = ["exfoliation_energy", "formation_energy", "bandgap_mbj"]
    a = get_dataset("jarvis_2d").load(props, data=dft2d_path)
    b = get_dataset("jarvis_2d").load(props, data=path)
    keep = {e["jid"] for e in entries}
    rows_a = [i for i, c in enumerate(a.structures) if c.id in keep]
    assert [c.id for c in b.structures] == [a.structures[i].id for i in rows_a]
    np.testing.assert_array_equal(b.targets, a.targets[rows_a])
    for i, cb in zip(rows_a, b.structures):
        ca = a.structures[i]
        np.testing.assert_allclose(cb.lattice, ca.lattice)
        order_a = np.lexsort(np.round(ca.cart, 6).T)
        order_b = np.lexsort(np.round(cb.cart, 6).T)
        np.testing.assert_allclose(cb.cart[order_b], ca.cart[order_a], atol=1e-6)
        np.testing.assert_array_equal(cb.numbers[order_b], ca.numbers[order_a])
