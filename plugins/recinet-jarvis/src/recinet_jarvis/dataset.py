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
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

import recinet_jarvis
from recinet_cli.datasets.common import (
    PARTS,
    Collected,
    Entry,
    EntryProperty,
    JsonEntriesDataset,
    Split,
    collect_structures,
    ids_split,
    restrict_split,
    seeded_split,
)
from recinet_cli.download import RemoteFile
from recinet_jarvis._io import entry_id, entry_value, to_crystal
from recinet_jarvis.splits import shipped_splits

#: The package's public names (listed once, in ``recinet_jarvis.__all__``) and the property type.
__all__ = [*recinet_jarvis.__all__, "JarvisProperty"]


class JarvisDataWarning(UserWarning):
    """Entries of a JARVIS file were skipped (unreadable structure, duplicate id)."""


class JarvisProperty(EntryProperty):
    """One JARVIS property: canonical name, unit, source key in the JSON, aliases."""


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


class _JarvisDataset(JsonEntriesDataset[JarvisProperty]):
    """Shared loading of a JARVIS JSON file; subclasses set the remote file and the splits."""

    #: An OPTIMADE response ``{"data": [...]}`` is read as its list of entries.
    wrapper_key: ClassVar[str | None] = "data"
    property_defs = PROPERTIES

    def _collect(self, entries: Sequence[Entry], props: Sequence[JarvisProperty], source: str) -> Collected:
        """Crystals and targets of the entries with at least one requested label.

        ``labelled`` lists every entry with a finite label (repeated ids included), before
        any structure was dropped.
        """
        labelled: dict[str, list[str]] = {p.name: [] for p in props}
        candidates: list[tuple[str, Entry]] = []
        rows: list[list[float]] = []
        for index, entry in enumerate(entries):
            values = [entry_value(entry, p.key) for p in props]
            if all(math.isnan(v) for v in values):
                continue
            sid = entry_id(entry) or f"{source}#{index}"
            for p, v in zip(props, values):
                if not math.isnan(v):
                    labelled[p.name].append(sid)
            candidates.append((sid, entry))
            rows.append(values)
        crystals, kept = collect_structures(candidates, to_crystal, source, JarvisDataWarning, stacklevel=3)
        targets = np.asarray([rows[k] for k in kept], dtype=np.float64).reshape(len(kept), len(props))
        return Collected(crystals, targets, labelled)


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

    def _splits(self, collected: Collected, props: Sequence[JarvisProperty], source: str) -> dict[str, Split]:
        """The shipped split of each property, limited to the loaded, labelled ids."""
        official = shipped_splits()
        return {p.name: restrict_split(official[p.name], collected.present(j)) for j, p in enumerate(props)}


class JarvisDFT2D(_JarvisDataset):
    """JARVIS-DFT dft_2d 2021-03-12 monolayers with a seeded 80/10/10 split per property."""

    name = "jarvis_2d"
    description = "JARVIS-DFT dft_2d 2021-03-12 monolayers, seeded 80/10/10 split (seed 123)"
    dataset_version = "dft_2d_2021-03-12"
    remote = DFT_2D_REMOTE
    member = "d2-3-12-2021.json"
    #: Seed of the jarvis-tools/ALIGNN split.
    split_seed: ClassVar[int] = 123

    def _splits(self, collected: Collected, props: Sequence[JarvisProperty], source: str) -> dict[str, Split]:
        """Per property: seed-123 shuffle of the labelled entries (file order), 80/10/10."""
        out: dict[str, Split] = {}
        for j, p in enumerate(props):
            order = collected.labelled[p.name]
            split = ids_split(order, seeded_split(len(order), split_seed=self.split_seed))
            out[p.name] = restrict_split(split, collected.present(j))
        return out
