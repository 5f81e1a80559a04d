"""Tests of the ``mp`` dataset plugin on real Materials Project data in megnet.json form."""

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
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from recinet_mp import MPDataset, MPDataWarning
from recinet_mp.dataset import to_log10_gpa
from recinet_mp.splits import (
    LEADERBOARD_FILES,
    build_split_file,
    matformer_sizes,
    matformer_split,
    shipped_splits,
)

from recinet_cli.contracts import DatasetSplit
from recinet_cli.datasets.common import read_leaderboard, read_split_file
from recinet_cli.download import DownloadError
from recinet_cli.errors import PluginError
from recinet_cli.registry import discover, get_dataset

SHARED = Path(__file__).resolve().parents[4] / "shared" / "data"
PARTS = ("train", "val", "test")
#: Entries per split part taken from mp_36k for the local-copy tests.
SLICE = {"train": 120, "val": 50, "test": 50}


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared data not found at {path}")
    return path


def _jsonl(path: Path) -> list[dict[str, Any]]:
    with gzip.open(path, "rt") as fh:
        return [json.loads(line) for line in fh]


def _jarvis_atoms(cif: str) -> dict[str, Any]:
    """The JARVIS atoms dict (as in megnet.json) of a CIF, via pymatgen."""
    from pymatgen.core import Structure

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "coordinates rounded to ideal values"
        s = Structure.from_str(cif, fmt="cif")
    return {
        "lattice_mat": s.lattice.matrix.tolist(),
        "coords": s.frac_coords.tolist(),
        "elements": [site.specie.symbol for site in s],
        "abc": list(s.lattice.abc),
        "angles": list(s.lattice.angles),
        "cartesian": False,
        "props": [""] * len(s),
    }


@pytest.fixture(scope="module")
def labels() -> dict[str, dict[str, Any]]:
    with gzip.open(_need(SHARED / "mp" / "mp2018_split_labels_36k.json.gz"), "rt") as fh:
        return json.load(fh)


