#!/usr/bin/env bash
# The whole test suite from a fresh checkout: set up, then pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export MUJOCO_GL=${MUJOCO_GL:-osmesa}
# two workers: much of the suite waits on subprocess start-up, kfp.local, dvc and the S3 server, which
# leaves a core idle in one process. Threads that wait sleep instead of spinning: two workers' OpenMP
# pools on 2 cores would otherwise burn each other's time (docs/decisions.md, "Tests in 2 workers").
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
.venv/bin/python -m pytest -q -n "${VLA_RFT_TEST_WORKERS:-2}" "$@"
