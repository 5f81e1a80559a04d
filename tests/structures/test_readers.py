"""Tests for :mod:`recinet_cli.structures.readers` and :mod:`recinet_cli.structures.crystal`.

Every structure comes from the real data in ``../shared/data`` (COD CIFs with symmetry
operations, JARVIS POSCARs and ``atoms`` dicts, Matbench and Materials Project entries);
broken inputs are made from those files in ``tmp_path``. Where possible the result is
checked against an independent parser (ASE for CIF and POSCAR) or against the source data.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from recinet_cli.errors import RecinetError, StructureError
from recinet_cli.featurize import featurize_crystal
from recinet_cli.structures.crystal import Crystal, validate_crystal, wrap_fractional
from recinet_cli.structures.graph import GraphParams
from recinet_cli.structures.readers import (
    InputFile,
    ReadFailure,
    ReadOptions,
    check_unique_ids,
    detect_format,
    discover_inputs,
    display_path,
    read_file,
    read_structures,
    suffix_duplicate_ids,
)
from tests.conftest import cod_cif, edited_nacl, jarvis_cell, poscar_path, shared_path

NACL = "1000041.cif"  # COD rock salt, Fm-3m: 2 sites in the file, 8 atoms in the cell
NA_SITE = "Na1 Na1+ 4 a 0. 0. 0. 1. 0 d"
CL_SITE = "Cl1 Cl1- 4 b 0.5 0.5 0.5 1. 0 d"
MAJORITY = ReadOptions(disorder="majority")


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------





def read_one(path: Path | str, options: ReadOptions = ReadOptions()) -> Crystal:
    """Read a file that must give exactly one structure."""
    crystals, failures = read_structures([path], options=options)
    assert failures == [] and len(crystals) == 1, (crystals, failures)
    return crystals[0]


def read_failure(path: Path | str, options: ReadOptions = ReadOptions()) -> ReadFailure:
    """Read a file that must give exactly one failure and no structure."""
    crystals, failures = read_structures([path], options=options)
    assert crystals == [] and len(failures) == 1, (crystals, failures)
    return failures[0]


def symbols(crystal: Crystal) -> list[str]:
    from pymatgen.core import Element

    return [Element.from_Z(int(z)).symbol for z in crystal.numbers]


def same_sites(crystal: Crystal, lattice: np.ndarray, frac: np.ndarray, elements: list[str]) -> None:
    """Same lattice and the same (element, wrapped position) multiset, up to site order."""
    np.testing.assert_allclose(crystal.lattice, lattice, atol=1e-6)
    assert sorted(symbols(crystal)) == sorted(elements)
    for el, f in zip(elements, wrap_fractional(np.asarray(frac, dtype=np.float64)), strict=True):
        d = crystal.frac - f
        d -= np.round(d)
        hits = np.flatnonzero((np.abs(d).max(axis=1) < 1e-6) & (np.array(symbols(crystal)) == el))
        assert len(hits) == 1, f"{el} at {f} not found exactly once"


def jarvis_entry(entries: list[dict[str, Any]], jid: str) -> dict[str, Any]:
    return next(e for e in entries if e["jid"] == jid)


def write_bytes_name(directory: Path, name: bytes, data: bytes) -> str:
    """Create a file whose name is arbitrary bytes; returns the (surrogate-escaped) str path."""
    raw = os.path.join(os.fsencode(str(directory)), name)
    with open(raw, "wb") as fh:
        fh.write(data)
    return os.fsdecode(raw)


# --------------------------------------------------------------------------------------
# CIF
# --------------------------------------------------------------------------------------


def test_cod_nacl_symmetry_expands_to_conventional_cell() -> None:
    """Two sites plus 192 symmetry operations give the 8-atom conventional rock-salt cell."""
    path = shared_path("samples", "cgcnn_cifs", NACL)
    c = read_one(path)
    assert c.id == "1000041" and c.source == str(path)
    assert c.n_atoms == 8 and c.formula == "Na4 Cl4"
    np.testing.assert_allclose(c.lattice, 5.62 * np.eye(3), atol=1e-9)
    assert c.volume == pytest.approx(5.62**3)
    na = c.frac[c.numbers == 11]
    expected = np.array([[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])
    assert sorted(map(tuple, np.round(na, 6))) == sorted(map(tuple, expected))
    assert ((c.frac >= 0) & (c.frac < 1)).all()


@pytest.mark.parametrize(
    "name",
    ["1000041.cif", "1000050.cif", "1101051.cif", "1507756.cif", "7206075.cif",
     "9000046.cif", "9009743.cif", "9011050.cif", "9011998.cif", "9012304.cif"],
)
def test_every_cod_cif_matches_ase(name: str) -> None:
    """The symmetry expansion agrees with ASE's independent CIF reader (atoms and cell volume)."""
    import warnings

    from ase.io import read

    path = shared_path("samples", "cgcnn_cifs", name)
    c = read_one(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = read(str(path))
    assert c.n_atoms == len(ref)
    assert sorted(c.numbers.tolist()) == sorted(ref.numbers.tolist())
    assert c.volume == pytest.approx(ref.get_volume(), rel=1e-6)
    text = path.read_text()
    z = re.search(r"^_cell_formula_units_Z\s+(\d+)", text, re.M)
    if z:  # the CIF's own Z agrees too
        from pymatgen.core import Composition

        formula = re.search(r"^_chemical_formula_sum\s+'?([^'\n]+)'?", text, re.M)
        assert formula is not None
        assert c.n_atoms == int(z[1]) * Composition(formula[1]).num_atoms


def test_gzipped_cif_is_read_transparently(tmp_path: Path) -> None:
    gz = tmp_path / "1000041.cif.gz"
    gz.write_bytes(gzip.compress(cod_cif().encode()))
    assert detect_format(str(gz)) == "cif"
    c = read_one(gz)
    assert c.id == "1000041" and c.n_atoms == 8


def test_corrupt_gzip_is_a_failure(tmp_path: Path) -> None:
    gz = tmp_path / "x.cif.gz"
    gz.write_bytes(gzip.compress(cod_cif().encode())[:100])
    f = read_failure(gz)
    assert f.id == "x" and "gzip" in f.reason


def test_two_block_cif_gives_one_structure_per_block(tmp_path: Path) -> None:
    path = tmp_path / "two.cif"
    path.write_text(cod_cif() + "\n" + cod_cif("9011998.cif"))
    crystals, failures = read_structures([path])
    assert failures == []
    assert [(c.id, c.source, c.formula) for c in crystals] == [
        ("two#0", f"{path}#0", "Na4 Cl4"),
        ("two#1", f"{path}#1", "Si8"),
    ]


def test_mp_p1_cifs_from_jsonl(tmp_path: Path) -> None:
    """Materials Project CIFs (P1, from the ``cif`` field) read with their listed atom count."""
    from pymatgen.core import Composition

    with gzip.open(shared_path("mp", "mp_36k.jsonl.gz"), "rt") as fh:
        rows = [json.loads(next(fh)) for _ in range(5)]
    for row in rows:
        (tmp_path / f"{row['material_id']}.cif").write_text(row["cif"])
    crystals, failures = read_structures([tmp_path])
    assert failures == []
    assert [c.id for c in crystals] == sorted(r["material_id"] for r in rows)
    by_id = {r["material_id"]: r for r in rows}
    for c in crystals:
        formula = re.search(r"^_chemical_formula_sum\s+'?([^'\n]+)'?", by_id[c.id]["cif"], re.M)
        assert formula is not None
        assert Composition(c.formula) == Composition(formula[1])
        assert c.volume == pytest.approx(by_id[c.id]["volume"], rel=1e-4)


# --------------------------------------------------------------------------------------
# POSCAR
# --------------------------------------------------------------------------------------


def test_jarvis_poscars_match_ase_and_jarvis(jarvis_entries: list[dict[str, Any]]) -> None:
    """All 70 ALIGNN sample POSCARs agree with ASE's reader; the 50 that are in the JARVIS
    subset have its composition (the cells are from another JARVIS release, so not compared)."""
    from ase.io import read
    from pymatgen.core import Composition

    folder = shared_path("samples", "alignn_poscars")
    crystals, failures = read_structures([folder])
    assert failures == []
    assert len(crystals) == 70
    by_jid = {e["jid"]: e for e in jarvis_entries}
    compared = 0
    for c in crystals:
        assert c.id.startswith("POSCAR-JVASP-")
        ref = read(str(folder / f"{c.id}.vasp"), format="vasp")
        same_sites(c, ref.cell.array, ref.get_scaled_positions(wrap=False), ref.get_chemical_symbols())
        entry = by_jid.get(c.id.removeprefix("POSCAR-"))
        if entry is not None:
            assert Composition(c.formula) == Composition(" ".join(entry["atoms"]["elements"]))
            compared += 1
    assert compared == 50


@pytest.mark.parametrize("name", ["POSCAR", "CONTCAR", "CONTCAR_relaxed", "POSCAR.gz", "x.poscar", "x.vasp"])
def test_poscar_names(tmp_path: Path, name: str) -> None:
    data = poscar_path().read_bytes()
    (tmp_path / name).write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    crystals, failures = read_structures([tmp_path])
    assert failures == [] and len(crystals) == 1
    assert crystals[0].id == {"POSCAR.gz": "POSCAR", "x.poscar": "x", "x.vasp": "x"}.get(name, name)


def test_vasp4_poscar_without_species_line_fails(tmp_path: Path) -> None:
    """pymatgen invents H, He, Li... for a POSCAR without symbols; that must not be stored."""
    lines = poscar_path().read_text().splitlines()
    assert lines[5].split() == ["Ti", "Cu", "Si", "As"]
    path = tmp_path / "POSCAR"
    path.write_text("\n".join(lines[:5] + lines[6:]) + "\n")
    f = read_failure(path)
    assert "species line" in f.reason


def test_vasp4_poscar_with_symbols_after_coordinates_is_read(tmp_path: Path) -> None:
    lines = poscar_path().read_text().splitlines()
    species = [s for s, n in zip(lines[5].split(), map(int, lines[6].split()), strict=True) for _ in range(n)]
    coords = [f"{line} {s}" for line, s in zip(lines[8:16], species, strict=True)]
    path = tmp_path / "POSCAR"
    path.write_text("\n".join(lines[:5] + lines[6:8] + coords) + "\n")
    assert read_one(path).formula == read_one(poscar_path()).formula


def test_poscar_garbage_is_a_failure(tmp_path: Path) -> None:
    path = tmp_path / "CONTCAR"
    path.write_text("not\na poscar\n")
    f = read_failure(path)
    assert f.source == str(path) and f.id == "CONTCAR" and f.reason.startswith("cannot parse POSCAR")


# --------------------------------------------------------------------------------------
# extxyz
# --------------------------------------------------------------------------------------


def jarvis_atoms(entry: dict[str, Any]) -> Any:
    """An ASE ``Atoms`` of a real JARVIS entry."""
    from ase import Atoms

    lattice, frac, elements = jarvis_cell(entry)
    return Atoms(symbols=elements, scaled_positions=frac, cell=lattice, pbc=True)


@pytest.fixture
def real_frames(jarvis_entries: list[dict[str, Any]]) -> list[Any]:
    """Four real JARVIS structures of different sizes, as ASE Atoms."""
    chosen = sorted(jarvis_entries[:40], key=lambda e: len(e["atoms"]["elements"]))[::10][:4]
    assert len({len(e["atoms"]["elements"]) for e in chosen}) > 1
    return [jarvis_atoms(e) for e in chosen]


def test_extxyz_every_frame_is_a_structure(tmp_path: Path, real_frames: list[Any]) -> None:
    from ase.io import write

    path = tmp_path / "traj.extxyz"
    write(str(path), real_frames, format="extxyz")
    crystals, failures = read_structures([path])
    assert failures == []
    assert [c.id for c in crystals] == [f"traj#{i}" for i in range(len(real_frames))]
    assert [c.source for c in crystals] == [f"{path}#{i}" for i in range(len(real_frames))]
    for c, atoms in zip(crystals, real_frames, strict=True):
        same_sites(c, atoms.cell.array, atoms.get_scaled_positions(wrap=False), atoms.get_chemical_symbols())


def test_single_frame_xyz_keeps_the_index(tmp_path: Path, real_frames: list[Any]) -> None:
    from ase.io import write

    path = tmp_path / "one.xyz"
    write(str(path), real_frames[0], format="extxyz")
    assert read_one(path).id == "one#0"


def test_extxyz_bad_frame_fails_alone(tmp_path: Path, real_frames: list[Any]) -> None:
    """An unknown symbol in frame 1, no cell in frame 2: frames 0 and 3 are still read."""
    from ase.io import write

    frames = [a.copy() for a in real_frames]
    frames[2].cell = np.zeros((3, 3))
    frames[2].pbc = False
    path = tmp_path / "mixed.extxyz"
    write(str(path), frames, format="extxyz")
    lines = path.read_text().splitlines(keepends=True)
    start = len(frames[0]) + 2  # first atom line of frame 1
    sym = frames[1].get_chemical_symbols()[0]
    lines[start + 2] = re.sub(rf"^{sym}\b", "Xx", lines[start + 2])
    path.write_text("".join(lines))
    crystals, failures = read_structures([path])
    assert [c.id for c in crystals] == ["mixed#0", "mixed#3"]
    assert [(f.source, f.id) for f in failures] == [(f"{path}#1", "mixed#1"), (f"{path}#2", "mixed#2")]
    assert failures[0].reason == "unknown element symbol 'Xx'"
    assert "no periodic cell" in failures[1].reason


def test_extxyz_truncated_last_frame(tmp_path: Path, real_frames: list[Any]) -> None:
    from ase.io import write

    path = tmp_path / "cut.extxyz"
    write(str(path), real_frames[:2], format="extxyz")
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[: len(lines) - 2]))
    crystals, failures = read_structures([path])
    assert [c.id for c in crystals] == ["cut#0"]
    assert [f.id for f in failures] == ["cut#1"] and "cannot parse extxyz" in failures[0].reason


