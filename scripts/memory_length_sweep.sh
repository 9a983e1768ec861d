#!/usr/bin/env bash
# The memory-length sweep of docs/cores.md: the passive T-maze (recurrl/TMaze-v0, the cue at the
# first step, the turn after `length` more) at growing corridor lengths for each core, today's
# defaults plus, per length, a rollout that holds whole episodes with whole-rollout BPTT and a
# window (`policy.context`) reaching the cue. Greedy return over 20 episodes per seed
# (scripts/seed_sweep.py). A core moves to the next length only while some seed solved the
# last one (>= 0.9, optimum 1): beyond, it is not run.
# Usage: scripts/memory_length_sweep.sh "CORES" "LENGTHS" [SEEDS] [WORKERS]
#   e.g. scripts/memory_length_sweep.sh "lstm gru" "10 30 100 300 1000" 1,2,3 2
set -euo pipefail
cd "$(dirname "$0")/.."
cores=${1:-"lstm gru rnn mingru transformer tcn"}
lengths=${2:-"10 30 100 300 1000"}
seeds=${3:-1,2,3}
workers=${4:-$(nproc)}
python=${PYTHON:-.venv/bin/python}
export WANDB_MODE=${WANDB_MODE:-disabled}

settings() {  # length -> "rollout context envs budget"
  case $1 in
    10) echo "64 32 32 500000" ;;
    30) echo "128 32 32 500000" ;;
    100) echo "256 128 32 500000" ;;
    300) echo "1024 512 8 1000000" ;;
    1000) echo "2048 1024 8 1000000" ;;
    *) echo "unknown length $1 (10 30 100 300 1000)" >&2; exit 2 ;;
  esac
}

echo "# scripts/memory_length_sweep.sh \"$cores\" \"$lengths\" $seeds: greedy return over 20"
echo "# episodes per seed, on $(lscpu | sed -n 's/Model name: *//p'), $(nproc) cores, $(date -I)"
printf "%-24s %8s  %-40s %16s %8s\n" variant budget "per seed" "mean ± std" worst
for core in $cores; do
  for length in $lengths; do
    read -r rollout context envs budget <<<"$(settings "$length")"
    overrides="env.kwargs.length=$length,env.num_envs=$envs,ppo.rollout_len=$rollout"
    overrides+=",ppo.bptt_len=$rollout,policy.core=$core,policy.context=$context"
    out=$(mktemp)
    "$python" scripts/seed_sweep.py env.id=recurrl/TMaze-v0 \
      --variant "${core}_L${length}=$overrides" --seeds "$seeds" --budgets "$budget" \
      --workers "$workers" --out "$out" | grep -v '^done:' | grep -v '^#' | grep -v '^variant'
    solved=$("$python" -c "import json,sys; r=json.load(open('$out'))[0]['scores'];\
print(int(any(s is not None and s >= 0.9 for s in r)))")
    rm -f "$out"
    if [[ $solved == 0 ]]; then
      echo "# $core: no seed solved length $length; longer lengths not run"
      break
    fi
  done
done
