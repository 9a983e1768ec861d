#!/usr/bin/env bash
# The probe plots of docs/cores.md: `recurrl probe` (memory horizon, state probe, stale start
# states) on trained policies of the memory suite, written to docs/probe/NAME/. Trains each run
# into RUNS/NAME first unless RUNS/NAME/checkpoints/final.pt exists.
# Usage: scripts/probe_suite.sh [RUNS]   (default runs/probe_suite)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-runs/probe_suite}
python=${PYTHON:-.venv/bin/python}
export WANDB_MODE=${WANDB_MODE:-disabled}
tmaze100=(env.id=recurrl/TMaze-v0 env.kwargs.length=100 ppo.rollout_len=256 ppo.bptt_len=256
  ppo.total_steps=500000)

probe() {  # NAME "PROBE FLAGS" TRAIN ARGS...
  local name=$1 flags=$2
  shift 2
  if [[ ! -f $runs/$name/checkpoints/final.pt ]]; then
    "$python" -m recurrl train "$@" "run.dir=$runs/$name" --quiet
  fi
  # shellcheck disable=SC2086  # flags are words
  "$python" -m recurrl probe "$runs/$name" $flags --out "docs/probe/$name"
}

probe tmaze100_lstm "--lags 101" "${tmaze100[@]}"
probe tmaze100_transformer "--lags 101" "${tmaze100[@]}" policy.core=transformer policy.context=128
probe tmaze100_tcn "--lags 101" "${tmaze100[@]}" policy.core=tcn policy.context=128
# Today's defaults (lstm 128) on the harder CueRecall (2 bits through 5 noise steps) and on
# RepeatPrevious at its default difficulty.
probe cue_recall_delay5_lstm "" env.id=recurrl/CueRecall-v0 env.kwargs.num_bits=2 \
  env.kwargs.delay=5 ppo.total_steps=2000000 eval.every=500000 eval.episodes=20 \
  eval.deterministic=true
probe repeat_previous_lstm "" env.id=recurrl/RepeatPrevious-v0 ppo.total_steps=200000
