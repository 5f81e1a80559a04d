"""``recinet bench moe``: expert selection of a ReciNet-MT (``mt-moe``) model, paper Figure 4.

Definition (paper App. C.5, Figure 4): run the model over a set of structures and count, for
each task (property) ``t``, how often its router selects each expert ``e`` in its top K
(eval mode: no routing noise). The *expert selection frequency* is that count normalised per
task, ``f[t, e] = count[t, e] / Σ_e' count[t, e']`` (each structure contributes K selections
per task, so a row sums to 1; ``K · f[t, e]`` is the share of structures for which expert
``e`` is among task ``t``'s top K). The *task similarity* is the cosine similarity of these
frequency vectors, ``S[t, u] = f_t · f_u / (‖f_t‖ ‖f_u‖)``: 1 on the diagonal and, as the
frequencies are non-negative, in [0, 1]; a high value means two properties route through the
same experts (the paper finds 0.85 for the two JARVIS band gaps).

The selections are read from the head's own ``expert_counts`` buffer (the change over this
run: the head counts the indices it routes to, see
:class:`recinet_cli.model.heads.moe.MoEDecoder`); a forward hook on the head also captures its
input, from which the mean gate weights (the soft version of the same figure) are computed.
``recorded=True`` instead reports the counts stored in the bundle, i.e. those the head
accumulated while it was trained (noisy training routing plus the evaluation passes).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recinet_cli.errors import RecinetError

__all__ = [
    "DEFAULT_STRUCTURES",
    "MoEAnalysis",
    "cosine_similarity",
    "load_moe_model",
    "plot_moe",
    "route_records",
    "run_moe_analysis",
    "selection_frequencies",
]

#: The 70 real JARVIS POSCARs shipped with the repository (the default structure set).
DEFAULT_STRUCTURES = Path(__file__).resolve().parents[3] / "examples" / "structures" / "jarvis_poscars"

MOE_HEAD = "mt-moe"


def selection_frequencies(counts: np.ndarray) -> np.ndarray:
    """``[T, E]`` counts -> per-task selection frequencies (rows sum to 1; an all-zero row
    stays zero)."""
    counts = np.asarray(counts, dtype=np.float64)
    totals = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)


def cosine_similarity(rows: np.ndarray) -> np.ndarray:
    """``[T, D]`` -> ``[T, T]`` cosine similarity of the rows (a zero row: similarity 0 with
    everything, itself included)."""
    rows = np.asarray(rows, dtype=np.float64)
    norms = np.linalg.norm(rows, axis=1)
    unit = np.divide(rows, norms[:, None], out=np.zeros_like(rows), where=norms[:, None] > 0)
    sim = unit @ unit.T
    return np.clip((sim + sim.T) / 2, -1.0, 1.0)  # exactly symmetric, no 1.0000000002


@dataclass
class MoEAnalysis:
    """Expert selection of one ``mt-moe`` model over a set of structures (see module doc).

    Attributes:
        counts: ``[T, E]`` how often task t's router chose expert e.
        frequencies: ``[T, E]`` counts normalised per task (rows sum to 1).
        similarity: ``[T, T]`` cosine similarity of the frequency rows (paper Figure 4, right).
        mean_gates: ``[T, E]`` mean gate weight per expert (rows sum to 1), or None for
            recorded counts; ``gate_similarity`` is its cosine similarity.
    """

    model: str
    targets: list[str]
    n_experts: int
    top_k: int
    source: str  # "structures" or "recorded"
    structures: int
    counts: np.ndarray
    frequencies: np.ndarray
    similarity: np.ndarray
    mean_gates: np.ndarray | None = None
    gate_similarity: np.ndarray | None = None
    failures: list[tuple[str, str]] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)

    def most_similar_pair(self) -> tuple[str, str, float] | None:
        """The two distinct tasks with the highest similarity (None for one task)."""
        t = len(self.targets)
        if t < 2:
            return None
        off = self.similarity + np.diag(np.full(t, -np.inf))
        i, j = np.unravel_index(int(np.argmax(off)), off.shape)
        return self.targets[min(i, j)], self.targets[max(i, j)], float(self.similarity[i, j])

    def as_dict(self) -> dict[str, Any]:
        def matrix(m: np.ndarray | None) -> list[list[float]] | None:
            return None if m is None else [[float(v) for v in row] for row in m]

        pair = self.most_similar_pair()
        return {
            "model": self.model,
            "targets": list(self.targets),
            "experts": [f"E{e + 1}" for e in range(self.n_experts)],
            "n_experts": self.n_experts,
            "top_k": self.top_k,
            "source": self.source,
            "structures": self.structures,
            "failed": [{"source": s, "reason": r} for s, r in self.failures],
            "definition": {
                "frequencies": "count[t, e] / sum_e count[t, e]: how often task t's top-K router "
                               "(eval mode, no noise) selects expert e; rows sum to 1",
                "similarity": "cosine similarity of the tasks' frequency vectors (paper Figure 4)",
                "mean_gates": "mean over structures of task t's sparse gate weight on expert e",
                "gate_similarity": "cosine similarity of the tasks' mean gate vectors",
            },
            "counts": matrix(self.counts),
            "frequencies": matrix(self.frequencies),
            "similarity": matrix(self.similarity),
            "mean_gates": matrix(self.mean_gates),
            "gate_similarity": matrix(self.gate_similarity),
            "most_similar": None if pair is None else {"tasks": [pair[0], pair[1]], "similarity": pair[2]},
        }


def load_moe_model(name_or_path: str, device: Any = "cpu") -> tuple[Any, dict[str, Any], Path]:
    """``(ReciNet eval, bundle info, bundle path)`` of a model with an ``mt-moe`` head.

    Raises:
        RecinetError: unknown model, not a bundle, or a bundle whose head has no experts.
    """
    from recinet_cli.bundle import load_bundle, read_bundle_info
    from recinet_cli.model.heads.moe import MoEDecoder
    from recinet_cli.modelstore import resolve

    path = resolve(name_or_path)
    info = read_bundle_info(path)  # cheap: refuse a non-MoE model before loading its weights
    head = (info.get("model_config") or {}).get("head")
    if head != MOE_HEAD:
        raise RecinetError(
            f"{name_or_path}: the model's head is {head!r}, not {MOE_HEAD!r}; bench moe needs a "
            f"ReciNet-MT model (train one with --head {MOE_HEAD})"
        )
    model, info = load_bundle(path, device)
    if not isinstance(model.head, MoEDecoder):
        raise RecinetError(f"{name_or_path}: head {head!r} is not the built-in {MOE_HEAD} decoder")
    return model, info, path


def route_records(model: Any, records: Sequence[Any], batch_size: int = 64,
                  device: Any = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Run ``model`` (eval) over featurized structures; ``(counts [T, E], gate sums [T, E])``.

    The counts are the change of the head's ``expert_counts`` buffer; the gate sums come from
    :meth:`MoEDecoder.gates` on the head input captured by a forward hook.
    """
    import torch

    from recinet_cli.inference import collate, model_inputs

    head = model.head
    was_training = model.training
    model.eval()
    before = head.expert_counts.detach().clone()
    gate_sum = torch.zeros(head.n_tasks, head.n_experts, dtype=torch.float64)
    captured: list[torch.Tensor] = []
    hook = head.register_forward_hook(lambda _mod, args, _out: captured.append(args[0].detach()))
    try:
        with torch.no_grad():
            for start in range(0, len(records), batch_size):
                batch = collate(records[start : start + batch_size])
                model(**model_inputs(model, batch, device))
                for x in captured:
                    gate_sum += head.gates(x).sum(1).double().cpu()  # [T, B, E] -> [T, E]
                captured.clear()
    finally:
        hook.remove()
        model.train(was_training)
    counts = (head.expert_counts.detach() - before).double().cpu().numpy()
    return counts, gate_sum.numpy()


