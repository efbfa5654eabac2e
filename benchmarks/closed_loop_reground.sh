#!/usr/bin/env bash
# One round of grounding on a fine-tuned policy's own failures (WMPO's loop), then ablation arms
# from the same base in the re-grounded world model and judge. Needs the stages of
# closed_loop_standard.sh in $R (dataset, rollouts, policy_bc, world_model, world_model_grounded)
# and a fine-tuned policy (default: the reference arm of the development-seed ablations).
# Resumable: a stage whose output exists is skipped; times go to $R/times.txt.
# Usage: benchmarks/closed_loop_reground.sh [WORK_DIR] [POLICY] [ABLATION_WORK] [ARMS]
set -euo pipefail
cd "$(dirname "$0")/.."
R=${1:-runs/cl}
POLICY=${2:-runs/ablations_chain2/reference/policy}
W=${3:-runs/ablations_chain2_g2}
ARMS=${4:-reference,explore_low,lr1e-5,explore_low_lr1e-5}
V=.venv/bin/vla-rft
P="--profile standard"
. benchmarks/stage_timer.sh
# 20 episodes per task on training seeds after the base rollouts' (500000+) and before the honesty
# layouts (900000+): the fine-tuned policy's failures, which the world model has not seen
t collect-rollouts-ref $R/rollouts_ref $V collect-rollouts $P --policy "$POLICY" \
  --set collect_rollouts.seed_offset=600000 --set collect_rollouts.episodes_per_task=20 --out $R/rollouts_ref
t ground-world-model-2 $R/world_model_grounded2 $V train-world-model $P --dataset $R/dataset --dataset $R/rollouts \
  --dataset $R/rollouts_ref --init-from $R/world_model_grounded --out $R/world_model_grounded2
t train-success-model-2 $R/success_model2 $V train-success-model $P --dataset $R/dataset --dataset $R/rollouts \
  --dataset $R/rollouts_ref --world-model $R/world_model_grounded2 --out $R/success_model2
MUJOCO_GL=${MUJOCO_GL:-osmesa} .venv/bin/python benchmarks/closed_loop_ablations.py --work "$W" \
  --dataset $R/dataset --rollouts $R/rollouts --policy $R/policy_bc --world-model $R/world_model_grounded2 \
  --expert-world-model $R/world_model --success-model $R/success_model2 --steps 60 --arms "$ARMS" \
  --out benchmarks/results/closed_loop_ablations_mt10_seed0_chain2_regrounded.md
