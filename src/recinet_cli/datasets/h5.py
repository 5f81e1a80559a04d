"""Built-in dataset ``h5``: a graph store written by ``recinet featurize --labels``.

When the labels CSV had a ``split`` column, the file stores it (``structures/split``) and it
is the dataset's official split; otherwise the trainer makes a seeded random one.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from recinet_cli.contracts import DatasetPlugin, DatasetSplit, PropertyInfo
from recinet_cli.errors import PluginError
from recinet_cli.store.schema import SPLIT_VALUES


class H5Dataset(DatasetPlugin):
    """Structures, targets and optional split from a featurized HDF5 file (``--data graphs.h5``)."""

    name = "h5"
    description = "A featurized HDF5 graph store with targets and optional split (--data FILE.h5)"
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
            split = _split_lists(data, store.ids, store.splits())
        return DatasetSplit(self.name, self.dataset_version, crystals, np.asarray(targets), info, split)


def _split_lists(data: Path, ids: list[str], column: list[str] | None) -> dict[str, list[str]]:
    """``{"train": ids, "val": ids, "test": ids}`` from the stored split column ({} without one).

    Structures with an empty split are in none of the lists.
    """
    if column is None:
        return {}
    split: dict[str, list[str]] = {name: [] for name in SPLIT_VALUES}
    for sid, name in zip(ids, column):
        if name:
            if name not in split:
                raise PluginError(f"{data}: structure {sid!r} has unknown split {name!r}")
            split[name].append(sid)
    empty = [name for name, members in split.items() if not members]
    if empty:
        counts = ", ".join(f"{name} {len(members)}" for name, members in split.items())
        raise PluginError(
            f"{data}: the file has a split column but no structure is assigned to "
            f"{' or '.join(empty)} ({counts}; {column.count('')} unassigned); train, val and test "
            "each need at least one: fix the 'split' column of the labels CSV and featurize again "
            "with --overwrite"
        )
    return split
