"""Plugin contracts: the small base classes that dataset and head plugins implement.

A plugin is a class exposed through a Python entry point, in the style of xarray backends
and ``llm`` plugins. A third-party package declares, in its ``pyproject.toml``::

    [project.entry-points."recinet.datasets"]
    mp20 = "recinet_mp20:MP20Dataset"

    [project.entry-points."recinet.heads"]
    gauss = "recinet_gauss:GaussianHead"

and :mod:`recinet_cli.registry` finds it. This module only defines the contracts; discovery
lives in the registry. Importing it is cheap: neither torch nor numpy is imported here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from recinet_cli.errors import PluginError

if TYPE_CHECKING:
    import numpy as np
    import torch

    from recinet_cli.structures.crystal import Crystal

__all__ = [
    "DATASETS_GROUP",
    "HEADS_GROUP",
    "DatasetPlugin",
    "DatasetSplit",
    "HeadPlugin",
    "NoOptions",
    "PropertyInfo",
]

#: Entry-point group for dataset plugins (classes subclassing :class:`DatasetPlugin`).
DATASETS_GROUP = "recinet.datasets"
#: Entry-point group for prediction-head plugins (classes subclassing :class:`HeadPlugin`).
HEADS_GROUP = "recinet.heads"

#: The keys a :attr:`DatasetSplit.split` may have.
SPLIT_KEYS = ("train", "val", "test")


@dataclass(frozen=True)
class PropertyInfo:
    """One target property a dataset provides.

    Attributes:
        name: Canonical name, e.g. ``"formation_energy_per_atom"``.
        unit: Unit string, e.g. ``"eV/atom"``; ``""`` for dimensionless properties.
        description: One line for ``recinet plugins`` style listings.
        aliases: Other names accepted for this property, e.g. ``("ef", "e_form")``.
        size: Number of labelled structures in the full dataset (``recinet datasets``), or
            ``None`` when unknown (local data).
    """

    name: str
    unit: str
    description: str = ""
    aliases: tuple[str, ...] = ()
    size: int | None = None

    def matches(self, name: str) -> bool:
        """Whether ``name`` is this property's name or one of its aliases (exact match)."""
        return name == self.name or name in self.aliases


