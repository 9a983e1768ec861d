#!/usr/bin/env bash
# Every GPU check in one call, for a session that is lent a GPU machine (see docs/performance.md):
# the CUDA parity tests, then the cell and training benchmarks on the GPU. Writes everything
# under ${OUT:-docs/bench/gpu}; commit that folder. Needs a CUDA build of torch in .venv (the
# CPU wheel the Makefile installs has no CUDA: pip install torch with CUDA first there).
#
#   OUT=docs/bench/gpu bash scripts/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-docs/bench/gpu}"
mkdir -p "$out"
python=".venv/bin/python"
[ -x "$python" ] || python=python3
"$python" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0))" \
  | tee "$out/device.txt" || exit 1
nvidia-smi > "$out/nvidia-smi.txt" 2>&1 || true
# 1. parity of every implementation on the GPU against the reference (outputs, gradients, resets)
"$python" -m pytest -q tests/test_nn_fast.py -k cuda 2>&1 | tee "$out/parity.txt"
# 2. cells: ours (auto picks reference on CUDA), fused, reference vs cuDNN and the per-step loop
"$python" -m recurrl.app.bench.cells --device cuda --repeats 15 --out "$out/cells_cuda.json" \
  2>&1 | tee "$out/cells_cuda.txt"
# 3. training throughput and scaling on the GPU (recurrl only; sb3-contrib if installed)
"$python" -m recurrl.app.bench.train --device cuda --steps 65536 --scaling 8,64,512,4096 \
  --scaling-env recurrl/TMaze-v0 --out "$out/train_cuda.json" 2>&1 | tee "$out/train_cuda.txt"
echo "wrote $out"
