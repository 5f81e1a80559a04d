"""``recinet bench ablation``: the paper's Table 4 / Table 11 ablations on one task.

Every variant is one training run on the same split (fold 0 for Matbench, the official split
otherwise) with the same seed; only the named setting changes relative to the full model
(the task's paper preset). Variants, combinable with ``+``:

- ``full``: the paper preset;
- ``no-reciprocal``: drop the reciprocal block (Table 4, "w/o Reciprocal");
- ``blocks=N``: N ReciNet blocks (Table 11);
- ``kset=box``: the fixed integer box k-set (SPEC §3, ``box`` = (2, 2, 2)) instead of the sphere;
- ``gmax=X``: sphere radius X Å^-1 (default 2.5);
- any other model setting ``KEY=VALUE`` (``hidden=128``, ``box=[1,1,1]``) or ``lr=X``.

A variant whose resolved config equals an earlier one's (``blocks=3`` when the preset already
has 3 blocks) shares that run.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from recinet_cli.bench.accuracy import convert
from recinet_cli.bench.runs import (
    EXECUTION_KEYS,
    RunRecord,
    RunSettings,
    bench_config,
    ensure_run,
    safe_name,
)
from recinet_cli.errors import RecinetError
from recinet_cli.train.config import MODEL_KEYS

__all__ = [
    "AblationReport",
    "DEFAULT_OUT",
    "DEFAULT_VARIANTS",
    "PAPER_ABLATION",
    "Variant",
    "paper_ablation",
    "parse_variant",
    "run_ablation",
]

DEFAULT_OUT = Path("runs") / "bench-ablation"
#: Table 4 (reciprocal on/off), Table 11 (3/4/5 blocks), SPEC §3 (box k-set, G_max around 2.5).
DEFAULT_VARIANTS = ("full", "no-reciprocal", "blocks=3", "blocks=4", "blocks=5", "kset=box", "gmax=2.0", "gmax=3.0")

#: Units of the JARVIS columns of Tables 4 and 11.
_PAPER_UNITS = {"formation_energy": "meV/atom", "bandgap_opt": "eV", "total_energy": "meV/atom",
                "bandgap_mbj": "eV", "ehull": "meV"}


def _row(fe: float, opt: float, etot: float, mbj: float, ehull: float) -> dict[str, float]:
    return {"formation_energy": fe, "bandgap_opt": opt, "total_energy": etot, "bandgap_mbj": mbj, "ehull": ehull}


#: JARVIS test MAE by (reciprocal, blocks): Table 4 (w/o reciprocal 3/4; ReciNet 3/4) and
#: Table 11 (ReciNet 3/4/5; its 3- and 4-block rows equal Table 4's).
PAPER_ABLATION: dict[tuple[bool, int], tuple[str, dict[str, float]]] = {
    (False, 3): ("Table 4", _row(29.6, 0.135, 32.5, 0.295, 68.8)),
    (False, 4): ("Table 4", _row(28.9, 0.132, 31.0, 0.290, 65.6)),
    (True, 3): ("Tables 4, 11", _row(27.8, 0.127, 27.2, 0.242, 52.9)),
    (True, 4): ("Tables 4, 11", _row(27.0, 0.126, 26.8, 0.239, 48.0)),
    (True, 5): ("Table 11", _row(27.7, 0.127, 27.2, 0.240, 43.0)),
}


def paper_ablation(dataset: str, prop: str, unit: str, reciprocal: bool, blocks: int,
                   model: Mapping[str, Any]) -> dict[str, Any] | None:
    """The paper's test MAE for a JARVIS variant that differs from the paper model only in
    the reciprocal block and the block count; ``None`` otherwise."""
    if dataset != "jarvis" or prop not in _PAPER_UNITS:
        return None
    if any(k != "reciprocal" for k in model):  # other model settings: not a paper row
        return None
    entry = PAPER_ABLATION.get((reciprocal, blocks))
    if entry is None:
        return None
    source, values = entry
    value = convert(values[prop], _PAPER_UNITS[prop], unit)
    return {"mae": value, "paper_value": values[prop], "paper_unit": _PAPER_UNITS[prop], "source": source}


@dataclass(frozen=True)
class Variant:
    """One ablation variant: a name and what it changes relative to the full model."""

    name: str
    blocks: int | None = None
    lr: float | None = None
    model: Mapping[str, Any] = field(default_factory=dict)


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_variant(text: str) -> Variant:
    """``full``, ``no-reciprocal``, ``KEY=VALUE`` (blocks, lr, or a model setting), joined
    with ``+``; raises RecinetError naming the valid forms."""
    name = text.strip()
    if not name:
        raise RecinetError("--variants: empty variant name")
    blocks: int | None = None
    lr: float | None = None
    model: dict[str, Any] = {}
    for part in name.split("+"):
        part = part.strip()
        if part == "full":
            continue
        if part in ("no-reciprocal", "noreciprocal", "w/o-reciprocal"):
            model["reciprocal"] = False
            continue
        key, sep, raw = part.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not raw.strip():
            raise RecinetError(
                f"--variants: {part!r} is not a variant; use full, no-reciprocal, blocks=N, kset=box, gmax=X "
                f"or KEY=VALUE with KEY in blocks, lr, {', '.join(MODEL_KEYS)} (combine with +)"
            )
        value = _value(raw.strip())
        if key == "blocks":
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise RecinetError(f"--variants: blocks must be a positive integer, got {raw!r}")
            blocks = value
        elif key == "lr":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise RecinetError(f"--variants: lr must be a positive number, got {raw!r}")
            lr = float(value)
        elif key in MODEL_KEYS:
            if key == "gmax" and (isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0):
                raise RecinetError(f"--variants: gmax must be a positive number (1/Å), got {raw!r}")
            model[key] = float(value) if key == "gmax" else value
        else:
            raise RecinetError(f"--variants: unknown setting {key!r} in {part!r}; valid: blocks, lr, {', '.join(MODEL_KEYS)}")
    return Variant(name, blocks, lr, model)


@dataclass
class VariantResult:
    variant: Variant
    run: RunRecord
    same_as: str | None  # the earlier variant whose run this one shares

    @property
    def config(self) -> dict[str, Any]:
        return self.run.config


@dataclass
class AblationReport:
    """Everything ``bench ablation`` measured (``as_dict`` is its JSON)."""

    task: str
    dataset: str
    prop: str
    unit: str
    fold: int | None
    seed: int
    epochs: int
    paper_epochs: int
    rows: list[VariantResult]
    out: Path

    def metric(self, r: VariantResult, split: str) -> float:
        return float(r.run.results[split][self.prop]["mae"])

    def row_dict(self, r: VariantResult) -> dict[str, Any]:
        full = self.rows[0]
        test, ref = self.metric(r, "test"), self.metric(full, "test")
        cfg = r.config
        model = dict(cfg.get("model") or {})
        reciprocal = bool(model.get("reciprocal", True))
        return {
            "variant": r.variant.name, "run_dir": str(r.run.run_dir), "status": r.run.status,
            "same_as": r.same_as, "blocks": cfg.get("blocks"), "reciprocal": reciprocal,
            "kset": model.get("kset", "sphere"), "gmax": model.get("gmax", 2.5), "lr": cfg.get("lr"),
            "model": model, "val_mae": self.metric(r, "val"), "test_mae": test,
            "test_rmse": float(r.run.results["test"][self.prop]["rmse"]),
            "delta_test_mae": test - ref, "delta_test_mae_pct": (test - ref) / ref * 100 if ref else None,
            "params": r.run.params, "epoch_seconds": r.run.epoch_seconds, "best_epoch": r.run.results.get("best_epoch"),
            "split_ids_sha256": r.run.data.get("ids_sha256"),
            "paper": paper_ablation(self.dataset, self.prop, self.unit, reciprocal, int(cfg.get("blocks", 0)), model),
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "bench": "ablation", "task": self.task, "dataset": self.dataset, "property": self.prop, "unit": self.unit,
            "fold": self.fold, "seed": self.seed, "epochs": self.epochs, "paper_epochs": self.paper_epochs,
            "comparable_to_paper": self.epochs >= self.paper_epochs, "out": str(self.out),
            "variants": [self.row_dict(r) for r in self.rows],
        }


def run_ablation(
    task: str,
    *,
    variants: Sequence[str] = DEFAULT_VARIANTS,
    fold: int | None = None,
    out: Path | None = None,
    settings: RunSettings = RunSettings(),
    log: Callable[[str], None] | None = None,
    progress: str = "auto",
) -> AblationReport:
    """Train or reuse one run per variant (``full`` first, added when missing) on the same
    split and seed; ``settings.blocks``/``settings.model`` are base overrides applied before
    each variant's."""
    from recinet_cli.train.tasks import parse_task

    parsed = parse_task(task)
    if len(parsed.names) != 1:
        raise RecinetError("bench ablation compares single-property models; name one property")
    ds = parsed.dataset
    n_folds = int(getattr(ds, "folds", 0) or 0)
    if fold is not None and not 0 <= fold < n_folds:
        have = f"folds 0..{n_folds - 1}" if n_folds else "one official split, no folds"
        raise RecinetError(f"--fold: dataset {ds.name!r} has {have}, got {fold}")
    if n_folds and fold is None:
        fold = 0
    parsed_variants = [parse_variant(v) for v in variants]
    names = [v.name for v in parsed_variants]
    if len(set(names)) != len(names):
        raise RecinetError(f"--variants: {sorted({n for n in names if names.count(n) > 1})[0]!r} is listed twice")
    if not parsed_variants or parsed_variants[0].name != "full":
        parsed_variants = [Variant("full")] + [v for v in parsed_variants if v.name != "full"]
    base = (out or DEFAULT_OUT) / safe_name(parsed.label) / (f"fold-{fold}" if fold is not None else "official")
    preset = ds.preset(list(parsed.names))
    rows: list[VariantResult] = []
    seen: dict[str, tuple[str, RunRecord]] = {}
    cfg0 = None
    for i, v in enumerate(parsed_variants):
        variant = replace(settings, model={**settings.model, **v.model},
                          blocks=v.blocks if v.blocks is not None else settings.blocks)
        cfg = bench_config(parsed.label, variant, out=base / safe_name(v.name), fold=fold)
        if v.lr is not None:
            cfg = replace(cfg, lr=v.lr)
        cfg0 = cfg0 or cfg
        key = json.dumps({k: val for k, val in cfg.to_dict().items() if k not in EXECUTION_KEYS}, sort_keys=True)
        if key in seen:
            first, record = seen[key]
            rows.append(VariantResult(v, record, first))
            (log or _stderr)(f"bench: {v.name}: same settings as {first}; sharing its run")
            continue
        record = ensure_run(cfg, f"{parsed.label} {v.name} [{i + 1}/{len(parsed_variants)}]", log=log, progress=progress)
        seen[key] = (v.name, record)
        rows.append(VariantResult(v, record, None))
    assert cfg0 is not None
    first = rows[0].run.results
    unit = (first.get("units") or [parsed.properties[0].unit])[0]
    return AblationReport(parsed.label, ds.name, parsed.names[0], unit, fold, cfg0.seed, cfg0.epochs,
                          int(preset.get("epochs", 500)), rows, base)


def _stderr(text: str) -> None:
    import sys

    print(text, file=sys.stderr, flush=True)