@dataclass(frozen=True, eq=False)
class DatasetSplit:
    """What :meth:`DatasetPlugin.load` returns: structures, targets and the official split.

    Attributes:
        name: The dataset's plugin name.
        version: The dataset version (see :attr:`DatasetPlugin.dataset_version`).
        structures: ``[n_structures]`` list of :class:`~recinet_cli.structures.crystal.Crystal`.
        targets: ``[n_structures, n_props]`` float64 array, column ``j`` is
            ``properties[j]``; ``NaN`` marks a missing value.
        properties: ``[n_props]`` the loaded properties, in column order.
        split: ``{"train": [...], "val": [...], "test": [...]}`` lists of structure ids
            (:attr:`Crystal.id`); an empty dict when the dataset has no official split.
        property_splits: ``{property name: {"train": [...], ...}}`` for datasets whose
            official split differs per property (the JARVIS leaderboard splits each
            property's labelled subset separately). A property listed here uses its own
            split and ``split`` is ignored for it: in a multi-task run a label is used for
            training only when its structure is in that property's train list.

    Raises:
        PluginError: on construction, when the shapes or split keys are inconsistent.
    """

    name: str
    version: str
    structures: list[Crystal]
    targets: np.ndarray
    properties: tuple[PropertyInfo, ...]
    split: dict[str, list[str]]
    property_splits: dict[str, dict[str, list[str]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Check that ``targets`` is ``[n_structures, n_props]`` and the split keys are known."""
        expected = (len(self.structures), len(self.properties))
        shape = tuple(getattr(self.targets, "shape", ()))
        if shape != expected:
            raise PluginError(
                f"dataset {self.name!r}: targets have shape {shape}, expected {expected} "
                "([n_structures, n_props])"
            )
        keys = set(self.split).union(*(set(s) for s in self.property_splits.values()))
        unknown = sorted(keys - set(SPLIT_KEYS))
        if unknown:
            raise PluginError(
                f"dataset {self.name!r}: unknown split key(s) {', '.join(unknown)}; "
                f"valid: {', '.join(SPLIT_KEYS)}"
            )

        extra = sorted(set(self.property_splits) - set(self.property_names))
        if extra:
            raise PluginError(f"dataset {self.name!r}: property_splits for unloaded propert(y/ies) {', '.join(extra)}")

    @property
    def property_names(self) -> tuple[str, ...]:
        """``[n_props]`` canonical property names, in column order."""
        return tuple(p.name for p in self.properties)

    def split_of(self, prop: str) -> dict[str, list[str]]:
        """The split that applies to property ``prop`` (its own, or the common one)."""
        return self.property_splits.get(prop, self.split)


class DatasetPlugin(ABC):
    """A source of crystal structures with target properties.

    Subclasses set the class attributes and implement :meth:`properties` and :meth:`load`.
    The registry instantiates the class with no arguments, so ``__init__`` must not need any
    (and should be cheap: do the work in :meth:`load`).

    Attributes:
        name: The plugin name users type (``recinet train --dataset NAME``); should equal
            the entry-point name.
        description: One line shown by ``recinet plugins``.
        dataset_version: Version of the data itself (not of the plugin package), recorded
            with trained models so results can be traced to the data.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    dataset_version: ClassVar[str] = ""
    #: Number of cross-validation folds (``--fold 0..folds-1``); 0 = one fixed split.
    folds: ClassVar[int] = 0

    def preset(self, props: Sequence[str]) -> dict[str, Any]:
        """Training settings the paper uses for these properties (SPEC §6), e.g.
        ``{"blocks": 3, "epochs": 500, "lr": 1e-3}``; keys are ``recinet train`` option
        names. ``props`` are canonical names. Default: no task-specific preset."""
        return {}

    @abstractmethod
    def properties(self) -> list[PropertyInfo]:
        """All properties this dataset can provide."""

    @abstractmethod
    def load(
        self,
        props: Sequence[str],
        *,
        data: Path | None = None,
        fold: int | None = None,
    ) -> DatasetSplit:
        """Load the structures and the requested properties.

        Args:
            props: Property names or aliases (resolve them with :meth:`property_info`);
                they become the ``targets`` columns, in this order.
            data: A local path to read from (a folder, a file), when the dataset needs one
                or can use a local copy instead of downloading.
            fold: Which cross-validation fold's split to return, for datasets that have
                several; ``None`` for the default split.

        Returns:
            A :class:`DatasetSplit` with ``targets`` of shape ``[n_structures, len(props)]``.

        Raises:
            PluginError: unknown property, missing ``data`` or similar user errors.
        """

    def property_info(self, name: str) -> PropertyInfo:
        """Resolve a property name or alias to its :class:`PropertyInfo`.

        An exact match on a name or alias wins; otherwise a case-insensitive match is tried.

        Raises:
            PluginError: when no property matches; the message lists the valid names.
        """
        infos = list(self.properties())
        for info in infos:
            if info.matches(name):
                return info
        folded = name.casefold()
        for info in infos:
            if any(folded == n.casefold() for n in (info.name, *info.aliases)):
                return info
        valid = ", ".join(info.name for info in infos) or "none"
        raise PluginError(f"dataset {self.name!r} has no property {name!r}; valid: {valid}")


@dataclass(frozen=True)
class NoOptions:
    """The options of a head that takes none."""


class HeadPlugin(ABC):
    """A prediction head: maps the pooled graph vector to the target values.

    Subclasses set the class attributes, optionally an :attr:`Options` frozen dataclass,
    and implement :meth:`build`. The registry instantiates the class with no arguments.

    Attributes:
        name: The plugin name users type (``recinet train --head NAME``); should equal the
            entry-point name.
        description: One line shown by ``recinet plugins``.
        Options: A frozen dataclass type whose fields are the head's options (with
            defaults); :meth:`parse_options` builds it from user input.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        """The names of the fields of :attr:`Options`, in declaration order."""
        if not (isinstance(cls.Options, type) and is_dataclass(cls.Options)):
            raise PluginError(f"head {cls.name!r}: Options must be a dataclass type")
        return tuple(f.name for f in fields(cls.Options) if f.init)

    @classmethod
    def parse_options(cls, options: Mapping[str, object]) -> object:
        """Build ``cls.Options(**options)``, rejecting unknown and missing keys.

        Raises:
            PluginError: naming the unknown (or missing) key(s) and the valid ones.
        """
        valid = cls.option_names()
        valid_text = ", ".join(valid) or "none"
        unknown = [key for key in options if key not in valid]
        if unknown:
            keys = ", ".join(repr(key) for key in unknown)
            raise PluginError(f"head {cls.name!r}: unknown option(s) {keys}; valid: {valid_text}")
        missing = [
            f.name
            for f in fields(cls.Options)
            if f.init
            and f.name not in options
            and f.default is MISSING
            and f.default_factory is MISSING
        ]
        if missing:
            keys = ", ".join(repr(key) for key in missing)
            raise PluginError(f"head {cls.name!r}: missing required option(s) {keys}")
        try:
            return cls.Options(**options)
        except (TypeError, ValueError) as exc:
            raise PluginError(f"head {cls.name!r}: invalid options: {exc}") from exc

    @abstractmethod
    def build(self, in_dim: int, targets: Sequence[str], options: object) -> torch.nn.Module:
        """Build the head module.

        Args:
            in_dim: Size of the pooled graph vector.
            targets: The target property names; one output column each, in this order.
            options: An :attr:`Options` instance, as returned by :meth:`parse_options`.

        Returns:
            A ``torch.nn.Module`` mapping a graph vector ``[B, in_dim]`` to
            ``[B, len(targets)]``.
        """
