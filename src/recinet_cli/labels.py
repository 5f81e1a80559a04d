"""Reading target labels from CSV files.

Two layouts are accepted:

* headerless CGCNN/ALIGNN ``id_prop.csv``: ``id,value[,value...]``; targets are named
  ``target`` (one column) or ``target_0``, ``target_1``... and have no unit;
* a header row naming the id column (``id``, ``jid``, ``material_id``, ``mbid``,
  ``structure_id``, ``name`` or ``file``; else the first column) and property columns, with
  units in brackets or parentheses: ``bandgap (eV)``, ``e_form [eV/atom]``.

Ids match structure ids; a label id that carries a structure-file suffix
(``POSCAR-JVASP-1002.vasp``, ``1000041.cif``) also matches the id without it.
"""

from __future__ import annotations

import csv
import math
import os
import re
from dataclasses import dataclass

import numpy as np

from recinet_cli.errors import RecinetError

_ID_COLUMNS = ("id", "jid", "material_id", "mbid", "structure_id", "name", "file", "filename")
_UNIT = re.compile(r"^\s*(?P<name>.*?)\s*[\[(](?P<unit>[^\])]*)[\])]\s*$")
_MISSING = {"", "nan", "na", "n/a", "none", "null", "-"}


@dataclass(frozen=True)
class Labels:
    """Targets keyed by structure id.

    Attributes:
        names: ``[T]`` target names.
        units: ``[T]`` units ('' when unknown).
        values: id -> ``[T]`` float64 array (NaN = missing).
        source: the CSV file.
    """

    names: tuple[str, ...]
    units: tuple[str, ...]
    values: dict[str, np.ndarray]
    source: str

    def lookup(self, structure_id: str) -> np.ndarray | None:
        return self.values.get(structure_id)


def _float(cell: str) -> float | None:
    text = cell.strip()
    if text.lower() in _MISSING:
        return math.nan
    try:
        return float(text)
    except ValueError:
        return None


def _strip_structure_suffix(key: str) -> str:
    from recinet_cli.structures.readers import _strip_suffixes

    return _strip_suffixes(os.path.basename(key))


def read_labels(path: str) -> Labels:
    """Parse a labels CSV; errors name the file and line."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = [row for row in csv.reader(fh) if row and any(c.strip() for c in row)]
    except OSError as exc:
        raise RecinetError(f"{path}: cannot read labels: {exc.strerror}") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise RecinetError(f"{path}: not a CSV file ({exc})") from None
    if not rows:
        raise RecinetError(f"{path}: labels file is empty")
    width = len(rows[0])
    if width < 2:
        raise RecinetError(f"{path}: expected 'id,value[,value...]' rows, got one column")
    header = any(_float(c) is None for c in rows[0][1:])
    if header:
        cols = [c.strip() for c in rows[0]]
        lowered = [c.lower() for c in cols]
        id_col = next((lowered.index(c) for c in _ID_COLUMNS if c in lowered), 0)
        prop_cols = [i for i in range(width) if i != id_col]
        names, units = [], []
        for i in prop_cols:
            m = _UNIT.match(cols[i])
            names.append(m["name"] if m else cols[i])
            units.append(m["unit"].strip() if m else "")
        body, first_line = rows[1:], 2
    else:
        id_col, prop_cols = 0, list(range(1, width))
        names = ["target"] if width == 2 else [f"target_{k}" for k in range(width - 1)]
        units = [""] * len(names)
        body, first_line = rows, 1
    if len(set(names)) != len(names):
        raise RecinetError(f"{path}: duplicate property columns {names}")
    values: dict[str, np.ndarray] = {}
    for lineno, row in enumerate(body, start=first_line):
        if len(row) != width:
            raise RecinetError(f"{path}:{lineno}: expected {width} columns, got {len(row)}")
        key = row[id_col].strip()
        vals = [_float(row[i]) for i in prop_cols]
        bad = [row[i] for i, v in zip(prop_cols, vals) if v is None]
        if bad:
            raise RecinetError(f"{path}:{lineno}: not a number: {bad[0]!r}")
        if key in values:
            raise RecinetError(f"{path}:{lineno}: duplicate id {key!r}")
        arr = np.asarray(vals, dtype=np.float64)
        values[key] = arr
        alias = _strip_structure_suffix(key)
        values.setdefault(alias, arr)
    return Labels(tuple(names), tuple(units), values, path)
