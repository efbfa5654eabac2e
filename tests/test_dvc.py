"""DVC: the dataset goes to an S3 remote and comes back identical, through a real endpoint on loopback."""

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from s3server import ACCESS_KEY, SECRET_KEY, raw_client, s3_env, s3_server  # noqa: F401 - fixtures

DVC = str(Path(sys.executable).with_name("dvc"))


def _run(args, cwd, env):
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_dataset_push_and_pull_through_s3_remote(tiny_dataset, s3_env, tmp_path):  # noqa: F811
    src, _ = tiny_dataset
    repo = tmp_path / "repo"
    repo.mkdir()
    env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    _run(["git", "init", "-q"], repo, env)
    _run([DVC, "init", "-q"], repo, env)
    _run([DVC, "config", "core.analytics", "false"], repo, env)
    _run([DVC, "remote", "add", "-d", "minio", f"s3://{s3_env.bucket}/dvcstore"], repo, env)
    _run([DVC, "remote", "modify", "minio", "endpointurl", s3_env.endpoint], repo, env)
    shutil.copytree(src, repo / "data" / "dataset")
    _run([DVC, "add", "data/dataset"], repo, env)
    before = _digest(repo / "data" / "dataset")
    _run([DVC, "push"], repo, env)

    # the remote really holds the objects, and the keys never reached the repo's config
    objects = list(raw_client(s3_env.endpoint).list_objects(s3_env.bucket, prefix="dvcstore/", recursive=True))
    assert len(objects) >= len(before)
    config = (repo / ".dvc" / "config").read_text()
    assert ACCESS_KEY not in config and SECRET_KEY not in config

    shutil.rmtree(repo / "data" / "dataset")
    shutil.rmtree(repo / ".dvc" / "cache")
    _run([DVC, "pull"], repo, env)
    assert _digest(repo / "data" / "dataset") == before
