"""Dataset plugins ``jarvis`` (JARVIS-DFT dft_3d 2021-08-18) and ``jarvis_2d`` (dft_2d 2021-03-12).

Both read the JARVIS list-of-dicts JSON (plain, ``.gz`` or a ``.zip`` holding one JSON),
downloaded on first use (or a local copy: ``--data FILE`` or the environment variable).
Targets are ``[n_structures, n_props]`` float64 with ``NaN`` for missing labels; a structure
is kept when it has at least one requested label. Splits are per property
(:attr:`DatasetSplit.property_splits`): ``jarvis`` uses the official leaderboard id lists
shipped with this package, ``jarvis_2d`` the seeded 80/10/10 jarvis-tools/ALIGNN split.
"""

from __future__ import annotations

import math
import warnings
from abc import abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from recinet_cli.contracts import DatasetPlugin, DatasetSplit, PropertyInfo
from recinet_cli.download import RemoteFile, fetch
from recinet_cli.errors import PluginError, StructureError
from recinet_jarvis._io import entry_id, entry_value, read_entries, to_crystal
from recinet_jarvis.splits import PARTS, seeded_split, shipped_splits

__all__ = [
    "DFT_2D_REMOTE",
    "DFT_3D_REMOTE",
    "PROPERTIES",
    "JarvisDFT2D",
    "JarvisDFT3D",
    "JarvisDataWarning",
    "JarvisProperty",
]

Split = dict[str, list[str]]


class JarvisDataWarning(UserWarning):
    """Entries of a JARVIS file were skipped (unreadable structure, duplicate id)."""


@dataclass(frozen=True)
class JarvisProperty:
    """One JARVIS property: canonical name, unit, source key in the JSON, aliases."""

    name: str
    unit: str
    key: str
    description: str
    aliases: tuple[str, ...] = field(default=())


#: The properties both JARVIS datasets provide (SPEC §7), in listing order.
PROPERTIES: tuple[JarvisProperty, ...] = (
    JarvisProperty(
        "formation_energy", "eV/atom", "formation_energy_peratom", "OptB88vdW formation energy per atom",
        ("formation_energy_peratom", "formation_energy_per_atom", "e_form", "eform", "ef"),
    ),
    JarvisProperty(
        "bandgap_opt", "eV", "optb88vdw_bandgap", "OptB88vdW band gap",
        ("optb88vdw_bandgap", "bandgap", "band_gap", "opt_gap", "gap_opt"),
    ),
    JarvisProperty(
        "total_energy", "eV/atom", "optb88vdw_total_energy", "OptB88vdW total energy per atom",
        ("optb88vdw_total_energy", "etot", "e_tot", "total_energy_per_atom"),
    ),
    JarvisProperty(
        "bandgap_mbj", "eV", "mbj_bandgap", "TBmBJ band gap",
        ("mbj_bandgap", "mbj_gap", "gap_mbj", "tbmbj_bandgap"),
    ),
    JarvisProperty(
        "ehull", "eV", "ehull", "energy above the convex hull",
        ("e_hull", "energy_above_hull", "e_above_hull"),
    ),
    JarvisProperty(
        "bulk_modulus", "GPa", "bulk_modulus_kv", "Voigt bulk modulus",
        ("bulk_modulus_kv", "kv", "k_v"),
    ),
    JarvisProperty(
        "shear_modulus", "GPa", "shear_modulus_gv", "Voigt shear modulus",
        ("shear_modulus_gv", "gv", "g_v"),
    ),
    JarvisProperty(
        "exfoliation_energy", "meV/atom", "exfoliation_energy", "exfoliation energy",
        ("exfoliation_en", "exfoliation", "e_exf"),
    ),
)
_BY_NAME: dict[str, JarvisProperty] = {p.name: p for p in PROPERTIES}

#: JARVIS-DFT dft_3d, release 2021-08-18 (jarvis-tools ``dft_3d_2021``, 55,723 entries).
DFT_3D_REMOTE = RemoteFile(
    name="jdft_3d-8-18-2021.json.zip",
    url="https://ndownloader.figshare.com/files/29204826",
    sha256=None,  # figshare publishes no SHA-256; recorded on first download
    env_var="RECINET_JARVIS_DFT_3D",
    description="JARVIS-DFT dft_3d (2021-08-18)",
)
#: JARVIS-DFT dft_2d, release 2021-03-12 (jarvis-tools ``dft_2d_2021``).
DFT_2D_REMOTE = RemoteFile(
    name="d2-3-12-2021.json.zip",
    url="https://ndownloader.figshare.com/files/26808917",
    sha256=None,
    env_var="RECINET_JARVIS_DFT_2D",
    description="JARVIS-DFT dft_2d (2021-03-12)",
)

