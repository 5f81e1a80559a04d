"""Official JARVIS dft_3d splits: the shipped id lists and how to rebuild them.

The JARVIS leaderboard publishes, per dft_3d task, a zip holding one JSON
``{"train": {jid: target}, "val": {...}, "test": {...}}``. We ship only the ids, in
``data/dft_3d_2021_splits.json.gz``, rebuilt with::

    python -m recinet_jarvis.splits /path/to/leaderboard_splits [OUT.json.gz]

The file format (``recinet-split-ids/1``), its reader/writer and ``seeded_split`` (the
jarvis-tools/ALIGNN ``get_id_train_val_test`` procedure, used where no official split exists:
``jarvis_2d``) live in :mod:`recinet_cli.datasets.common`. Properties with identical splits
share one table (formation energy, OptB88vdW gap and total energy; bulk and shear modulus).
"""

from __future__ import annotations

from recinet_cli.datasets.common import ShippedSplits

__all__ = ["LEADERBOARD_FILES", "SHIPPED", "SPLITS", "build_split_file", "main", "shipped_splits"]

#: Package-data file name of the shipped dft_3d splits.
SHIPPED = "dft_3d_2021_splits.json.gz"

#: Canonical property name -> leaderboard zip file name.
LEADERBOARD_FILES: dict[str, str] = {
    "formation_energy": "dft_3d_formation_energy_peratom.json.zip",
    "bandgap_opt": "dft_3d_optb88vdw_bandgap.json.zip",
    "total_energy": "dft_3d_optb88vdw_total_energy.json.zip",
    "bandgap_mbj": "dft_3d_mbj_bandgap.json.zip",
    "ehull": "dft_3d_ehull.json.zip",
    "bulk_modulus": "dft_3d_bulk_modulus_kv.json.zip",
    "shear_modulus": "dft_3d_shear_modulus_gv.json.zip",
    "exfoliation_energy": "dft_3d_exfoliation_energy.json.zip",
}

#: The shipped dft_3d split file. Its lists are exactly the leaderboard's (a handful of jids
#: occur in two parts because dft_3d 2021 holds duplicate jids; ``JarvisDFT3D.load`` makes
#: the parts disjoint).
SPLITS = ShippedSplits(
    package="recinet_jarvis",
    filename=SHIPPED,
    files=LEADERBOARD_FILES,
    source="JARVIS leaderboard dft_3d (2021) splits",
    usage_note=__doc__.split("\n\n")[1] if __doc__ else "",
)
#: ``{property: {part: [jids]}}`` of the shipped file (cached; do not mutate).
shipped_splits = SPLITS.read
#: ``build_split_file(leaderboard_dir, out)``: rewrite the file; returns ``{prop: {part: n}}``.
build_split_file = SPLITS.build
#: ``python -m recinet_jarvis.splits LEADERBOARD_DIR [OUT.json.gz]``.
main = SPLITS.main


if __name__ == "__main__":
    raise SystemExit(main())