def test_extxyz_not_xyz_at_all(tmp_path: Path) -> None:
    path = tmp_path / "x.xyz"
    path.write_text(cod_cif())
    f = read_failure(path)
    assert f.id == "x" and f.reason.startswith("cannot parse extxyz")


# --------------------------------------------------------------------------------------
# JSON: pymatgen Structure, JARVIS atoms, Matbench
# --------------------------------------------------------------------------------------


def test_pymatgen_structure_json(tmp_path: Path) -> None:
    from pymatgen.core import Structure

    st = Structure.from_str(cod_cif("7206075.cif"), fmt="cif")
    path = tmp_path / "rutile.json"
    path.write_text(json.dumps(st.as_dict()))
    c = read_one(path)
    assert c.id == "rutile" and c.formula == "Ti4 O8"
    same_sites(c, st.lattice.matrix, st.frac_coords, [s.specie.symbol for s in st])


def test_jarvis_atoms_dict_entry_and_list(tmp_path: Path, jarvis_entries: list[dict[str, Any]]) -> None:
    """A bare ``atoms`` dict (id = stem), a dft_3d entry (id = jid) and a list (ids = jids)."""
    entries = jarvis_entries[:3]
    (tmp_path / "bare.json").write_text(json.dumps(entries[0]["atoms"]))
    (tmp_path / "entry.json").write_text(json.dumps(entries[1]))
    (tmp_path / "many.json").write_text(json.dumps(entries))
    bare = read_one(tmp_path / "bare.json")
    assert bare.id == "bare"
    same_sites(bare, *jarvis_cell(entries[0]))
    entry = read_one(tmp_path / "entry.json")
    assert entry.id == entries[1]["jid"] and entry.source == str(tmp_path / "entry.json")
    crystals, failures = read_structures([tmp_path / "many.json"])
    assert failures == []
    assert [c.id for c in crystals] == [e["jid"] for e in entries]
    assert [c.source for c in crystals] == [f"{tmp_path / 'many.json'}#{i}" for i in range(3)]
    for c, e in zip(crystals, entries, strict=True):
        same_sites(c, *jarvis_cell(e))


