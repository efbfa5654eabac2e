#!/usr/bin/env bash
# The whole test suite from a fresh checkout: set up, then pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export MUJOCO_GL=${MUJOCO_GL:-osmesa}
.venv/bin/python -m pytest -q "$@"
