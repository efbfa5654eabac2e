#!/usr/bin/env bash
# The main job on the quick profile, locally, from a fresh checkout: set up, then run.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export MUJOCO_GL=${MUJOCO_GL:-osmesa}
.venv/bin/vla-rft prepare-data --profile quick --out runs/quick/dataset --overwrite "$@"
