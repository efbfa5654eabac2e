#!/usr/bin/env bash
# Closed-loop RFT judged on the world model's predicted *state* (objects and goal) instead of its frames:
# the standard profile's chain with observation.environment_state recorded, a world model that predicts
# it (world_model.environment_state), a state success model (success_model.input=state), then the
# development-seed ablations' instrument on two arms. Every stage's time goes to $R/times.txt.
# Resumable: a stage whose output exists is skipped; the ablations resume per arm.
# Usage: [ARMS=a,b] [OUT=table.md] benchmarks/closed_loop_state.sh [WORK_DIR]  (default runs/cs)
set -euo pipefail
cd "$(dirname "$0")/.."
R=${1:-runs/cs}
mkdir -p "$R"
. benchmarks/stage_timer.sh
. benchmarks/state_chain.sh
t ground-world-model $R/world_model_grounded $V train-world-model $P $S --dataset $R/dataset --dataset $R/rollouts \
  --init-from $R/world_model --out $R/world_model_grounded
.venv/bin/python benchmarks/closed_loop_ablations.py --work $R/ablations --dataset $R/dataset --rollouts $R/rollouts \
  --policy $R/policy_bc --world-model $R/world_model_grounded --expert-world-model $R/world_model \
  --success-model $R/success_model_state --arms "${ARMS:-reference,explore_low_heads}" \
  --out "${OUT:-benchmarks/results/closed_loop_state_mt10_seed0.md}"
