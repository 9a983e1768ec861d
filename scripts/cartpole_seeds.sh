#!/usr/bin/env bash
# Greedy return of the CartPoleNoVelocity experiments over seeds 1-5 at their own budgets:
# train each file with seed=K, then `recurrl eval RUN --episodes 20 --deterministic --seed 999`.
# Usage: scripts/cartpole_seeds.sh [OUT_DIR] > docs/bench/cartpole_seeds.txt
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/cartpole_seeds}
recurrl=${RECURRL:-.venv/bin/recurrl}
export WANDB_MODE=${WANDB_MODE:-disabled}
echo "# scripts/cartpole_seeds.sh on $(lscpu | sed -n 's/Model name: *//p'), $(nproc) cores"
for experiment in cartpole_novelocity_lstm cartpole_novelocity_gru; do
  for seed in 1 2 3 4 5; do
    run="$out/$experiment-$seed"
    "$recurrl" train "experiments/$experiment.yaml" "seed=$seed" "run.dir=$run" --quiet \
      --eval-episodes=0 > /dev/null
    echo "$experiment seed=$seed $("$recurrl" eval "$run" --episodes 20 --deterministic \
      --seed 999 | tail -n 1)"
  done
done
