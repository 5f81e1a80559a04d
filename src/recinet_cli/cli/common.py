"""Shared CLI state and consoles (no heavy imports here)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console


@dataclass
class _State:
    debug: bool = False


state = _State()
console = Console()
console_err = Console(stderr=True)


def print_error(message: str) -> None:
    """``error: MESSAGE`` on stderr as one line; the message is shown verbatim (no markup)."""
    from rich.markup import escape

    console_err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def print_failure(where: str, reason: str) -> None:
    """``failed: WHERE: REASON`` on stderr as one line, file names shown verbatim."""
    from rich.markup import escape

    console_err.print(f"[yellow]failed:[/] {escape(where)}: {escape(reason)}", highlight=False, soft_wrap=True)


def print_plain(text: str) -> None:
    """A line on stdout with no markup interpretation."""
    console.print(text, highlight=False, soft_wrap=True, markup=False)


def write_json(path: Path | None, payload: dict[str, Any]) -> None:
    """Write a bench result as indented JSON (numpy scalars as numbers, paths as strings) and
    say where; nothing when ``path`` is ``None``."""
    import json
    import numbers

    def default(value: Any) -> Any:
        return float(value) if isinstance(value, numbers.Real) else str(value)

    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(payload, indent=2, default=default) + "\n")
        print_plain(f"wrote {path}")
