"""Which model serves which requested property.

The rules (``recinet predict --props ... [--model ...]``):

* a property is served by a model whose targets include it, by name or alias (``mbj_bandgap``
  and ``bandgap_mbj`` are one property); ``DATASET:PROP`` only considers models trained on
  that dataset;
* ``--model NAME|GROUP|PATH`` (repeatable) serves every requested property it predicts;
  several such models for one property form an ensemble (mean and standard deviation);
* the other properties come from the model store: models registered with the same ``group``
  (``recinet train --group``) form one candidate (an ensemble), other models are candidates
  on their own. Candidates are chosen greedily: the one covering most still-unserved
  properties first (so one multi-task model beats several single-task ones), ties broken by
  the validation MAE relative to the best candidate for each property, then by ensemble size,
  then by name.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from recinet_cli.bundle import read_bundle_info
from recinet_cli.errors import RecinetError

__all__ = ["Column", "ModelRef", "Plan", "PredictError", "explicit_models", "plan_columns", "store_models"]


class PredictError(RecinetError):
    """A prediction request cannot be served (unknown property, model or bad option)."""


@dataclass(frozen=True)
class Target:
    """One output of a model: canonical name, unit, aliases, validation MAE (inf if unknown)."""

    name: str
    unit: str
    aliases: tuple[str, ...]
    val_mae: float

    def matches(self, prop: str) -> bool:
        names = (self.name, *self.aliases)
        return prop in names or prop.casefold() in (n.casefold() for n in names)


@dataclass(frozen=True, eq=False)
class ModelRef:
    """A model bundle: its display name, path, description and ensemble group."""

    name: str
    path: Path
    info: dict[str, Any] = field(repr=False)

    @property
    def group(self) -> str | None:
        g = self.info.get("group")
        return g if isinstance(g, str) and g else None

    @property
    def dataset(self) -> str:
        ds = self.info.get("dataset")
        return str(ds.get("name", "")) if isinstance(ds, dict) else ""

    @cached_property
    def targets(self) -> list[Target]:
        val = (self.info.get("metrics") or {}).get("val") or {}
        out = []
        for t in self.info.get("targets") or []:
            mae = (val.get(t["name"]) or {}).get("mae")
            out.append(Target(t["name"], t.get("unit", ""), tuple(t.get("aliases") or ()),
                              float(mae) if isinstance(mae, (int, float)) and math.isfinite(mae) else math.inf))
        return out

    def find(self, prop: str) -> int | None:
        """Output index of ``prop`` (``DATASET:PROP`` checks the dataset), or ``None``."""
        dataset, _, name = prop.rpartition(":")
        if dataset and dataset != self.dataset:
            return None
        targets = self.targets
        for i, t in enumerate(targets):  # exact names first, then aliases / case
            if name == t.name:
                return i
        for i, t in enumerate(targets):
            if t.matches(name):
                return i
        return None


@dataclass(frozen=True)
class Column:
    """One predicted property: canonical name, unit, and the models averaged for it.

    ``members``: (model, output index) pairs; more than one means an ensemble (mean, std).
    ``label``: how the output names the source (a model name, a group, or ``a+b``).
    """

    name: str
    unit: str
    members: tuple[tuple[ModelRef, int], ...]
    label: str

    @property
    def ensemble(self) -> bool:
        return len(self.members) > 1


@dataclass(frozen=True)
class Plan:
    """The columns to predict and the distinct models they need (in first-use order)."""

    columns: tuple[Column, ...]

    @property
    def models(self) -> list[ModelRef]:
        seen: dict[int, ModelRef] = {}
        for col in self.columns:
            for model, _ in col.members:
                seen.setdefault(id(model), model)
        return list(seen.values())


def _ref(name: str, path: Path) -> ModelRef:
    return ModelRef(name, path, read_bundle_info(path))


def store_models() -> tuple[list[ModelRef], list[str]]:
    """(readable models of the store, one message per unreadable entry)."""
    from recinet_cli.modelstore import list_models

    good, bad = [], []
    for entry in list_models():
        if entry.info is None:
            bad.append(f"{entry.name}: {entry.error}")
        else:
            good.append(ModelRef(entry.name, entry.path, entry.info))
    return good, bad


def explicit_models(spec: str, store: Sequence[ModelRef]) -> tuple[str, list[ModelRef]]:
    """``--model SPEC``: a store name, a group name, a bundle file or a directory holding one.

    Returns (label, models).
    """
    from recinet_cli.modelstore import BUNDLE_NAME

    path = Path(spec).expanduser()
    if path.is_file():  # a store or run directory's model.safetensors is named by its directory
        name = path.parent.name if path.name == BUNDLE_NAME and path.parent.name else path.stem
        return name, [_ref(name, path)]
    if path.is_dir() and (path / BUNDLE_NAME).is_file():
        return path.name, [_ref(path.name, path / BUNDLE_NAME)]
    by_name = [m for m in store if m.name == spec]
    if by_name:
        return spec, by_name
    members = [m for m in store if m.group == spec]
    if members:
        return spec, members
    names = sorted({m.name for m in store} | {m.group for m in store if m.group})
    listed = ", ".join(names) if names else "none (train one with `recinet train`)"
    raise PredictError(f"--model {spec}: no such file, model or group; the store has: {listed}")


def _candidates(store: Sequence[ModelRef]) -> list[tuple[str, list[ModelRef]]]:
    groups: dict[str, list[ModelRef]] = {}
    units: list[tuple[str, list[ModelRef]]] = []
    for m in store:
        if m.group:
            if m.group not in groups:
                groups[m.group] = []
                units.append((m.group, groups[m.group]))
            groups[m.group].append(m)
        else:
            units.append((m.name, [m]))
    return units


def _serving(unit: list[ModelRef], prop: str) -> list[tuple[ModelRef, int]]:
    return [(m, i) for m in unit if (i := m.find(prop)) is not None]


def _mae(members: list[tuple[ModelRef, int]]) -> float:
    return sum(m.targets[i].val_mae for m, i in members) / len(members)


def _column(label: str, members: list[tuple[ModelRef, int]]) -> Column:
    model, index = members[0]
    target = model.targets[index]
    return Column(target.name, target.unit, tuple(members), label)


def _choose(props: list[str], store: Sequence[ModelRef]) -> dict[str, tuple[str, list[tuple[ModelRef, int]]]]:
    """Greedy cover of ``props`` by store candidates (see the module docstring)."""
    units = _candidates(store)
    serving = {(label, p): _serving(unit, p) for label, unit in units for p in props}
    best = {p: min((_mae(s) for (_, q), s in serving.items() if q == p and s), default=math.inf) for p in props}
    chosen: dict[str, tuple[str, list[tuple[ModelRef, int]]]] = {}
    remaining = list(props)
    def score(item: tuple[str, list[ModelRef]], remaining: list[str]) -> tuple[float, ...]:
        label, unit = item
        covered = [p for p in remaining if serving[(label, p)]]
        ratios = [(_mae(serving[(label, p)]) / best[p]) if 0 < best[p] < math.inf else 1.0 for p in covered]
        rel = sum(ratios) / len(ratios) if ratios else math.inf
        return (-len(covered), rel if math.isfinite(rel) else 1e300, -len(unit))

    while remaining and units:
        ranked = sorted(units, key=lambda u: (*score(u, remaining), u[0]))
        label, unit = ranked[0]
        covered = [p for p in remaining if serving[(label, p)]]
        if not covered:
            break
        for p in covered:
            chosen[p] = (label, serving[(label, p)])
        remaining = [p for p in remaining if p not in covered]
    return chosen


def _how_to_train(prop: str) -> str:
    """The exact ``recinet train`` command for a property a dataset plugin provides."""
    from recinet_cli.errors import PluginError
    from recinet_cli.registry import DATASETS_GROUP, discover, get_dataset

    dataset, _, name = prop.rpartition(":")
    names = [dataset] if dataset else sorted(discover(DATASETS_GROUP))
    for ds_name in names:
        if ds_name in ("folder", "h5"):
            continue
        try:
            info = get_dataset(ds_name).property_info(name)
        except PluginError:
            continue
        return f"train one with `recinet train --task {ds_name}:{info.name}`"
    return (f"no installed dataset provides it (see `recinet datasets`); train one on your own labels with "
            f"`recinet train --task folder:{name} --data DIR`")


def _servable(store: Sequence[ModelRef]) -> str:
    seen: dict[str, str] = {}
    for m in store:
        for t in m.targets:
            seen.setdefault(t.name, f"{t.name} ({t.unit})" if t.unit else t.name)
    return ", ".join(seen[k] for k in sorted(seen)) or "nothing yet"


def plan_columns(props: Sequence[str], model_specs: Sequence[str] = ()) -> Plan:
    """Decide which model(s) produce each requested property.

    Args:
        props: requested properties (names, aliases or ``DATASET:PROP``); empty = every
            target of the ``model_specs`` models.
        model_specs: ``--model`` values (store names, group names, bundle paths).

    Raises:
        PredictError: nothing requested, an unknown ``--model``, a model that predicts none
            of the requested properties, or a property no model predicts (the message gives
            the ``recinet train`` command and what the store can serve).
        BundleError: an explicitly named bundle is unreadable.
    """
    store, _broken = store_models()
    explicit = [explicit_models(spec, store) for spec in model_specs]
    if not props and not explicit:
        raise PredictError(f"nothing to predict: pass --props (the store can serve: {_servable(store)}) or --model")
    if not props:  # every target of the given models, in order
        wanted: list[str] = []
        for _, models in explicit:
            for m in models:
                wanted += [t.name for t in m.targets if t.name not in wanted]
        props = wanted
    props = list(dict.fromkeys(p.strip() for p in props if p.strip()))

    chosen: dict[str, tuple[str, list[tuple[ModelRef, int]]]] = {}
    for label, models in explicit:
        hits = {p: _serving(models, p) for p in props}
        if not any(hits.values()):
            predicts = ", ".join(sorted({t.name for m in models for t in m.targets}))
            raise PredictError(f"--model {label} predicts {predicts}, none of the requested properties ({', '.join(props)})")
        for p, members in hits.items():
            if members:
                old_label, old = chosen.get(p, ("", []))
                chosen[p] = (f"{old_label}+{label}" if old_label else label, old + members)
    rest = [p for p in props if p not in chosen]
    if rest:
        chosen.update(_choose(rest, store))
    missing = [p for p in props if p not in chosen]
    if missing:
        p = missing[0]
        raise PredictError(f"no model predicts {p!r}: {_how_to_train(p)}; the store can serve: {_servable(store)}")

    columns: list[Column] = []
    for p in props:
        label, members = chosen[p]
        col = _column(label, members)
        if any(c.name == col.name for c in columns):
            continue  # two aliases of one property
        units = {m.targets[i].unit for m, i in members}
        if len(units) > 1:
            raise PredictError(f"{p}: the models {label} disagree on the unit ({', '.join(sorted(units))}); cannot average them")
        columns.append(col)
    return Plan(tuple(columns))