@pytest.fixture(scope="module")
def megnet_entries(labels: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """A slice of mp_36k in megnet.json form: e_form / gap pbe from the MP-2018 labels."""
    wanted = dict(SLICE)
    out = []
    for row in _jsonl(_need(SHARED / "mp" / "mp_36k.jsonl.gz")):
        lab = labels.get(row["material_id"])
        if lab is None or wanted[lab["split"]] == 0:
            continue
        wanted[lab["split"]] -= 1
        out.append({
            "id": row["material_id"],
            "atoms": _jarvis_atoms(row["cif"]),
            "e_form": lab["e_form_mp2018"],
            "gap pbe": lab["gap_pbe_mp2018"],
            "bulk modulus": "na",
            "shear modulus": None,
        })
        if not any(wanted.values()):
            break
    return out


@pytest.fixture(scope="module")
def elastic_entries() -> list[dict[str, Any]]:
    """400 MP structures with VRH moduli in GPa, megnet.json keys, no formation energy."""
    rows = _jsonl(_need(SHARED / "mp" / "mp_elasticity_3k.jsonl.gz"))[:400]
    return [
        {
            "id": r["material_id"],
            "atoms": _jarvis_atoms(r["cif"]),
            "e_form": "na",
            "gap pbe": "na",
            "bulk modulus": r["bulk_modulus_vrh"],
            "shear modulus": r["shear_modulus_vrh"],
        }
        for r in rows
    ]


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RECINET_MP_2018", raising=False)


def _write(entries: list[dict[str, Any]], path: Path) -> Path:
    path.write_text(json.dumps(entries))
    return path


def _sizes(split: dict[str, list[str]]) -> tuple[int, int, int]:
    return tuple(len(split[p]) for p in PARTS)  # type: ignore[return-value]


def _reference_split(n: int, n_train: int, n_val: int, n_test: int) -> tuple[list[int], ...]:
    """ALIGNN/Matformer ``get_id_train_val_test`` as written in their data.py."""
    state = random.getstate()
    ids = list(np.arange(n))
    random.seed(123)
    random.shuffle(ids)
    random.setstate(state)
    return ids[:n_train], ids[-(n_val + n_test) : -n_test], ids[-n_test:]


# --------------------------------------------------------------------------------------
# Registry, properties, presets
# --------------------------------------------------------------------------------------


def test_entry_point_is_discovered() -> None:
    ds = get_dataset("mp")
    assert isinstance(ds, MPDataset)
    assert discover("recinet.datasets")["mp"].distribution == "recinet-mp"
    assert ds.dataset_version == "mp-2018.6.1" and ds.folds == 0


def test_properties_units_aliases_sizes() -> None:
    ds = get_dataset("mp")
    info = {p.name: p for p in ds.properties()}
    assert {n: (p.unit, p.size) for n, p in info.items()} == {
        "formation_energy": ("eV/atom", 69239),
        "bandgap": ("eV", 69239),
        "bulk_modulus": ("log10(GPa)", 5450),
        "shear_modulus": ("log10(GPa)", 5449),
    }
    for alias, name in [
        ("e_form", "formation_energy"), ("gap pbe", "bandgap"), ("band_gap", "bandgap"),
        ("bulk modulus", "bulk_modulus"), ("shear modulus", "shear_modulus"),
        ("log_gvrh", "shear_modulus"), ("E_FORM", "formation_energy"),
    ]:
        assert ds.property_info(alias).name == name
    names = [n.casefold() for p in info.values() for n in (p.name, *p.aliases)]
    assert len(names) == len(set(names))


def test_presets() -> None:
    ds = get_dataset("mp")
    assert ds.preset(["formation_energy"]) == {"blocks": 3, "epochs": 500, "lr": 8e-4}
    assert ds.preset(["gap pbe"]) == {"blocks": 3, "epochs": 500, "lr": 8e-4}
    assert ds.preset(["bulk_modulus"]) == {"blocks": 3, "epochs": 500, "lr": 1e-3}
    assert ds.preset(["shear_modulus"]) == {"blocks": 3, "epochs": 300, "lr": 1e-3}
    assert ds.preset(["formation_energy", "bandgap"]) == {"blocks": 3, "epochs": 500, "lr": 8e-4}
    assert ds.preset(["bulk_modulus", "shear_modulus"]) == {}


def test_user_errors(tmp_path: Path, megnet_entries: list[dict[str, Any]]) -> None:
    path = _write(megnet_entries[:3], tmp_path / "megnet.json")
    ds = get_dataset("mp")
    with pytest.raises(PluginError, match="fold"):
        ds.load(["formation_energy"], data=path, fold=1)
    with pytest.raises(PluginError, match=r"no property 'mu_b'; valid: formation_energy, bandgap, bulk_modulus, shear_modulus"):
        ds.load(["mu_b"], data=path)
    with pytest.raises(PluginError, match="more than once"):
        ds.load(["e_form", "formation_energy"], data=path)
    with pytest.raises(DownloadError, match="no such file"):
        ds.load(["e_form"], data=tmp_path / "absent.json")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_no_local_copy_and_no_network_raises_download_error(
    monkeypatch: pytest.MonkeyPatch, no_env: None
) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/megnet.zip"
    monkeypatch.setattr(MPDataset, "remote", dataclasses.replace(MPDataset.remote, url=url))
    start = time.monotonic()
    with pytest.raises(DownloadError, match="127.0.0.1"):
        MPDataset().load(["formation_energy"])
    assert time.monotonic() - start < 10


# --------------------------------------------------------------------------------------
# Official (shipped) split
# --------------------------------------------------------------------------------------


def test_shipped_split_sizes_and_leaderboard(tmp_path: Path) -> None:
    splits = shipped_splits()
    assert set(splits) == {"formation_energy", "bandgap"}
    assert _sizes(splits["formation_energy"]) == (60000, 5000, 4239)
    assert splits["formation_energy"] == splits["bandgap"]
    prefixes = Counter(sid.split("-")[0] for part in PARTS for sid in splits["bandgap"][part])
    assert prefixes == {"mp": 63985, "mvc": 5254}
    board = _need(SHARED / "jarvis" / "leaderboard_splits")
    for name, fname in LEADERBOARD_FILES.items():
        ref = read_leaderboard(board / fname)
        for part in PARTS:
            assert sorted(splits[name][part]) == sorted(ref[part])
    out = tmp_path / "mp.json.gz"
    build_split_file(board, out)
    assert read_split_file(out) == splits
    packaged = Path(__import__("recinet_mp").__file__).parent / "data" / "mp_2018_splits.json.gz"
    assert out.read_bytes() == packaged.read_bytes()


def test_shipped_split_agrees_with_mp2018_labels(labels: dict[str, dict[str, Any]]) -> None:
    where = {sid: part for part in PARTS for sid in shipped_splits()["formation_energy"][part]}
    assert len(labels) == 36476
    disagree = [(sid, lab["split"], where.get(sid)) for sid, lab in labels.items() if where.get(sid) != lab["split"]]
    assert disagree == []
    assert Counter(lab["split"] for lab in labels.values()) == {"train": 31623, "val": 2615, "test": 2238}


# --------------------------------------------------------------------------------------
# Loading local copies
# --------------------------------------------------------------------------------------


def test_load_formation_energy_and_gap(
    tmp_path: Path, megnet_entries: list[dict[str, Any]], labels: dict[str, dict[str, Any]], no_env: None
) -> None:
    path = _write(megnet_entries, tmp_path / "megnet.json")
    with warnings.catch_warnings():
        warnings.simplefilter("error", MPDataWarning)
        got = get_dataset("mp").load(["e_form", "gap pbe"], data=path)
    assert isinstance(got, DatasetSplit)
    assert got.name == "mp" and got.version == "mp-2018.6.1" and got.split == {}
    assert got.property_names == ("formation_energy", "bandgap")
    n = sum(SLICE.values())
    assert len(got.structures) == n and got.targets.shape == (n, 2)
    for crystal, row, entry in zip(got.structures, got.targets, megnet_entries):
        assert crystal.id == entry["id"]
        lab = labels[crystal.id]
        assert row.tolist() == [lab["e_form_mp2018"], lab["gap_pbe_mp2018"]]
        assert sorted(crystal.numbers.tolist()) == sorted(
            _z(sym) for sym in entry["atoms"]["elements"]
        )
    for prop in got.property_names:
        split = got.property_splits[prop]
        assert _sizes(split) == (SLICE["train"], SLICE["val"], SLICE["test"])
        for part in PARTS:
            assert all(labels[sid]["split"] == part for sid in split[part])


def _z(symbol: str) -> int:
    from pymatgen.core import Element

    return Element(symbol).Z


def test_plain_gzip_and_zip_load_alike(tmp_path: Path, megnet_entries: list[dict[str, Any]], no_env: None) -> None:
    sample = megnet_entries[::7]
    text = json.dumps(sample)
    plain = tmp_path / "megnet.json"
    plain.write_text(text)
    gz = tmp_path / "megnet.json.gz"
    gz.write_bytes(gzip.compress(text.encode()))
    zp = tmp_path / "megnet.zip"
    with zipfile.ZipFile(zp, "w") as zf:
        zf.writestr("megnet.json", text)
    results = [get_dataset("mp").load(["bandgap"], data=p) for p in (plain, gz, zp)]
    for r in results:
        assert [c.id for c in r.structures] == [e["id"] for e in sample]
        np.testing.assert_array_equal(r.targets, results[0].targets)
        assert r.property_splits == results[0].property_splits


def test_local_copy_from_environment(
    tmp_path: Path, megnet_entries: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RECINET_MP_2018", str(_write(megnet_entries[:10], tmp_path / "m.json")))
    assert len(get_dataset("mp").load(["formation_energy"]).structures) == 10


def test_bad_structures_are_skipped_with_one_warning(
    tmp_path: Path, megnet_entries: list[dict[str, Any]], no_env: None
) -> None:
    sample = [dict(e) for e in megnet_entries[:20]]
    sample[2]["atoms"] = {**sample[2]["atoms"], "elements": ["Qq"] * len(sample[2]["atoms"]["elements"])}
    del sample[5]["atoms"]
    with pytest.warns(MPDataWarning, match=r"skipped 2 entries.*" + sample[2]["id"]):
        got = get_dataset("mp").load(["formation_energy"], data=_write(sample, tmp_path / "bad.json"))
    assert len(got.structures) == 18
    assert sample[5]["id"] not in {c.id for c in got.structures}


# --------------------------------------------------------------------------------------
# Moduli: log10(GPa) and Matformer's computed split
# --------------------------------------------------------------------------------------


def test_moduli_in_gpa_become_log10(
    tmp_path: Path, elastic_entries: list[dict[str, Any]], no_env: None
) -> None:
    path = _write(elastic_entries, tmp_path / "elastic.json")
    with pytest.warns(MPDataWarning) as record:
        got = get_dataset("mp").load(["bulk_modulus", "shear_modulus"], data=path)
    messages = [str(w.message) for w in record]
    assert len(messages) == 2
    assert all("only 400 labelled entries" in m and "342/28/28" in m for m in messages)
    assert "bulk_modulus" in messages[0] and "shear_modulus" in messages[1]
    assert got.property_names == ("bulk_modulus", "shear_modulus")
    assert len(got.structures) == 400
    gpa = np.array([[e["bulk modulus"], e["shear modulus"]] for e in elastic_entries])
    np.testing.assert_allclose(got.targets, np.log10(gpa))
    assert got.targets[0].tolist() == pytest.approx([math.log10(131.0), math.log10(74.0)])
    # same file already in log10 units: used as is
    logged = [dict(e, **{"bulk modulus": math.log10(e["bulk modulus"])}) for e in elastic_entries]
    with pytest.warns(MPDataWarning):
        again = get_dataset("mp").load(["bulk_modulus"], data=_write(logged, tmp_path / "log.json"))
    np.testing.assert_allclose(again.targets[:, 0], got.targets[:, 0])
    # the split: Matformer's seeded procedure over the labelled entries, sizes scaled down
    n_train, n_val, n_test = matformer_sizes(400)
    assert (n_train, n_val, n_test) == (342, 28, 28)
    ref = _reference_split(400, n_train, n_val, n_test)
    ids = [e["id"] for e in elastic_entries]
    for prop in got.property_names:
        split = got.property_splits[prop]
        for part, idx in zip(PARTS, ref):
            assert split[part] == [ids[int(i)] for i in idx]


def test_to_log10_gpa_rules() -> None:
    out, was_gpa = to_log10_gpa(np.array([100.0, 0.0, -3.0, np.nan, 10.0]))
    assert was_gpa
    np.testing.assert_allclose(out, [2.0, np.nan, np.nan, np.nan, 1.0])
    out, was_gpa = to_log10_gpa(np.array([2.0, 1.5, -0.2, np.nan]))
    assert not was_gpa
    np.testing.assert_array_equal(out, [2.0, 1.5, -0.2, np.nan])


def test_matformer_split_full_size_and_negative_shear(
    tmp_path: Path, elastic_entries: list[dict[str, Any]], no_env: None
) -> None:
    # 5,500 labelled entries (real structures and moduli, reused under distinct ids) reach
    # Matformer's fixed 4664/393/393; one negative shear modulus in val is dropped -> 392.
    n = 5500
    entries = [
        dict(elastic_entries[k % len(elastic_entries)], id=f"mp-{900000 + k}") for k in range(n)
    ]
    _, val_idx, _ = _reference_split(n, 4664, 393, 393)
    negative = int(val_idx[7])
    entries[negative] = dict(entries[negative], **{"shear modulus": -4.0})
    entries.insert(3, dict(entries[0], id="mp-999999", **{"bulk modulus": "na", "shear modulus": "na"}))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        got = get_dataset("mp").load(["bulk_modulus", "shear_modulus"], data=_write(entries, tmp_path / "m.json"))
    messages = [str(w.message) for w in record if issubclass(w.category, MPDataWarning)]
    assert len(messages) == 1 and "dropped 1 modulus label" in messages[0] and "-4" in messages[0]
    assert len(got.structures) == n
    bulk, shear = got.property_splits["bulk_modulus"], got.property_splits["shear_modulus"]
    assert _sizes(bulk) == (4664, 393, 393)
    assert _sizes(shear) == (4664, 392, 393)
    assert f"mp-{900000 + negative}" in bulk["val"] and f"mp-{900000 + negative}" not in shear["val"]
    assert "mp-999999" not in {sid for part in PARTS for sid in bulk[part]}
    ref = _reference_split(n, 4664, 393, 393)
    assert bulk["test"] == [f"mp-{900000 + int(i)}" for i in ref[2]]
    assert matformer_split([f"x{i}" for i in range(5450)])["val"] == [f"x{int(i)}" for i in _reference_split(5450, 4664, 393, 393)[1]]
