"""Shared fixtures: paths to the real data in ``../shared/data`` and isolated user dirs."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from recinet_cli.structures.crystal import wrap_fractional

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
TEST_DATA = ROOT / "tests" / "data"


def shared_path(*parts: str) -> Path:
    """A file under ``../shared/data``; the test is skipped (with the reason) when absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not available: {path} (see ../shared/data/README.md)")
    return path


def cod_cif(name: str = "1000041.cif") -> str:
    """Text of one of the real COD CIFs (``1000041.cif`` is rock-salt NaCl, Fm-3m)."""
    return shared_path("samples", "cgcnn_cifs", name).read_text()


def edited_nacl(old: str, new: str) -> str:
    """The real NaCl CIF with one piece of text replaced (to make broken variants)."""
    text = cod_cif()
    assert old in text, "the COD file changed; update the test"
    return text.replace(old, new)


def poscar_path(jid: str = "JVASP-90856") -> Path:
    """One of the 70 real JARVIS POSCAR files."""
    return shared_path("samples", "alignn_poscars", f"POSCAR-{jid}.vasp")


@pytest.fixture(scope="session")
def jarvis_entries() -> list[dict[str, Any]]:
    """The 1,743 real JARVIS dft_3d entries (``jid``, ``atoms``, targets, official splits)."""
    with gzip.open(shared_path("jarvis", "dft_3d_subset_1743.json.gz"), "rt") as fh:
        return json.load(fh)


def jarvis_cell(entry: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(lattice [3,3], wrapped fractional coords [N,3], element symbols) of a JARVIS entry."""
    a = entry["atoms"]
    lattice = np.asarray(a["lattice_mat"], dtype=np.float64)
    coords = np.asarray(a["coords"], dtype=np.float64)
    frac = np.linalg.solve(lattice.T, coords.T).T if a["cartesian"] else coords
    frac = wrap_fractional(frac)
    return lattice, frac, list(a["elements"])
