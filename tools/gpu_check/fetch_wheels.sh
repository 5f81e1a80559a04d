#!/usr/bin/env bash
# Download, on a machine with a package index, the wheels that tools/gpu_check/run.sh installs
# on a CUDA machine without network: everything recinet and its plugins need except torch,
# torch-geometric, h5py, typer and rich (assumed present there). Wheels land in
# tools/gpu_check/wheels/ (git-ignored); carry that folder to the GPU machine with the tree.
#
#   bash tools/gpu_check/fetch_wheels.sh [PYTHON_VERSION]   # default: this python's, e.g. 3.11
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
py="${1:-$(python -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')}"
mkdir -p "$here/wheels"
python -m pip download --only-binary=:all: --python-version "$py" --platform manylinux2014_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 --platform any \
    -d "$here/wheels" pymatgen ase platformdirs "safetensors>=0.4" pytest 2>&1 | tail -3
# what every PyTorch + torch-geometric + rich environment already has: not carried
for have in numpy sympy mpmath networkx pygments requests urllib3 idna certifi charset_normalizer \
            tqdm typing_extensions packaging iniconfig pluggy pyparsing; do
    rm -f "$here/wheels/${have}"-[0-9]*.whl
done
echo "wheels for Python $py in $here/wheels: $(ls "$here/wheels" | wc -l) files, $(du -sh "$here/wheels" | cut -f1)"
