"""The standalone deployment script ``docs/examples/recinet_standalone.py`` reproduces recinet.

The script is what users copy next to an exported model when they have only NumPy and PyTorch
(or ONNX Runtime): its POSCAR reader, periodic graph, k-vectors and model inputs must equal
recinet's exactly, and its predictions must equal the eager model's. Everything here runs on
real structures: the 70 JARVIS POSCARs under ``examples/structures`` and the 1,743 real JARVIS
entries of the shared data.
"""

from __future__ import annotations

import ast
import csv
import importlib.util
import io
import json
import subprocess
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from recinet_cli.artifact import INPUT_SPECS, read_artifact_metadata
from recinet_cli.bundle import load_bundle
from recinet_cli.cli.app import app
from recinet_cli.errors import StructureError
from recinet_cli.inference import bundle_params, collate, featurize_crystals, model_inputs
from recinet_cli.model.kvectors import kvector_set
from recinet_cli.model.recinet import INPUT_NAMES
from recinet_cli.structures.crystal import Crystal
from recinet_cli.structures.graph import GraphParams, build_graph
from recinet_cli.structures.readers import read_structures
from tests.bundles import make_bundle
from tests.conftest import ROOT, jarvis_cell

SCRIPT = ROOT / "docs" / "examples" / "recinet_standalone.py"
POSCARS = sorted((ROOT / "examples" / "structures" / "jarvis_poscars").glob("*.vasp"))
TARGETS = ("bandgap_opt", "formation_energy")
#: What a deployment machine does not have; the subprocess runs with these made unimportable.
BLOCKED = ("recinet_cli", "pymatgen", "ase", "h5py", "torch_geometric", "jarvis", "spglib", "tests")
#: ModelConfig overrides of the three reciprocal variants.
VARIANTS = {
    "sphere": None,
    "box": {"kset": "box", "box": [1, 1, 1]},
    "no-reciprocal": {"reciprocal": False},
}


# ---------------------------------------------------------------------------------------------
# fixtures and helpers