def test_jarvis_cartesian_and_fractional_agree(jarvis_entries: list[dict[str, Any]], tmp_path: Path) -> None:
    entry = jarvis_entry(jarvis_entries, jarvis_entries[0]["jid"])
    lattice, frac, elements = jarvis_cell(entry)
    cart = {"lattice_mat": lattice.tolist(), "coords": (frac @ lattice).tolist(), "elements": elements, "cartesian": True}
    fr = {"lattice_mat": lattice.tolist(), "coords": frac.tolist(), "elements": elements, "cartesian": False}
    (tmp_path / "cart.json").write_text(json.dumps(cart))
    (tmp_path / "frac.json").write_text(json.dumps(fr))
    a, b = read_one(tmp_path / "cart.json"), read_one(tmp_path / "frac.json")
    same_sites(a, b.lattice, b.frac, symbols(b))


def test_jarvis_list_with_one_bad_entry(tmp_path: Path, jarvis_entries: list[dict[str, Any]]) -> None:
    entries = json.loads(json.dumps(jarvis_entries[:3]))
    entries[1]["atoms"]["elements"][0] = "Qq"
    path = tmp_path / "list.json"
    path.write_text(json.dumps(entries))
    crystals, failures = read_structures([path])
    assert [c.id for c in crystals] == [entries[0]["jid"], entries[2]["jid"]]
    assert failures == [ReadFailure(f"{path}#1", entries[1]["jid"], "unknown element symbol 'Qq'")]


