#!/usr/bin/env bash
# A world model grounded with chunks chained in training (world_model.unroll_chunks: each chunk after the
# first starts from the model's own predicted frame and state), on the state chain that
# benchmarks/closed_loop_state.sh builds (run it first; this reuses its dataset, rollouts, base policy,
# expert world model and state judge). Then where its objects are after each of 12 chunks against the
# one-chunk grounding's (benchmarks/state_fidelity.py), and the development-seed RFT arms in it
# (benchmarks/closed_loop_ablations.py, its own --work). Resumable: finished steps are skipped.
# Usage: [U=3] [ARMS=reference,explore_low_heads] [STEPS=60] [OUT=table.md] benchmarks/closed_loop_unrolled.sh [WORK_DIR]
# (default runs/cs)
set -euo pipefail
cd "$(dirname "$0")/.."
R=${1:-runs/cs}
U=${U:-3}
V=.venv/bin/vla-rft
S="--set world_model.environment_state=true"
WM=world_model_grounded_u$U
. benchmarks/stage_timer.sh
t ground-world-model-u$U $R/$WM $V train-world-model --profile standard $S --set world_model.unroll_chunks=$U \
  --dataset $R/dataset --dataset $R/rollouts --init-from $R/world_model --out $R/$WM
for wm in world_model_grounded $WM; do
  out=benchmarks/results/state_fidelity_mt10_${wm#world_model_}.md
  [ -e "$out" ] || .venv/bin/python benchmarks/state_fidelity.py --dataset $R/dataset --dataset $R/rollouts \
    --world-model $R/$wm --success-model $R/success_model_state --out "$out"
done
.venv/bin/python benchmarks/closed_loop_ablations.py --work $R/ablations_u$U${STEPS:+_${STEPS}steps} --dataset $R/dataset --rollouts $R/rollouts \
  --policy $R/policy_bc --world-model $R/$WM --expert-world-model $R/world_model \
  --success-model $R/success_model_state --arms "${ARMS:-reference,explore_low_heads}" --steps "${STEPS:-60}" \
  --out "${OUT:-benchmarks/results/closed_loop_unrolled_u${U}_mt10_seed0${STEPS:+_${STEPS}steps}.md}"
