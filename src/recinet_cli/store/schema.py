"""The HDF5 graph store layout (schema version 1).

Ragged arrays are concatenated with offset pointers; there is no group per structure.

Root attributes:
    ``schema`` = ``"recinet-graphs"``, ``schema_version`` (int), ``recinet_version``,
    ``featurizer`` (JSON of the graph parameters), ``featurizer_hash`` (hex digest of that
    JSON), ``target_names`` and ``target_units`` (JSON lists), ``merged_runs`` (JSON list of the
    run tokens merged into the file, so an interrupted run is never merged twice).

Datasets (S structures, A atoms, E directed edges, T targets, F failures, I input files):

=========================  ===========  =======  =========================================
path                       shape        dtype    meaning
=========================  ===========  =======  =========================================
``structures/id``          [S]          str      structure id (unique)
``structures/source``      [S]          str      file (``#index`` for multi-structure files)
``structures/formula``     [S]          str      cell formula
``structures/lattice``     [S, 3, 3]    f8       lattice vectors as rows, Å
``structures/atom_ptr``    [S + 1]      i8       atoms of s are ``atom_ptr[s]:atom_ptr[s+1]``
``structures/edge_ptr``    [S + 1]      i8       edges of s are ``edge_ptr[s]:edge_ptr[s+1]``
``structures/targets``     [S, T]       f8       labels in ``target_units``; NaN = missing
``structures/split``       [S]          str      optional: ``train``, ``val``, ``test`` or ``""``
                                                 (no split); only in files featurized with
                                                 a labels CSV that has a ``split`` column
``atoms/numbers``          [A]          u1       atomic number Z
``atoms/frac``             [A, 3]       f8       fractional coordinates in [0, 1)
``edges/index``            [E, 2]       i4       (source, target), local to the structure
``edges/image``            [E, 3]       i2       lattice image n of the target; the edge
                                                 vector is ``(frac[t] + n - frac[s]) @ L``
``failed/source``          [F]          str      input that failed
``failed/id``              [F]          str      its id (may be empty)
``failed/reason``          [F]          str      one-line reason
``inputs/source``          [I]          str      input files already processed (resume)
=========================  ===========  =======  =========================================

``structures/split`` is optional: files without it (all files written before it existed)
have no split column, and the schema version is unchanged because readers that do not know
the dataset simply ignore it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import numpy as np

SCHEMA = "recinet-graphs"
SCHEMA_VERSION = 1

#: (path, trailing shape, dtype) of every growable dataset, minus ``structures/targets``
#: (whose width depends on the file) and the pointer arrays (which have one extra row).
STRING_DATASETS = (
    "structures/id",
    "structures/source",
    "structures/formula",
    "failed/source",
    "failed/id",
    "failed/reason",
    "inputs/source",
)
ARRAY_DATASETS: dict[str, tuple[tuple[int, ...], Any]] = {
    "structures/lattice": ((3, 3), np.float64),
    "atoms/numbers": ((), np.uint8),
    "atoms/frac": ((3,), np.float64),
    "edges/index": ((2,), np.int32),
    "edges/image": ((3,), np.int16),
}
POINTER_DATASETS = ("structures/atom_ptr", "structures/edge_ptr")
#: Optional per-structure split assignment (``train``/``val``/``test``/``""``).
SPLIT_DATASET = "structures/split"
SPLIT_VALUES = ("train", "val", "test")

#: Rows per chunk; per-edge arrays get larger chunks.
CHUNK_ROWS = {"structures": 1024, "atoms": 16384, "edges": 65536, "failed": 1024, "inputs": 1024}


def featurizer_hash(params: Mapping[str, Any]) -> str:
    """A short, stable digest of the featurizer parameters (canonical JSON, SHA-256)."""
    canonical = json.dumps(dict(params), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
