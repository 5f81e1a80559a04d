"""Exception types. A :class:`RecinetError` is a user error: the CLI prints its message as one
line and exits non-zero, without a traceback (unless ``--debug``)."""

from __future__ import annotations


class RecinetError(Exception):
    """A user-facing error whose message is one clear line."""

    exit_code: int = 2


class StructureError(RecinetError):
    """A structure cannot be read or used; the message is the reason (the caller adds the file)."""


class PluginError(RecinetError):
    """An unknown, broken or misconfigured plugin."""


class StoreError(RecinetError):
    """An HDF5 graph store that cannot be created, appended to or read."""
