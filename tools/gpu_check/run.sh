#!/usr/bin/env bash
# The GPU check of recinet, in one call of under 8 minutes on one CUDA GPU:
#   1. install recinet (editable) and its plugins offline, from tools/gpu_check/wheels/
#      (made by fetch_wheels.sh) for whatever of pymatgen/ase/platformdirs/... is missing;
#   2. the CUDA-marked tests (pytest -m cuda);
#   3. 20 epochs of Matbench jdft2d fold 0 in bf16 on the GPU, per-epoch time;
#   4. inference ms/material at batch 64 and 1 and the fast-path comparison (recinet bench speed);
#   5. 3 epochs with --compile (torch.compile, dynamic shapes) against 3 eager epochs.
# Everything it prints also goes to $OUT/gpu_check.log (OUT defaults to ./gpu_check_out).
#   bash tools/gpu_check/run.sh
set -uo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
out="${OUT:-$root/gpu_check_out}"
mkdir -p "$out"
log="$out/gpu_check.log"
exec > >(tee -a "$log") 2>&1
step() { echo; echo "=== $* ($(date +%T))"; }
export RECINET_HOME="$out/home" PIP_NO_INDEX=1 PIP_FIND_LINKS="$root/tools/gpu_check/wheels"

step "environment"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available(), 'bf16', torch.cuda.is_available() and torch.cuda.is_bf16_supported())"

step "install (offline)"
python -m pip install -q --no-deps -e . -e plugins/recinet-jarvis -e plugins/recinet-mp -e plugins/recinet-matbench -e plugins/recinet-example
python -m pip install -q -e . 2>&1 | tail -2   # resolves the missing dependencies from the wheels
python -c "import recinet_cli, pymatgen.core, ase, platformdirs; print('recinet', recinet_cli.__version__)" || { echo "install failed"; exit 1; }

step "CUDA-marked tests"
timeout 150 python -m pytest -q -m cuda -p no:cacheprovider tests 2>&1 | tail -15

step "20 epochs of matbench:jdft2d fold 0, bf16 on the GPU"
timeout 150 recinet train --task matbench:jdft2d --fold 0 --epochs 20 --precision bf16 --device cuda \
    --out "$out/jdft2d-bf16" --no-register 2>&1 | grep -v "^[┏┃┡│└]"

step "bench speed on the GPU (inference batch 64 and 1, fast path vs previous formulation)"
timeout 120 recinet bench speed --task matbench:jdft2d --device cuda --featurize-n 200 --json "$out/bench-speed-cuda.json" 2>&1 | tail -40

step "--compile vs eager, 3 epochs each"
timeout 60 recinet train --task matbench:jdft2d --fold 0 --epochs 3 --device cuda --out "$out/jd-eager" --no-register 2>&1 | grep "^\["
timeout 150 recinet train --task matbench:jdft2d --fold 0 --epochs 3 --device cuda --compile --out "$out/jd-compile" --no-register 2>&1 | grep "^\[\|error"
step "done"
