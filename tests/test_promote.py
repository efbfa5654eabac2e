"""The model registry's champion/challenger gate, against a real S3 endpoint on loopback."""

import json

import pytest

from s3server import raw_client, s3_env, s3_server  # noqa: F401 - fixtures
from vla_rft import stages, storage
from vla_rft.config import load_config
from vla_rft.registry import content_hash

TASKS = ["push", "drawer-open"]


def _evaluation(tmp_path, name, score, episodes=20, evaluated=None):
    """A real evaluation artifact (metrics.json in the evaluate stage's schema) scoring ``score``,
    recording (as the evaluate stage does) that it evaluated policy ``name`` (or ``evaluated``) as 'rft'."""
    metrics = {
        "schema_version": 1, "tasks": TASKS, "suites": [{"name": "nominal", "kind": "none", "magnitude_cm": 0.0}],
        "policies": {"rft": {"episodes_per_task": episodes, "max_episode_steps": 150,
                             "overall": {"nominal": score, "perturbed": None, "all": score}}},
    }
    src = tmp_path / f"eval-{name}"
    src.mkdir()
    (src / "metrics.json").write_text(json.dumps(metrics))
    uri = str(tmp_path / f"eval-{name}-artifact")
    policy_uri = str(tmp_path / f"policy-{evaluated or name}-artifact")
    record = {"rft": {"uri": policy_uri, "content_sha256": content_hash(storage.read_manifest(policy_uri))}}
    storage.write_artifact(src, uri, kind="evaluation", config={"evaluated": record})
    return uri


def _policy(tmp_path, name, payload: bytes):
    src = tmp_path / f"policy-{name}"
    src.mkdir()
    (src / "model.safetensors").write_bytes(payload)
    (src / "config.json").write_text(json.dumps({"name": name}))
    uri = str(tmp_path / f"policy-{name}-artifact")
    storage.write_artifact(src, uri, kind="policy", config={})
    return uri


@pytest.fixture
def cfg():
    return load_config("params.yaml", profile="quick")


def test_champion_challenger_on_s3(cfg, s3_env, tmp_path):  # noqa: F811
    registry = f"s3://{s3_env.bucket}/registry-{tmp_path.name}"
    first = stages.promote(cfg, _policy(tmp_path, "a", b"A" * 100), _evaluation(tmp_path, "a", 0.60), registry=registry)
    assert first["promoted"] and first["reason"] == "no champion yet"
    champion = storage.read_json(f"{registry}/champion.json")
    path, _ = storage.read_artifact(champion["uri"], expected_kind="policy")
    assert (path / "model.safetensors").read_bytes() == b"A" * 100
    assert json.loads((path / "evaluation.json").read_text())["overall"]["all"] == 0.60

    worse = stages.promote(cfg, _policy(tmp_path, "b", b"B" * 100), _evaluation(tmp_path, "b", 0.55), registry=registry)
    assert not worse["promoted"] and "does not beat" in worse["reason"]
    assert storage.read_json(f"{registry}/champion.json")["version"] == first["version"]

    better = stages.promote(cfg, _policy(tmp_path, "c", b"C" * 100), _evaluation(tmp_path, "c", 0.70), registry=registry)
    assert better["promoted"]
    now = storage.read_json(f"{registry}/champion.json")
    assert now["version"] == better["version"] and now["previous"] == first["version"]
    path, _ = storage.read_artifact(now["uri"], expected_kind="policy")
    assert (path / "model.safetensors").read_bytes() == b"C" * 100
    decisions = [o.object_name for o in raw_client(s3_env.endpoint).list_objects(
        s3_env.bucket, prefix=f"registry-{tmp_path.name}/decisions/", recursive=True)]
    assert len(decisions) == 3


def test_not_comparable_evaluation_keeps_champion(cfg, tmp_path):
    registry = str(tmp_path / "registry")
    stages.promote(cfg, _policy(tmp_path, "a", b"A"), _evaluation(tmp_path, "a", 0.5), registry=registry)
    kept = stages.promote(cfg, _policy(tmp_path, "b", b"B"), _evaluation(tmp_path, "b", 0.9, episodes=5),
                          registry=registry)
    assert not kept["promoted"] and "not comparable" in kept["reason"]


