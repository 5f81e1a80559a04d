"""Model bundles for the predict and export tests, made without training.

A bundle here is a small ReciNet with seeded random weights and a description shaped like the
one ``recinet train`` writes (targets with units and aliases, featurizer, scaler, dataset,
validation metrics, group), so model resolution, ensembles, export and safety can be tested
in milliseconds. End-to-end tests train real models through the CLI instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from recinet_cli.bundle import save_bundle
from recinet_cli.model.config import ModelConfig
from recinet_cli.model.recinet import ReciNet
from recinet_cli.modelstore import register
from recinet_cli.store.schema import featurizer_hash
from recinet_cli.structures.graph import GraphParams

#: (name, unit, aliases) of JARVIS properties, as the jarvis plugin names them.
JARVIS = {
    "bandgap_mbj": ("eV", ["mbj_bandgap", "mbj_gap"]),
    "bandgap_opt": ("eV", ["optb88vdw_bandgap", "bandgap"]),
    "formation_energy": ("eV/atom", ["formation_energy_peratom", "ef"]),
    "ehull": ("eV", ["e_hull"]),
}


def make_bundle(
    path: Path,
    targets: Sequence[str],
    *,
    val_mae: dict[str, float] | None = None,
    dataset: str = "jarvis",
    group: str | None = None,
    seed: int = 0,
    params: GraphParams = GraphParams(),
    model: dict[str, Any] | None = None,
) -> Path:
    """Write a bundle predicting ``targets`` (JARVIS names get their units and aliases).

    ``val_mae``: validation MAE per target (default 1.0 each); ``model``: ModelConfig overrides.
    """
    torch.manual_seed(seed)
    overrides = {"head": "scalar" if len(targets) == 1 else "mt-ls", **(model or {})}
    config = ModelConfig(hidden=16, blocks=1, rbf_bins=16, filter_rbf=8, targets=tuple(targets), **overrides)
    net = ReciNet(config).eval()
    net.set_scaler(torch.linspace(0.5, 1.5, len(targets)), torch.linspace(1.0, 2.0, len(targets)))
    maes = {t: 1.0 for t in targets} | (val_mae or {})
    units = {t: JARVIS.get(t, ("", []))[0] for t in targets}
    info = {
        "name": path.stem, "task": f"{dataset}:{','.join(targets)}", "model_config": config.to_dict(),
        "featurizer": params.as_dict(), "featurizer_hash": featurizer_hash(params.as_dict()),
        "targets": [{"name": t, "unit": units[t], "aliases": JARVIS.get(t, ("", []))[1]} for t in targets],
        "group": group,
        "scaler": {"mean": net.target_mean.tolist(), "std": net.target_std.tolist()},
        "dataset": {"name": dataset, "version": "test", "fold": None, "split": "random",
                    "sizes": {"train": 8, "val": 1, "test": 1}, "ids_sha256": {}},
        "metrics": {"best_epoch": 1, "val": {t: {"mae": maes[t], "rmse": maes[t], "n": 1} for t in targets},
                    "test": {t: {"mae": maes[t], "rmse": maes[t], "n": 1} for t in targets}},
        "train_config": {}, "created": "2026-11-25T00:00:00+0000",
    }
    return save_bundle(path, net, info)


def store_bundle(name: str, tmp: Path, targets: Sequence[str], **kwargs: Any) -> Path:
    """Make a bundle and register it in the (per-test) model store as ``name``."""
    bundle = make_bundle(tmp / f"{name}.safetensors", targets, **kwargs)
    return register(bundle, name).path
