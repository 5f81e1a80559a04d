"""Rebuild ``src/recinet_example/data/jarvis2d_sample.jsonl`` from the JARVIS-DFT 2D file.

The sample is 100 real JARVIS-DFT 2D monolayers (dft_2d, OptB88vdW) with three labels each:
exfoliation energy (meV/atom), OptB88vdW band gap (eV) and formation energy (eV/atom). It
is drawn reproducibly from ``dft_2d_1076.json.zip`` (the 1,076 monolayers of the JARVIS-DFT
2D release, NIST data, see ``LICENSE-jarvis.rst``):

1. keep the entries with all three labels (JARVIS marks a missing label with -99999) and at
   most 8 atoms per cell (so the example trains in seconds);
2. take 100 of them, ``np.random.RandomState(123)`` permutation of the sorted JARVIS ids;
3. assign each an 80/10/10 train/val/test split with a second permutation (same seed).

Usage (from the repository root)::

    python plugins/recinet-example/tools/make_sample.py ../shared/data/jarvis/dft_2d_1076.json.zip
"""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

#: (name in the sample, key in the JARVIS file)
LABELS = (
    ("exfoliation_energy", "exfoliation_energy"),
    ("bandgap_opt", "optb88vdw_bandgap"),
    ("formation_energy", "formation_energy_peratom"),
)
N_SAMPLE = 100
MAX_ATOMS = 8
SEED = 123
OUT = Path(__file__).resolve().parents[1] / "src" / "recinet_example" / "data" / "jarvis2d_sample.jsonl"


def _label(entry: dict[str, Any], key: str) -> float | None:
    value = entry.get(key)
    if isinstance(value, (int, float)) and value != -99999:
        return float(value)
    return None


def main(source: str) -> None:
    with zipfile.ZipFile(source) as zf:
        entries: list[dict[str, Any]] = json.loads(zf.read(zf.namelist()[0]))
    eligible = {
        e["jid"]: e
        for e in entries
        if all(_label(e, key) is not None for _, key in LABELS) and len(e["atoms"]["elements"]) <= MAX_ATOMS
    }
    rng = np.random.RandomState(SEED)
    ids = sorted(eligible)
    chosen = sorted(ids[i] for i in rng.permutation(len(ids))[:N_SAMPLE])
    order = rng.permutation(N_SAMPLE)
    n_train, n_val = int(0.8 * N_SAMPLE), int(0.1 * N_SAMPLE)
    split = {}
    for rank, i in enumerate(order):
        split[chosen[i]] = "train" if rank < n_train else "val" if rank < n_train + n_val else "test"
    lines = []
    for jid in chosen:
        e = eligible[jid]
        atoms = e["atoms"]
        assert atoms["cartesian"], jid
        row: dict[str, Any] = {
            "id": jid,
            "formula": e["attributes"]["chemical_formula_descriptive"],
            "lattice": atoms["lattice_mat"],
            "elements": atoms["elements"],
            "cart": atoms["coords"],
        }
        row.update({name: _label(e, key) for name, key in LABELS})
        row["split"] = split[jid]
        lines.append(json.dumps(row, separators=(",", ":")))
    OUT.write_text("\n".join(lines) + "\n")
    print(f"wrote {len(lines)} entries to {OUT}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/jarvis/dft_2d_1076.json.zip")
