"""The Matbench v0.1 tasks: names, targets, units, sizes, and where each file comes from.

Units, sizes, target columns and task kinds come from the official task metadata, bundled
as ``data/matbench_v0.1_dataset_metadata.json``. The download URL and SHA-256 of each task
file are matminer's (``matminer/datasets/dataset_metadata.json``, keys ``matbench_<task>``,
fields ``url`` and ``hash``; matminer 0.9.3), the files ``matminer.datasets.load_dataset``
fetches for Matbench.

ReciNet predicts scalar targets from crystal structures, so only the eight *structure
regression* tasks are usable; the others are known here only to explain why they are not.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib.resources import files
from typing import TYPE_CHECKING

from recinet_cli.contracts import PropertyInfo
from recinet_cli.download import RemoteFile
from recinet_cli.errors import PluginError

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

__all__ = [
    "BUNDLED",
    "BUNDLED_SHA256",
    "SOURCES",
    "MatbenchTask",
    "all_tasks",
    "bundled_file",
    "data_file",
    "resolve",
    "supported_tasks",
]

#: ``{full task name: (url, sha256)}`` of the official task files (matminer's metadata).
SOURCES: dict[str, tuple[str, str]] = {
    "matbench_dielectric": (
        "https://ml.materialsproject.org/projects/matbench_dielectric.json.gz",
        "83befa09bc2ec2f4b6143afc413157827a90e5e2e42c1eb507ccfa01bf26a1d6",
    ),
    "matbench_expt_gap": (
        "https://ml.materialsproject.org/projects/matbench_expt_gap.json.gz",
        "783e7d1461eb83b00b2f2942da4b95fda5e58a0d1ae26b581c24cf8a82ca75b2",
    ),
    "matbench_expt_is_metal": (
        "https://ml.materialsproject.org/projects/matbench_expt_is_metal.json.gz",
        "8f2a4f9bacdcbc5c2c73615629ee7986f09d39bed40ba7db52b61b2889730887",
    ),
    "matbench_glass": (
        "https://ml.materialsproject.org/projects/matbench_glass.json.gz",
        "36beb654e2a463ee2a6572105bea0ca2961eee7c7b26a25377bff2c3b338e53a",
    ),
    "matbench_jdft2d": (
        "https://ml.materialsproject.org/projects/matbench_jdft2d.json.gz",
        "26057dc4524e193e32abffb296ce819b58b6e11d1278cae329a2f97817a4eddf",
    ),
    "matbench_log_gvrh": (
        "https://ml.materialsproject.org/projects/matbench_log_gvrh.json.gz",
        "098af941f4c663270f1fe21abf20ffad6fb85ecbfcba5786ceac03983ac29da7",
    ),
    "matbench_log_kvrh": (
        "https://ml.materialsproject.org/projects/matbench_log_kvrh.json.gz",
        "44b113ddb7e23aa18731a62c74afa7e5aa654199e0db5f951c8248a00955c9cd",
    ),
    "matbench_mp_e_form": (
        "https://ml.materialsproject.org/projects/matbench_mp_e_form.json.gz",
        "dedcb1d4ba2e3e50dbdd45ba5bc647a00e9c2bcf8f8bf556dc8e92caa39eb21f",
    ),
    "matbench_mp_gap": (
        "https://ml.materialsproject.org/projects/matbench_mp_gap.json.gz",
        "58b65746bd88329986ed66031a2ac1369c7c522f7bc9f9081528e07097c2c057",
    ),
    "matbench_mp_is_metal": (
        "https://ml.materialsproject.org/projects/matbench_mp_is_metal.json.gz",
        "9a028ed5750a4c76ca36e9f3c8d48fe0bf3fb21b76ec2289e58ae7048d527919",
    ),
    "matbench_perovskites": (
        "https://ml.materialsproject.org/projects/matbench_perovskites.json.gz",
        "4641e2417f8ec8b50096d2230864468dfa08278dc9d257c327f65d0305278483",
    ),
    "matbench_phonons": (
        "https://ml.materialsproject.org/projects/matbench_phonons.json.gz",
        "4db551f21ec5f577e6202725f10e34dfc509aa7df3a6bdaac497da7f6dbbb9b3",
    ),
    "matbench_steels": (
        "https://ml.materialsproject.org/projects/matbench_steels.json.gz",
        "473bc4957b2ea5e6465aef84bc29bb48ac34db27d69ea4ec5f508745c6fae252",
    ),
}

#: Tasks whose complete data ship with the package (``data/<full name>.json.gz``).
BUNDLED: frozenset[str] = frozenset({"jdft2d"})

#: SHA-256 of the bundled ``matbench_jdft2d.json.gz``. It is NOT matminer's hash of the
#: official file (``26057dc4...``): the bundled copy holds the same table (same ids,
#: structures and targets) but was serialized and gzipped again, so its bytes differ.
BUNDLED_SHA256: dict[str, str] = {
    "jdft2d": "993bf68c49377edc200e1b5325306ce69098e2e32e52c290f81ba7e32ddfbbe4",
}

_DESCRIPTIONS: dict[str, str] = {
    "dielectric": "refractive index n from DFPT (Materials Project)",
    "jdft2d": "exfoliation energy of layered materials (JARVIS-DFT, OptB88vdW)",
    "log_gvrh": "log10 of the VRH shear modulus (Materials Project)",
    "log_kvrh": "log10 of the VRH bulk modulus (Materials Project)",
    "mp_e_form": "formation energy per atom (Materials Project, PBE)",
    "mp_gap": "PBE band gap (Materials Project)",
    "perovskites": "formation energy of cubic perovskites per unit cell (Castelli et al.)",
    "phonons": "frequency of the last phonon DOS peak (DFPT)",
}

_PREFIX = "matbench_"


@dataclass(frozen=True)
class MatbenchTask:
    """One Matbench v0.1 task.

    Attributes:
        name: Short name, e.g. ``"jdft2d"`` (the canonical property name in recinet).
        target: The official target column, e.g. ``"exfoliation_en"``.
        unit: Target unit, e.g. ``"meV/atom"``; ``""`` for dimensionless targets.
        n_samples: Number of entries in the task.
        input_type: ``"structure"`` or ``"composition"``.
        task_type: ``"regression"`` or ``"classification"``.
    """

    name: str
    target: str
    unit: str
    n_samples: int
    input_type: str
    task_type: str

    @property
    def full_name(self) -> str:
        """The official task name, e.g. ``"matbench_jdft2d"``."""
        return _PREFIX + self.name

    @property
    def file_name(self) -> str:
        """The official file name, e.g. ``"matbench_jdft2d.json.gz"``."""
        return f"{self.full_name}.json.gz"

    @property
    def env_var(self) -> str:
        """Environment variable naming a local copy, e.g. ``RECINET_MATBENCH_JDFT2D``."""
        return f"RECINET_MATBENCH_{self.name.upper()}"

    @property
    def supported(self) -> bool:
        """Whether recinet can train on it (a structure input and a regression target)."""
        return self.input_type == "structure" and self.task_type == "regression"

    @property
    def names(self) -> tuple[str, ...]:
        """Every name the task answers to: short name, full name, target column."""
        return (self.name, self.full_name, self.target)

    def remote(self) -> RemoteFile:
        """The official task file, for :func:`recinet_cli.download.fetch` (looked up now)."""
        url, sha256 = SOURCES[self.full_name]
        return RemoteFile(
            name=self.file_name,
            url=url,
            sha256=sha256,
            env_var=self.env_var,
            description=f"Matbench v0.1 {self.full_name}",
        )

    def property_info(self) -> PropertyInfo:
        """The :class:`PropertyInfo` recinet shows and records for this task."""
        return PropertyInfo(
            name=self.name,
            unit=self.unit,
            description=_DESCRIPTIONS.get(self.name, self.target),
            aliases=(self.full_name, self.target),
            size=self.n_samples,
        )

    def why_unsupported(self) -> str:
        """The reason this task cannot be used (``""`` when it can)."""
        problems = []
        if self.input_type != "structure":
            problems.append("composition-only (no crystal structures)")
        if self.task_type != "regression":
            problems.append("a classification task")
        if not problems:
            return ""
        return (
            f"Matbench task {self.full_name!r} is {' and '.join(problems)}; "
            "ReciNet needs crystal structures and a regression target"
        )


def data_file(name: str) -> Traversable:
    """A file bundled under the package's ``data/`` folder."""
    return files("recinet_matbench") / "data" / name


