"""Benchmark: ``recinet featurize`` throughput against the parse-only floor, and peak memory.

Both sides run as separate commands over the same CIF files with the same number of worker
processes, so start-up and import costs are included on both sides:

* floor: ``python -m recinet_cli.bench.featurize FILES...`` reads every file with pymatgen's
  CIF parser (exactly the parser call ``recinet featurize`` makes) and does nothing else;
* ours: ``recinet featurize DIR -o OUT.h5 --workers W``.

Peak memory is the largest summed RSS of the command's process tree (sampled every 100 ms),
measured at several input sizes to show that it does not grow with the number of structures.
"""

from __future__ import annotations

import gzip
import json
import multiprocessing as mp
import os
import subprocess
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


def write_cifs(jsonl_gz: str, n: int, dest: str) -> list[str]:
    """Write the first ``n`` structures of an MP ``*.jsonl.gz`` (``cif`` field) as CIF files."""
    os.makedirs(dest, exist_ok=True)
    paths = []
    with gzip.open(jsonl_gz, "rt") as fh:
        for line in fh:
            if len(paths) >= n:
                break
            rec = json.loads(line)
            path = os.path.join(dest, f"{rec['material_id']}.cif")
            if not os.path.exists(path):
                Path(path).write_text(rec["cif"])
            paths.append(path)
    return paths


def _parse(path: str) -> int:
    from pymatgen.io.cif import CifParser

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with open(path) as fh:
            import io

            structures = CifParser(io.StringIO(fh.read()), occupancy_tolerance=1.0).parse_structures(
                primitive=False, on_error="raise"
            )
    return sum(len(s) for s in structures)


def parse_floor(files: list[str], workers: int) -> int:
    """Parse every file with pymatgen in ``workers`` processes; returns the number of atoms."""
    if workers <= 1:
        return sum(map(_parse, files))
    with mp.get_context("fork").Pool(workers) as pool:
        return sum(pool.imap(_parse, files, chunksize=max(1, min(16, len(files) // (workers * 8)))))


def measure(cmd: list[str], interval: float = 0.1) -> tuple[float, int]:
    """Run ``cmd``; return (wall seconds, peak summed RSS in bytes of its process tree)."""
    import psutil

    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    ps = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            rss = ps.memory_info().rss + sum(c.memory_info().rss for c in ps.children(recursive=True))
            peak = max(peak, rss)
        except psutil.Error:
            pass
        time.sleep(interval)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {err[-2000:]}")
    return wall, peak


@dataclass
class FeaturizeBenchResult:
    structures: int
    workers: int
    floor_seconds: float = 0.0
    featurize_seconds: float = 0.0
    peak_rss_mb: dict[int, float] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.featurize_seconds / self.floor_seconds if self.floor_seconds else float("nan")

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio}


def run_featurize_bench(
    jsonl_gz: str, n: int, workers: int, workdir: str, sizes: tuple[float, ...] = (0.25, 0.5, 1.0)
) -> FeaturizeBenchResult:
    """Write ``n`` CIFs into ``workdir`` and time floor vs featurize; memory at several sizes."""
    files = write_cifs(jsonl_gz, n, os.path.join(workdir, "cifs"))
    res = FeaturizeBenchResult(structures=len(files), workers=workers)
    floor_cmd = [sys.executable, "-m", "recinet_cli.bench.featurize", "--workers", str(workers)]
    list_file = os.path.join(workdir, "files.txt")
    Path(list_file).write_text("\n".join(files))
    res.floor_seconds, _ = measure([*floor_cmd, "--list", list_file])
    for frac in sizes:
        k = max(1, int(round(frac * len(files))))
        sub = os.path.join(workdir, f"subset-{k}")
        os.makedirs(sub, exist_ok=True)
        for p in files[:k]:
            link = os.path.join(sub, os.path.basename(p))
            if not os.path.exists(link):
                os.symlink(p, link)
        out = os.path.join(workdir, f"graphs-{k}.h5")
        cmd = [sys.executable, "-m", "recinet_cli.cli.app", "featurize", sub, "-o", out,
               "--workers", str(workers), "--overwrite"]
        wall, peak = measure(cmd)
        res.peak_rss_mb[k] = peak / 2**20
        if k == len(files):
            res.featurize_seconds = wall
    return res


def _main(argv: list[str]) -> None:
    import argparse

    ap = argparse.ArgumentParser(description="parse-only floor: read CIF files with pymatgen")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--list", required=True, help="text file with one CIF path per line")
    args = ap.parse_args(argv)
    files = Path(args.list).read_text().split("\n")
    atoms = parse_floor([f for f in files if f], args.workers)
    print(f"parsed {len(files)} files, {atoms} atoms")


if __name__ == "__main__":
    _main(sys.argv[1:])