#: SPEC §6 presets (blocks, epochs, lr) for single JARVIS tasks.
_PRESETS: dict[str, dict[str, Any]] = {
    "formation_energy": {"blocks": 4, "epochs": 500, "lr": 8e-4},
    "bandgap_opt": {"blocks": 4, "epochs": 500, "lr": 6e-4},
    "bandgap_mbj": {"blocks": 3, "epochs": 500, "lr": 1e-3},
    "total_energy": {"blocks": 4, "epochs": 500, "lr": 8e-4},
    "ehull": {"blocks": 5, "epochs": 500, "lr": 6e-4},
}
#: SPEC §6 preset for several properties at once (ReciNet-MT).
_MULTI_TASK_PRESET: dict[str, Any] = {"blocks": 3, "epochs": 500, "lr": 8e-4}


@dataclass
class _Collected:
    """What :func:`_collect` reads from the entries.

    Attributes:
        crystals: ``[n]`` the kept structures (at least one finite requested label).
        targets: ``[n, n_props]`` float64, NaN = missing.
        labelled: ``{prop: [ids]}`` every entry with a finite label, in file order, before
            any structure was dropped (what a seeded split is computed over).
    """

    crystals: list[Any]
    targets: np.ndarray
    labelled: dict[str, list[str]]


def _collect(entries: Sequence[Mapping[str, Any]], props: Sequence[JarvisProperty], source: str) -> _Collected:
    """Crystals and targets of the entries with at least one requested label."""
    crystals: list[Any] = []
    rows: list[list[float]] = []
    labelled: dict[str, list[str]] = {p.name: [] for p in props}
    seen: set[str] = set()
    failed: list[tuple[str, str]] = []
    duplicates: list[str] = []
    for index, entry in enumerate(entries):
        values = [entry_value(entry, p.key) for p in props]
        if all(math.isnan(v) for v in values):
            continue
        sid = entry_id(entry) or f"{source}#{index}"
        for p, v in zip(props, values):
            if not math.isnan(v):
                labelled[p.name].append(sid)
        if sid in seen:
            duplicates.append(sid)
            continue
        try:
            crystal = to_crystal(entry, sid, f"{source}#{sid}")
        except StructureError as exc:
            failed.append((sid, str(exc)))
            continue
        seen.add(sid)
        crystals.append(crystal)
        rows.append(values)
    _warn_skipped(source, failed, duplicates)
    targets = np.asarray(rows, dtype=np.float64).reshape(len(rows), len(props))
    return _Collected(crystals, targets, labelled)


def _warn_skipped(source: str, failed: list[tuple[str, str]], duplicates: list[str]) -> None:
    """One warning per kind of skipped entry, with the count and the first few ids."""
    if failed:
        first = ", ".join(sid for sid, _ in failed[:5])
        warnings.warn(
            f"{source}: skipped {len(failed)} entr{'y' if len(failed) == 1 else 'ies'} whose "
            f"structure could not be used (first: {first}; {failed[0][0]}: {failed[0][1]})",
            JarvisDataWarning,
            stacklevel=4,
        )
    if duplicates:
        first = ", ".join(duplicates[:5])
        warnings.warn(
            f"{source}: {len(duplicates)} duplicate id(s), kept the first entry of each (first: {first})",
            JarvisDataWarning,
            stacklevel=4,
        )


def restrict_split(split: Mapping[str, Iterable[str]], present: set[str]) -> Split:
    """``split`` limited to the ids in ``present``, parts made disjoint (test > val > train).

    List order is kept. An id listed in two parts (duplicate jids in the source) stays only in
    the first of test, val, train that lists it, so no test structure is ever trained on.
    """
    taken: set[str] = set()
    out: Split = {}
    for part in ("test", "val", "train"):
        keep = [sid for sid in split.get(part, ()) if sid in present and sid not in taken]
        taken.update(keep)
        out[part] = keep
    return {part: out[part] for part in PARTS}


