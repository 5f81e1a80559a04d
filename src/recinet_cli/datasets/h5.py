"""Built-in dataset ``h5``: a graph store written by ``recinet featurize --labels``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from recinet_cli.contracts import DatasetPlugin, DatasetSplit, PropertyInfo
from recinet_cli.errors import PluginError


class H5Dataset(DatasetPlugin):
    """Structures and targets from a featurized HDF5 file (``--data graphs.h5``)."""

    name = "h5"
    description = "A featurized HDF5 graph store with targets (--data FILE.h5)"
    dataset_version = "local"

    def properties(self) -> list[PropertyInfo]:
        return [PropertyInfo("<target>", "", "any target stored in the file")]

    def property_info(self, name: str) -> PropertyInfo:
        return PropertyInfo(name, "", "target stored in the file")

    def load(
        self, props: Sequence[str], *, data: Path | None = None, fold: int | None = None
    ) -> DatasetSplit:
        from recinet_cli.store.reader import GraphStore
        from recinet_cli.structures.crystal import Crystal

        if data is None:
            raise PluginError("dataset 'h5' needs --data FILE.h5")
        with GraphStore(data, preload=True) as store:
            missing = [p for p in props if p not in store.target_names]
            if missing:
                raise PluginError(
                    f"{data}: no target {missing[0]!r}; stored: {', '.join(store.target_names) or 'none'}"
                )
            cols = [store.target_names.index(p) for p in props]
            crystals = []
            for i in range(len(store)):
                g = store[i]
                crystals.append(Crystal.create(g.id, str(data), g.lattice, g.frac, g.numbers, wrap=False))
            targets = store.targets()[:, cols] if len(store) else np.zeros((0, len(props)))
            info = tuple(PropertyInfo(p, store.target_units[c]) for p, c in zip(props, cols))
        return DatasetSplit(self.name, self.dataset_version, crystals, np.asarray(targets), info, {})
