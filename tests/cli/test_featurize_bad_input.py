"""``recinet featurize`` on a corpus of broken inputs, through the real CLI.

The corpus is built in ``tmp_path`` from real files in ``../shared/data`` (COD CIFs, JARVIS
POSCARs): empty and binary files, a CIF cut in half, a partially occupied site, overlapping
atoms, an unknown element, zero-volume cells, a file name that is not UTF-8, a directory
without structures. Checked: every good structure is stored, every bad one is listed once
with its reason (on stderr, in the HDF5 file and in ``OUT.failed.csv``), and the exit code is
non-zero only when nothing could be stored or the output cannot be written.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from recinet_cli.cli.app import app
from recinet_cli.store.reader import GraphStore
from tests.conftest import cod_cif, edited_nacl, poscar_path, shared_path

NA_SITE = "Na1 Na1+ 4 a 0. 0. 0. 1. 0 d"
CL_SITE = "Cl1 Cl1- 4 b 0.5 0.5 0.5 1. 0 d"
CELL_C = "_cell_length_c                   5.62"

#: ids of the good structures in the corpus ("bad\xff.cif" is stored with an escaped id)
GOOD_IDS = {"1000041", "9011998", "POSCAR-JVASP-90856", "bad\\xff"}

#: file name (as displayed) -> start of the expected reason
BAD_FILES = {
    "empty.cif": "file is empty",
    "random.cif": "binary data, not a text structure file",
    "noise.cif": "cannot parse CIF",
    "truncated.cif": "cannot parse CIF",
    "partial.cif": "disordered site 0 (partial occupancy Na+:0.5); use --disorder majority",
    "overlap.cif": "overlapping atoms",
    "unknown.cif": "unknown element symbol 'Xx'",
    "zerovol.cif": "cannot parse CIF",
    "zerocell.vasp": "degenerate lattice",
    "empty\\xfe.cif": "file is empty",
}


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------





def write_bytes_name(directory: Path, name: bytes, data: bytes) -> bytes:
    raw = os.path.join(os.fsencode(str(directory)), name)
    with open(raw, "wb") as fh:
        fh.write(data)
    return raw


def make_corpus(root: Path) -> Path:
    """Good and broken structure files in ``root/corpus``; returns that directory."""
    d = root / "corpus"
    d.mkdir(parents=True)
    shutil.copy(shared_path("samples", "cgcnn_cifs", "1000041.cif"), d)
    shutil.copy(shared_path("samples", "cgcnn_cifs", "9011998.cif"), d)
    shutil.copy(poscar_path(), d)
    write_bytes_name(d, b"bad\xff.cif", cod_cif("1101051.cif").encode())

    (d / "empty.cif").write_bytes(b"")
    rng = np.random.default_rng(2024)
    noise = rng.integers(0, 256, size=4096, dtype=np.uint8)
    noise[100] = 0
    (d / "random.cif").write_bytes(noise.tobytes())
    (d / "noise.cif").write_bytes(rng.integers(1, 256, size=4096, dtype=np.uint8).tobytes())
    text = cod_cif()
    (d / "truncated.cif").write_text(text[: len(text) // 2])
    (d / "partial.cif").write_text(edited_nacl(NA_SITE, NA_SITE.replace(" 1. 0 d", " 0.5 0 d")))
    (d / "overlap.cif").write_text(edited_nacl(CL_SITE, "Cl1 Cl1- 4 b 0.01 0. 0. 1. 0 d"))
    (d / "unknown.cif").write_text(edited_nacl(NA_SITE, "Xx1 Xx 4 a 0. 0. 0. 1. 0 d"))
    (d / "zerovol.cif").write_text(edited_nacl(CELL_C, "_cell_length_c                   0"))
    lines = poscar_path().read_text().splitlines()
    lines[4] = "0.0 0.0 0.0"
    (d / "zerocell.vasp").write_text("\n".join(lines) + "\n")
    write_bytes_name(d, b"empty\xfe.cif", b"")
    (d / "id_prop.csv").write_text("1000041,1.0\n")  # not a structure file: ignored in a directory
    return d


def featurize(*args: str, workers: int = 1) -> Any:
    return CliRunner().invoke(app, ["featurize", *args, "--workers", str(workers)])


def failed_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("failed: ")]


def expected_line(source: str, sid: str, reason: str) -> str:
    """The CLI's ``failed: SOURCE: REASON`` line (the id is added when the source lacks it)."""
    where = source + (f" [{sid}]" if sid and sid not in source else "")
    return f"failed: {where}: {reason}"


