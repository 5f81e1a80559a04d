"""Optional plotting for the bench commands (the ``recinet[plot]`` extra: matplotlib).

Every bench works without matplotlib; only ``--plot`` needs it. Call :func:`require_matplotlib`
*before* the expensive part of a command, so a missing extra fails fast with one line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from recinet_cli.errors import RecinetError

__all__ = ["INSTALL_HINT", "PLOT_SUFFIXES", "check_plot_path", "require_matplotlib", "save_figure"]

#: The one-line error shown when matplotlib is missing.
INSTALL_HINT = 'install the plot extra: pip install "recinet[plot]"'

#: File types ``--plot`` accepts (matplotlib picks the format from the suffix).
PLOT_SUFFIXES = (".png", ".pdf", ".svg")


def require_matplotlib() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend.

    Raises:
        RecinetError: matplotlib is not installed (the message says how to install it).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: never open a window, work without a display
        import matplotlib.pyplot as plt
    except ImportError:
        raise RecinetError(INSTALL_HINT) from None
    return plt


def check_plot_path(path: Path, option: str = "--plot") -> Path:
    """Refuse an output file type matplotlib should not guess (one line naming the option)."""
    if path.suffix.lower() not in PLOT_SUFFIXES:
        raise RecinetError(f"{option} {path}: expected a {', '.join(PLOT_SUFFIXES)} file")
    if path.exists() and path.is_dir():
        raise RecinetError(f"{option} {path}: is a directory")
    return path


def save_figure(fig: Any, path: Path) -> Path:
    """Write ``fig`` to ``path`` (parent folders created) and close it."""
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(path, dpi=150, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path
