"""Built-in dataset ``folder``: a directory of structure files plus ``id_prop.csv``.

The CGCNN/ALIGNN convention: ``DIR/id_prop.csv`` holds ``id,value`` rows (headerless), or a
header naming the property columns (with units, e.g. ``exfoliation_energy (meV/atom)``).
With a headerless single-column file, the property takes the name the user asks for
(``folder:exfoliation_energy``). A ``split`` column (train/val/test) in a header CSV is used
as the split; otherwise ``recinet train`` draws a seeded random one.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from recinet_cli.contracts import DatasetPlugin, DatasetSplit, PropertyInfo
from recinet_cli.errors import PluginError


class FolderDataset(DatasetPlugin):
    """Structures from a directory with an ``id_prop.csv`` of targets."""

    name = "folder"
    description = "A directory of CIF/POSCAR/extxyz files with id_prop.csv targets (--data DIR)"
    dataset_version = "local"

    def properties(self) -> list[PropertyInfo]:
        return [PropertyInfo("<column>", "", "any property column of DIR/id_prop.csv")]

    def property_info(self, name: str) -> PropertyInfo:
        return PropertyInfo(name, "", "column of id_prop.csv")

    def load(
        self, props: Sequence[str], *, data: Path | None = None, fold: int | None = None
    ) -> DatasetSplit:
        from recinet_cli.labels import read_labels
        from recinet_cli.structures.readers import read_structures

        if data is None:
            raise PluginError("dataset 'folder' needs --data DIR (a directory with id_prop.csv)")
        csv_path = Path(data) / "id_prop.csv"
        if not csv_path.is_file():
            raise PluginError(f"{data}: no id_prop.csv in this directory")
        labels = read_labels(str(csv_path))
        names = list(labels.names)
        if len(names) == 1 and names[0] == "target" and len(props) == 1:
            names = [props[0]]  # headerless file: the column is what the user calls it
        missing = [p for p in props if p not in names]
        if missing:
            raise PluginError(f"{csv_path}: no column {missing[0]!r}; columns: {', '.join(names)}")
        cols = [names.index(p) for p in props]
        crystals, _failures = read_structures([data])
        crystals = [c for c in crystals if labels.lookup(c.id) is not None]
        targets = np.stack([labels.lookup(c.id)[cols] for c in crystals]) if crystals else np.zeros((0, len(props)))
        info = tuple(PropertyInfo(p, labels.units[names.index(p)]) for p in props)
        split: dict[str, list[str]] = {}
        if labels.has_split:
            for c in crystals:
                part = labels.split_of(c.id)
                if part:
                    split.setdefault(part, []).append(c.id)
            empty = [s for s in ("train", "val", "test") if not split.get(s)]
            if empty:
                raise PluginError(f"{csv_path}: the split column leaves {', '.join(empty)} empty")
        return DatasetSplit(self.name, self.dataset_version, crystals, targets, info, split)
