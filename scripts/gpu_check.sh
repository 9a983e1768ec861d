#!/usr/bin/env bash
# Every GPU check in one call, for a session that is lent a GPU machine (docs/performance.md):
# CUDA parity tests, a `device: cuda` training run end to end, the cell benchmark and the
# training benchmark on the GPU. Writes everything under $OUT (default docs/bench/gpu); commit it.
#
# Runs under whatever python has a CUDA torch (PYTHON, default .venv/bin/python, else python3),
# and does not need recurrl installed: it stages the tree (recurrl/ with envs/ as recurrl.envs,
# as the wheel lays it out) in a temporary folder. Packages that python lacks (gymnasium,
# farama-notifications, sb3-contrib, stable-baselines3) can come as wheels in .whl/:
#
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp -d .whl gymnasium==1.4.0 farama-notifications stable-baselines3 sb3-contrib
#   OUT=docs/bench/gpu bash scripts/gpu_check.sh
#
# Each step has its own time limit; the whole check is sized to finish in under 8 minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
repo="$(pwd)"
out="${OUT:-docs/bench/gpu}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
python="${PYTHON:-}"
if [ -z "$python" ]; then
  python=".venv/bin/python"
  [ -x "$python" ] || python=python3
fi
case "$python" in */*) python="$(cd "$(dirname "$python")" && pwd)/$(basename "$python")" ;; *) python="$(command -v "$python")" ;; esac

if compgen -G ".whl/*.whl" > /dev/null; then
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/recurrl_site .whl/*.whl || exit 1
  export PYTHONPATH="/tmp/recurrl_site${PYTHONPATH:+:$PYTHONPATH}"
fi

stage="$(mktemp -d /tmp/recurrl_stage.XXXX)"
cp -r recurrl tests experiments docs scripts README.md pyproject.toml "$stage/"
rm -rf "$stage/recurrl/envs" && cp -r envs "$stage/recurrl/envs"
cd "$stage"
export PYTHONPATH="$stage${PYTHONPATH:+:$PYTHONPATH}"  # subprocesses of the tests import it too
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled
dev="${DEVICE:-cuda}"  # DEVICE=cpu: a dry run of the whole script on a machine without a GPU

DEVICE="$dev" "$python" - <<'EOF' 2>&1 | tee "$out/device.txt" || exit 1
import os, platform, torch
if os.environ["DEVICE"] != "cpu":
    assert torch.cuda.is_available(), "no CUDA device"
print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU", "| torch", torch.__version__, "| CUDA", torch.version.cuda,
      "| python", platform.python_version())
try:
    import triton
    print("triton", triton.__version__)
except ImportError:
    print("triton: not installed")
EOF
nvidia-smi > "$out/nvidia-smi.txt" 2>&1 || true
step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to $out/NAME.txt
  local name=$1 limit=$2
  shift 2
  echo "== $name (limit ${limit}s)"
  local t0=$SECONDS
  timeout "$limit" "$@" > "$out/$name.txt" 2>&1
  local rc=$?
  echo "   exit $rc after $((SECONDS - t0)) s" | tee -a "$out/$name.txt"
  tail -n 25 "$out/$name.txt"
}

# 1. parity of every implementation on the GPU against the reference (outputs, gradients, resets)
step parity 60 "$python" -m pytest -q -p no:cacheprovider tests/test_nn_fast.py -k cuda
# 2. `device: cuda` end to end: train a short memory run on the GPU, then evaluate it
step train_cuda 90 "$python" -m recurrl train experiments/tmaze_lstm.yaml device=$dev \
  ppo.total_steps=40000 run.dir=/tmp/recurrl_runs/tmaze_cuda
step eval_cuda 30 "$python" -m recurrl eval /tmp/recurrl_runs/tmaze_cuda --episodes 50 --deterministic
# 3. cells: ours, fused, reference vs cuDNN and the per-step loop, at the issue's shapes too
step cells_cuda 100 "$python" -m recurrl.app.bench.cells --device $dev --repeats 10 \
  --shapes 128x64x128,32x256x256,64x8192x128,16x4096x256 --out "$out/cells_cuda.json"
# 4. training throughput on the GPU against sb3-contrib, and scaling with num_envs
step train_bench_cuda 150 "$python" -m recurrl.app.bench.train --device $dev --steps 16384 \
  --scaling 64,512,4096 --scaling-env recurrl/TMaze-v0 --out "$out/train_cuda.json"
# 5. the fast test suite with CUDA present (device: auto picks it), on 8 workers
if "$python" -c "import xdist" 2>/dev/null; then workers=(-n 8); else workers=(); fi
step tests_fast 90 "$python" -m pytest -q --maxfail=25 -p no:cacheprovider -m "not slow" --ignore=tests/test_packaging.py \
  --ignore=tests/test_tracking.py --deselect tests/test_callbacks.py::test_banner_of_a_real_run_and_its_resume "${workers[@]}"
echo "wrote $out"
