"""Plugin discovery through Python entry points.

Installed packages declare plugins in the entry-point groups
:data:`~recinet_cli.contracts.DATASETS_GROUP` and :data:`~recinet_cli.contracts.HEADS_GROUP`.
:func:`discover` loads them once per group (cached; :func:`clear_cache` resets) and is
defensive: a plugin that fails to import, is not a subclass of its group's contract, or
duplicates a name already taken is skipped with a :class:`RecinetPluginWarning`, never a crash.

Set ``RECINET_PLUGINS`` to a comma-separated list of plugin names to load only those (the
others are not imported at all); an empty value loads none. It is read at discovery time.

Nothing happens at import time: no discovery and no environment reads.
"""

from __future__ import annotations

import inspect
import os
import warnings
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points

from recinet_cli.contracts import DATASETS_GROUP, HEADS_GROUP, DatasetPlugin, HeadPlugin
from recinet_cli.errors import PluginError

__all__ = [
    "ENV_VAR",
    "PluginEntry",
    "RecinetPluginWarning",
    "clear_cache",
    "discover",
    "get_dataset",
    "get_head",
    "list_plugins",
]

#: Environment variable restricting which plugins are loaded.
ENV_VAR = "RECINET_PLUGINS"

#: The distribution that ships the built-in plugins; it wins name clashes.
BUILTIN_DISTRIBUTION = "recinet"

_CONTRACTS: dict[str, type] = {DATASETS_GROUP: DatasetPlugin, HEADS_GROUP: HeadPlugin}
_KINDS: dict[str, str] = {DATASETS_GROUP: "dataset", HEADS_GROUP: "head"}

#: Raw entry points per group, read once.
_ENTRY_POINTS: dict[str, list[EntryPoint]] = {}
#: Loaded plugins per (group, RECINET_PLUGINS filter).
_LOADED: dict[tuple[str, frozenset[str] | None], dict[str, PluginEntry]] = {}


class RecinetPluginWarning(UserWarning):
    """A plugin was skipped: it failed to load, breaks its contract, or duplicates a name."""


@dataclass(frozen=True)
class PluginEntry:
    """One loaded plugin.

    Attributes:
        name: The entry-point name (what users type).
        group: The entry-point group, e.g. ``"recinet.datasets"``.
        value: The entry-point target, ``"module:attr"``.
        distribution: The installed distribution providing it, or ``"unknown"``.
        version: That distribution's version, or ``""``.
        obj: The loaded plugin class (not part of repr or comparisons).
    """

    name: str
    group: str
    value: str
    distribution: str
    version: str
    obj: type = field(repr=False, compare=False)

    @property
    def kind(self) -> str:
        """``"dataset"`` or ``"head"`` (the group name for any other group)."""
        return _KINDS.get(self.group, self.group)

    @property
    def description(self) -> str:
        """The plugin class's one-line description (``""`` when it has none)."""
        return str(getattr(self.obj, "description", "") or "")


def clear_cache() -> None:
    """Forget discovered plugins so the next :func:`discover` reads entry points again."""
    _ENTRY_POINTS.clear()
    _LOADED.clear()


def _warn(message: str) -> None:
    """Emit a :class:`RecinetPluginWarning`."""
    warnings.warn(message, RecinetPluginWarning, stacklevel=3)


def _dist_info(ep: EntryPoint) -> tuple[str, str]:
    """``(distribution name, version)`` of an entry point, ``("unknown", "")`` if unknown."""
    dist = getattr(ep, "dist", None)
    name = getattr(dist, "name", None) if dist is not None else None
    version = getattr(dist, "version", None) if dist is not None else None
    return (str(name) if name else "unknown", str(version) if version else "")


def _sort_key(ep: EntryPoint) -> tuple[bool, str, str]:
    """Built-ins first, then by distribution name, then by entry-point value."""
    dist = _dist_info(ep)[0]
    return (dist != BUILTIN_DISTRIBUTION, dist.lower(), ep.value)


def _plugin_filter() -> frozenset[str] | None:
    """The names allowed by ``RECINET_PLUGINS``; ``None`` when the variable is unset."""
    raw = os.environ.get(ENV_VAR)
    if raw is None:
        return None
    return frozenset(part.strip() for part in raw.split(",") if part.strip())


def _entry_points_for(group: str) -> list[EntryPoint]:
    """The group's entry points, sorted deterministically; read once per group."""
    if group not in _ENTRY_POINTS:
        _ENTRY_POINTS[group] = sorted(entry_points(group=group), key=_sort_key)
    return _ENTRY_POINTS[group]