def test_partial_candidate_never_becomes_champion(cfg, tmp_path):
    registry = str(tmp_path / "registry")
    first = stages.promote(cfg, _policy(tmp_path, "a", b"A"), _evaluation(tmp_path, "a", 0.5), registry=registry)
    # a candidate whose upload died: files present, no manifest
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"half")
    with pytest.raises(storage.ArtifactNotFoundError):
        stages.promote(cfg, str(partial), _evaluation(tmp_path, "p", 0.99, evaluated="a"), registry=registry)
    # a candidate whose file was corrupted after it was written
    good = _policy(tmp_path, "x", b"X" * 10)
    (tmp_path / "policy-x-artifact" / "model.safetensors").write_bytes(b"Y" * 10)
    with pytest.raises(storage.ArtifactIntegrityError):
        stages.promote(cfg, good, _evaluation(tmp_path, "x", 0.99), registry=registry)
    assert storage.read_json(f"{registry}/champion.json")["version"] == first["version"]


def _promote_when_released(cfg, candidate, evaluation, registry, barrier):
    barrier.wait()  # every process reads the registry at the same moment
    return stages.promote(cfg, candidate, evaluation, registry=registry)


def test_concurrent_promotions_into_a_local_registry_are_serialised(cfg, tmp_path):
    """Six processes promote at once: one finds no champion, every decision is recorded, the best one wins."""
    import multiprocessing as mp

    registry = str(tmp_path / "registry")
    scores = [0.50, 0.70, 0.60, 0.55, 0.65, 0.52]
    jobs = [(_policy(tmp_path, str(i), bytes([65 + i]) * 64), _evaluation(tmp_path, str(i), s))
            for i, s in enumerate(scores)]
    ctx = mp.get_context("fork")
    barrier = ctx.Manager().Barrier(len(jobs))
    with ctx.Pool(len(jobs)) as pool:
        decisions = pool.starmap(_promote_when_released, [(cfg, c, e, registry, barrier) for c, e in jobs])
    assert sum(d["reason"] == "no champion yet" for d in decisions) == 1, [d["reason"] for d in decisions]
    assert len(list((tmp_path / "registry" / "decisions").glob("*.json"))) == len(jobs)
    champion = json.loads((tmp_path / "registry" / "champion.json").read_text())
    assert champion["score"] == max(scores)
    for d in decisions:  # each promotion beat the champion it saw
        if d["promoted"] and d["champion"] is not None:
            assert d["candidate_score"] > d["champion"]["score"]


def test_promote_refuses_an_evaluation_of_another_policy(cfg, tmp_path):
    """`promote --policy X --evaluation E` where E evaluated Y: refused, nothing promoted."""
    from vla_rft.errors import CompatibilityError

    registry = str(tmp_path / "registry")
    _policy(tmp_path, "good", b"G" * 10)
    other = _policy(tmp_path, "other", b"O" * 10)
    evaluation = _evaluation(tmp_path, "good", 0.9)  # evaluated the 'good' policy
    with pytest.raises(CompatibilityError, match="not the candidate"):
        stages.promote(cfg, other, evaluation, registry=registry)
    assert storage.read_json(f"{registry}/champion.json") is None
    assert stages.promote(cfg, str(tmp_path / "policy-good-artifact"), evaluation, registry=registry)["promoted"]


def test_a_full_disk_is_one_named_line(cfg, tmp_path, capsys, monkeypatch):
    """ENOSPC (the kernel's /dev/full) while the CLI writes: one line naming the cause, exit 2."""
    from pathlib import Path

    from vla_rft import cli

    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    policy = _policy(tmp_path, "a", b"A")
    rc = cli.main(["promote", "--profile", "quick", "--policy", policy, "--evaluation", _evaluation(tmp_path, "a", 0.5),
                   "--registry", str(tmp_path / "registry"), "--summary-json", "/dev/full"])
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith(("INFO", "DEBUG"))]
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith("vla-rft promote: error (OSError): no space left on device"), err