def read_csv(path: Path) -> list[tuple[str, str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["source", "id", "reason"]
    return [tuple(r) for r in rows[1:]]  # type: ignore[misc]


def check_failures_everywhere(out: Path, stderr: str) -> list[tuple[str, str, str]]:
    """Failures agree between the HDF5 file, the CSV next to it and the stderr lines."""
    with GraphStore(out) as store:
        in_h5 = store.failures()
    assert read_csv(out.with_name(out.stem + ".failed.csv")) == in_h5
    lines = failed_lines(stderr)
    assert sorted(lines) == sorted(expected_line(*f) for f in in_h5)
    assert len(lines) == len(set(lines))
    for source, _, reason in in_h5:
        assert reason and "\n" not in reason and "Traceback" not in reason
        assert source.encode("utf-8")  # escaped, always printable
    return in_h5


def console_script() -> str:
    """The installed ``recinet`` entry point (next to this interpreter, else on PATH)."""
    here = Path(sys.executable).with_name("recinet")
    if here.exists():
        return str(here)
    found = shutil.which("recinet")
    if found is None:
        pytest.skip("the recinet console script is not installed (pip install -e .)")
    return found


# --------------------------------------------------------------------------------------
# the corpus
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 2])
def test_bad_input_corpus(tmp_path: Path, workers: int) -> None:
    corpus = make_corpus(tmp_path)
    nothing = tmp_path / "nothing"
    (nothing / "sub").mkdir(parents=True)
    (nothing / "sub" / "README.md").write_text("no structures\n")
    out = tmp_path / "graphs.h5"

    r = featurize(str(corpus), str(nothing), "-o", str(out), workers=workers)
    assert r.exit_code == 0, r.stderr + repr(r.exception)
    assert "Traceback" not in r.stderr

    with GraphStore(out) as store:
        assert set(store.ids) == GOOD_IDS
        assert len(store) == len(GOOD_IDS)
        n_atoms = dict(zip(store.ids, store.n_atoms().tolist(), strict=True))
    assert n_atoms["1000041"] == 8 and n_atoms["9011998"] == 8 and n_atoms["bad\\xff"] == 4

    failures = check_failures_everywhere(out, r.stderr)
    assert len(failures) == len(BAD_FILES) + 1
    by_name = {os.path.basename(source): (sid, reason) for source, sid, reason in failures}
    assert by_name["nothing"] == ("", "directory contains no structure files")
    for name, reason in BAD_FILES.items():
        sid, got = by_name[name]
        assert sid == name.rsplit(".", 1)[0]
        assert got.startswith(reason), (name, got)
    # the undecodable names are printed with an escape, never crash the output
    assert f"failed: {corpus}/empty\\xfe.cif: file is empty" in failed_lines(r.stderr)
    # one line per failure: nothing of a reason leaks onto other lines
    for name in BAD_FILES:
        assert sum(name in line for line in r.stderr.splitlines()) == 1


def test_two_workers_store_the_same_as_one(tmp_path: Path) -> None:
    corpus = make_corpus(tmp_path)
    stores = []
    for workers in (1, 2):
        out = tmp_path / f"w{workers}.h5"
        r = featurize(str(corpus), "-o", str(out), workers=workers)
        assert r.exit_code == 0, r.stderr
        with GraphStore(out) as store:
            stores.append((store.ids, store.n_edges().tolist(), store.failures()))
    assert stores[0] == stores[1]


def test_nothing_stored_exits_non_zero(tmp_path: Path) -> None:
    corpus = make_corpus(tmp_path)
    for good in ("1000041.cif", "9011998.cif", "POSCAR-JVASP-90856.vasp"):
        (corpus / good).unlink()
    os.remove(os.path.join(os.fsencode(str(corpus)), b"bad\xff.cif"))
    out = tmp_path / "g.h5"
    r = featurize(str(corpus), "-o", str(out))
    assert r.exit_code == 1
    assert "error: no structure could be stored" in r.stderr
    assert "Traceback" not in r.stderr
    failures = check_failures_everywhere(out, r.stderr)
    assert {os.path.basename(s) for s, _, _ in failures} == set(BAD_FILES)
    with GraphStore(out) as store:
        assert len(store) == 0


