"""Predict properties with the trained models of the model store (``recinet predict``).

The Python API and the command share this code path::

    from recinet_cli import predict  # lazy alias of recinet_cli.prediction.predict
    result = predict(["structures/"], props=["bandgap_mbj", "bandgap_opt"])
    result = predict([pymatgen_structure, ase_atoms], props=["formation_energy"])
    result.rows[0]  # {"id": ..., "formula": ..., "bandgap_mbj": 1.23, ..., "error": None}
    result.array("bandgap_mbj")  # [S] float64, NaN where a structure failed
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from recinet_cli.inference import bundle_params
from recinet_cli.prediction.engine import (
    Item,
    PredictResult,
    Progress,
    StoredGraph,
    Timings,
    run_plan,
)
from recinet_cli.prediction.resolve import Column, Plan, PredictError, plan_columns
from recinet_cli.structures.crystal import Crystal
from recinet_cli.structures.readers import (
    IdMode,
    ReadFailure,
    ReadOptions,
    check_unique_ids,
    discover_inputs,
    display_path,
    from_ase,
    from_pymatgen,
    suffix_duplicate_ids,
)

__all__ = [
    "Column",
    "Plan",
    "PredictError",
    "PredictResult",
    "Timings",
    "gather_inputs",
    "plan_columns",
    "predict",
    "predict_inputs",
]

_H5_SUFFIXES = (".h5", ".hdf5")


def _graph_file_items(path: str, plan: Plan) -> tuple[list[Item], list[ReadFailure]]:
    """Every structure of a graph file, after checking it was built as the models expect."""
    from recinet_cli.store.reader import GraphStore
    from recinet_cli.structures.graph import GraphParams

    with GraphStore(path) as store:
        stored = GraphParams.from_dict(store.featurizer)
        for model in plan.models:
            wanted = bundle_params(model.info, str(model.path))
            if wanted != stored:
                raise PredictError(
                    f"{display_path(path)}: graphs built with {stored.as_dict()}, but model {model.name} was trained "
                    f"on graphs built with {wanted.as_dict()}; predict from the structure files instead"
                )
        items: list[Item] = [StoredGraph(os.path.abspath(path), i) for i in range(len(store))]
        failures = [ReadFailure(source, sid, reason) for source, sid, reason in store.failures()]
    return items, failures


def gather_inputs(
    inputs: Sequence[str | os.PathLike[str]],
    plan: Plan,
    id_mode: IdMode = "stem",
    suffix_duplicates: bool = False,
) -> tuple[list[Item], list[ReadFailure]]:
    """Files, directories, globs and graph files (``.h5``) -> (items to predict, failures).

    Raises:
        RecinetError: duplicate ids across files (unless ``suffix_duplicates``), a graph file
            built with other featurizer parameters than a model's.
    """
    names = [os.fspath(p) for p in inputs]
    graph_files = [p for p in names if p.lower().endswith(_H5_SUFFIXES) and os.path.isfile(p)]
    files, failures = discover_inputs([p for p in names if p not in graph_files], id_mode)
    files = suffix_duplicate_ids(files) if suffix_duplicates else files
    if not suffix_duplicates:
        check_unique_ids(files)
    items: list[Item] = list(files)
    for path in graph_files:
        more, bad = _graph_file_items(path, plan)
        items += more
        failures += bad
    return items, failures


def _as_item(obj: Any, sid: str, options: ReadOptions) -> Crystal:
    """A pymatgen Structure, an ASE Atoms or a Crystal as a Crystal (id ``sid``)."""
    if isinstance(obj, Crystal):
        return obj
    module = type(obj).__module__
    if module.startswith("pymatgen"):
        return from_pymatgen(obj, sid, f"<{type(obj).__name__} {sid}>", options)
    if module.startswith("ase"):
        return from_ase(obj, sid, f"<Atoms {sid}>")
    raise PredictError(f"structure {sid}: cannot predict for a {type(obj).__name__} (use a pymatgen Structure, an ASE Atoms or a file path)")


def predict_inputs(
    inputs: Sequence[str | os.PathLike[str]],
    props: Sequence[str] = (),
    *,
    models: Sequence[str] = (),
    device: str = "auto",
    batch_size: int = 64,
    precision: str = "auto",
    workers: int | None = None,
    id_mode: IdMode = "stem",
    suffix_duplicates: bool = False,
    options: ReadOptions = ReadOptions(),
    progress: Progress | None = None,
) -> PredictResult:
    """What ``recinet predict INPUTS`` does: resolve models, read, featurize, predict."""
    plan = plan_columns(props, models)
    items, failures = gather_inputs(inputs, plan, id_mode, suffix_duplicates)
    return run_plan(plan, items, failures=failures, device=device, batch_size=batch_size,
                    precision=precision, workers=workers, options=options, progress=progress)


def predict(
    structures: Iterable[Any] | Mapping[str, Any],
    props: Sequence[str] | str = (),
    *,
    models: Sequence[str] | str = (),
    device: str = "auto",
    batch_size: int = 64,
    precision: str = "auto",
    workers: int | None = None,
    disorder: str = "fail",
) -> PredictResult:
    """Predict properties for structures: the Python face of ``recinet predict``.

    Args:
        structures: pymatgen ``Structure`` / ASE ``Atoms`` objects and file or directory
            paths (mixed freely), or a mapping ``{id: structure}``. Objects get ids
            ``"0"``, ``"1"``... by position unless given as a mapping.
        props: property names or aliases (``"bandgap_mbj,bandgap_opt"`` or a list);
            empty = everything ``models`` predict.
        models: store names, group names or bundle paths (``--model``).
        device, batch_size, precision, workers: as the command's options.
        disorder: ``fail`` or ``majority`` (partially occupied sites).

    Returns:
        A :class:`PredictResult`: ``rows`` (list of dicts, one per structure, in input
        order, failures included with their ``error``), ``array(prop)`` and ``columns``.

    Raises:
        PredictError: no model for a requested property (with the ``recinet train`` command
            to make one), unknown model, or an unsupported object.
    """
    props = [p for p in props.split(",")] if isinstance(props, str) else list(props)
    models = [models] if isinstance(models, str) else list(models)
    options = ReadOptions(disorder)  # type: ignore[arg-type]
    plan = plan_columns(props, models)
    pairs = list(structures.items()) if isinstance(structures, Mapping) else [(str(i), s) for i, s in enumerate(structures)]
    items: list[Item] = []
    for sid, obj in pairs:
        if isinstance(obj, (str, os.PathLike)):
            more, bad = gather_inputs([obj], plan)
            items += [*bad, *more]
            continue
        try:
            items.append(_as_item(obj, str(sid), options))
        except PredictError:
            raise
        except Exception as exc:  # StructureError, disorder...: a failed row, as in the CLI
            from recinet_cli.structures.readers import one_line

            items.append(ReadFailure(f"<{type(obj).__name__} {sid}>", str(sid), one_line(exc)))
    return run_plan(plan, items, device=device, batch_size=batch_size, precision=precision,
                    workers=workers, options=options)
