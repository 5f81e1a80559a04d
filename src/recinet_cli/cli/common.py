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
