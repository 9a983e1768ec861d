#!/usr/bin/env bash
# The defaults sweep of docs/defaults.md: `recurrl train env.id=ID` with no experiment file and
# no other setting, today's defaults against the previous ones, on POPGym's Easy memory tasks, the
# own memory suite at its default difficulty and plain Gymnasium control tasks. Greedy return
# over 20 episodes (scripts/seed_sweep.py) per seed.
# Needs POPGym: pip install -e '.[popgym]'.
# Usage: scripts/defaults_sweep.sh [SEEDS] [BUDGET] > docs/bench/defaults_sweep_popgym.txt
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=${1:-1,2}
budget=${2:-200000}
python=${PYTHON:-.venv/bin/python}
export WANDB_MODE=${WANDB_MODE:-disabled}
# The defaults before docs/defaults.md's sweep changed them.
previous="env.num_envs=8,ppo.rollout_len=128,ppo.bptt_len=16,ppo.update_epochs=4"
previous+=",ppo.learning_rate=0.0003,ppo.ent_coef=0.0,policy.hidden_size=64"
previous+=",env.normalize_reward=false,policy.prev_action=false,policy.encoder_sizes=[64]"
variants=()
# TODAY=0 skips today's defaults; PREVIOUS=0 the previous ones (their numbers are in
# docs/defaults.md); CANDIDATE="NAME=key=value,key=value" adds a candidate default, e.g.
# CANDIDATE="wide=policy.encoder_sizes=[256],policy.hidden_size=256" TODAY=0 PREVIOUS=0.
[[ ${TODAY:-1} == 1 ]] && variants+=(--variant defaults=)
[[ ${PREVIOUS:-1} == 1 ]] && variants+=(--variant "previous_defaults=$previous")
[[ -n ${CANDIDATE:-} ]] && variants+=(--variant "$CANDIDATE")
(( ${#variants[@]} )) || { echo "defaults_sweep.sh: nothing to run (TODAY=0 PREVIOUS=0, no CANDIDATE)" >&2; exit 2; }
tasks=()
# TASKS="popgym-ConcentrationEasy-v0 CartPole-v1" runs those env ids only.
for task in RepeatFirst RepeatPrevious CountRecall Autoencode PositionOnlyCartPole \
  NoisyPositionOnlyCartPole VelocityOnlyCartpole PositionOnlyPendulum MultiarmedBandit \
  HigherLower Battleship Concentration MineSweeper; do
  tasks+=("popgym:popgym-${task}Easy-v0")
done
tasks+=(recurrl/TMaze-v0 recurrl/RepeatPrevious-v0 recurrl/CueRecall-v0)
tasks+=(recurrl/CartPoleNoVelocity-v0 CartPole-v1 Pendulum-v1)
if [[ -n ${TASKS:-} ]]; then
  wanted=()
  for task in "${tasks[@]}"; do
    [[ " $TASKS " == *" ${task#popgym:} "* ]] && wanted+=("$task")
  done
  tasks=("${wanted[@]}")
fi
echo "# scripts/defaults_sweep.sh $seeds $budget: greedy return over 20 episodes per seed"
echo "# on $(lscpu | sed -n 's/Model name: *//p'), $(nproc) cores, $(date -I)"
for task in "${tasks[@]}"; do
  "$python" scripts/seed_sweep.py "env.id=$task" "${variants[@]}" --seeds "$seeds" \
    --budgets "$budget" \
    --workers "$(nproc)" | grep -v '^done:'
done
