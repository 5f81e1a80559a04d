"""Dataset plugin ``mp``: Materials Project MP-2018.6.1 (jarvis-tools ``megnet``, 69,239 crystals).

Reads jarvis-tools' ``megnet.json`` (a list of ``{"id": "mp-...", "atoms": {...}, "e_form",
"gap pbe", "bulk modulus", "shear modulus", ...}``; plain, ``.gz`` or a ``.zip`` holding it),
downloaded on first use or given as a local copy. Targets are ``[n_structures, n_props]``
float64 with ``NaN`` for missing labels; a structure is kept when it has at least one
requested label.

Splits (:attr:`DatasetSplit.property_splits`): formation energy and band gap use the official
leaderboard ids shipped with the package; the moduli use Matformer's seeded split computed
from the data at load time (:func:`recinet_mp.splits.matformer_split`).

Moduli are returned as log10(GPa). ``megnet.json`` stores them in GPa (the MEGNet source has
``K_VRH``/``G_VRH`` in GPa): a column whose largest value exceeds 10 is taken to be in GPa and
converted with log10 (entries <= 0 GPa cannot be and are dropped, as Matformer dropped its
negative shear modulus); a column already in log10 units (all values <= 10) is used as is.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from recinet_cli.contracts import DatasetPlugin, DatasetSplit, PropertyInfo
from recinet_cli.download import RemoteFile, fetch
from recinet_cli.errors import PluginError, StructureError
from recinet_mp._io import entry_id, parse_value, read_entries, to_crystal
from recinet_mp.splits import (
    MATFORMER_SIZES,
    PARTS,
    matformer_sizes,
    matformer_split,
    shipped_splits,
)

__all__ = ["LOG10_MAX", "MP_2018_REMOTE", "PROPERTIES", "MPDataWarning", "MPDataset", "MPProperty"]

Split = dict[str, list[str]]

#: A modulus column with a value above this is in GPa, not log10(GPa) (10^10 GPa is absurd).
LOG10_MAX = 10.0


class MPDataWarning(UserWarning):
    """Entries of the MP file were skipped, or a split had to be scaled to a small file."""


@dataclass(frozen=True)
class MPProperty:
    """One MP-2018.6.1 property: canonical name, unit, source key, aliases, full-data size."""

    name: str
    unit: str
    key: str
    description: str
    aliases: tuple[str, ...] = field(default=())
    log10_gpa: bool = False


#: The properties of ``mp`` (SPEC §7), in listing order.
PROPERTIES: tuple[MPProperty, ...] = (
    MPProperty(
        "formation_energy", "eV/atom", "e_form", "PBE formation energy per atom",
        ("e_form", "formation_energy_per_atom", "formation_energy_peratom", "eform", "ef"),
    ),
    MPProperty(
        "bandgap", "eV", "gap pbe", "PBE band gap",
        ("gap pbe", "gap_pbe", "band_gap", "bandgap_pbe", "gap"),
    ),
    MPProperty(
        "bulk_modulus", "log10(GPa)", "bulk modulus", "log10 of the VRH bulk modulus",
        ("bulk modulus", "bulk_modulus_vrh", "k_vrh", "log_kvrh", "log10_k_vrh"), True,
    ),
    MPProperty(
        "shear_modulus", "log10(GPa)", "shear modulus", "log10 of the VRH shear modulus",
        ("shear modulus", "shear_modulus_vrh", "g_vrh", "log_gvrh", "log10_g_vrh"), True,
    ),
)
_BY_NAME: dict[str, MPProperty] = {p.name: p for p in PROPERTIES}

#: Labelled counts of Matformer's moduli splits (4664/393/393 and 4664/392/393).
_MODULI_SIZES: dict[str, int] = {"bulk_modulus": 5450, "shear_modulus": 5449}

#: MP-2018.6.1 as jarvis-tools ``megnet`` (figshare, a zip holding ``megnet.json``).
MP_2018_REMOTE = RemoteFile(
    name="mp-2018.6.1-megnet.json.zip",
    url="https://ndownloader.figshare.com/files/26724977",
    sha256=None,  # figshare publishes no SHA-256; recorded on first download
    env_var="RECINET_MP_2018",
    description="MP-2018.6.1 (jarvis-tools megnet.json)",
)

#: SPEC §6 presets (blocks, epochs, lr).
_PRESETS: dict[str, dict[str, Any]] = {
    "formation_energy": {"blocks": 3, "epochs": 500, "lr": 8e-4},
    "bandgap": {"blocks": 3, "epochs": 500, "lr": 8e-4},
    "bulk_modulus": {"blocks": 3, "epochs": 500, "lr": 1e-3},
    "shear_modulus": {"blocks": 3, "epochs": 300, "lr": 1e-3},
}


@dataclass
class _Collected:
    """What :func:`_collect` reads from the entries.

    Attributes:
        crystals: ``[n]`` the kept structures (at least one finite requested label).
        targets: ``[n, n_props]`` float64 (moduli in log10 GPa), NaN = missing.
        labelled: ``{prop: [ids]}`` every entry with a label in the file (Matformer's filter:
            not None/"na"/NaN, before unit conversion and structure checks), in file order.
    """

    crystals: list[Any]
    targets: np.ndarray
    labelled: dict[str, list[str]]


def _raw_table(entries: Sequence[Mapping[str, Any]], props: Sequence[MPProperty]) -> np.ndarray:
    """``[n_entries, n_props]`` float64 source values, NaN where missing."""
    rows = [[parse_value(e.get(p.key)) for p in props] for e in entries]
    return np.asarray(rows, dtype=np.float64).reshape(len(entries), len(props))


def to_log10_gpa(column: np.ndarray) -> tuple[np.ndarray, bool]:
    """``[n]`` modulus values -> (log10(GPa) values, whether the input was in GPa).

    A column with any value above :data:`LOG10_MAX` is in GPa: log10 is taken and values
    <= 0 become NaN. Otherwise the column is already log10(GPa) and returned unchanged.
    """
    finite = column[np.isfinite(column)]
    if not (finite > LOG10_MAX).any():
        return column.copy(), False
    out = np.full_like(column, np.nan)
    positive = np.isfinite(column) & (column > 0)
    out[positive] = np.log10(column[positive])
    return out, True


def _collect(entries: Sequence[Mapping[str, Any]], props: Sequence[MPProperty], source: str) -> _Collected:
    """Crystals and targets of the entries with at least one requested (converted) label."""
    raw = _raw_table(entries, props)
    values = raw.copy()
    dropped: list[str] = []
    ids = [entry_id(e) or f"{source}#{i}" for i, e in enumerate(entries)]
    for j, p in enumerate(props):
        if p.log10_gpa:
            values[:, j], _ = to_log10_gpa(raw[:, j])
            lost = ~np.isnan(raw[:, j]) & np.isnan(values[:, j])
            dropped += [f"{ids[i]} ({p.key} = {raw[i, j]:g})" for i in np.flatnonzero(lost)]
    labelled = {p.name: [ids[i] for i in np.flatnonzero(~np.isnan(raw[:, j]))] for j, p in enumerate(props)}
    crystals: list[Any] = []
    rows: list[np.ndarray] = []
    seen: set[str] = set()
    failed: list[tuple[str, str]] = []
    duplicates: list[str] = []
    for i in np.flatnonzero(np.isfinite(values).any(axis=1)):
        sid = ids[i]
        if sid in seen:
            duplicates.append(sid)
            continue
        try:
            crystal = to_crystal(entries[i], sid, f"{source}#{sid}")
        except StructureError as exc:
            failed.append((sid, str(exc)))
            continue
        seen.add(sid)
        crystals.append(crystal)
        rows.append(values[i])
    _warn_skipped(source, failed, duplicates, dropped)
    targets = np.asarray(rows, dtype=np.float64).reshape(len(rows), len(props))
    return _Collected(crystals, targets, labelled)


def _warn_skipped(source: str, failed: list[tuple[str, str]], duplicates: list[str], dropped: list[str]) -> None:
    """One warning per kind of skipped entry, with the count and the first few ids."""
    if failed:
        first = ", ".join(sid for sid, _ in failed[:5])
        warnings.warn(
            f"{source}: skipped {len(failed)} entr{'y' if len(failed) == 1 else 'ies'} whose "
            f"structure could not be used (first: {first}; {failed[0][0]}: {failed[0][1]})",
            MPDataWarning,
            stacklevel=4,
        )
    if duplicates:
        first = ", ".join(duplicates[:5])
        warnings.warn(
            f"{source}: {len(duplicates)} duplicate id(s), kept the first entry of each (first: {first})",
            MPDataWarning,
            stacklevel=4,
        )
    if dropped:
        warnings.warn(
            f"{source}: dropped {len(dropped)} modulus label(s) <= 0 GPa (no log10): {', '.join(dropped[:5])}",
            MPDataWarning,
            stacklevel=4,
        )


def restrict_split(split: Mapping[str, Iterable[str]], present: set[str]) -> Split:
    """``split`` limited to the ids in ``present``, parts made disjoint (test > val > train)."""
    taken: set[str] = set()
    out: Split = {}
    for part in ("test", "val", "train"):
        keep = [sid for sid in split.get(part, ()) if sid in present and sid not in taken]
        taken.update(keep)
        out[part] = keep
    return {part: out[part] for part in PARTS}


class MPDataset(DatasetPlugin):
    """MP-2018.6.1: leaderboard splits (formation energy, gap), Matformer's split (moduli)."""

    name = "mp"
    description = "Materials Project MP-2018.6.1 (69,239 crystals, jarvis-tools megnet), official splits"
    dataset_version = "mp-2018.6.1"
    remote: ClassVar[RemoteFile] = MP_2018_REMOTE
    member: ClassVar[str] = "megnet.json"
    split_seed: ClassVar[int] = 123

    def properties(self) -> list[PropertyInfo]:
        return [PropertyInfo(p.name, p.unit, p.description, p.aliases, self._size(p.name)) for p in PROPERTIES]

    @staticmethod
    def _size(name: str) -> int | None:
        """Labelled count of the full dataset's split for ``name``."""
        split = shipped_splits().get(name)
        if split is not None:
            return sum(len(split[part]) for part in PARTS)
        return _MODULI_SIZES.get(name)

    def preset(self, props: Sequence[str]) -> dict[str, Any]:
        """SPEC §6 presets; several properties get one only when their presets agree."""
        found = [_PRESETS.get(self.property_info(p).name, {}) for p in props]
        if not found or any(f != found[0] for f in found):
            return {}
        return dict(found[0])

    def _resolve(self, props: Sequence[str]) -> tuple[list[MPProperty], tuple[PropertyInfo, ...]]:
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
        mprops, infos = self._resolve(props)
        path = fetch(self.remote, local=data)
        collected = _collect(read_entries(path, self.member), mprops, path.name)
        splits: dict[str, Split] = {}
        for j, prop in enumerate(mprops):
            splits[prop.name] = self._split(collected, prop, j, path.name)
        return DatasetSplit(
            self.name, self.dataset_version, collected.crystals, collected.targets, infos, {}, splits
        )

    def _split(self, collected: _Collected, prop: MPProperty, column: int, source: str) -> Split:
        """The official (shipped) or Matformer (computed) split of one property."""
        finite = np.isfinite(collected.targets[:, column])
        present = {c.id for c, ok in zip(collected.crystals, finite) if ok}
        official = shipped_splits().get(prop.name)
        if official is not None:
            return restrict_split(official, present)
        order = collected.labelled[prop.name]
        if len(order) < sum(MATFORMER_SIZES):
            sizes = "/".join(str(n) for n in matformer_sizes(len(order)))
            warnings.warn(
                f"{source}: only {len(order)} labelled entries for {prop.name}; Matformer's split "
                f"needs {sum(MATFORMER_SIZES)}: used the same seeded procedure with sizes {sizes}",
                MPDataWarning,
                stacklevel=3,
            )
        return restrict_split(matformer_split(order, self.split_seed), present)
