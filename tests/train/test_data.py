"""From a dataset plugin to train/val/test sets: official per-property splits, the seeded
random split, and the content-keyed graph cache (real JARVIS dft_3d structures)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import recinet_cli.train.data as data_mod
from recinet_cli.contracts import SPLIT_KEYS, DatasetPlugin, DatasetSplit, PropertyInfo
from recinet_cli.structures.crystal import Crystal
from recinet_cli.structures.graph import GraphParams
from recinet_cli.structures.readers import from_jarvis_atoms
from recinet_cli.train.data import assign_splits, content_key, prepare_data
from recinet_cli.train.tasks import Task

#: (JARVIS key, our property name, unit)
PROPS = (("formation_energy_peratom", "formation_energy", "eV/atom"),
         ("exfoliation_energy", "exfoliation_energy", "meV/atom"))


def value(entry: dict[str, Any], key: str) -> float:
    v = entry.get(key)
    return float(v) if isinstance(v, (int, float)) else math.nan


@pytest.fixture(scope="module")
def entries(jarvis_entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Small real entries (<= 4 atoms) covering every pair of official splits of the two
    properties, including structures without an exfoliation label."""
    picked: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for e in jarvis_entries:
        if len(e["atoms"]["elements"]) > 4:
            continue
        key = (e.get("split_formation_energy_peratom", "na"), e.get("split_exfoliation_energy", "na"))
        if len(picked.setdefault(key, [])) < 2:
            picked[key].append(e)
    out = [e for group in picked.values() for e in group]
    combos = {k for k in picked if "na" not in k}
    assert len(combos) >= 6 and any(k[1] == "na" for k in picked), "the JARVIS subset changed"
    return out


def crystals_of(entries: Sequence[dict[str, Any]]) -> list[Crystal]:
    return [from_jarvis_atoms(e["atoms"], e["jid"], "dft_3d") for e in entries]


def official_split(entries: Sequence[dict[str, Any]]) -> DatasetSplit:
    """Both properties with their own official (leaderboard) split, as the jarvis plugin does."""
    targets = np.array([[value(e, k) for k, _, _ in PROPS] for e in entries])
    prop_splits = {
        name: {s: [e["jid"] for e in entries if e.get(f"split_{k}") == s] for s in SPLIT_KEYS}
        for k, name, _ in PROPS
    }
    infos = tuple(PropertyInfo(name, unit) for _, name, unit in PROPS)
    return DatasetSplit("stub", "v1", crystals_of(entries), targets, infos, {}, prop_splits)


def labels_by_split(ds: DatasetSplit, splits: dict, stored: dict[str, int]) -> dict[str, dict[tuple[str, int], float]]:
    """{split: {(id, property column): label}} from assign_splits' output."""
    by_row = {row: sid for sid, row in stored.items()}
    out: dict[str, dict[tuple[str, int], float]] = {}
    for s, sd in splits.items():
        assert sd.targets.shape == (len(sd.rows), len(ds.properties))
        out[s] = {(by_row[int(r)], j): float(sd.targets[i, j])
                  for i, r in enumerate(sd.rows) for j in range(sd.targets.shape[1])
                  if np.isfinite(sd.targets[i, j])}
    return out


# ----------------------------------------------------------------------------- splits


def test_per_property_official_splits_mask_labels_of_other_splits(entries: list[dict[str, Any]]) -> None:
    ds = official_split(entries)
    stored = {c.id: i for i, c in enumerate(ds.structures)}
    splits, kind = assign_splits(ds, stored, seed=1, val_fraction=0.1, test_fraction=0.1)
    assert kind == "official"
    got = labels_by_split(ds, splits, stored)
    for j, (key, _, _) in enumerate(PROPS):
        for e in entries:
            v, s = value(e, key), e.get(f"split_{key}")
            for split in SPLIT_KEYS:
                if split == s and not math.isnan(v):
                    assert got[split][(e["jid"], j)] == v, (e["jid"], key, split)
                else:
                    assert (e["jid"], j) not in got[split], (e["jid"], key, split)
    # a structure in train for one property and test for the other is in both splits,
    # each time with only that split's label
    mixed = next(e for e in entries if e["split_formation_energy_peratom"] == "train"
                 and e.get("split_exfoliation_energy") == "test")
    row = stored[mixed["jid"]]
    for split, present in (("train", 0), ("test", 1)):
        i = list(splits[split].rows).index(row)
        assert np.isfinite(splits[split].targets[i]).tolist() == [present == 0, present == 1]
    # rows without any label of a split are not in it
    for sd in splits.values():
        assert np.isfinite(sd.targets).any(axis=1).all()
    assert splits["train"].label_counts() == [
        sum(e["split_formation_energy_peratom"] == "train" for e in entries),
        sum(e.get("split_exfoliation_energy") == "train" and not math.isnan(value(e, "exfoliation_energy"))
            for e in entries),
    ]


