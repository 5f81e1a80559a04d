"""The one typed, validated model configuration (serialised into model bundles)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from recinet_cli.errors import RecinetError

KSet = Literal["sphere", "box"]


@dataclass(frozen=True)
class ModelConfig:
    """ReciNet hyperparameters (SPEC §1-5). Defaults are the paper's.

    Attributes:
        hidden: feature width d (256).
        blocks: number of ReciNet blocks (local conv + reciprocal update), 3-5 by preset.
        rbf_bins: Gaussian RBF centres for the edge feature -0.75/|d| on [rbf_min, rbf_max].
        edge_scale: c in x = c / |d| (PotNet's -0.75).
        reciprocal: the long-range stream on/off ("w/o reciprocal" ablation drops it).
        kset: ``sphere`` (all G != 0 with |G| <= gmax, basis-invariant) or ``box``.
        gmax: sphere radius in Å^-1.
        box: (N1, N2, N3) integer half-widths of the ``box`` k-set.
        filter_rbf: Gaussian RBF centres on [0, gmax] for the |G| filter MLP.
        head: name of a ``recinet.heads`` plugin.
        head_options: options of that head (validated by the head).
        targets: names of the predicted properties, in output order.
    """

    hidden: int = 256
    blocks: int = 4
    rbf_bins: int = 256
    rbf_min: float = -4.0
    rbf_max: float = 4.0
    edge_scale: float = -0.75
    reciprocal: bool = True
    kset: KSet = "sphere"
    gmax: float = 2.5
    box: tuple[int, int, int] = (2, 2, 2)
    filter_rbf: int = 32
    head: str = "scalar"
    head_options: Mapping[str, Any] = field(default_factory=dict)
    targets: tuple[str, ...] = ("target",)

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> RecinetError:
            return RecinetError(f"model config: {name} {why}")

        if self.hidden < 1:
            raise bad("hidden", f"must be >= 1, got {self.hidden}")
        if self.blocks < 1:
            raise bad("blocks", f"must be >= 1, got {self.blocks}")
        if self.rbf_bins < 2 or not self.rbf_min < self.rbf_max:
            raise bad("rbf_bins/rbf_min/rbf_max", "must give at least 2 centres on an increasing range")
        if self.kset not in ("sphere", "box"):
            raise bad("kset", f"must be 'sphere' or 'box', got {self.kset!r}")
        if not self.gmax > 0:
            raise bad("gmax", f"must be > 0 Å^-1, got {self.gmax}")
        if len(self.box) != 3 or any(int(n) < 0 for n in self.box) or not any(self.box):
            raise bad("box", f"must be three non-negative integers, not all zero, got {self.box}")
        if self.filter_rbf < 1:
            raise bad("filter_rbf", f"must be >= 1, got {self.filter_rbf}")
        if not self.targets or len(set(self.targets)) != len(self.targets):
            raise bad("targets", f"must be distinct names, got {list(self.targets)}")
        object.__setattr__(self, "box", tuple(int(n) for n in self.box))
        object.__setattr__(self, "targets", tuple(self.targets))
        object.__setattr__(self, "head_options", dict(self.head_options))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelConfig:
        """Build from a mapping, rejecting unknown keys (naming them and the valid ones)."""
        valid = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - valid)
        if unknown:
            raise RecinetError(
                f"model config: unknown key(s) {', '.join(unknown)}; valid: {', '.join(sorted(valid))}"
            )
        values = dict(data)
        for key in ("box", "targets"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (round-trips through :meth:`from_dict`)."""
        d = asdict(self)
        d["box"] = list(self.box)
        d["targets"] = list(self.targets)
        d["head_options"] = dict(self.head_options)
        return d
