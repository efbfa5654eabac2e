"""Shared fixtures: a small real dataset recorded once per test session."""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("MUJOCO_GL", "osmesa")
# S3 outputs keep their checkpoints under $VLA_RFT_CACHE keyed by URI: one directory per test process,
# so neither the user's ~/.cache nor another pytest worker's run with the same bucket and prefix is resumed
os.environ["VLA_RFT_CACHE"] = tempfile.mkdtemp(prefix="vla-rft-test-cache-")
atexit.register(shutil.rmtree, os.environ["VLA_RFT_CACHE"], True)
sys.path.insert(0, str(Path(__file__).parent))  # test helpers: s3server, kfp_server


@pytest.fixture(scope="session")
def quick_config():
    from vla_rft.config import load_config

    return load_config("params.yaml", profile="quick")


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory, quick_config):
    """A real dataset: 2 expert episodes of 2 tasks, recorded in Meta-World in this process."""
    from vla_rft import stages
    from vla_rft.config import config_from_dict
    import yaml

    raw = yaml.safe_load(open("params.yaml"))
    cfg = config_from_dict(raw, profile="quick", overrides=[
        "sim.tasks=[push, drawer-open]", "prepare_data.episodes_per_task=2", "sim.num_workers=0",
        "sim.max_episode_steps=120",
    ])
    out = tmp_path_factory.mktemp("data") / "tiny"
    summary = stages.prepare_data(cfg, str(out), progress=False)
    return out, summary
