#!/usr/bin/env bash
set -e
# The closed-loop chain on the quick profile, resumable (a finished step is skipped):
# prepare-data -> pretrain-policy -> collect-rollouts -> train-world-model -> ground (fine-tune on
# expert + rollouts) -> train-success-model (real frames, then the grounded model's replays)
# -> rft in episode mode (honesty.json).
# Usage: bash benchmarks/closed_loop_quick.sh [OUT_DIR]   (default runs/closed_loop)
cd "$(dirname "$0")/.."
export MUJOCO_GL=osmesa
V=${VLA_RFT:-.venv/bin/vla-rft}
R=${1:-runs/closed_loop}
mkdir -p $R
[ -e $R/data ] || $V prepare-data --profile quick --out $R/data
[ -e $R/bc ] || $V pretrain-policy --profile quick --dataset $R/data --out $R/bc
[ -e $R/rollouts ] || $V collect-rollouts --profile quick --policy $R/bc --out $R/rollouts --summary-json $R/rollouts.json
[ -e $R/wm ] || $V train-world-model --profile quick --dataset $R/data --out $R/wm
[ -e $R/wm_g ] || $V train-world-model --profile quick --dataset $R/data --dataset $R/rollouts --init-from $R/wm --out $R/wm_g
[ -e $R/judge ] || $V train-success-model --profile quick --dataset $R/data --dataset $R/rollouts --world-model $R/wm_g --out $R/judge --summary-json $R/judge.json
[ -e $R/rft_ep ] || $V rft --profile quick --set rft.mode=episode --dataset $R/data --rollouts $R/rollouts --world-model $R/wm_g --policy $R/bc --success-model $R/judge --out $R/rft_ep --summary-json $R/rft_ep.json
