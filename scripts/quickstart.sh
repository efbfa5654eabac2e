#!/usr/bin/env bash
# The main job: the whole pipeline (prepare-data -> world model || BC policy -> RFT -> evaluate ->
# promote) on the quick profile, locally with kfp.local, from a fresh checkout. It prints one line per
# stage and a summary; every stage's full log goes to runs/kfp/<run-id>/pipeline.log (-v streams it).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export MUJOCO_GL=${MUJOCO_GL:-osmesa}
.venv/bin/vla-rft pipeline run --local --profile quick --pipeline-root runs/kfp "$@"