class _JarvisDataset(DatasetPlugin):
    """Shared loading of a JARVIS JSON file; subclasses set the remote file and the splits."""

    remote: ClassVar[RemoteFile]
    #: The JSON member name inside the downloaded zip.
    member: ClassVar[str]

    def properties(self) -> list[PropertyInfo]:
        return [
            PropertyInfo(p.name, p.unit, p.description, p.aliases, self._size(p.name))
            for p in PROPERTIES
        ]

    def _size(self, name: str) -> int | None:
        """Labelled count of the full dataset, or ``None`` when unknown."""
        return None

    def _resolve(self, props: Sequence[str]) -> tuple[list[JarvisProperty], tuple[PropertyInfo, ...]]:
        """Resolve names/aliases; reject an empty or repeated request."""
        if isinstance(props, str):
            props = [props]
        if not props:
            raise PluginError(f"dataset {self.name!r}: no property requested")
        infos = tuple(self.property_info(p) for p in props)
        names = [i.name for i in infos]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise PluginError(f"dataset {self.name!r}: property {repeated[0]!r} requested more than once")
        return [_BY_NAME[n] for n in names], infos

    def load(
        self, props: Sequence[str], *, data: Path | None = None, fold: int | None = None
    ) -> DatasetSplit:
        """Load the requested properties (see the module docstring).

        Raises:
            PluginError: ``fold`` given, unknown property, unreadable file.
            DownloadError: no local copy and the download fails.
        """
        if fold is not None:
            raise PluginError(f"dataset {self.name!r} has one fixed split; --fold is not supported")
        jprops, infos = self._resolve(props)
        path = fetch(self.remote, local=data)
        collected = _collect(read_entries(path, self.member), jprops, path.name)
        splits = self._splits(collected, jprops)
        return DatasetSplit(
            self.name, self.dataset_version, collected.crystals, collected.targets, infos, {}, splits
        )

    @abstractmethod
    def _splits(self, collected: _Collected, props: Sequence[JarvisProperty]) -> dict[str, Split]:
        """``{property name: {part: [ids]}}`` for the loaded data."""

    @staticmethod
    def _present(collected: _Collected, column: int) -> set[str]:
        """Ids of the loaded structures with a finite label in ``column``."""
        finite = np.isfinite(collected.targets[:, column])
        return {c.id for c, ok in zip(collected.crystals, finite) if ok}


class JarvisDFT3D(_JarvisDataset):
    """JARVIS-DFT dft_3d 2021-08-18 with the official leaderboard split of each property."""

    name = "jarvis"
    description = "JARVIS-DFT dft_3d 2021-08-18 (55,723 crystals), official leaderboard splits"
    dataset_version = "dft_3d_2021-08-18"
    remote = DFT_3D_REMOTE
    member = "jdft_3d-8-18-2021.json"

    def _size(self, name: str) -> int | None:
        split = shipped_splits().get(name)
        return sum(len(split[p]) for p in PARTS) if split else None

    def preset(self, props: Sequence[str]) -> dict[str, Any]:
        """SPEC §6: per-task presets; several properties -> the ReciNet-MT preset."""
        names = {self.property_info(p).name for p in props}
        if len(names) > 1:
            return dict(_MULTI_TASK_PRESET)
        return dict(_PRESETS.get(next(iter(names)), {})) if names else {}

    def _splits(self, collected: _Collected, props: Sequence[JarvisProperty]) -> dict[str, Split]:
        """The shipped split of each property, limited to the loaded, labelled ids."""
        official = shipped_splits()
        return {p.name: restrict_split(official[p.name], self._present(collected, j)) for j, p in enumerate(props)}


class JarvisDFT2D(_JarvisDataset):
    """JARVIS-DFT dft_2d 2021-03-12 monolayers with a seeded 80/10/10 split per property."""

    name = "jarvis_2d"
    description = "JARVIS-DFT dft_2d 2021-03-12 monolayers, seeded 80/10/10 split (seed 123)"
    dataset_version = "dft_2d_2021-03-12"
    remote = DFT_2D_REMOTE
    member = "d2-3-12-2021.json"
    #: Seed of the jarvis-tools/ALIGNN split.
    split_seed: ClassVar[int] = 123

    def _splits(self, collected: _Collected, props: Sequence[JarvisProperty]) -> dict[str, Split]:
        """Per property: seed-123 shuffle of the labelled entries (file order), 80/10/10."""
        out: dict[str, Split] = {}
        for j, p in enumerate(props):
            order = collected.labelled[p.name]
            parts = seeded_split(len(order), split_seed=self.split_seed)
            split = {part: [order[i] for i in idx] for part, idx in zip(PARTS, parts)}
            out[p.name] = restrict_split(split, self._present(collected, j))
        return out
