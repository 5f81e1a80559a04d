"""Resuming an interrupted ``recinet predict -o FILE``.

While a run writing ``FILE`` is in progress, the rows of every finished input are appended to
``FILE.partial`` (JSON lines, flushed after each batch). The first line holds a signature of
the run: the inputs in order, the columns and the exact model files (path, size, mtime) and
the options that change results. Running the same command again reuses the rows of the inputs
already done (a prefix of the inputs, since they are finished in order) and predicts the
rest; the final file is the same as an uninterrupted run's. A different command (other
inputs, models or options) ignores the journal and starts over. The journal is deleted once
``FILE`` is written.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from recinet_cli.prediction.resolve import Plan

__all__ = ["Journal", "run_signature"]

JOURNAL_FORMAT = "recinet-predict-journal/1"


def _item_key(item: Any) -> str:
    from recinet_cli.prediction.engine import StoredGraph
    from recinet_cli.structures.crystal import Crystal
    from recinet_cli.structures.readers import InputFile, ReadFailure

    if isinstance(item, InputFile):
        st = os.stat(item.path) if os.path.exists(item.path) else None
        stamp = f"{st.st_size}:{st.st_mtime_ns}" if st else "missing"
        return f"file:{os.path.abspath(item.path)}:{item.id_base}:{stamp}"
    if isinstance(item, StoredGraph):
        return f"graph:{item.path}:{item.index}"
    if isinstance(item, ReadFailure):
        return f"failed:{item.source}:{item.id}"
    if isinstance(item, Crystal):
        return f"crystal:{item.id}"
    return repr(item)  # pragma: no cover


def run_signature(plan: Plan, items: Sequence[Any], options: dict[str, Any]) -> str:
    """SHA-256 over what determines the rows: inputs, columns, model files, options."""
    h = hashlib.sha256()
    for col in plan.columns:
        h.update(f"col:{col.name}:{col.unit}:{col.label}\n".encode())
        for model, index in col.members:
            st = os.stat(model.path)
            h.update(f"model:{os.path.abspath(model.path)}:{st.st_size}:{st.st_mtime_ns}:{index}\n".encode())
    h.update(json.dumps(options, sort_keys=True).encode())
    for item in items:
        h.update(_item_key(item).encode() + b"\n")
    return h.hexdigest()


class Journal:
    """Append-only record of finished inputs for one output file."""

    def __init__(self, output: str | os.PathLike[str], signature: str) -> None:
        self.path = Path(f"{os.fspath(output)}.partial")
        self.signature = signature
        self._fh: Any = None

    def load(self) -> list[list[dict[str, Any]]]:
        """Rows of each finished input, in input order (empty when there is no journal of
        this very run; a torn last line from a kill is ignored)."""
        if not self.path.is_file():
            return []
        done: list[list[dict[str, Any]]] = []
        with open(self.path, encoding="utf-8") as fh:
            try:
                head = json.loads(fh.readline())
            except ValueError:
                return []
            if head.get("format") != JOURNAL_FORMAT or head.get("signature") != self.signature:
                return []
            for line in fh:
                if not line.endswith("\n"):
                    break
                try:
                    done.append(json.loads(line)["rows"])
                except (ValueError, KeyError, TypeError):
                    break
        return done

    def start(self, done: list[list[dict[str, Any]]]) -> None:
        """(Re)write the journal with the ``done`` inputs, then keep it open for appending."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(json.dumps({"format": JOURNAL_FORMAT, "signature": self.signature}) + "\n")
            for rows in done:
                fh.write(json.dumps({"rows": rows}) + "\n")
        os.replace(tmp, self.path)
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def append(self, rows: list[dict[str, Any]]) -> None:
        self._fh.write(json.dumps({"rows": rows}) + "\n")

    def flush(self) -> None:
        if self._fh is not None:
            self._fh.flush()

    def close(self, remove: bool = False) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if remove:
            self.path.unlink(missing_ok=True)
