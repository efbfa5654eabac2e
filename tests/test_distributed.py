"""Data-parallel training under torchrun: 2 ranks x batch b train what 1 process x batch 2b trains.

Not bit-identical: the all-reduce sums the two halves' gradients in another order than one
backward pass over the whole batch, so weights and losses agree to float32 rounding (rtol 1e-4
after a few AdamW steps), not to the last bit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

# A conv bias right before a GroupNorm with one channel per group: the norm removes it, so its true
# gradient is 0 and AdamW turns the float noise of either run into full-size steps (seen: 2.7e-3 apart).
NOISE_ONLY = {"model.safetensors:enc.0.conv1.bias"}
SCRIPT = str(Path(__file__).with_name("distributed_train.py"))


def _run(args: list[str], ranks: int, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, SCRIPT] if ranks == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}", SCRIPT]
    proc = subprocess.run(cmd + args, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _weights(out: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    files = sorted(out.glob("*.safetensors"))
    assert files, f"no model in {out}"
    return {f"{f.name}:{k}": v for f in files for k, v in load_file(str(f)).items()}


def _assert_same(one: Path, two: Path, loss_key: str) -> None:
    c1, c2 = (json.loads((d / "curves.json").read_text()) for d in (one, two))
    assert [r["step"] for r in c1] == [r["step"] for r in c2]
    np.testing.assert_allclose([r[loss_key] for r in c2], [r[loss_key] for r in c1], rtol=1e-4, atol=1e-6)
    w1, w2 = _weights(one), _weights(two)
    assert w1.keys() == w2.keys()
    for k in w1:
        if k in NOISE_ONLY:
            continue
        np.testing.assert_allclose(w2[k], w1[k], rtol=1e-4, atol=1e-5, err_msg=k)


@pytest.fixture(scope="module")
def runs(tiny_dataset, tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    data = str(tiny_dataset[0])
    for stage in ("world_model", "policy"):
        _run([stage, data, str(root / "one" / stage)], 1)
        _run([stage, data, str(root / "two" / stage)], 2)
    for n in ("one", "two"):  # RFT starts from the same 1-process base models
        (root / n / "wm").symlink_to(root / "one" / "world_model")
        (root / n / "bc").symlink_to(root / "one" / "policy")
        _run(["rft", data, str(root / n / "rft")], 1 if n == "one" else 2)
    return root


@pytest.mark.parametrize("stage,loss_key", [("world_model", "loss"), ("policy", "loss"), ("rft", "loss")])
def test_two_ranks_train_what_one_process_trains(runs, stage, loss_key):
    _assert_same(runs / "one" / stage, runs / "two" / stage, loss_key)


def test_rft_rewards_are_of_the_global_batch(runs):
    c1, c2 = (json.loads((runs / n / "rft" / "curves.json").read_text()) for n in ("one", "two"))
    np.testing.assert_allclose([r["reward_std"] for r in c2], [r["reward_std"] for r in c1], rtol=1e-4)


def test_indivisible_batch_is_refused():
    from vla_rft.distributed import Context
    from vla_rft.errors import ConfigError

    with pytest.raises(ConfigError, match="policy.batch_size=5 does not divide over 2 processes"):
        Context(rank=1, world_size=2).shard(5, "policy.batch_size")
    assert Context(rank=1, world_size=2).shard(6, "x") == slice(3, 6)


def test_killed_rank_then_rerun_resumes_to_the_uninterrupted_result(runs, tiny_dataset, tmp_path):
    """kill -9 of one rank mid-run (torchrun then stops the other); the re-run resumes from rank 0's checkpoint."""
    import signal
    import time

    out = tmp_path / "policy"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", SCRIPT,
           "policy", str(tiny_dataset[0]), str(out), "6"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    from vla_rft.policy.train import CHECKPOINT_NAME

    ckpt = out / "ckpt" / CHECKPOINT_NAME
    deadline = time.time() + 240
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert ckpt.exists(), "no checkpoint written before the run ended"
    children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    if proc.poll() is None and children:
        os.kill(int(children[-1]), signal.SIGKILL)
    proc.wait(timeout=120)
    _run(["policy", str(tiny_dataset[0]), str(out), "6"], 2)
    _assert_same(runs / "one" / "policy", out, "loss")
