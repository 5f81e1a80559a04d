"""``DATASET:PROP[,PROP...]`` task strings, resolved through the dataset registry."""

from __future__ import annotations

from dataclasses import dataclass

from recinet_cli.contracts import DatasetPlugin, PropertyInfo
from recinet_cli.errors import RecinetError


@dataclass(frozen=True)
class Task:
    """A parsed and resolved task.

    Attributes:
        dataset: the dataset plugin instance.
        properties: ``[T]`` the requested properties (aliases resolved), in the order typed.
    """

    dataset: DatasetPlugin
    properties: tuple[PropertyInfo, ...]

    @property
    def names(self) -> tuple[str, ...]:
        """``[T]`` canonical property names."""
        return tuple(p.name for p in self.properties)

    @property
    def label(self) -> str:
        """Canonical ``dataset:prop,prop`` (the default model name is derived from it)."""
        return f"{self.dataset.name}:{','.join(self.names)}"

    @property
    def default_name(self) -> str:
        """A model-store name for this task, e.g. ``jarvis-ehull`` or ``matbench-jdft2d``."""
        return f"{self.dataset.name}-{'+'.join(self.names)}".replace("/", "_")


def parse_task(text: str) -> Task:
    """Parse ``DATASET:PROP[,PROP...]`` and resolve both parts.

    Raises:
        RecinetError: malformed text; PluginError (a RecinetError): unknown dataset (listing
        the installed ones) or property (listing the dataset's properties).
    """
    from recinet_cli.registry import get_dataset

    dataset_name, sep, props_text = text.partition(":")
    props = [p.strip() for p in props_text.split(",") if p.strip()]
    if not sep or not dataset_name.strip() or not props:
        raise RecinetError(
            f"task {text!r}: expected DATASET:PROP[,PROP...], e.g. matbench:jdft2d or jarvis:bandgap_mbj,bandgap_opt"
        )
    plugin = get_dataset(dataset_name.strip())
    infos = tuple(plugin.property_info(p) for p in props)
    names = [i.name for i in infos]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise RecinetError(f"task {text!r}: property {repeated[0]!r} is requested twice")
    return Task(plugin, infos)
