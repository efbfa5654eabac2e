"""The command where the user stands: outside the repo, with no params.yaml, the packaged defaults apply."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import yaml

from vla_rft.defaults import PARAMS_PATH

ROOT = Path(__file__).resolve().parents[1]
VLA_RFT = str(Path(sys.executable).with_name("vla-rft"))
NOTICE = "no params.yaml in this directory: using the defaults shipped with the package"


def _run(*args, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "MUJOCO_GL": "osmesa"}
    env.pop("PYTHONPATH", None)  # what is installed, not the checkout, answers
    return subprocess.run([VLA_RFT, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_packaged_defaults_equal_the_repos_params_yaml():
    assert PARAMS_PATH.read_text() == (ROOT / "params.yaml").read_text(), (
        "src/vla_rft/defaults/params.yaml is stale: cp params.yaml src/vla_rft/defaults/params.yaml")


def test_a_stage_runs_from_a_directory_without_params_yaml(tmp_path):
    out = tmp_path / "ds"
    result = _run("prepare-data", "--profile", "quick", "--set", "sim.tasks=[reach]",
                  "--set", "prepare_data.episodes_per_task=1", "--set", "sim.num_workers=0",
                  "--summary-json", "summary.json", "--out", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.count(NOTICE) == 1, result.stderr
    assert "does not exist" not in result.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["episodes"] == 1 and (out / "meta.json").exists()


def test_params_writes_the_default_file_to_start_from(tmp_path):
    result = _run("params", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(result.stdout) == yaml.safe_load((ROOT / "params.yaml").read_text())
    (tmp_path / "params.yaml").write_text(result.stdout.replace("episodes_per_task: 3", "episodes_per_task: 4", 1))
    # with a params.yaml here, it is used, silently; an explicit --params that is missing is still an error
    compiled = _run("pipeline", "compile", "--out", "p.yaml", cwd=tmp_path)
    assert compiled.returncode == 0 and NOTICE not in compiled.stderr, compiled.stderr
    spec = next(yaml.safe_load_all((tmp_path / "p.yaml").read_text()))
    params = json.loads(spec["root"]["inputDefinitions"]["parameters"]["params_json"]["defaultValue"])
    assert params["profiles"]["quick"]["prepare_data"]["episodes_per_task"] == 4
    missing = _run("rft", "--params", "nope.yaml", "--dataset", "d", "--world-model", "w", "--policy", "p",
                   "--out", "o", cwd=tmp_path)
    assert missing.returncode == 2 and "params file nope.yaml does not exist" in missing.stderr


def test_the_wheel_ships_the_defaults_and_the_compiled_pipeline(tmp_path):
    src = tmp_path / "src"  # a copy of the checkout: building writes build/ next to the sources
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.split()
    for rel in listed:
        if (ROOT / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, src / rel)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path), str(src)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = tmp_path.glob("vla_rft-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "vla_rft/defaults/params.yaml" in names
    assert "vla_rft/pipelines/vla_rft_pipeline.yaml" in names
    assert zipfile.ZipFile(wheel).read("vla_rft/defaults/params.yaml").decode() == PARAMS_PATH.read_text()
