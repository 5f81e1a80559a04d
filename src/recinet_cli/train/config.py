"""The resolved training configuration: defaults < dataset preset < config file < flags.

Every value that shapes a run lives in :class:`TrainConfig`; the resolved object is written
to ``RUN/config.json`` and into the model bundle, so a run can be repeated exactly with
``recinet train --config RUN/config.json``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from recinet_cli.errors import RecinetError
from recinet_cli.model.precision import PRECISIONS, Precision

#: Model settings a config may override besides ``blocks`` (ModelConfig field names).
MODEL_KEYS = ("hidden", "rbf_bins", "reciprocal", "kset", "gmax", "box", "filter_rbf", "head", "head_options")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (SPEC §6 defaults).

    Attributes:
        task: ``DATASET:PROP[,PROP...]`` as typed.
        data: local data for the dataset plugin (folder, file) or ``None``.
        fold: cross-validation fold (Matbench) or ``None``.
        epochs, lr, batch_size, weight_decay: optimiser schedule (Adam, OneCycle per batch;
            ``lr`` is OneCycle's peak); weight decay skips biases and norm parameters.
        blocks: number of ReciNet blocks.
        model: other :class:`~recinet_cli.model.config.ModelConfig` overrides (see
            :data:`MODEL_KEYS`); ``head`` defaults to ``scalar`` (one property) or ``mt-moe``.
        seed: seeds Python, NumPy and torch, the sampler order and the split of datasets
            without an official split.
        deterministic: ``torch.use_deterministic_algorithms(True)`` (slower on GPU).
        clip_grad: max gradient norm (``None``: no clipping, the paper's setting).
        precision: ``auto`` (bf16 autocast where the hardware has fast bf16, else fp32; see
            :mod:`recinet_cli.model.precision`), ``fp32`` or ``bf16``. A run's ``config.json``
            records the precision it used (``auto`` resolved).
        patience: stop after this many epochs without a better validation MAE (``None``: never).
        val_fraction, test_fraction: random split for datasets without an official one.
        device: ``auto`` | ``cpu`` | ``cuda``; gpus: processes on GPUs; nprocs: CPU processes
            (gloo), for testing DDP without GPUs.
        num_workers: DataLoader workers per process.
        out: run directory; name: model store name (default from the task); group: ensemble
            name shared by models trained e.g. with different seeds (``recinet predict
            --model GROUP`` averages them); register: add
            the final bundle to the model store.
        tensorboard: also log scalars for TensorBoard (needs the ``tensorboard`` package).
        compile: run the training forward through ``torch.compile`` (dynamic shapes, so
            ragged batches do not recompile). Off by default: on CPU it is slower than eager
            here (see docs/bench/speed.md); meant for CUDA.
    """

    task: str
    data: str | None = None
    fold: int | None = None
    epochs: int = 500
    lr: float = 1e-3
    batch_size: int = 64
    weight_decay: float = 1e-5
    blocks: int = 4
    model: Mapping[str, Any] = field(default_factory=dict)
    seed: int = 123
    deterministic: bool = False
    clip_grad: float | None = None
    precision: Precision = "auto"
    patience: int | None = None
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    device: str = "auto"
    gpus: int = 0
    nprocs: int = 1
    num_workers: int = 0
    out: str | None = None
    name: str | None = None
    group: str | None = None
    register: bool = True
    tensorboard: bool = False
    compile: bool = False

    def __post_init__(self) -> None:
        def bad(key: str, why: str) -> RecinetError:
            return RecinetError(f"training config: {key} {why}")

        self._check_types(bad)
        for key in ("epochs", "batch_size", "blocks", "nprocs"):
            if int(getattr(self, key)) < 1:
                raise bad(key, f"must be >= 1, got {getattr(self, key)}")
        if not self.lr > 0:
            raise bad("lr", f"must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise bad("weight_decay", f"must be >= 0, got {self.weight_decay}")
        if self.precision not in PRECISIONS:
            raise bad("precision", f"must be auto, fp32 or bf16, got {self.precision!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise bad("device", f"must be auto, cpu or cuda, got {self.device!r}")
        if self.gpus < 0 or self.num_workers < 0:
            raise bad("gpus/num_workers", "must be >= 0")
        if self.gpus and self.nprocs > 1:
            raise bad("nprocs", "is for CPU runs; with --gpus N the process count is N")
        if self.patience is not None and self.patience < 1:
            raise bad("patience", f"must be >= 1, got {self.patience}")
        if self.group is not None:
            from recinet_cli.modelstore import StoreError, check_name

            try:
                check_name(self.group)
            except StoreError as exc:
                raise bad("group", str(exc).replace("model name", "name")) from None
        if self.clip_grad is not None and not self.clip_grad > 0:
            raise bad("clip_grad", f"must be > 0, got {self.clip_grad}")
        if not (0 < self.val_fraction < 1 and 0 < self.test_fraction < 1 and self.val_fraction + self.test_fraction < 1):
            raise bad("val_fraction/test_fraction", "must each be in (0, 1) and leave a non-empty training set")
        if not 0 <= self.seed < 2**32:
            raise bad("seed", f"must be in 0..2**32-1, got {self.seed}")
        unknown = sorted(set(self.model) - set(MODEL_KEYS))
        if unknown:
            raise bad("model", f"unknown key(s) {', '.join(unknown)}; valid: {', '.join(MODEL_KEYS)}")
        object.__setattr__(self, "model", dict(self.model))

    def _check_types(self, bad: Any) -> None:
        """Reject values of the wrong type (a config file can hold ``epochs = "5"``), which
        would otherwise pass the range checks and fail deep inside training."""
        for f in fields(self):
            value = getattr(self, f.name)
            kind, optional = _FIELD_KINDS[f.name]
            if value is None and optional:
                continue
            if kind is int:
                ok = isinstance(value, int) and not isinstance(value, bool)
            elif kind is float:
                ok = isinstance(value, (int, float)) and not isinstance(value, bool)
                if ok:
                    object.__setattr__(self, f.name, float(value))
            elif kind is str:
                if optional and isinstance(value, os.PathLike):
                    value = os.fspath(value)
                    object.__setattr__(self, f.name, value)
                ok = isinstance(value, str)
            elif kind is bool:
                ok = isinstance(value, bool)
            else:  # the model table
                ok = isinstance(value, Mapping)
            if not ok:
                want = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(kind, "a table")
                raise bad(f.name, f"must be {want}{' (or absent)' if optional else ''}, got {value!r}")

    @property
    def world_size(self) -> int:
        """Processes this config launches (when not under torchrun)."""
        return self.gpus if self.gpus else self.nprocs

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (round-trips through :func:`from_mapping`)."""
        d = asdict(self)
        d["model"] = dict(self.model)
        return d


#: field name -> (type, may be None); checked by TrainConfig._check_types.
_FIELD_KINDS: dict[str, tuple[type, bool]] = {
    "task": (str, False), "data": (str, True), "fold": (int, True), "epochs": (int, False),
    "lr": (float, False), "batch_size": (int, False), "weight_decay": (float, False),
    "blocks": (int, False), "model": (dict, False), "seed": (int, False),
    "deterministic": (bool, False), "clip_grad": (float, True), "precision": (str, False),
    "patience": (int, True), "val_fraction": (float, False), "test_fraction": (float, False),
    "device": (str, False), "gpus": (int, False), "nprocs": (int, False),
    "num_workers": (int, False), "out": (str, True), "name": (str, True), "group": (str, True),
    "register": (bool, False), "tensorboard": (bool, False), "compile": (bool, False),
}


def from_mapping(data: Mapping[str, Any], where: str = "config") -> TrainConfig:
    """Build a :class:`TrainConfig`, naming unknown keys and the valid ones."""
    valid = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(data) - valid)
    if unknown:
        raise RecinetError(f"{where}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(sorted(valid))}")
    if "task" not in data:
        raise RecinetError(f"{where}: no task (e.g. task = \"matbench:jdft2d\")")
    try:
        return TrainConfig(**dict(data))
    except TypeError as exc:
        raise RecinetError(f"{where}: {exc}") from exc


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Settings from a TOML or JSON file (``RUN/config.json`` of an earlier run works)."""
    p = Path(path)
    try:
        text = p.read_bytes()
    except OSError as exc:
        raise RecinetError(f"{p}: cannot read config file: {exc.strerror or exc}") from exc
    try:
        if p.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                import tomli as tomllib  # type: ignore[no-redef]
            data = tomllib.loads(text.decode())
    except ValueError as exc:
        raise RecinetError(f"{p}: not valid {'JSON' if p.suffix.lower() == '.json' else 'TOML'}: {exc}") from exc
    if not isinstance(data, dict):
        raise RecinetError(f"{p}: expected a table of settings")
    return data


def resolve(
    task: str | None,
    preset: Mapping[str, Any],
    file_values: Mapping[str, Any],
    flags: Mapping[str, Any],
) -> TrainConfig:
    """Merge, lowest precedence first: :class:`TrainConfig` defaults, the dataset's paper
    preset, the config file, then the command-line flags that were given (``None`` = not
    given). ``model`` tables merge key by key."""
    merged: dict[str, Any] = {}
    model: dict[str, Any] = {}
    for layer in (preset, file_values, {k: v for k, v in flags.items() if v is not None}):
        for key, value in layer.items():
            if key == "model":
                if not isinstance(value, Mapping):
                    raise RecinetError(f"config: model must be a table of model settings, got {value!r}")
                model.update(value)
            else:
                merged[key] = value
    if task is not None:
        merged["task"] = task
    merged["model"] = model
    return from_mapping(merged)


def write_config(cfg: TrainConfig, path: Path) -> None:
    """Write the resolved config as JSON (atomically)."""
    from recinet_cli.train.checkpoint import atomic_write_text

    atomic_write_text(path, json.dumps(cfg.to_dict(), indent=2, sort_keys=True) + "\n")
