"""The official Matbench v0.1 test folds, and the validation carve-out recinet adds.

Matbench scores a model by 5-fold cross-validation: for fold ``k`` the official test ids are
held out and the model is trained on the rest. The test ids of every structure regression
task ship with this package (``data/matbench_v0.1_test_folds_structure_regression.json.gz``,
``{task: {"fold_0": [mbid, ...], ..., "fold_4": [...]}}``, from the official
``matbench_v0.1_test_folds.json.gz``). They follow Matbench's recipe, a shuffled 5-fold
split with seed 18012019 over the ids in mbid order (scikit-learn's
``KFold(5, shuffle=True, random_state=18012019)``), which :func:`recipe_test_folds`
reproduces.

Matbench defines no validation set. recinet needs one for early stopping and to pick the
best checkpoint, so :func:`fold_split` carves it out of the fold's training ids only:
``VAL_FRACTION`` (10 %) of them, chosen by ``np.random.RandomState(VAL_SEED + fold)``. The
test ids are never touched, so test scores stay comparable to the Matbench leaderboard.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from recinet_matbench.tasks import MatbenchTask, data_file

__all__ = [
    "FOLDS",
    "FOLD_SEED",
    "VAL_FRACTION",
    "VAL_SEED",
    "fold_split",
    "official_ids",
    "official_test_folds",
    "recipe_test_folds",
    "val_count",
]

#: Number of cross-validation folds in Matbench v0.1.
FOLDS = 5
#: The seed of Matbench's fold shuffle.
FOLD_SEED = 18012019
#: Fraction of a fold's training ids moved to the validation set.
VAL_FRACTION = 0.1
#: Base seed of the validation carve-out; fold ``k`` uses ``VAL_SEED + k``.
VAL_SEED = 18012019

_FOLDS_FILE = "matbench_v0.1_test_folds_structure_regression.json.gz"


@lru_cache(maxsize=1)
def _bundled_folds() -> dict[str, dict[str, list[str]]]:
    """The bundled ``{full task name: {"fold_k": [mbid, ...]}}`` table."""
    return json.loads(gzip.decompress(data_file(_FOLDS_FILE).read_bytes()))


def official_test_folds(task: MatbenchTask) -> list[list[str]]:
    """``[FOLDS]`` lists of the official test mbids of ``task``, each sorted."""
    folds = _bundled_folds()[task.full_name]
    return [sorted(folds[f"fold_{k}"]) for k in range(FOLDS)]


def official_ids(task: MatbenchTask) -> frozenset[str]:
    """Every mbid of ``task`` (the union of its test folds)."""
    return frozenset(i for fold in official_test_folds(task) for i in fold)


def recipe_test_folds(ids: Sequence[str], seed: int = FOLD_SEED) -> list[list[str]]:
    """Regenerate the test folds: shuffle ``arange(n)`` with ``RandomState(seed)``, then cut
    it into ``FOLDS`` consecutive chunks (the first ``n % FOLDS`` one longer).

    Args:
        ids: ``[n]`` every mbid of a task, in mbid order.

    Returns:
        ``[FOLDS]`` sorted lists of test mbids.
    """
    n = len(ids)
    order = np.arange(n)
    np.random.RandomState(seed).shuffle(order)
    sizes = [n // FOLDS + (1 if k < n % FOLDS else 0) for k in range(FOLDS)]
    bounds = np.cumsum([0, *sizes])
    return [sorted(ids[i] for i in order[bounds[k] : bounds[k + 1]]) for k in range(FOLDS)]


def val_count(n_train: int) -> int:
    """How many of ``n_train`` training ids go to validation: ``VAL_FRACTION`` rounded half
    up, at least 1 when ``n_train >= 2`` and never all of them."""
    if n_train < 2:
        return 0
    return min(n_train - 1, max(1, int(np.floor(n_train * VAL_FRACTION + 0.5))))


def fold_split(ids: Sequence[str], test_ids: Sequence[str], fold: int) -> dict[str, list[str]]:
    """The train/val/test split of ``ids`` for one fold.

    Args:
        ids: ``[n]`` the mbids of the loaded structures.
        test_ids: The fold's official test mbids (those absent from ``ids`` are ignored).
        fold: The fold number; seeds the validation carve-out (``VAL_SEED + fold``).

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}``, each sorted, disjoint, covering
        ``ids``; ``val`` is :func:`val_count` ids drawn from the fold's training ids by a
        ``np.random.RandomState(VAL_SEED + fold).permutation``.
    """
    held_out = set(test_ids)
    test = sorted(i for i in ids if i in held_out)
    pool = sorted(i for i in ids if i not in held_out)
    order = np.random.RandomState(VAL_SEED + fold).permutation(len(pool))
    n_val = val_count(len(pool))
    return {
        "train": sorted(pool[i] for i in order[n_val:]),
        "val": sorted(pool[i] for i in order[:n_val]),
        "test": test,
    }