def test_unfeaturized_structures_are_left_out(entries: list[dict[str, Any]]) -> None:
    ds = official_split(entries)
    dropped = {entries[0]["jid"], entries[3]["jid"]}
    stored = {c.id: i for i, c in enumerate(c for c in ds.structures if c.id not in dropped)}
    splits, _ = assign_splits(ds, stored, seed=1, val_fraction=0.1, test_fraction=0.1)
    rows = np.concatenate([s.rows for s in splits.values()])
    assert set(rows.tolist()) == set(stored.values())
    assert rows.max() < len(stored)


def test_mixed_official_and_random_split(entries: list[dict[str, Any]]) -> None:
    ds = official_split(entries)
    ds = replace(ds, property_splits={"formation_energy": ds.property_splits["formation_energy"]})
    stored = {c.id: i for i, c in enumerate(ds.structures)}
    splits, kind = assign_splits(ds, stored, seed=5, val_fraction=0.2, test_fraction=0.2)
    assert kind == "official + random (seed 5, val 0.2, test 0.2)"
    got = labels_by_split(ds, splits, stored)
    # the official property keeps its split
    for e in entries:
        assert (e["jid"], 0) in got[e["split_formation_energy_peratom"]]
    # the other one: every present label in exactly one split, with its value
    labelled = {e["jid"]: value(e, "exfoliation_energy") for e in entries
                if not math.isnan(value(e, "exfoliation_energy"))}
    seen = [sid for s in SPLIT_KEYS for (sid, j) in got[s] if j == 1]
    assert sorted(seen) == sorted(labelled)
    for s in SPLIT_KEYS:
        for (sid, j), v in got[s].items():
            if j == 1:
                assert v == labelled[sid]


def random_ds(entries: Sequence[dict[str, Any]]) -> DatasetSplit:
    targets = np.array([[value(e, "formation_energy_peratom")] for e in entries])
    return DatasetSplit("stub", "v1", crystals_of(entries), targets, (PropertyInfo("formation_energy", "eV/atom"),), {})


def test_random_split_is_seeded_disjoint_and_complete(jarvis_entries: list[dict[str, Any]]) -> None:
    chosen = [e for e in jarvis_entries if len(e["atoms"]["elements"]) <= 3][:40]
    ds = random_ds(chosen)
    stored = {c.id: i for i, c in enumerate(ds.structures)}
    a, kind = assign_splits(ds, stored, seed=11, val_fraction=0.1, test_fraction=0.15)
    assert kind == "random (seed 11, val 0.1, test 0.15)"
    ids = {s: sorted(ds.structures[r].id for r in a[s].rows) for s in SPLIT_KEYS}
    assert (len(ids["val"]), len(ids["test"]), len(ids["train"])) == (4, 6, 30)
    assert not set(ids["train"]) & set(ids["val"]) and not set(ids["train"]) & set(ids["test"])
    assert not set(ids["val"]) & set(ids["test"])
    assert set().union(*ids.values()) == set(stored)
    # targets follow their rows
    for s in SPLIT_KEYS:
        for r, t in zip(a[s].rows, a[s].targets[:, 0]):
            assert t == value(chosen[r], "formation_energy_peratom")
    b, _ = assign_splits(ds, stored, seed=11, val_fraction=0.1, test_fraction=0.15)
    for s in SPLIT_KEYS:
        np.testing.assert_array_equal(a[s].rows, b[s].rows)
    c, _ = assign_splits(ds, stored, seed=12, val_fraction=0.1, test_fraction=0.15)
    assert sorted(c["val"].rows.tolist()) != sorted(a["val"].rows.tolist())


def test_random_split_never_leaves_val_or_test_empty(jarvis_entries: list[dict[str, Any]]) -> None:
    ds = random_ds(jarvis_entries[:6])
    stored = {c.id: i for i, c in enumerate(ds.structures)}
    splits, _ = assign_splits(ds, stored, seed=0, val_fraction=0.01, test_fraction=0.01)
    assert [len(splits[s]) for s in SPLIT_KEYS] == [4, 1, 1]


# ----------------------------------------------------------------------------- cache key