def _load(ep: EntryPoint, contract: type) -> PluginEntry | None:
    """Load one entry point; warn and return ``None`` when it is broken."""
    dist, version = _dist_info(ep)
    try:
        obj = ep.load()
    except Exception as exc:
        _warn(f"recinet plugin {ep.name!r} ({dist}) failed to load: {type(exc).__name__}: {exc}")
        return None
    if not (isinstance(obj, type) and issubclass(obj, contract)):
        _warn(
            f"recinet plugin {ep.name!r} ({dist}) is not a {contract.__name__} subclass "
            f"({ep.value} is {obj!r}); skipped"
        )
        return None
    if inspect.isabstract(obj):
        missing = ", ".join(sorted(getattr(obj, "__abstractmethods__", ())))
        _warn(
            f"recinet plugin {ep.name!r} ({dist}) does not implement {missing} "
            f"of {contract.__name__}; skipped"
        )
        return None
    return PluginEntry(ep.name, ep.group, ep.value, dist, version, obj)


def discover(group: str) -> dict[str, PluginEntry]:
    """Load the plugins of an entry-point group, keyed by name (cached).

    Broken plugins, plugins that are not subclasses of the group's contract and later
    duplicates of a name are skipped with a :class:`RecinetPluginWarning`. Entry points are
    tried built-ins first (distribution ``recinet``), then by distribution name and value.

    Raises:
        ValueError: ``group`` is not one of the recinet plugin groups.
    """
    contract = _CONTRACTS.get(group)
    if contract is None:
        raise ValueError(f"unknown plugin group {group!r}; known: {', '.join(_CONTRACTS)}")
    allowed = _plugin_filter()
    key = (group, allowed)
    if key not in _LOADED:
        _LOADED[key] = _load_group(_entry_points_for(group), contract, allowed)
    return dict(_LOADED[key])


def _load_group(
    eps: list[EntryPoint], contract: type, allowed: frozenset[str] | None
) -> dict[str, PluginEntry]:
    """Load the allowed entry points in order; the first to load under a name wins."""
    found: dict[str, PluginEntry] = {}
    for ep in eps:
        if allowed is not None and ep.name not in allowed:
            continue
        if ep.name in found:
            kept = found[ep.name]
            _warn(
                f"recinet plugin {ep.name!r} is provided by both {kept.distribution} "
                f"({kept.value}) and {_dist_info(ep)[0]} ({ep.value}); "
                f"using the one from {kept.distribution}"
            )
            continue
        entry = _load(ep, contract)
        if entry is not None:
            found[ep.name] = entry
    return found


def list_plugins() -> list[PluginEntry]:
    """Every loaded plugin: datasets then heads, each sorted by name."""
    result: list[PluginEntry] = []
    for group in (DATASETS_GROUP, HEADS_GROUP):
        plugins = discover(group)
        result.extend(plugins[name] for name in sorted(plugins))
    return result


def _unknown(kind: str, name: str, installed: dict[str, PluginEntry]) -> PluginError:
    """The one-line error for an unknown plugin name."""
    names = ", ".join(sorted(installed)) or "none"
    note = ""
    if _plugin_filter() is not None:
        note = f"; note {ENV_VAR}={os.environ.get(ENV_VAR, '')!r} restricts loading"
    return PluginError(
        f"unknown {kind} {name!r}; installed: {names} "
        f"(install more with pip install recinet-<name>){note}"
    )


def _instantiate(kind: str, entry: PluginEntry) -> object:
    """Create the plugin instance, turning a failure into a :class:`PluginError`."""
    try:
        return entry.obj()
    except Exception as exc:
        raise PluginError(
            f"{kind} plugin {entry.name!r} ({entry.distribution}) could not be created: "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def _get(kind: str, group: str, name: str) -> object:
    installed = discover(group)
    if name not in installed:
        raise _unknown(kind, name, installed)
    return _instantiate(kind, installed[name])


def get_dataset(name: str) -> DatasetPlugin:
    """An instance of the dataset plugin ``name``.

    Raises:
        PluginError: unknown name (the message lists what is installed), or the plugin
            cannot be instantiated.
    """
    plugin = _get("dataset", DATASETS_GROUP, name)
    assert isinstance(plugin, DatasetPlugin)
    return plugin


def get_head(name: str) -> HeadPlugin:
    """An instance of the head plugin ``name`` (errors as :func:`get_dataset`)."""
    plugin = _get("head", HEADS_GROUP, name)
    assert isinstance(plugin, HeadPlugin)
    return plugin
