"""Scheduled retraining: runs take a dataset by version (data.source), start from the champion
(policy.init), and append their rollouts to a versioned dataset; DVC in a real git repository
whose remote is the loopback S3 server."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from s3server import ACCESS_KEY, SECRET_KEY, s3_env, s3_server  # noqa: F401 - fixtures
from vla_rft import registry, stages, storage, versions
from vla_rft.config import ConfigError, config_from_dict, load_config

ROOT = Path(__file__).resolve().parents[1]
DVC = str(Path(sys.executable).with_name("dvc"))
GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
SMALL = [
    "sim.tasks=[push, drawer-open]", "prepare_data.episodes_per_task=2", "world_model.steps=10",
    "policy.steps=20", "rft.steps=2", "rft.verify_states=1", "evaluate.episodes_per_task=1",
    "evaluate.suites=[nominal]", "collect_rollouts.episodes_per_task=1", "success_model.steps=5",
    "rft.horizon=1", "rft.honesty_episodes_per_task=1",
]


def _run(args, cwd, **kw):
    result = subprocess.run(args, cwd=cwd, env={**os.environ, **GIT_ENV}, capture_output=True, text=True, **kw)
    assert result.returncode == 0, f"{' '.join(map(str, args))} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout.strip()


class DataRepo:
    """A dataset repository as a team keeps one: a bare git origin, DVC remote on S3, versions as tags."""

    def __init__(self, root: Path, s3_env, name: str):  # noqa: F811
        self.origin, self.work = root / "origin.git", root / "work"
        _run(["git", "init", "-q", "--bare", str(self.origin)], root)
        _run(["git", "clone", "-q", str(self.origin), str(self.work)], root)
        for cmd in (["init", "-q"], ["config", "core.analytics", "false"],
                    ["remote", "add", "-d", "minio", f"s3://{s3_env.bucket}/dvc-{name}"],
                    ["remote", "modify", "minio", "endpointurl", s3_env.endpoint]):
            _run([DVC, *cmd], self.work)
        _run(["git", "add", "-A"], self.work)
        _run(["git", "commit", "-qm", "dvc init"], self.work)
        _run(["git", "push", "-q", "origin", "HEAD"], self.work)

    def add_version(self, dataset: Path, tag: str, path: str = "data/dataset") -> None:
        target = self.work / path
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(dataset, target)
        _run([DVC, "add", "-q", path], self.work)
        _run(["git", "add", "-A"], self.work)
        _run(["git", "commit", "-qm", f"dataset {tag}"], self.work)
        _run(["git", "tag", tag], self.work)
        _run([DVC, "push", "-q"], self.work)
        _run(["git", "push", "-q", "origin", "HEAD", "--tags"], self.work)

    def commit_of(self, rev: str) -> str:
        return _run(["git", "rev-parse", f"{rev}^{{commit}}"], self.origin)

    def dvc_md5(self, rev: str, path: str = "data/dataset") -> str:
        return yaml.safe_load(_run(["git", "show", f"{rev}:{path}.dvc"], self.origin))["outs"][0]["md5"]


def _smaller_dataset(src: Path, out: Path) -> Path:
    """The same dataset without its last episode: a second, different version."""
    from vla_rft.data import load_dataset, write_dataset
    from vla_rft.data.parquet import episodes_of

    data = load_dataset(src)
    episodes, splits = episodes_of(data)
    staged = out.with_name(out.name + "-staged")
    write_dataset(staged, episodes[:-1], splits[:-1], list(zip(data.tasks, data.instructions)), info_extra={
        k: v for k, v in data.info.items() if k in ("fps", "camera", "chunk_len")})
    storage.write_artifact(staged, str(out), kind="dataset", config={"note": "one episode fewer"})
    return out


@pytest.fixture
def data_repo(tmp_path, tiny_dataset, s3_env, monkeypatch):  # noqa: F811
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    repo = DataRepo(tmp_path, s3_env, tmp_path.name)
    repo.add_version(tiny_dataset[0], "data-v1")
    repo.add_version(_smaller_dataset(tiny_dataset[0], tmp_path / "v2"), "data-v2")
    return repo


def _content(uri) -> str:
    return registry.content_hash(storage.read_manifest(str(uri)))


def test_a_dataset_is_taken_by_dvc_revision_or_uri_and_its_version_recorded(data_repo, tiny_dataset, tmp_path):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    base = ["sim.tasks=[push, drawer-open]", f"data.dvc_repo={data_repo.origin}"]
    seen = {}
    for rev in ("data-v1", "data-v2"):
        cfg = config_from_dict(raw, profile="quick", overrides=[*base, f"data.source=dvc:{rev}"])
        summary = stages.prepare_data(cfg, str(tmp_path / rev), progress=False)
        source = storage.read_manifest(str(tmp_path / rev))["config"]["source"]
        assert source["kind"] == "dvc" and source["rev"] == rev
        assert source["commit"] == data_repo.commit_of(rev)
        assert source["dvc_md5"] == data_repo.dvc_md5(rev)
        assert source["content_sha256"] == _content(tmp_path / rev) == summary["source"]["content_sha256"]
        seen[rev] = source["content_sha256"]
    assert seen["data-v1"] == _content(tiny_dataset[0]) != seen["data-v2"]  # exactly that revision's data

    # an artifact URI: the same files, the origin recorded
    cfg = config_from_dict(raw, profile="quick", overrides=[*base, f"data.source={tiny_dataset[0]}"])
    stages.prepare_data(cfg, str(tmp_path / "by-uri"), progress=False)
    source = storage.read_manifest(str(tmp_path / "by-uri"))["config"]["source"]
    assert source == {"kind": "artifact", "uri": str(tiny_dataset[0]), "content_sha256": _content(tiny_dataset[0])}

    # bad sources: one named error each, nothing written
    for text, error, words in (("dvc:no-such-tag", versions.VersionError, "revision 'no-such-tag' does not exist"),
                               (str(tmp_path / "nothing"), storage.ArtifactNotFoundError, "nothing")):
        cfg = config_from_dict(raw, profile="quick", overrides=[*base, f"data.source={text}"])
        with pytest.raises(error, match=words):
            stages.prepare_data(cfg, str(tmp_path / "bad"), progress=False)
        assert not (tmp_path / "bad").exists()
    with pytest.raises(ConfigError, match="names no revision"):
        config_from_dict(raw, profile="quick", overrides=["data.source='dvc:'"])
    cfg = config_from_dict(raw, profile="quick", overrides=[*base, "data.source=dvc:data-v1", "sim.tasks=[reach]"])
    with pytest.raises(Exception, match=r"has tasks \['push', 'drawer-open'\], not \['reach'\]"):
        stages.prepare_data(cfg, str(tmp_path / "bad"), progress=False)


def _small_params(path: Path, extra: dict) -> Path:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    for item in SMALL:
        dotted, value = item.split("=", 1)
        section, key = dotted.split(".")
        raw["profiles"]["quick"].setdefault(section, {})[key] = yaml.safe_load(value)
    for dotted, value in extra.items():
        section, key = dotted.split(".")
        raw[section][key] = value
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    load_config(path, "quick")
    return path


@pytest.mark.slow
def test_dvc_repro_trains_on_the_pinned_dataset_revision(data_repo, tmp_path):
    repo = tmp_path / "code"
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for rel in files:
        if (ROOT / rel).is_file():
            (repo / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, repo / rel)
    _small_params(repo / "params.yaml", {"data.source": "dvc:data-v2", "data.dvc_repo": str(data_repo.origin)})
    env = {"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "MUJOCO_GL": "osmesa"}
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "snapshot"]):
        _run(cmd, repo)
    result = subprocess.run([DVC, "repro", "pretrain_policy"], cwd=repo, env={**os.environ, **GIT_ENV, **env},
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    trained_on = storage.read_manifest(str(repo / "models" / "policy_bc"))["config"]["dataset_version"]
    assert trained_on["source"]["rev"] == "data-v2"
    assert trained_on["source"]["commit"] == data_repo.commit_of("data-v2")
    with versions.fetch(str(data_repo.origin), "data-v2", "data/dataset") as (directory, _):
        assert trained_on["content_sha256"] == _content(directory)  # the revision's content, from the S3 remote
    # dvc's own record of the stage output is the revision's directory hash
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    # dvc tracks the stage's output (the same files under a manifest that records the source)
    outs = {o["path"] for o in lock["stages"]["prepare_data"]["outs"]}
    assert "data/dataset" in outs


@pytest.mark.slow
def test_two_cycles_start_from_the_champion_and_accumulate_rollouts(data_repo, tmp_path):
    from vla_rft.pipelines import client

    params = _small_params(tmp_path / "params.yaml", {"promote.registry": str(tmp_path / "registry")})
    knobs = {"data_source": "dvc:data-v1", "dvc_repo": str(data_repo.origin), "base_policy": "champion",
             "accumulate_rollouts": True, "closed_loop": True}
    cycles = [client.run_local(tmp_path / "kfp", params, "quick", echo=lambda *a, **k: None, params=knobs)
              for _ in range(2)]
    runs = [Path(c["run_dir"]) for c in cycles]

    # both cycles trained on exactly dataset revision data-v1 (kfp.local)
    for run in runs:
        source = storage.read_manifest(str(run / "prepare-data" / "dataset"))["config"]["source"]
        assert source["commit"] == data_repo.commit_of("data-v1")
        assert source["content_sha256"] == _content(run / "prepare-data" / "dataset") == data_repo_v1(data_repo)

    # cycle 1: no champion yet -> BC from scratch, promoted as the first champion
    first, second = (storage.read_manifest(str(r / "pretrain-policy" / "policy"))["config"] for r in runs)
    assert first["trained_by"] == "bc" and cycles[0]["promotion"]["reason"] == "no champion yet"
    champion_1 = cycles[0]["promotion"]["version"]
    # cycle 2 starts from it
    assert second["trained_by"] == "champion" and second["champion"]["version"] == champion_1

    # rollouts: a new DVC version per cycle, the second containing the first's episodes
    rollouts = [storage.read_manifest(str(r / "collect-rollouts" / "rollouts"))["config"]["source"] for r in runs]
    assert [r["tag"] for r in rollouts] == ["rollouts-v1", "rollouts-v2"]
    assert rollouts[1]["previous"]["commit"] == rollouts[0]["commit"]
    from vla_rft.data import load_dataset

    fetched = {}
    for version in rollouts:
        with versions.fetch(str(data_repo.origin), version["tag"], "data/rollouts_history") as (directory, v):
            assert v["commit"] == version["commit"] and _content(directory) == version["content_sha256"]
            fetched[version["tag"]] = {(e["task_index"], e["seed"]) for e in load_dataset(directory).episodes}
    assert fetched["rollouts-v1"] < fetched["rollouts-v2"]  # appended, new seeds, nothing lost
    assert rollouts[0]["dvc_md5"] != rollouts[1]["dvc_md5"]
    # cycle 2's closed-loop stages trained on that version
    grounded = storage.read_manifest(str(runs[1] / "ground-world-model" / "grounded"))["config"]
    assert grounded["dataset_version"][1]["content_sha256"] == rollouts[1]["content_sha256"]

    # the gate decided cycle 2 on the same evaluation: the champion scored on these very episodes
    decisions = sorted((tmp_path / "registry" / "decisions").glob("*.json"))
    assert len(decisions) == 2
    last = json.loads(decisions[-1].read_text())
    assert last["champion"]["version"] == champion_1
    assert "not comparable" not in last["reason"]
    metrics = json.loads((runs[1] / "evaluate" / "evaluation" / "metrics.json").read_text())
    assert last["candidate_score"] == metrics["policies"]["rft"]["overall"]["all"]
    assert last["champion"]["score"] == pytest.approx(metrics["policies"]["base"]["overall"]["all"])
    report = (runs[1] / "evaluate" / "evaluation" / "report.html").read_text()
    assert "Training data and lineage" in report and f"champion {champion_1}" in report
    assert data_repo.commit_of("data-v1")[:12] in report


def data_repo_v1(repo: DataRepo) -> str:
    with versions.fetch(str(repo.origin), "data-v1", "data/dataset") as (directory, _):
        return _content(directory)


def test_schedule_takes_the_dataset_source_and_base_policy_knobs_with_caching_off():
    from kfp_server import RecordingKFP
    from vla_rft.pipelines import client

    knobs = client.parse_params(["data_source=dvc:data-v1", "base_policy=champion", "dvc_repo=https://git.example/d.git",
                                 "accumulate_rollouts=true", "closed_loop=true"])
    assert knobs["accumulate_rollouts"] is True
    with RecordingKFP() as server:
        client.schedule(server.url, "0 0 3 * * 1", package=client.COMPILED_PATH, params=knobs)
    (rr,) = server.posts("/apis/v2beta1/recurringruns")
    body = rr["body"]
    params = body["runtime_config"]["parameters"]
    assert params["data_source"] == "dvc:data-v1" and params["base_policy"] == "champion"
    assert params["accumulate_rollouts"] is True and params["dvc_repo"] == "https://git.example/d.git"
    spec = body["pipeline_spec"]["pipeline_spec"]
    dags = {"root": spec["root"], **{name: c for name, c in spec["components"].items() if "dag" in c}}
    tasks = {name: t for dag in dags.values() for name, t in dag["dag"]["tasks"].items()}
    # every task, the ParallelFor's and the closed-loop branch's included (KFP omits a false enableCache)
    assert {"promote", "evaluate-suite", "collect-rollouts"} <= set(tasks)
    cached = sorted(name for name, t in tasks.items() if t.get("cachingOptions", {}).get("enableCache", False))
    assert not cached, f"tasks left cached in the recurring run: {cached}"
    # a bad value stops before any request
    with RecordingKFP() as server:
        with pytest.raises(ConfigError, match="policy.init"):
            client.schedule(server.url, "0 0 3 * * 1", package=client.COMPILED_PATH,
                            params=client.parse_params(["base_policy=best"]))
    assert server.requests == []
