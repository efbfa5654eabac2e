#!/usr/bin/env bash
# The main job: the whole pipeline (prepare-data -> world model || BC policy -> RFT -> evaluate ->
# promote) on the quick profile, locally with kfp.local, from a fresh checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export MUJOCO_GL=${MUJOCO_GL:-osmesa}
.venv/bin/vla-rft pipeline run --local --profile quick --pipeline-root runs/kfp "$@"
