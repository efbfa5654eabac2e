#!/usr/bin/env bash
# Closed-loop RFT on the standard profile (MT10), stage by stage, with the honesty probes of the
# success threshold; every stage's time goes to $R/times.txt. Resumable: a stage whose output
# exists is skipped. Usage: benchmarks/closed_loop_standard.sh [WORK_DIR]  (default runs/cl)
set -euo pipefail
cd "$(dirname "$0")/.."
R=${1:-runs/cl}
V=.venv/bin/vla-rft
P="--profile standard"
mkdir -p "$R"
. benchmarks/stage_timer.sh
t prepare-data $R/dataset $V prepare-data $P --out $R/dataset
t pretrain-policy $R/policy_bc $V pretrain-policy $P --dataset $R/dataset --out $R/policy_bc
t collect-rollouts $R/rollouts $V collect-rollouts $P --policy $R/policy_bc --out $R/rollouts
t train-world-model $R/world_model $V train-world-model $P --dataset $R/dataset --out $R/world_model
t ground-world-model $R/world_model_grounded $V train-world-model $P --dataset $R/dataset --dataset $R/rollouts \
  --init-from $R/world_model --out $R/world_model_grounded
# the judge: real frames, then the grounded world model's replays of the same episodes (the default);
# and the real-frame judge alone (success_model.imagined_steps=0) for the honesty comparison
t train-success-model $R/success_model $V train-success-model $P --dataset $R/dataset --dataset $R/rollouts \
  --world-model $R/world_model_grounded --out $R/success_model
t train-success-model-real $R/success_model_real $V train-success-model $P --dataset $R/dataset --dataset $R/rollouts \
  --set success_model.imagined_steps=0 --out $R/success_model_real
D="--dataset $R/dataset --rollouts $R/rollouts --policy $R/policy_bc"
E="$D --success-model $R/success_model"
ONE="--set rft.mode=episode --set rft.steps=1 --set rft.checkpoint_interval=0"
# honesty (1 GRPO step each): the real-frame judge, the expert-only world model, fixed thresholds
t probe-realjudge $R/probe_realjudge $V rft $P $ONE $D --success-model $R/success_model_real \
  --world-model $R/world_model_grounded --out $R/probe_realjudge
t probe-expertwm $R/probe_expertwm $V rft $P $ONE $E --world-model $R/world_model --out $R/probe_expertwm
for th in 0.5 0.9; do
  t probe-th$th $R/probe_th$th $V rft $P $ONE --set rft.success_threshold_source=fixed \
    --set rft.success_threshold=$th $E --world-model $R/world_model_grounded --out $R/probe_th$th
done
t rft-episode-s0 $R/episode-s0 $V rft $P --set rft.mode=episode $E --world-model $R/world_model_grounded \
  --out $R/episode-s0
t evaluate $R/eval $V evaluate $P --policy base=$R/policy_bc --policy episode=$R/episode-s0 --out $R/eval \
  --summary-json $R/eval.summary.json