def test_matbench_split_json(tmp_path: Path) -> None:
    from pymatgen.core import Structure

    with gzip.open(shared_path("matbench", "matbench_jdft2d.json.gz"), "rt") as fh:
        table = json.load(fh)
    small = {"index": table["index"][:4], "columns": table["columns"], "data": table["data"][:4]}
    path = tmp_path / "jdft2d.json"
    path.write_text(json.dumps(small))
    crystals, failures = read_structures([path])
    assert failures == []
    assert [c.id for c in crystals] == ["mb-jdft2d-001", "mb-jdft2d-002", "mb-jdft2d-003", "mb-jdft2d-004"]
    for c, row in zip(crystals, small["data"], strict=True):
        st = Structure.from_dict(row[0])
        same_sites(c, st.lattice.matrix, st.frac_coords, [s.specie.symbol for s in st])


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("[]", "JSON list is empty"),
        ("{}", "not a pymatgen Structure or a JARVIS atoms dict"),
        ("{not json", "invalid JSON"),
        ('"a string"', "neither a structure dict"),
        ('{"index": [1], "columns": ["x"], "data": [[1]]}', "without a 'structure' column"),
        ('{"lattice_mat": [1, 2], "coords": [], "elements": []}', "malformed JARVIS atoms dict"),
    ],
)
def test_bad_json(tmp_path: Path, text: str, reason: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text)
    f = read_failure(path)
    assert reason in f.reason and "\n" not in f.reason


