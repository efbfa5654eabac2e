"""Run one training loop on a tiny dataset; under torchrun every rank runs it (tests/test_distributed.py).

    python tests/distributed_train.py {world_model,policy,rft} DATASET OUT [STEPS]
"""

from __future__ import annotations

import sys
from pathlib import Path

from vla_rft.config import CommonConfig
from vla_rft.data import load_dataset
from vla_rft.policy.configuration import PolicyConfig
from vla_rft.policy.modeling import VLAPolicy
from vla_rft.policy.train import train_policy_bc
from vla_rft.rft.configuration import RFTConfig
from vla_rft.rft.grpo import train_grpo
from vla_rft.world_model.configuration import WorldModelConfig
from vla_rft.world_model.modeling import WorldModel
from vla_rft.world_model.train import train_world_model

POLICY = dict(cnn_channels=(8, 8, 16, 16), hidden_size=32, num_layers=1, num_heads=2, mlp_ratio=2,
              batch_size=8, warmup_steps=2, eval_interval=0, eval_chunks=8, checkpoint_interval=2, log_interval=1)
WORLD = dict(channels=(8, 16, 32), patch_size=2, hidden_size=32, num_layers=1, num_heads=2, frame_channels=8,
             cond_size=16, batch_size=4, train_frames=4, warmup_steps=2, log_interval=1, checkpoint_interval=2,
             eval_chunks=4, eval_batch_size=4, gif_chunks=1)
COMMON = CommonConfig(seed=3, num_threads=1)

if __name__ == "__main__":
    stage, dataset, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    steps = int(sys.argv[4]) if len(sys.argv) > 4 else 6
    data = load_dataset(dataset)
    if stage == "world_model":
        train_world_model(WorldModelConfig(**WORLD, steps=steps), COMMON, data, out, out / "ckpt", resume=True,
                          progress=False)
    elif stage == "policy":
        train_policy_bc(PolicyConfig(**POLICY, steps=steps), COMMON, data, out, out / "ckpt", resume=True,
                        progress=False)
    elif stage == "rft":  # the base models: 1-process runs of the two stages above, in OUT/../wm and OUT/../bc
        wm, bc = WorldModel.from_pretrained(out.parent / "wm"), VLAPolicy.from_pretrained(out.parent / "bc")
        train_grpo(RFTConfig(steps=steps, batch_starts=4, group_size=3, checkpoint_interval=1, log_interval=1,
                             verify_states=0), COMMON, data, wm, bc, out, out / "ckpt", resume=True, progress=False)
    else:
        raise SystemExit(f"unknown stage {stage!r}")