def _featurize(crystals: Sequence[Any], params: Any) -> tuple[list[Any], list[tuple[str, str]]]:
    from recinet_cli.featurize.worker import featurize_crystal

    records, failures = [], []
    for c in crystals:
        try:
            records.append(featurize_crystal(c, params))
        except RecinetError as exc:
            failures.append((f"{c.source} [{c.id}]", str(exc)))
    return records, failures


def run_moe_analysis(
    model: str,
    inputs: Sequence[str | Path] = (),
    *,
    batch_size: int = 64,
    device: str = "auto",
    recorded: bool = False,
    log: Callable[[str], None] | None = None,
) -> MoEAnalysis:
    """Expert-selection frequencies and task similarity of ``model`` (store name, bundle or
    run directory) over ``inputs`` (structure files, directories, globs; default
    :data:`DEFAULT_STRUCTURES`), or over the bundle's recorded training counts.

    Raises:
        RecinetError: not an ``mt-moe`` model, no usable structures, nothing recorded.
    """
    from recinet_cli.inference import bundle_params
    from recinet_cli.prediction.engine import pick_device
    from recinet_cli.structures.readers import read_structures

    dev = pick_device(device)
    net, info, path = load_moe_model(model, dev)
    head = net.head
    targets = list(net.config.targets)
    common = {"model": str(path), "targets": targets, "n_experts": head.n_experts, "top_k": head.top_k}
    if recorded:
        if inputs:
            raise RecinetError("--recorded reports the counts stored in the bundle; pass no STRUCTURES with it")
        counts = head.expert_counts.detach().double().cpu().numpy()
        if not counts.any():
            raise RecinetError(f"{model}: the bundle records no expert selections (pass STRUCTURES instead of --recorded)")
        freq = selection_frequencies(counts)
        n = int(round(counts[0].sum() / head.top_k))
        return MoEAnalysis(**common, source="recorded", structures=n, counts=counts, frequencies=freq,
                           similarity=cosine_similarity(freq))

    if not inputs:
        if not DEFAULT_STRUCTURES.is_dir():
            raise RecinetError("no STRUCTURES given and the example structures are not installed; pass structure files")
        inputs = [DEFAULT_STRUCTURES]
    crystals, read_failures = read_structures(inputs)
    records, failures = _featurize(crystals, bundle_params(info, str(path)))
    failures = [(f.source + (f" [{f.id}]" if f.id else ""), f.reason) for f in read_failures] + failures
    if not records:
        first = f" ({failures[0][0]}: {failures[0][1]})" if failures else ""
        raise RecinetError(f"no usable structures in {', '.join(map(str, inputs))}{first}")
    if log is not None:
        log(f"routing {len(records)} structures through {path} ({len(targets)} tasks, "
            f"{head.n_experts} experts, top-{head.top_k}) on {dev}")
    counts, gate_sum = route_records(net, records, batch_size, dev)
    freq = selection_frequencies(counts)
    mean_gates = gate_sum / len(records)
    return MoEAnalysis(
        **common, source="structures", structures=len(records), counts=counts, frequencies=freq,
        similarity=cosine_similarity(freq), mean_gates=mean_gates, gate_similarity=cosine_similarity(mean_gates),
        failures=failures, ids=[r.id for r in records],
    )