# --------------------------------------------------------------------------------------
# discovery: files, directories, globs; ids
# --------------------------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """root/{a/1000041.cif, a/deep/er/POSCAR-JVASP-90856.vasp, b/9011998.cif, meta.json, notes.txt}."""
    root = tmp_path / "root"
    (root / "a" / "deep" / "er").mkdir(parents=True)
    (root / "b").mkdir()
    shutil.copy(shared_path("samples", "cgcnn_cifs", NACL), root / "a" / NACL)
    shutil.copy(poscar_path(), root / "a" / "deep" / "er" / poscar_path().name)
    shutil.copy(shared_path("samples", "cgcnn_cifs", "9011998.cif"), root / "b" / "9011998.cif")
    (root / "meta.json").write_text("{}")
    (root / "notes.txt").write_text("hello")
    return root


def test_directory_is_searched_recursively(tree: Path) -> None:
    files, failures = discover_inputs([str(tree)])
    assert failures == []
    assert [os.path.relpath(f.path, tree) for f in files] == [
        "a/1000041.cif", "a/deep/er/POSCAR-JVASP-90856.vasp", "b/9011998.cif",
    ]
    assert [f.fmt for f in files] == ["cif", "poscar", "cif"]


def test_glob_and_explicit_files_are_deduplicated(tree: Path) -> None:
    files, failures = discover_inputs(
        [str(tree / "**" / "*.cif"), str(tree / "a" / NACL), str(tree / "meta.json")]
    )
    assert failures == []
    assert sorted(os.path.relpath(f.path, tree) for f in files) == ["a/1000041.cif", "b/9011998.cif", "meta.json"]


