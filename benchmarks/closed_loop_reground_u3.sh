#!/usr/bin/env bash
# WMPO's loop on the best world model so far: the state chain (closed_loop_state.sh's stages) with the
# chained grounding (closed_loop_unrolled.sh, u = 3), the reference arm's 60 GRPO steps in it, then one more
# round of grounding on that fine-tuned policy's own real rollouts (its failures included), the world model
# and the state judge both fine-tuned on them, and the development-seed arms again, from the same base.
# Stages it shares with those scripts reuse their outputs (same paths); times go to $R/times.txt.
# Resumable: a stage whose output exists is skipped; the ablations resume per arm.
# Usage: [ARMS=reference,explore_low_heads] [OUT=table.md] benchmarks/closed_loop_reground_u3.sh [WORK_DIR]
# (default runs/cs)
set -euo pipefail
cd "$(dirname "$0")/.."
R=${1:-runs/cs}
export MUJOCO_GL=${MUJOCO_GL:-osmesa}
mkdir -p "$R"
. benchmarks/stage_timer.sh
. benchmarks/state_chain.sh
t ground-world-model-u3 $R/world_model_grounded_u3 $V train-world-model $P $S --set world_model.unroll_chunks=3 \
  --dataset $R/dataset --dataset $R/rollouts --init-from $R/world_model --out $R/world_model_grounded_u3
# the fine-tuned policy whose failures the second round sees: the reference arm (closed_loop_unrolled.sh's work dir)
.venv/bin/python benchmarks/closed_loop_ablations.py --work $R/ablations_u3 --dataset $R/dataset --rollouts $R/rollouts \
  --policy $R/policy_bc --world-model $R/world_model_grounded_u3 --expert-world-model $R/world_model \
  --success-model $R/success_model_state --arms reference --steps 60 --out $R/ablations_u3_reference.md
# 20 episodes per task on training seeds after the base rollouts' (500000+) and before the simulator arm's
# (700000+) and the development layouts (900000+)
t collect-rollouts-ref $R/rollouts_ref $V collect-rollouts $P --policy $R/ablations_u3/reference/policy \
  --set collect_rollouts.seed_offset=600000 --set collect_rollouts.episodes_per_task=20 --out $R/rollouts_ref
t ground-world-model-u3-2 $R/world_model_grounded_u3_2 $V train-world-model $P $S --set world_model.unroll_chunks=3 \
  --dataset $R/dataset --dataset $R/rollouts --dataset $R/rollouts_ref --init-from $R/world_model_grounded_u3 \
  --out $R/world_model_grounded_u3_2
t train-success-model-2 $R/success_model_state2 $V train-success-model $P $J \
  --dataset $R/dataset --dataset $R/rollouts --dataset $R/rollouts_ref --out $R/success_model_state2
.venv/bin/python benchmarks/closed_loop_ablations.py --work $R/ablations_u3_2 --dataset $R/dataset --rollouts $R/rollouts \
  --policy $R/policy_bc --world-model $R/world_model_grounded_u3_2 --expert-world-model $R/world_model \
  --success-model $R/success_model_state2 --arms "${ARMS:-reference,explore_low_heads}" --steps 60 \
  --out "${OUT:-benchmarks/results/closed_loop_reground_u3_mt10_seed0.md}"