def _model_label(path: str) -> str:
    """``NAME`` for ``.../NAME/model.safetensors`` (store entry, run directory), else the stem."""
    p = Path(path)
    return p.parent.name if p.name == "model.safetensors" and p.parent.name else p.stem


def plot_moe(analysis: MoEAnalysis, path: Path) -> Path:
    """Paper Figure 4 as one image: expert selection frequencies per task (left) and the
    task-by-task cosine similarity (right), both annotated heat maps."""
    from recinet_cli.bench.plotting import require_matplotlib, save_figure

    plt = require_matplotlib()
    a = analysis
    t, e = a.frequencies.shape
    width = max(8.0, 0.55 * e + 0.6 * t + 4.0)
    fig, (left, right) = plt.subplots(
        1, 2, figsize=(width, max(3.0, 0.6 * t + 2.2)), layout="constrained",
        gridspec_kw={"width_ratios": [max(e, 1), max(t, 1) + 1]},
    )
    im = left.imshow(a.frequencies, cmap="Blues", vmin=0.0, vmax=max(float(a.frequencies.max()), 1e-12), aspect="auto")
    left.set_xticks(range(e), [f"E{i + 1}" for i in range(e)], fontsize=8)
    left.set_yticks(range(t), a.targets)
    left.set_xlabel("expert")
    left.set_title(f"expert selection frequency (top-{a.top_k})")
    for i in range(t):
        for j in range(e):
            v = a.frequencies[i, j]
            left.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7,
                      color="white" if v > 0.6 * a.frequencies.max() else "black")
    fig.colorbar(im, ax=left, shrink=0.9)
    im2 = right.imshow(a.similarity, cmap="Reds", vmin=0.0, vmax=1.0)
    right.set_xticks(range(t), a.targets, rotation=45, ha="right")
    right.set_yticks(range(t), a.targets)
    right.set_title("task cosine similarity")
    for i in range(t):
        for j in range(t):
            v = a.similarity[i, j]
            right.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8, color="white" if v > 0.6 else "black")
    fig.colorbar(im2, ax=right, shrink=0.9)
    where = f"{a.structures} structures" if a.source == "structures" else "counts recorded in training"
    fig.suptitle(f"{_model_label(a.model)}: MoE routing over {where}", fontsize=10)
    return save_figure(fig, path)
