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

# 0. in the background, on the machine's spare CPU cores: the CartPoleNoVelocity files over seeds
#    1-5 at 100k/150k/200k (greedy return; scripts/seed_sweep.py), to check on another machine
#    that every seed still reaches >= 475 (docs/performance.md)
workers=$(( $(nproc) > 8 ? $(nproc) - 10 : 1 ))
if [ "${SWEEP:-1}" = 1 ]; then
  for core in lstm gru; do
    timeout "${SWEEP_LIMIT:-400}" "$python" "$repo/scripts/seed_sweep.py" \
      "experiments/cartpole_novelocity_$core.yaml" --workers "$workers" --seeds 1,2,3,4,5 \
      --budgets 100000,150000,200000 --variant file= \
      --out "$out/sweep_cartpole_$core.json" > "$out/sweep_cartpole_$core.txt" 2>&1 &
  done
fi
# 1. parity on the GPU: every implementation against the reference (outputs, gradients, resets),
#    Triton against fused, device envs, the CUDA-graph acting step
step parity 60 "$python" -m pytest -q -p no:cacheprovider tests/test_nn_fast.py tests/test_triton.py \
  tests/test_device_rollout.py tests/test_envs_device.py -k "cuda or triton"
# 2. cells: ours (auto: triton on CUDA), fused, reference vs cuDNN and the per-step loop
step cells_cuda 60 "$python" -m recurrl.app.bench.cells --device $dev --repeats 10 \
  --shapes 128x64x128,32x256x256,64x8192x128,16x4096x256 --out "$out/cells_cuda.json"
# 3. training throughput on the GPU with a device-resident env, LSTM 128 and GRU 128, 1k-64k envs
#    (SPS, the share of time collecting, peak GPU memory); sb3-contrib's row is in train_cuda_run1
step train_bench_cuda 170 "$python" -m recurrl.app.bench.train --device $dev --only-scaling \
  --scaling "${SCALING:-1024,4096,16384,65536}" --scaling-env recurrl/TMaze-v0 \
  --scaling-vectorization torch --cores lstm,gru --out "$out/train_cuda.json"
# 4. learning: the same experiments on the GPU with device-resident envs and on the CPU path
step learning_gpu_cpu 120 "$python" "$repo/scripts/seed_sweep.py" experiments/tmaze_lstm.yaml \
  --workers 6 --seeds 1,2,3 --budgets 200000 --variant cpu=device=cpu \
  --variant gpu_torch_envs=device=$dev,env.vectorization=torch --out "$out/learning_tmaze.json" &
step learning_gpu_cpu_rp 120 "$python" "$repo/scripts/seed_sweep.py" \
  experiments/repeat_previous_lstm.yaml --workers 6 --seeds 1,2,3 --budgets 400000 \
  --variant cpu=device=cpu --variant gpu_torch_envs=device=$dev,env.vectorization=torch \
  --out "$out/learning_repeat_previous.json" &
wait
echo "wrote $out"
