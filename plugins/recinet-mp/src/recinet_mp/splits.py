"""MP-2018.6.1 splits: the shipped leaderboard ids, how to rebuild them, and Matformer's split.

* formation energy / band gap: the official JARVIS leaderboard lists
  (``megnet_e_form.json.zip``, ``megnet_gappbe.json.zip``; 60,000/5,000/4,239, identical for
  both). Only the ids are shipped, in ``data/mp_2018_splits.json.gz``, rebuilt with::

      python -m recinet_mp.splits /path/to/leaderboard_splits [OUT.json.gz]

* bulk / shear modulus: Matformer's setting, computed at load time by :func:`matformer_split`
  (the ids are not available offline, see the README).

The split file format (``recinet-split-ids/1``, as in ``recinet-jarvis``; ids ``mp-``/``mvc-``
stored as sorted number deltas), its reader/writer and ``seeded_split`` live in
:mod:`recinet_cli.datasets.common`.
"""

from __future__ import annotations

from collections.abc import Sequence

from recinet_cli.datasets.common import ShippedSplits, Split, ids_split, seeded_split

__all__ = [
    "LEADERBOARD_FILES",
    "MATFORMER_SIZES",
    "SHIPPED",
    "SPLITS",
    "build_split_file",
    "main",
    "matformer_sizes",
    "matformer_split",
    "shipped_splits",
]

SHIPPED = "mp_2018_splits.json.gz"

#: Canonical property name -> leaderboard zip file name.
LEADERBOARD_FILES: dict[str, str] = {
    "formation_energy": "megnet_e_form.json.zip",
    "bandgap": "megnet_gappbe.json.zip",
}
#: Matformer's ``n_train``/``n_val``/``n_test`` for the megnet moduli (``train_props.py``).
MATFORMER_SIZES = (4664, 393, 393)

#: The shipped leaderboard split file (formation energy and band gap share one table).
SPLITS = ShippedSplits(
    package="recinet_mp",
    filename=SHIPPED,
    files=LEADERBOARD_FILES,
    source="JARVIS leaderboard MP-2018.6.1 (megnet) splits",
)
#: ``{"formation_energy"|"bandgap": {part: [ids]}}`` of the shipped file (cached; do not mutate).
shipped_splits = SPLITS.read
#: ``build_split_file(leaderboard_dir, out)``: rewrite the file; returns ``{prop: {part: n}}``.
build_split_file = SPLITS.build
#: ``python -m recinet_mp.splits LEADERBOARD_DIR [OUT.json.gz]``.
main = SPLITS.main


def matformer_sizes(total_size: int) -> tuple[int, int, int]:
    """Matformer's ``(n_train, n_val, n_test)`` = (4664, 393, 393) when ``total_size`` allows.

    Below 5,450 labelled entries (a subset as local copy) the sizes are scaled down in the
    same proportions (``int(total_size * n / 5450)``), since the fixed counts cannot fit.
    """
    full = sum(MATFORMER_SIZES)
    if total_size >= full:
        return MATFORMER_SIZES
    n_train, n_val, n_test = (int(total_size * n / full) for n in MATFORMER_SIZES)
    return n_train, n_val, n_test


def matformer_split(ids: Sequence[str], split_seed: int = 123) -> Split:
    """Matformer's bulk/shear split of ``[n]`` labelled ids given in file order.

    ALIGNN's ``get_id_train_val_test(total_size=n, split_seed=123, n_train=4664, n_val=393,
    n_test=393)`` over the megnet entries with a label (``train_props.py`` of
    YKQ98/Matformer), mapped back to ids.
    """
    n_train, n_val, n_test = matformer_sizes(len(ids))
    parts = seeded_split(len(ids), split_seed=split_seed, n_train=n_train, n_val=n_val, n_test=n_test)
    return ids_split(ids, parts)


if __name__ == "__main__":
    raise SystemExit(main())
