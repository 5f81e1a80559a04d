"""Shared inference plumbing: a bundle's featurizer, crystals -> graph batches -> model inputs.

Used by ``recinet predict`` and by the parity checks of ``recinet export``, so that both feed
a model graphs built exactly as its training graphs were (the bundle's featurizer parameters,
never command-line flags).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from recinet_cli.bundle import BundleError
from recinet_cli.errors import RecinetError
from recinet_cli.structures.graph import GraphParams

if TYPE_CHECKING:
    import torch
    from torch_geometric.data import Batch

    from recinet_cli.featurize.worker import GraphRecord
    from recinet_cli.structures.crystal import Crystal

__all__ = ["bundle_params", "collate", "featurize_crystals", "model_inputs"]


def bundle_params(info: Mapping[str, Any], where: str = "bundle") -> GraphParams:
    """The featurizer parameters a model was trained with (from its bundle description).

    Raises:
        BundleError: the description has no usable featurizer parameters.
    """
    try:
        return GraphParams.from_dict(info.get("featurizer") or {})
    except RecinetError as exc:
        raise BundleError(f"{where}: {exc}") from None


def featurize_crystals(crystals: Sequence[Crystal], params: GraphParams) -> list[GraphRecord]:
    """Validate and build the graph of each crystal (raises ``StructureError`` on the first bad
    one; use :func:`recinet_cli.featurize.worker.process_file` to collect failures instead)."""
    from recinet_cli.featurize.worker import featurize_crystal

    return [featurize_crystal(c, params) for c in crystals]


def collate(records: Sequence[GraphRecord], dtype: torch.dtype | None = None) -> Batch:
    """A PyG batch of featurized structures (fields as :func:`recinet_cli.store.dataset.to_data`)."""
    import torch
    from torch_geometric.data import Batch

    from recinet_cli.store.dataset import to_data

    return Batch.from_data_list([to_data(r.arrays(), dtype or torch.float32) for r in records])


def model_inputs(model: Any, batch: Batch, device: torch.device | str | None = None,
                 merge_edges: bool = False) -> dict[str, torch.Tensor]:
    """The tensors of :data:`recinet_cli.model.recinet.INPUT_NAMES` for ``model`` (a ReciNet)
    and a batch, on ``device`` (default: the batch's device). ``merge_edges``: merge duplicate
    edges and add ``edge_weight`` (eager inference; exports take the plain inputs)."""
    from recinet_cli.model.recinet import prepare_inputs

    if device is not None:
        batch = batch.to(device)
    return prepare_inputs(batch, model.config, merge_edges=merge_edges)
