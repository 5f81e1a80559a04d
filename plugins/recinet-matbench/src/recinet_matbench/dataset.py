"""The ``matbench`` dataset plugin: Matbench v0.1 structure regression tasks.

Each Matbench task is a separate dataset (its own structures), so one ``load`` reads exactly
one task. The task file is a pandas "split" JSON (gzipped): ``index`` = mbids
(``mb-jdft2d-001``, ...), ``columns`` = ``["structure", <target>]``, ``data`` = rows, the
structure being a pymatgen ``Structure.as_dict()``.

Where the file comes from, first match wins:

1. ``data`` (the CLI's ``--data FILE``): a local copy of the task file;
2. the environment variable ``RECINET_MATBENCH_<TASK>`` (e.g. ``RECINET_MATBENCH_MP_E_FORM``);
3. for ``jdft2d``, the complete copy bundled with this package (works offline);
4. otherwise the recinet download cache, downloading the official file (checksummed) once.

The split of fold ``k`` is the official Matbench test set of that fold; the remaining ids are
divided into train and a 10 % validation set (see :mod:`recinet_matbench.splits`).
"""

from __future__ import annotations

import gzip
import json
import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from recinet_cli.contracts import DatasetPlugin, DatasetSplit, PropertyInfo
from recinet_cli.errors import PluginError
from recinet_matbench.splits import FOLDS, fold_split, official_ids, official_test_folds
from recinet_matbench.tasks import MatbenchTask, bundled_file, resolve, supported_tasks

if TYPE_CHECKING:
    from recinet_cli.structures.crystal import Crystal

__all__ = ["PRESETS", "MatbenchDataset", "MatbenchWarning"]

#: The paper's training settings per task (SPEC §6); other tasks have none.
PRESETS: dict[str, dict[str, Any]] = {
    "jdft2d": {"blocks": 3, "epochs": 500, "lr": 1e-3},
    "mp_e_form": {"blocks": 5, "epochs": 500, "lr": 4e-4},
}


class MatbenchWarning(UserWarning):
    """A task file is usable but incomplete (scores not comparable to Matbench)."""


class MatbenchDataset(DatasetPlugin):
    """Matbench v0.1 structure regression tasks with their official 5-fold test sets.

    Properties are the tasks, by short name (``jdft2d``, ``mp_e_form``, ...); the full name
    (``matbench_jdft2d``) and the official target column (``exfoliation_en``) are aliases.
    Composition-only and classification tasks are refused with the reason.

    ``load(["jdft2d"], fold=k)`` returns the task's structures (ids = mbids), targets
    ``[n, 1]`` float64, and the split of fold ``k`` (default 0): ``test`` = the official
    Matbench test ids of that fold; Matbench gives only train/test, so recinet moves a
    deterministic 10 % of the fold's training ids (``np.random.RandomState(18012019 + k)``
    permutation) to ``val``, for early stopping and choosing the best checkpoint. All lists
    are sorted.
    """

    name = "matbench"
    description = "Matbench v0.1 structure regression tasks, official 5-fold test sets (jdft2d bundled)"
    dataset_version = "v0.1"
    folds = FOLDS

    def properties(self) -> list[PropertyInfo]:
        """The eight structure regression tasks, sorted by name."""
        return [task.property_info() for task in supported_tasks()]

    def property_info(self, name: str) -> PropertyInfo:
        """Resolve a task name, full name or target column (see :func:`tasks.resolve`)."""
        return resolve(name).property_info()

    def preset(self, props: Sequence[str]) -> dict[str, Any]:
        """``{"blocks", "epochs", "lr"}`` for jdft2d and mp_e_form (SPEC §6), else ``{}``."""
        if len(props) != 1:
            return {}
        try:
            task = resolve(props[0])
        except PluginError:
            return {}
        return dict(PRESETS.get(task.name, {}))

    def load(
        self,
        props: Sequence[str],
        *,
        data: Path | None = None,
        fold: int | None = None,
    ) -> DatasetSplit:
        """Load one task and the split of one fold.

        Args:
            props: Exactly one task name (or alias).
            data: A local copy of the task file (pandas-split JSON, gzipped or not).
            fold: ``0..4``; ``None`` means fold 0.

        Returns:
            A :class:`DatasetSplit` with ``targets`` ``[n, 1]`` float64 in the task's unit.

        Raises:
            PluginError: not exactly one task, unknown or unusable task, bad fold, or a file
                that is not this task's Matbench file.
            DownloadError: the file is neither local, bundled, cached nor downloadable.
        """
        task = _one_task(props)
        k = _check_fold(fold)
        raw, label = _task_bytes(task, data)
        ids, structs, targets = _parse_table(_decode(raw, label), task, label)
        _check_ids(ids, task, label)
        crystals = _crystals(ids, structs, label)
        split = fold_split(ids, official_test_folds(task)[k], k)
        return DatasetSplit(
            self.name,
            self.dataset_version,
            crystals,
            targets.reshape(-1, 1),
            (task.property_info(),),
            split,
        )