@pytest.fixture(scope="module")
def rs() -> ModuleType:
    """The script, imported from its path (it is not part of the recinet package)."""
    spec = importlib.util.spec_from_file_location("recinet_standalone", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def crystals() -> list[Crystal]:
    """The 70 real JARVIS POSCARs, read by recinet."""
    assert len(POSCARS) == 70
    found, failures = read_structures(POSCARS)
    assert not failures
    return found


def as_tuple(c: Crystal) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return c.lattice, c.frac, c.numbers


def graph_args(params: GraphParams) -> dict[str, Any]:
    return {"cutoff": params.cutoff, "max_neighbors": params.max_neighbors,
            "tie_tol": params.tie_tol, "min_dist": params.min_dist}


def assert_same_graph(rs: ModuleType, lattice: np.ndarray, frac: np.ndarray, params: GraphParams, what: str) -> None:
    """The script's graph equals recinet's, or both refuse the structure."""
    try:
        want = build_graph(lattice, frac, params)
    except StructureError:
        with pytest.raises(rs.StandaloneError, match="overlap"):
            rs.build_graph(lattice, frac, **graph_args(params))
        return
    src, dst, image = rs.build_graph(lattice, frac, **graph_args(params))
    assert src.dtype == dst.dtype == image.dtype == np.int64
    assert len(src) == want.n_edges, f"{what}: {len(src)} edges, recinet {want.n_edges}"
    assert np.array_equal(src, want.edge_src), what
    assert np.array_equal(dst, want.edge_dst), what
    assert np.array_equal(image, want.edge_image), what


def export_metadata(info: dict[str, Any], config: Any) -> dict[str, Any]:
    """The parts of ``recinet export``'s metadata that the inputs depend on."""
    return {
        "format": "recinet-export", "format_version": 1,
        "inputs": [{"name": n, "dtype": INPUT_SPECS[n][0], "shape": INPUT_SPECS[n][1]} for n in INPUT_NAMES],
        "featurizer": info["featurizer"],
        "reciprocal": {"enabled": config.reciprocal, "kset": config.kset, "gmax": config.gmax,
                       "box": list(config.box)},
    }


def recinet_inputs(model: Any, info: dict[str, Any], found: Sequence[Crystal]) -> dict[str, torch.Tensor]:
    """What recinet feeds the model (``recinet predict`` / the export parity check)."""
    return model_inputs(model, collate(featurize_crystals(found, bundle_params(info))))


def assert_same_inputs(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    """Tensor by tensor: the contract dtype, recinet's shape and recinet's values, bit for bit."""
    assert list(got) == list(INPUT_NAMES)
    for name in INPUT_NAMES:
        g, w = got[name], want[name]
        assert str(g.dtype) == f"torch.{INPUT_SPECS[name][0]}", name
        assert g.shape == w.shape, f"{name}: {tuple(g.shape)} vs recinet {tuple(w.shape)}"
        # recinet's own edge_index is int32 before `recinet export` casts it; values must agree
        assert torch.equal(g, w.to(g.dtype)), f"{name}: max diff {(g.double() - w.double()).abs().max()}"


# ---------------------------------------------------------------------------------------------
# the script itself


def test_script_imports_nothing_but_numpy_torch_onnx() -> None:
    allowed = set(sys.stdlib_module_names) | {"numpy", "torch", "onnx", "onnxruntime"}
    imported = set()
    for node in ast.walk(ast.parse(SCRIPT.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            imported.add(node.module.split(".")[0])
    assert imported <= allowed, sorted(imported - allowed)
    assert {"numpy", "torch", "onnxruntime"} <= imported


def test_element_table_is_z_1_to_100(rs: ModuleType) -> None:
    from pymatgen.core import Element

    assert len(rs.ELEMENTS) == 100
    assert [Element.from_Z(z).symbol for z in range(1, 101)] == list(rs.ELEMENTS)


# ---------------------------------------------------------------------------------------------
# POSCAR reader


def test_poscar_reader_matches_recinet(rs: ModuleType, crystals: list[Crystal]) -> None:
    for path, c in zip(POSCARS, crystals, strict=True):
        lattice, frac, numbers = rs.read_poscar(str(path))
        assert rs.structure_id(str(path)) == c.id
        assert np.array_equal(lattice, c.lattice), path.name
        assert np.array_equal(rs.wrap_fractional(frac), c.frac), path.name
        assert np.array_equal(numbers, c.numbers), path.name


def species_runs(rs: ModuleType, numbers: np.ndarray) -> tuple[list[str], list[int]]:
    """The species and counts lines of a POSCAR listing ``numbers`` in order."""
    starts = np.flatnonzero(np.diff(numbers, prepend=-1))
    counts = np.diff(np.append(starts, len(numbers)))
    return [rs.ELEMENTS[int(numbers[i]) - 1] for i in starts], [int(n) for n in counts]


def _poscar(lattice: np.ndarray, symbols: Sequence[str], counts: Sequence[int], coords: np.ndarray,
            *, scale: str = "1.0", mode: str = "Direct", selective: bool = False) -> str:
    rows = ["real structure  # a comment", scale]
    rows += [" ".join(repr(float(x)) for x in v) for v in lattice]
    rows += [" ".join(symbols), " ".join(map(str, counts))]
    rows += ["Selective dynamics"] if selective else []
    rows += [mode]
    rows += [" ".join(repr(float(x)) for x in r) + (" T T F" if selective else "") for r in coords]
    return "\n".join(rows) + "\n"


def test_poscar_variants_match_recinet(rs: ModuleType, crystals: list[Crystal], tmp_path: Path) -> None:
    """Cartesian coordinates, a scale factor, a volume (negative scale), selective dynamics,
    POTCAR-style species names and comments, each written from real POSCARs and read by both."""
    for path, c in list(zip(POSCARS, crystals))[::7]:
        symbols, counts = species_runs(rs, c.numbers)
        volume = abs(np.linalg.det(c.lattice))
        variants = {
            "cart": _poscar(c.lattice, symbols, counts, c.frac @ c.lattice, mode="Cartesian"),
            "scale": _poscar(c.lattice / 2, symbols, counts, c.frac @ c.lattice / 2, scale="2.0", mode="cartesian"),
            "volume": _poscar(c.lattice * 1.5, symbols, counts, c.frac, scale=repr(-float(volume))),
            "selective": _poscar(c.lattice, symbols, counts, c.frac, selective=True),
            "potcar": _poscar(c.lattice, [f"{s}_pv/1a2b3c" for s in symbols], counts, c.frac),
        }
        for name, text in variants.items():
            file = tmp_path / f"{path.stem}-{name}.vasp"
            file.write_text(text)
            (want,), failures = read_structures([file])
            assert not failures
            lattice, frac, numbers = rs.read_poscar(str(file))
            assert np.array_equal(lattice, want.lattice), (file.name, lattice - want.lattice)
            assert np.array_equal(rs.wrap_fractional(frac), want.frac), file.name
            assert np.array_equal(numbers, want.numbers), file.name
            assert rs.read_poscar(text, is_text=True)[0].tolist() == lattice.tolist()


def test_poscar_negative_scale_with_cartesian_coordinates(rs: ModuleType, crystals: list[Crystal]) -> None:
    """VASP scales Cartesian coordinates by the factor the volume implies (pymatgen, and so
    recinet, multiplies them by the negative number itself); the script follows VASP."""
    c = crystals[0]
    symbols, counts = species_runs(rs, c.numbers)
    volume = abs(np.linalg.det(c.lattice))
    text = _poscar(c.lattice * 0.5, symbols, counts, c.frac @ c.lattice * 0.5, scale=repr(-float(volume)), mode="Cartesian")
    lattice, frac, _ = rs.read_poscar(text, is_text=True)
    np.testing.assert_allclose(lattice, c.lattice, rtol=1e-13, atol=1e-12)
    np.testing.assert_allclose(rs.wrap_fractional(frac), c.frac, atol=1e-12)


def test_poscar_errors(rs: ModuleType) -> None:
    text = POSCARS[0].read_text()
    lines = text.splitlines()
    vasp4 = "\n".join(lines[:5] + lines[6:]) + "\n"  # no species line
    with pytest.raises(rs.StandaloneError, match="no species line"):
        rs.read_poscar(vasp4, is_text=True)
    unknown = "\n".join(lines[:5] + ["Xx " * len(lines[5].split())] + lines[6:]) + "\n"
    with pytest.raises(rs.StandaloneError, match="unknown element symbol 'Xx'"):
        rs.read_poscar(unknown, is_text=True)
    with pytest.raises(rs.StandaloneError, match="cannot parse POSCAR"):
        rs.read_poscar("\n".join(lines[:9]) + "\n", is_text=True)  # coordinates cut off


# ---------------------------------------------------------------------------------------------
# the graph


def test_graph_parity_on_the_70_poscars(rs: ModuleType, crystals: list[Crystal]) -> None:
    for c in crystals:
        assert_same_graph(rs, c.lattice, c.frac, GraphParams(), c.id)


def test_graph_parity_on_jarvis_entries(rs: ModuleType, jarvis_entries: list[dict[str, Any]]) -> None:
    """All 1,743 real JARVIS structures with the default featurizer (about a second)."""
    assert len(jarvis_entries) == 1743
    for entry in jarvis_entries:
        lattice, frac, _ = jarvis_cell(entry)
        assert_same_graph(rs, lattice, frac, GraphParams(), entry["jid"])


@pytest.mark.parametrize(
    "params",
    [GraphParams(max_neighbors=8), GraphParams(tie_tol=1e-4), GraphParams(cutoff=8.0, max_neighbors=12),
     GraphParams(max_neighbors=1)],
    ids=["k8", "tie1e-4", "cutoff8-k12", "k1"],
)
def test_graph_parity_other_featurizers(
    rs: ModuleType, crystals: list[Crystal], jarvis_entries: list[dict[str, Any]], params: GraphParams
) -> None:
    for c in crystals:
        assert_same_graph(rs, c.lattice, c.frac, params, c.id)
    for entry in jarvis_entries[:: len(jarvis_entries) // 200]:
        lattice, frac, _ = jarvis_cell(entry)
        assert_same_graph(rs, lattice, frac, params, entry["jid"])


def test_overlapping_atoms_are_refused(rs: ModuleType, crystals: list[Crystal]) -> None:
    c = crystals[0]
    shifted = c.frac[0] + np.linalg.solve(c.lattice.T, np.array([0.05, 0.0, 0.0]))
    frac = np.vstack((c.frac, rs.wrap_fractional(shifted[None])))
    with pytest.raises(StructureError, match=f"overlapping atoms 0 and {c.n_atoms}"):
        build_graph(c.lattice, frac)
    with pytest.raises(rs.StandaloneError, match=f"overlapping atoms 0 and {c.n_atoms}: 0.050"):
        rs.build_graph(c.lattice, frac)
    with pytest.raises(rs.StandaloneError, match="crystal 1: overlapping atoms"):
        rs.build_inputs_numpy([as_tuple(c), (c.lattice, frac, np.append(c.numbers, 1))], {})


# ---------------------------------------------------------------------------------------------
# model inputs


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Small seeded ReciNet bundles: sphere k-set, box k-set, no reciprocal stream."""
    root = tmp_path_factory.mktemp("bundles")
    return {name: make_bundle(root / f"{name}.safetensors", TARGETS, model=model) for name, model in VARIANTS.items()}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_inputs_match_recinet(rs: ModuleType, crystals: list[Crystal], bundles: dict[str, Path], variant: str) -> None:
    model, info = load_bundle(bundles[variant])
    meta = export_metadata(info, model.config)
    want = recinet_inputs(model, info, crystals)
    got = rs.build_inputs([as_tuple(c) for c in crystals], meta)
    assert_same_inputs(got, want)
    if variant == "no-reciprocal":
        assert got["k_int"].shape == (0, 3) and got["pair_k"].shape == (0,)
    else:
        assert len(got["k_norm"]) > 0
    with torch.no_grad():
        assert torch.equal(model(**got), model(**want))


def test_inputs_match_recinet_on_jarvis_entries(
    rs: ModuleType, bundles: dict[str, Path], jarvis_entries: list[dict[str, Any]]
) -> None:
    """~200 more real structures in one batch, unwrapped coordinates given to the script."""
    model, info = load_bundle(bundles["sphere"])
    picked = jarvis_entries[3 :: len(jarvis_entries) // 200]
    found, raw = [], []
    for entry in picked:
        a = entry["atoms"]
        lattice = np.asarray(a["lattice_mat"], dtype=np.float64)
        coords = np.asarray(a["coords"], dtype=np.float64)
        frac = np.linalg.solve(lattice.T, coords.T).T if a["cartesian"] else coords
        found.append(Crystal.create(entry["jid"], "jarvis", lattice, frac, rs.atomic_numbers_of(a["elements"])))
        raw.append((lattice, frac, a["elements"]))  # symbols, coordinates as stored
    got = rs.build_inputs(raw, export_metadata(info, model.config))
    assert_same_inputs(got, recinet_inputs(model, info, found))


@pytest.mark.parametrize("kset", ["sphere", "box"])
def test_kvectors_match_recinet_on_all_jarvis_lattices(
    rs: ModuleType, jarvis_entries: list[dict[str, Any]], kset: str
) -> None:
    lattices = np.stack([np.asarray(e["atoms"]["lattice_mat"], dtype=np.float64) for e in jarvis_entries])
    lat32 = torch.tensor(lattices, dtype=torch.float32)
    n, norm, crystal, slot = kvector_set(lat32, kset, 3.0, (2, 1, 3))
    counts = torch.bincount(crystal, minlength=len(lattices)).tolist()
    for m, (kn, kg, ks) in enumerate(zip(n.split(counts), norm.split(counts), slot.split(counts), strict=True)):
        got_n, got_norm, got_slot = rs.kvectors(lat32[m].double().numpy(), kset, 3.0, (2, 1, 3))
        assert np.array_equal(got_n, kn.numpy()), jarvis_entries[m]["jid"]
        assert np.array_equal(got_norm.astype(np.float32), kg.float().numpy()), jarvis_entries[m]["jid"]
        assert np.array_equal(got_slot, ks.numpy())


# ---------------------------------------------------------------------------------------------
# metadata


def test_metadata_is_checked(rs: ModuleType, tmp_path: Path) -> None:
    def archive(meta: dict[str, Any]) -> Path:
        path = tmp_path / f"m{len(list(tmp_path.iterdir()))}.pt"
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("archive/extra/recinet.json", json.dumps(meta))
        return path

    assert rs.read_metadata(str(archive({"format": "recinet-export", "format_version": 1})))["format_version"] == 1
    with pytest.raises(rs.StandaloneError, match="format_version 2 is newer"):
        rs.read_metadata(str(archive({"format": "recinet-export", "format_version": 2})))
    with pytest.raises(rs.StandaloneError, match="not a recinet export"):
        rs.read_metadata(str(archive({"format": "something-else"})))
    empty = tmp_path / "empty.pt"
    with zipfile.ZipFile(empty, "w") as zf:
        zf.writestr("archive/data.pkl", b"")
    with pytest.raises(rs.StandaloneError, match=r"no recinet\.json"):
        rs.read_metadata(str(empty))
    with pytest.raises(rs.StandaloneError, match="not supported"):
        rs.build_inputs_numpy([], {"featurizer": {"algorithm": "voronoi/v9"}})


# ---------------------------------------------------------------------------------------------
# end to end: `recinet export`, then the script alone


@pytest.fixture(scope="module")
def eager(bundles: dict[str, Path], crystals: list[Crystal]) -> np.ndarray:
    """Eager predictions of the sphere bundle on the 70 POSCARs, ``[70, 2]``."""
    model, info = load_bundle(bundles["sphere"])
    with torch.no_grad():
        return model(**recinet_inputs(model, info, crystals)).numpy()


def export(bundle: Path, fmt: str, out: Path) -> Path:
    result = CliRunner().invoke(app, ["export", str(bundle), "--format", fmt, "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert read_artifact_metadata(out)["export_format"] == fmt
    return out


def run_script(args: Sequence[str], cwd: Path, block_torch: bool = False) -> subprocess.CompletedProcess[str]:
    """The script as a user runs it, with recinet, pymatgen & co. unimportable (and torch too
    for ONNX), from a directory outside the repository."""
    blocked = BLOCKED + (("torch",) if block_torch else ())
    code = (
        "import runpy, sys\n"
        f"for name in {blocked!r}:\n"
        "    sys.modules[name] = None\n"
        f"sys.argv = {[str(SCRIPT), *args]!r}\n"
        f"runpy.run_path({str(SCRIPT)!r}, run_name='__main__')\n"
    )
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=300)


def check_csv(text: str, eager: np.ndarray, crystals: list[Crystal]) -> None:
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["id", "bandgap_opt (eV)", "formation_energy (eV/atom)"]
    assert [r[0] for r in rows[1:]] == [c.id for c in crystals]
    got = np.array([[float(x) for x in r[1:]] for r in rows[1:]])
    scale = max(1.0, float(np.abs(eager).max()))
    np.testing.assert_allclose(got, eager, rtol=0, atol=1e-5 * scale)


def _e2e(fmt: str, suffix: str, bundles: dict[str, Path], eager: np.ndarray, crystals: list[Crystal],
         tmp_path: Path, rs: ModuleType, block_torch: bool = False) -> None:
    artifact = export(bundles["sphere"], fmt, tmp_path / f"model{suffix}")
    vasp4 = tmp_path / "POSCAR-vasp4.vasp"
    lines = POSCARS[0].read_text().splitlines()
    vasp4.write_text("\n".join(lines[:5] + lines[6:]) + "\n")
    proc = run_script([str(artifact), *map(str, POSCARS), str(vasp4), "--batch-size", "32"], tmp_path, block_torch)
    assert proc.returncode == 1, proc.stderr  # one unreadable file: listed, the rest predicted
    assert "POSCAR-vasp4.vasp" in proc.stderr and "no species line" in proc.stderr
    assert proc.stderr.count("error:") == 1
    check_csv(proc.stdout, eager, crystals)
    # the library API, in this process
    atol = 1e-5 * max(1.0, float(np.abs(eager).max()))
    found = [rs.read_poscar(str(p)) for p in POSCARS]
    np.testing.assert_allclose(rs.predict(str(artifact), found, batch_size=25), eager, rtol=0, atol=atol)
    # repeated runs agree (multi-threaded onnxruntime ScatterND loses updates now and then)
    run, meta = rs.load_model(str(artifact))
    inputs = rs.build_inputs_numpy(found, meta)
    for _ in range(20 if fmt == "onnx" else 2):
        np.testing.assert_allclose(run(inputs), eager, rtol=0, atol=atol)


def test_end_to_end_torchscript(bundles: dict[str, Path], eager: np.ndarray, crystals: list[Crystal],
                                tmp_path: Path, rs: ModuleType) -> None:
    _e2e("torchscript", ".pt", bundles, eager, crystals, tmp_path, rs)


@pytest.mark.slow
def test_end_to_end_torch_export(bundles: dict[str, Path], eager: np.ndarray, crystals: list[Crystal],
                                 tmp_path: Path, rs: ModuleType) -> None:
    _e2e("torch-export", ".pt2", bundles, eager, crystals, tmp_path, rs)


@pytest.mark.slow
def test_end_to_end_onnx_without_torch(bundles: dict[str, Path], eager: np.ndarray, crystals: list[Crystal],
                                       tmp_path: Path, rs: ModuleType) -> None:
    for name in ("onnx", "onnxruntime", "onnxscript"):
        pytest.importorskip(name)
    _e2e("onnx", ".onnx", bundles, eager, crystals, tmp_path, rs, block_torch=True)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["box", "no-reciprocal"])
def test_end_to_end_other_reciprocal_variants(
    bundles: dict[str, Path], crystals: list[Crystal], tmp_path: Path, variant: str
) -> None:
    model, info = load_bundle(bundles[variant])
    with torch.no_grad():
        want = model(**recinet_inputs(model, info, crystals)).numpy()
    artifact = export(bundles[variant], "torchscript", tmp_path / "model.pt")
    out = tmp_path / "pred.csv"
    proc = run_script([str(artifact), *map(str, POSCARS), "-o", str(out)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    check_csv(out.read_text(), want, crystals)