def test_directory_without_structures(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    (empty / "deeper").mkdir(parents=True)
    (empty / "deeper" / "atom_init.json").write_text("{}")  # JSON in a directory is not read
    out = tmp_path / "g.h5"
    r = featurize(str(empty), "-o", str(out))
    assert r.exit_code == 1
    assert failed_lines(r.stderr) == [f"failed: {empty}: directory contains no structure files"]
    assert read_csv(tmp_path / "g.failed.csv") == [(str(empty), "", "directory contains no structure files")]


@pytest.mark.parametrize("case", ["missing-dir", "is-a-dir"])
def test_unwritable_output(tmp_path: Path, case: str) -> None:
    out = tmp_path / "no" / "such" / "dir" / "g.h5" if case == "missing-dir" else tmp_path
    r = featurize(str(poscar_path()), "-o", str(out))
    assert r.exit_code == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {out}: cannot write output")
    assert not (tmp_path / "no").exists()


def test_read_only_output_directory(tmp_path: Path) -> None:
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        pytest.skip("running as root: chmod cannot make a directory unwritable")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        try:
            (ro / "probe").write_text("x")
        except PermissionError:
            pass
        else:
            pytest.skip("this file system ignores directory permissions")
        r = featurize(str(poscar_path()), "-o", str(ro / "g.h5"))
        assert r.exit_code == 2
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {ro / 'g.h5'}: cannot write output")
        assert os.listdir(ro) == []
    finally:
        ro.chmod(0o755)


# --------------------------------------------------------------------------------------
# options: --disorder, ids, --labels
# --------------------------------------------------------------------------------------


def test_disorder_majority(tmp_path: Path) -> None:
    path = tmp_path / "partial.cif"
    path.write_text(edited_nacl(NA_SITE, NA_SITE.replace(" 1. 0 d", " 0.5 0 d")))
    r = featurize(str(path), "-o", str(tmp_path / "fail.h5"))
    assert r.exit_code == 1 and "disordered site" in r.stderr
    r = featurize(str(path), "-o", str(tmp_path / "maj.h5"), "--disorder", "majority")
    assert r.exit_code == 0, r.stderr
    with GraphStore(tmp_path / "maj.h5") as store:
        assert store.ids == ["partial"] and store.failures() == []
        assert sorted(store[0].numbers.tolist()) == [11] * 4 + [17] * 4


def test_duplicate_ids(tmp_path: Path) -> None:
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        shutil.copy(shared_path("samples", "cgcnn_cifs", "1000041.cif"), tmp_path / d / "x.cif")
    out = tmp_path / "g.h5"
    r = featurize(str(tmp_path / "a"), str(tmp_path / "b"), "-o", str(out))
    assert r.exit_code == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: duplicate structure id 'x'")
    assert str(tmp_path / "a" / "x.cif") in lines[0] and str(tmp_path / "b" / "x.cif") in lines[0]
    assert not out.exists()

    r = featurize(str(tmp_path / "a"), str(tmp_path / "b"), "-o", str(out), "--suffix-duplicates")
    assert r.exit_code == 0, r.stderr
    with GraphStore(out) as store:
        assert store.ids == ["x", "x-2"]

    r = featurize(str(tmp_path / "*" / "x.cif"), "-o", str(tmp_path / "p.h5"), "--id-from", "parent")
    assert r.exit_code == 0, r.stderr
    with GraphStore(tmp_path / "p.h5") as store:
        assert store.ids == ["a", "b"]


def test_id_from_path_with_explicit_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        shutil.copy(poscar_path(), tmp_path / d / "POSCAR")
    monkeypatch.chdir(tmp_path)
    r = featurize("a/POSCAR", "b/POSCAR", "-o", "g.h5", "--id-from", "path")
    assert r.exit_code == 0, r.stderr
    with GraphStore(tmp_path / "g.h5") as store:
        assert store.ids == ["a/POSCAR", "b/POSCAR"]


def test_labels_headerless_alignn_id_prop(tmp_path: Path) -> None:
    """ALIGNN's id_prop.csv names files (``POSCAR-JVASP-1.vasp``); structures are matched by stem."""
    id_prop = shared_path("samples", "alignn_poscars", "id_prop.csv")
    with open(id_prop, newline="") as fh:
        labels = {row[0].removesuffix(".vasp"): float(row[1]) for row in csv.reader(fh)}
    folder = id_prop.parent
    all_ids = sorted(p.stem for p in folder.glob("POSCAR-*.vasp"))
    labelled = [i for i in all_ids if i in labels and labels[i] != 0][:4]
    unlabelled = [i for i in all_ids if i not in labels][:2]
    assert len(labelled) == 4 and len(unlabelled) == 2
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in labelled + unlabelled:
        shutil.copy(folder / f"{i}.vasp", inputs)
    out = tmp_path / "g.h5"
    r = featurize(str(inputs), "-o", str(out), "--labels", str(id_prop))
    assert r.exit_code == 0, r.stderr
    with GraphStore(out) as store:
        assert store.target_names == ["target"] and store.target_units == [""]
        targets = store.targets()
        assert targets.shape == (6, 1)
        for i in labelled:
            assert targets[store.index_of(i), 0] == pytest.approx(labels[i])
        for i in unlabelled:
            assert np.isnan(targets[store.index_of(i), 0])


def test_labels_with_header_and_units(tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("1000041.cif", "9011998.cif", "1101051.cif"):
        shutil.copy(shared_path("samples", "cgcnn_cifs", name), inputs)
    csv_path = tmp_path / "props.csv"
    csv_path.write_text(
        "id,bandgap (eV),e_form [eV/atom]\n"
        "1000041,5.0,-2.1\n"
        "9011998,,0.0\n"
        "not-a-structure,1.0,1.0\n"
    )
    out = tmp_path / "g.h5"
    r = featurize(str(inputs), "-o", str(out), "--labels", str(csv_path))
    assert r.exit_code == 0, r.stderr
    with GraphStore(out) as store:
        assert store.target_names == ["bandgap", "e_form"]
        assert store.target_units == ["eV", "eV/atom"]
        t = {i: store.targets()[store.index_of(i)] for i in store.ids}
    np.testing.assert_array_equal(t["1000041"], [5.0, -2.1])
    assert np.isnan(t["9011998"][0]) and t["9011998"][1] == 0.0
    assert np.isnan(t["1101051"]).all()


def test_bad_labels_file_is_a_user_error(tmp_path: Path) -> None:
    bad = tmp_path / "labels.csv"
    bad.write_text("id,gap (eV)\n1000041,abc\n")
    r = featurize(str(shared_path("samples", "cgcnn_cifs", "1000041.cif")), "-o", str(tmp_path / "g.h5"), "--labels", str(bad))
    assert r.exit_code == 2
    assert r.stderr.strip().splitlines() == [f"error: {bad}:2: not a number: 'abc'"]


# --------------------------------------------------------------------------------------
# the real console script (exit codes as a shell sees them)
# --------------------------------------------------------------------------------------


def run_script(*args: str | bytes, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [console_script(), "featurize", *args, "--workers", "1"],
        cwd=cwd, capture_output=True, timeout=300, check=False,
    )


def test_console_script_exit_codes(tmp_path: Path) -> None:
    corpus = make_corpus(tmp_path)
    undecodable = os.path.join(os.fsencode(str(corpus)), b"bad\xff.cif")

    # some good, some bad (and an undecodable name given directly on the command line): 0
    p = run_script(str(corpus / "empty.cif"), str(corpus / "1000041.cif"), undecodable, "-o", "mixed.h5", cwd=tmp_path)
    err = p.stderr.decode("utf-8")
    assert p.returncode == 0, err
    assert "Traceback" not in err
    assert failed_lines(err) == [f"failed: {corpus}/empty.cif: file is empty"]
    with GraphStore(tmp_path / "mixed.h5") as store:
        assert store.ids == ["1000041", "bad\\xff"]

    # nothing stored: 1
    p = run_script(str(corpus / "empty.cif"), str(corpus / "truncated.cif"), "-o", "bad.h5", cwd=tmp_path)
    err = p.stderr.decode("utf-8")
    assert p.returncode == 1, err
    assert "error: no structure could be stored" in err and "Traceback" not in err
    assert len(failed_lines(err)) == 2

    # output cannot be written: 2, one line
    p = run_script(str(corpus / "1000041.cif"), "-o", "missing/dir/out.h5", cwd=tmp_path)
    err = p.stderr.decode("utf-8")
    assert p.returncode == 2
    assert err.strip().splitlines() == [
        f"error: missing/dir/out.h5: cannot write output: directory {tmp_path}/missing/dir does not exist"
    ]


# --------------------------------------------------------------------------------------
# file names and ids are printed verbatim (never parsed as rich markup), on one line
# --------------------------------------------------------------------------------------


def test_failure_lines_show_brackets_verbatim(tmp_path: Path) -> None:
    """A file named ``[red]x.cif`` and lowercase ids such as ``mp-149`` are printed as they are."""
    import json

    d = tmp_path / "in"
    d.mkdir()
    (d / "[red]x.cif").write_bytes(b"")
    shutil.copy(shared_path("samples", "cgcnn_cifs", "1000041.cif"), d)
    entry = {"jid": "mp-149", "atoms": {"lattice_mat": np.eye(3).tolist(), "coords": [[0, 0, 0]], "elements": ["Qq"], "cartesian": False}}
    (tmp_path / "list.json").write_text(json.dumps([entry, entry | {"jid": "mp-150"}]))
    r = featurize(str(d), str(tmp_path / "list.json"), "-o", str(tmp_path / "g.h5"))
    assert r.exit_code == 0
    lines = failed_lines(r.stderr)
    assert f"failed: {d}/[red]x.cif: file is empty" in lines
    assert f"failed: {tmp_path}/list.json#0 [mp-149]: unknown element symbol 'Qq'" in lines


@pytest.mark.parametrize("where", ["input", "missing-output-dir", "output"])
def test_closing_tag_in_a_path_does_not_crash(tmp_path: Path, where: str) -> None:
    odd = tmp_path / "a["
    odd.mkdir()
    good = shared_path("samples", "cgcnn_cifs", "1000041.cif")
    if where == "input":  # failure line: "failed: .../a[/b].cif: file is empty"
        (odd / "b].cif").write_bytes(b"")
        r = featurize(str(odd), str(good), "-o", str(tmp_path / "g.h5"))
        assert r.exit_code == 0, repr(r.exception)
        assert f"failed: {odd}/b].cif: file is empty" in failed_lines(r.stderr)
    elif where == "missing-output-dir":  # error line: "error: .../a[/x]/g.h5: cannot write output..."
        r = featurize(str(good), "-o", str(odd / "x]" / "g.h5"))
        assert r.exit_code == 2, repr(r.exception)
        assert r.stderr.startswith(f"error: {odd}/x]/g.h5: cannot write output")
    else:  # summary title: "recinet featurize → .../a[/x].h5"
        r = featurize(str(good), "-o", str(odd / "x].h5"))
        assert r.exit_code == 0, repr(r.exception)


def test_nothing_stored_error_is_one_line(tmp_path: Path) -> None:
    deep = tmp_path.joinpath(*(["d" * 200] * 5))
    deep.mkdir(parents=True)
    empty = tmp_path / "empty.cif"
    empty.write_bytes(b"")
    r = featurize(str(empty), "-o", str(deep / "g.h5"))
    assert r.exit_code == 1
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: no structure could be stored (see {deep / 'g.failed.csv'})"]


def test_failure_reasons_name_the_file_for_each_kind(tmp_path: Path) -> None:
    """Every failure line names its file; reasons are short and single-line."""
    corpus = make_corpus(tmp_path)
    r = featurize(str(corpus), "-o", str(tmp_path / "g.h5"))
    assert r.exit_code == 0
    for line in failed_lines(r.stderr):
        m = re.fullmatch(r"failed: (\S+?\.(?:cif|vasp)): (.+)", line)
        assert m, line
        assert m[1].startswith(str(corpus)) and len(m[2]) <= 240