def test_discovery_failures(tree: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty_dir"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "readme.md").write_text("no structures here")
    files, failures = discover_inputs(
        [str(tree / "notes.txt"), str(tmp_path / "missing.cif"), str(tmp_path / "*.nothing"), str(empty)]
    )
    assert files == []
    assert [(f.source, f.reason) for f in failures] == [
        (str(tree / "notes.txt"), "unrecognised file type (expected CIF, POSCAR/*.vasp, extxyz or JSON)"),
        (str(tmp_path / "missing.cif"), "no such file or directory"),
        (str(tmp_path / "*.nothing"), "pattern matches no files"),
        (str(empty), "directory contains no structure files"),
    ]


@pytest.mark.parametrize(
    ("mode", "ids"),
    [
        ("stem", ["1000041", "POSCAR-JVASP-90856", "9011998"]),
        ("name", ["1000041.cif", "POSCAR-JVASP-90856.vasp", "9011998.cif"]),
        ("parent", ["a", "er", "b"]),
        ("path", ["a/1000041", "a/deep/er/POSCAR-JVASP-90856", "b/9011998"]),
    ],
)
def test_id_modes_for_a_directory(tree: Path, mode: str, ids: list[str]) -> None:
    crystals, failures = read_structures([tree], id_mode=mode)  # type: ignore[arg-type]
    assert failures == []
    assert [c.id for c in crystals] == ids


def test_id_from_path_for_explicit_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two explicit files with the same name get distinct ids from their paths (as given)."""
    for d in ("x", "y"):
        (tmp_path / d).mkdir()
        shutil.copy(poscar_path(), tmp_path / d / "POSCAR")
    monkeypatch.chdir(tmp_path)
    files, _ = discover_inputs(["x/POSCAR", "y/POSCAR"], "path")
    assert [f.id_base for f in files] == ["x/POSCAR", "y/POSCAR"]
    check_unique_ids(files)
    files, _ = discover_inputs(["x/POSCAR", "y/POSCAR"], "parent")
    assert [f.id_base for f in files] == ["x", "y"]


def test_duplicate_ids_name_both_sources(tree: Path) -> None:
    shutil.copy(tree / "a" / NACL, tree / "b" / NACL)
    files, _ = discover_inputs([str(tree)])
    with pytest.raises(RecinetError) as err:
        check_unique_ids(files)
    msg = str(err.value)
    assert "'1000041'" in msg and str(tree / "a" / NACL) in msg and str(tree / "b" / NACL) in msg
    assert "\n" not in msg
    fixed = suffix_duplicate_ids(files)
    assert [f.id_base for f in fixed] == ["1000041", "POSCAR-JVASP-90856", "1000041-2", "9011998"]
    check_unique_ids(fixed)


def test_suffix_skips_ids_that_are_taken() -> None:
    files = [InputFile(p, "cif", i) for p, i in [("/a/x.cif", "x"), ("/b/x.cif", "x"), ("/c/x-2.cif", "x-2")]]
    assert [f.id_base for f in suffix_duplicate_ids(files)] == ["x", "x-3", "x-2"]


def test_undecodable_file_name(tmp_path: Path) -> None:
    """A name that is not UTF-8 is read, and shown with an escape in ids and sources."""
    path = write_bytes_name(tmp_path, b"bad\xff.cif", cod_cif().encode())
    c = read_one(path)
    assert c.id == "bad\\xff" and c.n_atoms == 8
    assert c.source == display_path(path) and c.source.endswith("bad\\xff.cif")
    c.source.encode("utf-8")  # printable / storable


# --------------------------------------------------------------------------------------
# disorder, unknown elements, overlaps, degenerate lattices, unreadable content
# --------------------------------------------------------------------------------------


@pytest.fixture
def half_na_cif(tmp_path: Path) -> Path:
    """Real NaCl CIF with the Na site's ``_atom_site_occupancy`` set to 0.6."""
    path = tmp_path / "half.cif"
    path.write_text(edited_nacl(NA_SITE, NA_SITE.replace(" 1. 0 d", " 0.6 0 d")))
    return path


def test_partial_occupancy_fails_with_reason(half_na_cif: Path) -> None:
    f = read_failure(half_na_cif)
    assert f.id == "half" and f.source == str(half_na_cif)
    assert f.reason.startswith("disordered site") and "0.6" in f.reason and "--disorder majority" in f.reason


def test_partial_occupancy_majority_keeps_the_species(half_na_cif: Path) -> None:
    c = read_one(half_na_cif, MAJORITY)
    assert c.n_atoms == 8 and c.formula == "Na4 Cl4"


def test_majority_drops_mostly_vacant_sites(tmp_path: Path) -> None:
    path = tmp_path / "vac.cif"
    path.write_text(edited_nacl(NA_SITE, NA_SITE.replace(" 1. 0 d", " 0.4 0 d")))
    c = read_one(path, MAJORITY)
    assert c.formula == "Cl4"


@pytest.mark.parametrize(("na", "k"), [(0.6, 0.4), (0.3, 0.7), (0.5, 0.5)])
def test_mixed_site_from_pymatgen(tmp_path: Path, na: float, k: float) -> None:
    """Real NaCl with the Na sites replaced by an Na/K mixture (pymatgen Structure JSON)."""
    from pymatgen.core import Structure

    st = Structure.from_str(cod_cif(), fmt="cif")
    st.replace_species({st[0].specie: {"Na": na, "K": k}})
    path = tmp_path / "mixed.json"
    path.write_text(json.dumps(st.as_dict()))
    f = read_failure(path)
    assert f.reason.startswith("disordered site") and f"Na:{na:g}" in f.reason and f"K:{k:g}" in f.reason
    kept = set(symbols(read_one(path, MAJORITY)))
    if na == k:  # a tie: either species, but a real one
        assert kept in ({"Na", "Cl"}, {"K", "Cl"})
    else:
        assert kept == {"Na" if na > k else "K", "Cl"}


@pytest.mark.parametrize("fmt", ["cif", "poscar", "jarvis", "pymatgen"])
def test_unknown_element_symbol(tmp_path: Path, fmt: str, jarvis_entries: list[dict[str, Any]]) -> None:
    if fmt == "cif":
        path = tmp_path / "x.cif"
        path.write_text(edited_nacl(NA_SITE, "Xx1 Xx 4 a 0. 0. 0. 1. 0 d"))
    elif fmt == "poscar":
        path = tmp_path / "x.vasp"
        lines = poscar_path().read_text().splitlines()
        lines[5] = lines[5].replace("Cu", "Xx")
        path.write_text("\n".join(lines) + "\n")
    elif fmt == "jarvis":
        path = tmp_path / "x.json"
        atoms = dict(jarvis_entries[0]["atoms"])
        atoms["elements"] = ["Xx"] + list(atoms["elements"][1:])
        path.write_text(json.dumps(atoms))
    else:
        from pymatgen.core import Structure

        d = Structure.from_str(cod_cif(), fmt="cif").as_dict()
        d["sites"][0]["species"][0]["element"] = "Xx"
        path = tmp_path / "x.json"
        path.write_text(json.dumps(d))
    f = read_failure(path)
    assert f.id == "x"
    assert f.reason == "unknown element symbol 'Xx'"


def test_element_outside_the_embedding_table() -> None:
    c = Crystal.create("og", "og", 5 * np.eye(3), np.zeros((1, 3)), np.array([118]))
    with pytest.raises(StructureError, match=r"Z=118 is outside the CGCNN embedding table"):
        validate_crystal(c)


def featurize_reason(c: Crystal) -> str:
    with pytest.raises(StructureError) as err:
        featurize_crystal(c, GraphParams())
    return str(err.value)


def test_overlapping_atoms_in_cif_fail(tmp_path: Path) -> None:
    """Cl moved to (0.01, 0, 0): 0.056 Å from Na. Read fine, refused when featurized."""
    path = tmp_path / "overlap.cif"
    path.write_text(edited_nacl(CL_SITE, "Cl1 Cl1- 4 b 0.01 0. 0. 1. 0 d"))
    reason = featurize_reason(read_one(path))
    assert re.fullmatch(r"overlapping atoms \d+ and \d+: 0\.056 Å apart \(minimum 0\.15 Å\)", reason)


@pytest.mark.parametrize("x", [0.999, 1.0, -1.0, 2.01, -0.0 - 1e-17])
def test_overlap_is_checked_after_wrapping(x: float) -> None:
    frac = np.array([[0.0, 0.0, 0.0], [x, 0.0, 0.0]])
    c = Crystal.create("o", "o", 4.0 * np.eye(3), frac, np.array([11, 17]))
    assert ((c.frac >= 0) & (c.frac < 1)).all()
    assert "overlapping atoms 0 and 1" in featurize_reason(c)


def test_atoms_just_over_the_limit_are_fine() -> None:
    frac = np.array([[0.0, 0.0, 0.0], [0.16 / 4.0, 0.0, 0.0]])
    featurize_crystal(Crystal.create("o", "o", 4.0 * np.eye(3), frac, np.array([11, 17])), GraphParams())


def test_atom_overlapping_its_own_image() -> None:
    c = Crystal.create("t", "t", np.diag([0.1, 4.0, 4.0]), np.zeros((1, 3)), np.array([11]))
    assert "overlaps its own periodic image" in featurize_reason(c)


def test_wrap_fractional_never_returns_one() -> None:
    w = wrap_fractional(np.array([[-1e-17, 1.0, 3.25], [-0.5, 0.999999, -2.0]]))
    assert ((w >= 0) & (w < 1)).all()
    np.testing.assert_array_equal(w, [[0.0, 0.0, 0.25], [0.5, 0.999999, 0.0]])


@pytest.mark.parametrize(
    "lattice",
    [
        np.zeros((3, 3)),
        np.diag([5.62, 5.62, 0.0]),
        np.array([[4.0, 0, 0], [0, 4.0, 0], [8.0, 8.0, 0]]),  # coplanar
        np.array([[4.0, 0, 0], [0, 4.0, 0], [0, 0, np.nan]]),
    ],
)
def test_degenerate_lattice_is_refused(lattice: np.ndarray) -> None:
    c = Crystal.create("d", "d", lattice, np.array([[0, 0, 0], [0.5, 0.5, 0.5]]), np.array([11, 17]))
    with pytest.raises(StructureError, match=r"degenerate lattice|NaN"):
        validate_crystal(c)


def test_zero_volume_inputs_fail_in_every_format(tmp_path: Path, jarvis_entries: list[dict[str, Any]]) -> None:
    """Zero-length c in a CIF, a POSCAR, a JARVIS dict (fractional and Cartesian) and extxyz."""
    from ase.io import write

    cif = tmp_path / "z.cif"
    cif.write_text(edited_nacl("_cell_length_c                   5.62", "_cell_length_c                   0"))
    f = read_failure(cif)
    assert f.reason.startswith("cannot parse CIF")

    lines = poscar_path().read_text().splitlines()
    lines[4] = "0.0 0.0 0.0"
    (tmp_path / "z.vasp").write_text("\n".join(lines) + "\n")
    assert "degenerate lattice" in featurize_reason(read_one(tmp_path / "z.vasp"))

    atoms = dict(jarvis_entries[0]["atoms"])
    atoms["lattice_mat"] = [row[:] for row in atoms["lattice_mat"]]
    atoms["lattice_mat"][2] = [0.0, 0.0, 0.0]
    (tmp_path / "z.json").write_text(json.dumps(atoms))
    if atoms["cartesian"]:
        assert "degenerate lattice" in read_failure(tmp_path / "z.json").reason
    else:
        assert "degenerate lattice" in featurize_reason(read_one(tmp_path / "z.json"))
    atoms["cartesian"] = not atoms["cartesian"]
    (tmp_path / "z.json").write_text(json.dumps(atoms))
    crystals, failures = read_structures([tmp_path / "z.json"])
    reasons = [f.reason for f in failures] + [featurize_reason(c) for c in crystals]
    assert len(reasons) == 1 and "degenerate lattice" in reasons[0]

    a = jarvis_atoms(jarvis_entries[0])
    a.cell[2] = [0.0, 0.0, 0.0]
    write(str(tmp_path / "z.extxyz"), a, format="extxyz")
    assert "no periodic cell" in read_failure(tmp_path / "z.extxyz").reason


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("empty.cif", b"", "file is empty"),
        ("blank.vasp", b"  \n\n \t\n", "file is empty"),
        ("zeros.cif", bytes(range(256)) * 4, "binary data, not a text structure file"),
        ("noise.xyz", bytes(range(1, 256)) * 4, "cannot parse extxyz"),
    ],
    ids=["empty", "blank", "nul-bytes", "noise"],
)
def test_unreadable_content(tmp_path: Path, name: str, data: bytes, reason: str) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    f = read_failure(path)
    assert f.source == str(path) and f.id == Path(name).stem
    assert f.reason.startswith(reason) and "\n" not in f.reason


def test_random_bytes_without_nul_named_cif(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    data = rng.integers(1, 256, size=3000, dtype=np.uint8).tobytes()
    path = tmp_path / "random.cif"
    path.write_bytes(data)
    f = read_failure(path)
    assert f.reason.startswith("cannot parse CIF") and len(f.reason) <= 240 and "\n" not in f.reason


def test_truncated_cif(tmp_path: Path) -> None:
    text = cod_cif()
    path = tmp_path / "half.cif"
    path.write_text(text[: len(text) // 2])
    f = read_failure(path)
    assert f.reason.startswith("cannot parse CIF")


def test_unreadable_file_is_a_failure(tmp_path: Path) -> None:
    """A path that vanished between discovery and reading gives a failure, not an exception."""
    f = InputFile(str(tmp_path / "gone.cif"), "cif", "gone")
    (res,) = read_file(f)
    assert isinstance(res, ReadFailure) and res.reason.startswith("cannot read file")