def test_content_key_tracks_structures_version_and_graph_params(entries: list[dict[str, Any]]) -> None:
    ds = official_split(entries[:6])
    base = content_key(ds, GraphParams())
    assert base == content_key(official_split(entries[:6]), GraphParams())  # rebuilt from scratch
    assert len(base) == 64

    def with_crystal(i: int, **changes: Any) -> DatasetSplit:
        structures = list(ds.structures)
        structures[i] = replace(structures[i], **changes)
        return replace(ds, structures=structures)

    c = ds.structures[2]
    moved = c.frac.copy()
    moved[0, 0] = (moved[0, 0] + 1e-3) % 1.0
    other_species = c.numbers.copy()
    other_species[0] = 14 if other_species[0] != 14 else 6
    variants = {
        "moved atom": with_crystal(2, frac=moved),
        "strained lattice": with_crystal(2, lattice=c.lattice * 1.001),
        "species": with_crystal(2, numbers=other_species),
        "id": with_crystal(2, id=c.id + "-b"),
        "one structure fewer": replace(ds, structures=ds.structures[:-1], targets=ds.targets[:-1],
                                       property_splits={}),
        "dataset version": replace(ds, version="v2"),
        "dataset name": replace(ds, name="stub2"),
    }
    keys = {name: content_key(v, GraphParams()) for name, v in variants.items()}
    keys["cutoff"] = content_key(ds, GraphParams(cutoff=5.0))
    keys["max_neighbors"] = content_key(ds, GraphParams(max_neighbors=12))
    keys["min_dist"] = content_key(ds, GraphParams(min_dist=0.2))
    for name, key in keys.items():
        assert key != base, name
    assert len(set(keys.values())) == len(keys)
    # targets are not part of the graphs: new labels reuse the cache
    assert content_key(replace(ds, targets=ds.targets + 1.0), GraphParams()) == base


class StubDataset(DatasetPlugin):
    """A dataset plugin serving a prepared DatasetSplit (what ``load`` returns is swappable)."""

    name = "stub"
    dataset_version = "v1"

    def __init__(self, split: DatasetSplit) -> None:
        self.split = split

    def properties(self) -> list[PropertyInfo]:
        return list(self.split.properties)

    def load(self, props: Sequence[str], *, data: Path | None = None, fold: int | None = None) -> DatasetSplit:
        assert list(props) == list(self.split.property_names)
        return self.split


def test_graph_cache_is_built_once_and_reused(entries: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    builds: list[Path] = []
    real_build = data_mod.build_graph_store

    def counting_build(crystals: Any, params: GraphParams, path: Path, workers: int, **kw: Any) -> None:
        builds.append(path)
        real_build(crystals, params, path, 1, **kw)

    monkeypatch.setattr(data_mod, "build_graph_store", counting_build)
    chosen = entries[:8]
    ds = official_split(chosen)
    # one more structure that cannot be featurized: two atoms on the same site
    c = ds.structures[0]
    bad = Crystal.create("overlap", "test", c.lattice, np.vstack([c.frac[:1], c.frac[:1]]), np.array([14, 14]))
    ds = replace(ds, structures=[*ds.structures, bad], targets=np.vstack([ds.targets, [[1.0, 2.0]]]),
                 property_splits={k: {**v, "train": [*v["train"], "overlap"]} for k, v in ds.property_splits.items()})
    plugin = StubDataset(ds)
    task = Task(plugin, ds.properties)
    logs: list[str] = []

    first = prepare_data(task, None, None, 1, 0.1, 0.1, workers=1, log=logs.append)
    assert len(builds) == 1 and Path(first.store_path) == builds[0]
    assert Path(first.store_path).is_file() and "featurizing 9 structures" in logs[-1]
    assert first.failures and first.failures[0][0] == "overlap" and "overlapping atoms" in first.failures[0][1]
    assert "overlap" not in first.ids and len(first.ids) == 8
    assert first.split_kind == "official" and first.dataset_version == "v1"
    mtime = Path(first.store_path).stat().st_mtime_ns

    second = prepare_data(task, None, None, 1, 0.1, 0.1, workers=1, log=logs.append)
    assert len(builds) == 1, "the unchanged dataset was featurized again"
    assert second.store_path == first.store_path and logs[-1] == f"graphs: reusing {first.store_path}"
    assert Path(first.store_path).stat().st_mtime_ns == mtime
    for s in SPLIT_KEYS:
        np.testing.assert_array_equal(second.splits[s].rows, first.splits[s].rows)
    assert second.split_ids_sha256() == first.split_ids_sha256()

    # new labels: same graphs, the targets come from the plugin
    plugin.split = replace(ds, targets=ds.targets * 2)
    third = prepare_data(task, None, None, 1, 0.1, 0.1, workers=1)
    assert len(builds) == 1 and third.store_path == first.store_path
    np.testing.assert_array_equal(third.splits["train"].targets, first.splits["train"].targets * 2)

    # a new dataset version or new graph parameters: a new cache file
    plugin.split = replace(ds, version="v2")
    fourth = prepare_data(task, None, None, 1, 0.1, 0.1, workers=1)
    assert len(builds) == 2 and fourth.store_path != first.store_path
    plugin.split = ds
    fifth = prepare_data(task, None, None, 1, 0.1, 0.1, params=GraphParams(max_neighbors=8), workers=1)
    assert len(builds) == 3 and fifth.store_path not in (first.store_path, fourth.store_path)
    assert fifth.featurizer["max_neighbors"] == 8 and fifth.featurizer_hash != first.featurizer_hash
