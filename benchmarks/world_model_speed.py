"""Imagined env-steps per second of the world model's batched rollout vs the real simulator.

Imagined: ``WorldModel.rollout`` of one K-step chunk at batch sizes 1, 16, 64 (an env-step is one
predicted frame). Real: one Meta-World env in this process, random actions, a rendered frame every
step at the same resolution. Both after warm-up, in the same run, on the same threads budget.

    MUJOCO_GL=osmesa python benchmarks/world_model_speed.py --model artifacts/world_model --out wm_speed.json
    MUJOCO_GL=osmesa python benchmarks/world_model_speed.py --set channels=[8,16,32,64] --out wm_speed.json

Without ``--model`` an untrained model of the default (or ``--set``) architecture is timed: the
speed depends on the architecture only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "osmesa")


def imagined_steps_per_second(model, frames, batch_size: int, repeats: int, seed: int = 0) -> dict:
    import torch

    k = model.chunk_len
    gen = torch.Generator().manual_seed(seed)
    idx = torch.arange(batch_size) % len(frames)
    start = frames[idx]
    actions = torch.rand(batch_size, k, model.action_dim, generator=gen) * 2 - 1
    states = model.state_mean.expand(batch_size, -1).clone()
    model.rollout(start, actions, states)  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeats):
        model.rollout(start, actions, states)
    seconds = time.perf_counter() - t0
    steps = batch_size * k * repeats
    return {"batch_size": batch_size, "env_steps": steps, "seconds": seconds, "steps_per_second": steps / seconds}


def real_steps_per_second(task: str, image_size: int, steps: int, warmup: int = 20, seed: int = 0):
    import numpy as np

    from vla_rft.sim.env import MetaWorldEnv
    from vla_rft.sim.perturbations import EpisodeSpec

    env = MetaWorldEnv(task, image_size=image_size)
    rng = np.random.default_rng(seed)
    episode = 0
    env.reset(EpisodeSpec(task, episode))
    frames = [env.render()]

    def step() -> None:
        nonlocal episode
        if env.raw.curr_path_length >= env.raw.max_path_length - 1:
            episode += 1
            env.reset(EpisodeSpec(task, episode))
        env.step(rng.uniform(-1, 1, 4))
        frames.append(env.render())

    for _ in range(warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = time.perf_counter() - t0
    return {"task": task, "env_steps": steps, "seconds": seconds, "steps_per_second": steps / seconds}, frames


def main(argv: list[str] | None = None) -> dict:
    import numpy as np
    import torch
    import yaml

    from vla_rft.world_model.configuration import WorldModelConfig
    from vla_rft.world_model.modeling import WorldModel

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a saved world model directory (default: untrained, --set architecture)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="world-model config override for the untrained model, e.g. channels=[8,16,32,64]")
    parser.add_argument("--batch-sizes", default="1,16,64")
    parser.add_argument("--repeats", type=int, default=0, help="rollouts per batch size (0: about 1024 env-steps)")
    parser.add_argument("--real-steps", type=int, default=300)
    parser.add_argument("--task", default="push")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--chunk-len", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (the CPU profile uses 2)")
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    if args.model:
        model = WorldModel.from_pretrained(args.model)
    else:
        overrides = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}
        torch.manual_seed(0)
        model = WorldModel(WorldModelConfig(**overrides), args.image_size, args.chunk_len)
    model.eval()

    real, frames = real_steps_per_second(args.task, model.image_size, args.real_steps)
    start_frames = torch.from_numpy(np.stack(frames[-64:]).transpose(0, 3, 1, 2).copy())
    imagined = []
    for b in (int(x) for x in args.batch_sizes.split(",")):
        repeats = args.repeats or max(2, 1024 // (b * model.chunk_len))
        imagined.append(imagined_steps_per_second(model, start_frames, b, repeats))

    print(f"{'source':<22}{'batch':>6}{'env-steps/s':>14}{'x real':>9}")
    print(f"{'real Meta-World':<22}{1:>6}{real['steps_per_second']:>14.1f}{1.0:>9.2f}")
    for row in imagined:
        row["ratio_vs_real"] = row["steps_per_second"] / real["steps_per_second"]
        print(f"{'world model (imagined)':<22}{row['batch_size']:>6}{row['steps_per_second']:>14.1f}"
              f"{row['ratio_vs_real']:>9.2f}")
    at64 = next((r["ratio_vs_real"] for r in imagined if r["batch_size"] == 64), None)
    if at64 is not None:
        print(f"imagined / real at batch 64: {at64:.2f}x")
    result = {
        "real": real, "imagined": imagined, "ratio_at_batch_64": at64, "threads": args.threads,
        "model": args.model or "untrained", "architecture": model.config.architecture(),
        "parameters": sum(p.numel() for p in model.parameters()), "image_size": model.image_size,
        "chunk_len": model.chunk_len, "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
