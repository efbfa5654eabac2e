#!/usr/bin/env bash
# Wall time of each training loop, 1 process vs 2 torchrun ranks at the same global batch, on a dataset.
#   scripts/cpu_scaling.sh DATASET [STEPS]   (tests/distributed_train.py's tiny settings)
# RFT starts from the 1-process world model and BC policy of the first two rows.
set -euo pipefail
data=$1; steps=${2:-20}; tmp=$(mktemp -d)
for stage in world_model policy rft; do
  if [ "$stage" = rft ]; then
    for n in 1 2; do ln -sfn "$tmp/1/world_model" "$tmp/$n/wm"; ln -sfn "$tmp/1/policy" "$tmp/$n/bc"; done
  fi
  s=$(date +%s.%N); OMP_NUM_THREADS=1 .venv/bin/python tests/distributed_train.py $stage "$data" "$tmp/1/$stage" "$steps"
  m=$(date +%s.%N); OMP_NUM_THREADS=1 .venv/bin/python -m torch.distributed.run --standalone --nproc-per-node 2 \
      tests/distributed_train.py $stage "$data" "$tmp/2/$stage" "$steps" 2>/dev/null
  e=$(date +%s.%N)
  echo "$stage $steps steps: 1 process $(echo "$m - $s" | bc) s, 2 ranks $(echo "$e - $m" | bc) s"
done
rm -rf "$tmp"
