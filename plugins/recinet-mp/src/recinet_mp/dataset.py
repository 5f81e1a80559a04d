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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from recinet_cli.datasets.common import (
    PARTS,
    Collected,
    Entry,
    EntryProperty,
    JsonEntriesDataset,
    Split,
    atoms_to_crystal,
    collect_structures,
    parse_float,
    restrict_split,
)
from recinet_cli.download import RemoteFile
from recinet_cli.errors import StructureError
from recinet_mp.splits import (
    MATFORMER_SIZES,
    matformer_sizes,
    matformer_split,
    shipped_splits,
)

__all__ = [
    "LOG10_MAX",
    "MP_2018_REMOTE",
    "PROPERTIES",
    "MPDataWarning",
    "MPDataset",
    "MPProperty",
    "entry_id",
    "to_crystal",
    "to_log10_gpa",
]

#: A modulus column with a value above this is in GPa, not log10(GPa) (10^10 GPa is absurd).
LOG10_MAX = 10.0


class MPDataWarning(UserWarning):
    """Entries of the MP file were skipped, or a split had to be scaled to a small file."""


@dataclass(frozen=True)
class MPProperty(EntryProperty):
    """One MP-2018.6.1 property: canonical name, unit, source key, aliases, log10 flag.

    Attributes:
        log10_gpa: A modulus, returned as log10(GPa) (see :func:`to_log10_gpa`).
    """

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


def entry_id(entry: Entry) -> str | None:
    """The Materials Project id: ``id`` (megnet.json), else ``material_id`` or ``mp_id``."""
    for key in ("id", "material_id", "mp_id"):
        if entry.get(key):
            return str(entry[key])
    return None


def to_crystal(entry: Entry, sid: str, source: str) -> Any:
    """A :class:`~recinet_cli.structures.crystal.Crystal` from the entry's JARVIS ``atoms``.

    Raises:
        StructureError: no ``atoms`` dict, or the converter / validation rejects it.
    """
    atoms = entry.get("atoms")
    if not isinstance(atoms, Mapping):
        raise StructureError("entry has no 'atoms' structure dict")
    return atoms_to_crystal(atoms, sid, source)


def _raw_table(entries: Sequence[Mapping[str, Any]], props: Sequence[MPProperty]) -> np.ndarray:
    """``[n_entries, n_props]`` float64 source values, NaN where missing."""
    rows = [[parse_float(e.get(p.key)) for p in props] for e in entries]
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


class MPDataset(JsonEntriesDataset[MPProperty]):
    """MP-2018.6.1: leaderboard splits (formation energy, gap), Matformer's split (moduli)."""

    name = "mp"
    description = "Materials Project MP-2018.6.1 (69,239 crystals, jarvis-tools megnet), official splits"
    dataset_version = "mp-2018.6.1"
    remote: ClassVar[RemoteFile] = MP_2018_REMOTE
    member: ClassVar[str] = "megnet.json"
    property_defs = PROPERTIES
    split_seed: ClassVar[int] = 123

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

    def _collect(self, entries: Sequence[Entry], props: Sequence[MPProperty], source: str) -> Collected:
        """Crystals and targets of the entries with at least one requested (converted) label.

        ``labelled`` follows Matformer's filter: a label in the file (not None/"na"/NaN),
        before unit conversion and structure checks.
        """
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
        rows = np.flatnonzero(np.isfinite(values).any(axis=1))
        candidates = [(ids[i], entries[i]) for i in rows]
        crystals, kept = collect_structures(candidates, to_crystal, source, MPDataWarning, stacklevel=3)
        if dropped:
            warnings.warn(
                f"{source}: dropped {len(dropped)} modulus label(s) <= 0 GPa (no log10): {', '.join(dropped[:5])}",
                MPDataWarning,
                stacklevel=3,
            )
        targets = values[rows[np.asarray(kept, dtype=np.intp)]].reshape(len(kept), len(props))
        return Collected(crystals, targets, labelled)

    def _splits(self, collected: Collected, props: Sequence[MPProperty], source: str) -> dict[str, Split]:
        """Per property: the official (shipped) or Matformer (computed) split."""
        return {prop.name: self._split(collected, prop, j, source) for j, prop in enumerate(props)}

    def _split(self, collected: Collected, prop: MPProperty, column: int, source: str) -> Split:
        """The official (shipped) or Matformer (computed) split of one property."""
        present = collected.present(column)
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
                stacklevel=4,
            )
        return restrict_split(matformer_split(order, self.split_seed), present)
