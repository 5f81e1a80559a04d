"""The ``example`` dataset plugin: 100 real JARVIS-DFT 2D monolayers shipped with the package.

This module is the template for a recinet dataset plugin. A dataset plugin is a class that

1. subclasses :class:`recinet_cli.contracts.DatasetPlugin`;
2. sets ``name`` (what users type before the colon in ``--task example:PROP``),
   ``description`` and ``dataset_version``;
3. implements :meth:`~ExampleDataset.properties` (cheap: no file is read) and
   :meth:`~ExampleDataset.load` (reads the data and returns a
   :class:`~recinet_cli.contracts.DatasetSplit`);
4. is registered in ``pyproject.toml`` under the entry-point group ``recinet.datasets``.

The data file (``data/jarvis2d_sample.jsonl``) has one JSON object per line::

    {"id": "JVASP-13528", "formula": "HoBrO",
     "lattice": [[ax, ay, az], [bx, by, bz], [cx, cy, cz]],     # rows = lattice vectors, Å
     "elements": ["Ho", "Ho", "Br", ...], "cart": [[x, y, z], ...],   # Cartesian, Å
     "exfoliation_energy": 37.43, "bandgap_opt": 3.819, "formation_energy": -3.08,
     "split": "test"}

A label that is ``null`` (or absent) is missing: it becomes ``NaN`` in the targets and is
left out of the loss and the metrics.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np

from recinet_cli.contracts import DatasetPlugin, DatasetSplit, PropertyInfo
from recinet_cli.errors import PluginError
from recinet_cli.structures.crystal import Crystal

__all__ = ["DATA_FILE", "PROPERTIES", "ExampleDataset"]

#: The bundled sample (inside the installed package, so it works offline and from a wheel).
DATA_FILE = "jarvis2d_sample.jsonl"

#: Every property of the dataset. ``size`` is the number of labelled structures (shown by
#: ``recinet datasets``); ``aliases`` are other accepted spellings.
PROPERTIES: tuple[PropertyInfo, ...] = (
    PropertyInfo(
        "exfoliation_energy",
        "meV/atom",
        "OptB88vdW exfoliation energy of the monolayer",
        aliases=("exfoliation_en", "e_exf"),
        size=100,
    ),
    PropertyInfo(
        "bandgap_opt",
        "eV",
        "OptB88vdW band gap of the monolayer",
        aliases=("optb88vdw_bandgap", "bandgap"),
        size=100,
    ),
    PropertyInfo(
        "formation_energy",
        "eV/atom",
        "OptB88vdW formation energy per atom",
        aliases=("formation_energy_peratom", "e_form"),
        size=100,
    ),
)

#: The split names a line may carry (the keys of :attr:`DatasetSplit.split`).
_PARTS = ("train", "val", "test")


class ExampleDataset(DatasetPlugin):
    """100 JARVIS-DFT 2D monolayers with three labels and a fixed 80/10/10 split.

    ``recinet train --task example:exfoliation_energy`` trains on it offline;
    ``--data FILE`` reads another file in the same JSON-lines format instead.
    """

    name = "example"
    description = "Example plugin: 100 JARVIS-DFT 2D monolayers (exfoliation energy, gap, formation energy)"
    dataset_version = "jarvis-dft-2d-sample-1"

    def properties(self) -> list[PropertyInfo]:
        """The three properties, in listing order."""
        return list(PROPERTIES)

    def preset(self, props: Sequence[str]) -> dict[str, Any]:
        """Training settings for this small dataset (flags and ``--config`` override them).

        Keys are ``recinet train`` option names; return ``{}`` for "no preset".
        """
        return {"blocks": 3, "epochs": 300, "lr": 1e-3}

    def load(
        self,
        props: Sequence[str],
        *,
        data: Path | None = None,
        fold: int | None = None,
    ) -> DatasetSplit:
        """Read the structures, the requested labels and the shipped split.

        Args:
            props: Property names or aliases; they become the target columns, in order.
            data: Another file in the same format (``recinet train --data FILE``).
            fold: Must be ``None``: this dataset has one fixed split, no folds.

        Returns:
            ``targets`` ``[n_structures, len(props)]`` float64 in the properties' units.

        Raises:
            PluginError: unknown property, a ``fold``, or an unreadable data file.
        """
        if fold is not None:
            raise PluginError(f"dataset {self.name!r} has one fixed split; drop --fold")
        infos = tuple(self.property_info(p) for p in props)  # resolves aliases, or errors
        path, rows = _read_rows(data)

        structures: list[Crystal] = []
        targets = np.full((len(rows), len(infos)), np.nan, dtype=np.float64)
        split: dict[str, list[str]] = {part: [] for part in _PARTS}
        for i, row in enumerate(rows):
            where = f"{path}:{i + 1}"  # file:line, for error messages
            structures.append(_crystal(row, source=f"{path}:{row['id']}", where=where))
            for j, info in enumerate(infos):
                value = row.get(info.name)
                targets[i, j] = math.nan if value is None else float(value)
            part = row.get("split")
            if part not in _PARTS:
                raise PluginError(f"{where}: split must be one of {', '.join(_PARTS)}, got {part!r}")
            split[str(part)].append(str(row["id"]))
        return DatasetSplit(self.name, self.dataset_version, structures, targets, infos, split)


def _read_rows(data: Path | None) -> tuple[str, list[dict[str, Any]]]:
    """``(file name for messages, one dict per line)`` of the bundled file or of ``data``."""
    if data is None:
        text = files("recinet_example").joinpath("data", DATA_FILE).read_text(encoding="utf-8")
        label = DATA_FILE
    else:
        try:
            text = Path(data).read_text(encoding="utf-8")
        except OSError as exc:
            raise PluginError(f"{data}: cannot read: {exc.strerror or exc}") from exc
        label = str(data)
    rows: list[dict[str, Any]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise PluginError(f"{label}:{number}: not a JSON object: {exc}") from exc
        if not isinstance(row, dict) or "id" not in row:
            raise PluginError(f"{label}:{number}: expected a JSON object with an 'id'")
        rows.append(row)
    return label, rows


def _crystal(row: dict[str, Any], *, source: str, where: str) -> Crystal:
    """A :class:`Crystal` (lattice rows in Å, fractional coordinates, atomic numbers).

    ``source`` is recorded with the crystal (shown when a structure fails to featurize);
    ``where`` locates the line in error messages.
    """
    from ase.data import atomic_numbers  # symbol -> Z; imported here to keep import cheap

    try:
        lattice = np.asarray(row["lattice"], dtype=np.float64).reshape(3, 3)
        cart = np.asarray(row["cart"], dtype=np.float64).reshape(-1, 3)
        numbers = np.asarray([atomic_numbers[str(s)] for s in row["elements"]], dtype=np.int64)
    except (KeyError, ValueError, TypeError) as exc:
        raise PluginError(f"{where}: malformed structure: {type(exc).__name__}: {exc}") from exc
    frac = np.linalg.solve(lattice.T, cart.T).T  # r = f @ L  =>  f = r @ L^-1
    return Crystal.create(str(row["id"]), source, lattice, frac, numbers)