def _one_task(props: Sequence[str]) -> MatbenchTask:
    """The single task named in ``props``."""
    if isinstance(props, str):
        props = [props]
    if len(props) != 1:
        got = ", ".join(props) or "none"
        raise PluginError(
            "dataset 'matbench': name exactly one task (got "
            f"{got}); Matbench tasks are separate datasets with different structures, "
            "train one task per run"
        )
    return resolve(props[0])


def _check_fold(fold: int | None) -> int:
    """The fold number to use (``None`` means 0)."""
    if fold is None:
        return 0
    if isinstance(fold, bool) or not isinstance(fold, (int, np.integer)) or not 0 <= fold < FOLDS:
        raise PluginError(f"dataset 'matbench': fold must be 0..{FOLDS - 1}, got {fold!r}")
    return int(fold)


def _task_bytes(task: MatbenchTask, data: Path | str | None) -> tuple[bytes, str]:
    """``(file bytes, file name)`` of the task file: local copy, bundled, cached or downloaded."""
    from recinet_cli.download import fetch

    bundled = bundled_file(task)
    if data is None and bundled is not None and not os.environ.get(task.env_var):
        return bundled.read_bytes(), task.file_name
    path = fetch(task.remote(), local=data)
    try:
        return path.read_bytes(), path.name
    except OSError as exc:
        raise PluginError(f"{path}: cannot read: {exc.strerror or exc}") from exc


def _decode(raw: bytes, label: str) -> Any:
    """Parse JSON bytes, gunzipping them first when they are gzipped."""
    try:
        text = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
        return json.loads(text)
    except (OSError, EOFError, ValueError) as exc:
        raise PluginError(f"{label}: not a Matbench task file (invalid gzip/JSON: {exc})") from exc


def _parse_table(obj: Any, task: MatbenchTask, label: str) -> tuple[list[str], list[Any], np.ndarray]:
    """``(ids [n], structure dicts [n], targets [n] float64)`` of a pandas-split table."""
    if not (isinstance(obj, dict) and {"index", "columns", "data"} <= obj.keys()):
        raise PluginError(f"{label}: not a Matbench task file (expected pandas 'split' JSON)")
    columns = [str(c) for c in obj["columns"]]
    for column in ("structure", task.target):
        if column not in columns:
            raise PluginError(
                f"{label}: no column {column!r} (columns: {', '.join(columns)}); "
                f"is it the file of {task.full_name}?"
            )
    ks, kt = columns.index("structure"), columns.index(task.target)
    ids = [str(i) for i in obj["index"]]
    rows = obj["data"]
    if len(rows) != len(ids):
        raise PluginError(f"{label}: {len(ids)} ids but {len(rows)} rows")
    targets = np.array([_number(row[kt]) for row in rows], dtype=np.float64)
    return ids, [row[ks] for row in rows], targets


def _number(value: Any) -> float:
    """A target value as float (``None`` becomes NaN)."""
    return math.nan if value is None else float(value)


def _check_ids(ids: list[str], task: MatbenchTask, label: str) -> None:
    """Refuse duplicate or foreign mbids; warn when the file is not the complete task."""
    if len(set(ids)) != len(ids):
        raise PluginError(f"{label}: duplicate ids")
    known = official_ids(task)
    foreign = [i for i in ids if i not in known]
    if foreign:
        raise PluginError(
            f"{label}: {len(foreign)} id(s) are not {task.full_name} mbids (e.g. {foreign[0]!r}); "
            f"is it the file of {task.full_name}?"
        )
    if len(ids) != task.n_samples:
        warnings.warn(
            f"{label}: {len(ids)} of the {task.n_samples} entries of {task.full_name}; "
            "scores on it are not comparable to Matbench",
            MatbenchWarning,
            stacklevel=4,
        )


def _crystals(ids: list[str], structs: list[Any], label: str) -> list[Crystal]:
    """``[n]`` crystals from pymatgen structure dicts (id = mbid, source = ``label:mbid``)."""
    from pymatgen.core import Structure

    from recinet_cli.structures.readers import from_pymatgen, one_line

    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pymatgen's chatter about dict contents
        for mbid, d in zip(ids, structs):
            source = f"{label}:{mbid}"
            try:
                out.append(from_pymatgen(Structure.from_dict(d), mbid, source))
            except Exception as exc:
                raise PluginError(f"{source}: invalid structure: {one_line(exc)}") from exc
    return out
