"""Reading target labels from CSV files.

Two layouts are accepted:

* headerless CGCNN/ALIGNN ``id_prop.csv``: ``id,value[,value...]``; targets are named
  ``target`` (one column) or ``target_0``, ``target_1``... and have no unit;
* a header row naming the id column (``id``, ``jid``, ``material_id``, ``mbid``,
  ``structure_id``, ``name`` or ``file``; else the first column) and property columns, with
  units in brackets or parentheses: ``bandgap (eV)``, ``e_form [eV/atom]``. A header column
  named ``split`` is not a target: it assigns each structure to ``train``, ``val`` or
  ``test`` (case-insensitive; empty = no split) and is stored per structure.

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
from recinet_cli.store.schema import SPLIT_VALUES

_ID_COLUMNS = ("id", "jid", "material_id", "mbid", "structure_id", "name", "file", "filename")
_UNIT = re.compile(r"^\s*(?P<name>.*?)\s*[\[(](?P<unit>[^\])]*)[\])]\s*$")
_MISSING = {"", "nan", "na", "n/a", "none", "null", "-"}
SPLIT_COLUMN = "split"


@dataclass(frozen=True)
class Labels:
    """Targets keyed by structure id.

    Attributes:
        names: ``[T]`` target names.
        units: ``[T]`` units ('' when unknown).
        values: id -> ``[T]`` float64 array (NaN = missing).
        source: the CSV file.
        splits: id -> ``"train"``, ``"val"``, ``"test"`` or ``""`` (no split), from a
            ``split`` header column; ``None`` when the file has no such column.
    """

    names: tuple[str, ...]
    units: tuple[str, ...]
    values: dict[str, np.ndarray]
    source: str
    splits: dict[str, str] | None = None

    @property
    def has_split(self) -> bool:
        """Whether the file has a ``split`` column."""
        return self.splits is not None

    def lookup(self, structure_id: str) -> np.ndarray | None:
        return self.values.get(structure_id)

    def split_of(self, structure_id: str) -> str:
        """The structure's split (``""`` when none is given or the file has no split column)."""
        return self.splits.get(structure_id, "") if self.splits is not None else ""


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
        split_cols = [i for i in range(width) if lowered[i] == SPLIT_COLUMN and i != id_col]
        if len(split_cols) > 1:
            raise RecinetError(f"{path}:1: more than one {SPLIT_COLUMN!r} column")
        split_col = split_cols[0] if split_cols else None
        prop_cols = [i for i in range(width) if i not in (id_col, split_col)]
        names, units = [], []
        for i in prop_cols:
            m = _UNIT.match(cols[i])
            names.append(m["name"] if m else cols[i])
            units.append(m["unit"].strip() if m else "")
        body, first_line = rows[1:], 2
    else:
        id_col, split_col, prop_cols = 0, None, list(range(1, width))
        names = ["target"] if width == 2 else [f"target_{k}" for k in range(width - 1)]
        units = [""] * len(names)
        body, first_line = rows, 1
    if len(set(names)) != len(names):
        raise RecinetError(f"{path}: duplicate property columns {names}")
    values: dict[str, np.ndarray] = {}
    splits: dict[str, str] | None = {} if split_col is not None else None
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
        if splits is not None and split_col is not None:
            split = _split(row[split_col], path, lineno)
            splits[key] = split
            splits.setdefault(alias, split)
    return Labels(tuple(names), tuple(units), values, path, splits)


def _split(cell: str, path: str, lineno: int) -> str:
    value = cell.strip().lower()
    if value and value not in SPLIT_VALUES:
        raise RecinetError(
            f"{path}:{lineno}: invalid split {cell.strip()!r}; expected train, val, test or empty"
        )
    return value
