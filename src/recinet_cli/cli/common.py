"""Shared CLI state and consoles (no heavy imports here)."""

from __future__ import annotations

from dataclasses import dataclass

from rich.console import Console


@dataclass
class _State:
    debug: bool = False


state = _State()
console = Console()
console_err = Console(stderr=True)