def bundled_file(task: MatbenchTask) -> Traversable | None:
    """The bundled complete data of ``task``, or ``None`` when it is downloaded instead."""
    return data_file(task.file_name) if task.name in BUNDLED else None


@lru_cache(maxsize=1)
def all_tasks() -> tuple[MatbenchTask, ...]:
    """Every Matbench v0.1 task, from the bundled official metadata, sorted by name."""
    meta = json.loads(data_file("matbench_v0.1_dataset_metadata.json").read_text())
    tasks = []
    for full, entry in sorted(meta.items()):
        unit = entry.get("unit") or ""
        tasks.append(
            MatbenchTask(
                name=full.removeprefix(_PREFIX),
                target=str(entry["target"]),
                unit="" if unit == "unitless" else str(unit),
                n_samples=int(entry["n_samples"]),
                input_type=str(entry["input_type"]),
                task_type=str(entry["task_type"]),
            )
        )
    return tuple(tasks)


def supported_tasks() -> tuple[MatbenchTask, ...]:
    """The structure regression tasks, sorted by name."""
    return tuple(t for t in all_tasks() if t.supported)


def _matching(name: str, tasks: tuple[MatbenchTask, ...]) -> list[MatbenchTask]:
    """Tasks answering to ``name``: exact matches, else case-insensitive ones."""
    exact = [t for t in tasks if name in t.names]
    if exact:
        return exact
    folded = name.casefold()
    return [t for t in tasks if any(folded == n.casefold() for n in t.names)]


def resolve(name: str) -> MatbenchTask:
    """The usable task called ``name`` (short name, ``matbench_<name>`` or target column).

    Raises:
        PluginError: the name is ambiguous (``e_form`` is the target of two tasks), names a
            composition-only or classification task (with the reason), or is unknown.
    """
    found = _matching(name, supported_tasks())
    if len(found) == 1:
        return found[0]
    valid = ", ".join(t.name for t in supported_tasks())
    if found:
        which = ", ".join(t.name for t in found)
        raise PluginError(
            f"dataset 'matbench': {name!r} is the target of several tasks ({which}); "
            "name the task instead"
        )
    other = _matching(name, tuple(t for t in all_tasks() if not t.supported))
    if other:
        reasons = "; ".join(t.why_unsupported() for t in other)
        raise PluginError(f"dataset 'matbench': {reasons}; usable tasks: {valid}")
    raise PluginError(f"dataset 'matbench' has no property {name!r}; valid: {valid}")
