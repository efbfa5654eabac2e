"""Every bad input to a stage command ends in one named error line and exit code 2, before any work.

Each row calls ``vla_rft.cli.main`` in this process and checks: exit code 2, exactly one line on
stderr of the form ``vla-rft <command>: error (<Class>): ...`` naming the key or file, no
traceback, and nothing written at ``--out``. Bad inputs are refused before any training or
simulation, so each row takes well under a second.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from vla_rft import cli, storage

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    """Small real artifacts: a policy-kind, an evaluation-kind and a dataset-kind artifact, a user dir."""
    root = tmp_path_factory.mktemp("bad-inputs")
    for kind in ("policy", "evaluation", "dataset", "world_model"):
        src = root / f"src-{kind}"
        src.mkdir()
        (src / "metrics.json").write_text(json.dumps({"policies": {}}))
        storage.write_artifact(src, str(root / kind), kind=kind, config={})
    (root / "user").mkdir()
    (root / "user" / "notes.txt").write_text("mine")
    (root / "a-file").write_text("x")
    (root / "bad.yaml").write_text("common: {seed: [1,\n")
    (root / "list.yaml").write_text("- 1\n- 2\n")
    (root / "badprofile.yaml").write_text("common: {}\nprofiles: {quick: 3}\n")
    (root / "badsection.yaml").write_text("common: 5\n")
    trunc = root / "trunc-src"
    trunc.mkdir()
    (trunc / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{\"a\":")
    (trunc / "config.json").write_text(json.dumps({"model_type": "vla_rft_policy"}))
    storage.write_artifact(trunc, str(root / "truncated-policy"), kind="policy", config={})
    return root


def _rows(r: Path):
    out = str(r / "out")
    ds, pol, ev, wm = (str(r / k) for k in ("dataset", "policy", "evaluation", "world_model"))
    p = ["prepare-data", "--profile", "quick", "--out", out]
    w = ["train-world-model", "--profile", "quick", "--dataset", ds, "--out", out]
    b = ["pretrain-policy", "--profile", "quick", "--dataset", ds, "--out", out]
    f = ["rft", "--profile", "quick", "--dataset", ds, "--world-model", wm, "--policy", pol, "--out", out]
    e = ["evaluate", "--profile", "quick", "--out", out]
    pr = ["promote", "--profile", "quick", "--registry", str(r / "registry")]
    s = lambda x: ["--set", x]  # noqa: E731
    return [
        # configuration text
        ("yaml-in-set", [*p, *s("sim.tasks=[push, reach")], "ConfigError", "sim.tasks=[push, reach"),
        ("params-yaml-syntax", [*p, "--params", str(r / "bad.yaml")], "ConfigError", "bad.yaml"),
        ("params-not-mapping", [*p, "--params", str(r / "list.yaml")], "ConfigError", "mapping"),
        ("profile-not-mapping", [*p, "--params", str(r / "badprofile.yaml")], "ConfigError", "profiles.quick"),
        ("section-not-mapping", [*p, "--params", str(r / "badsection.yaml")], "ConfigError", "common"),
        ("params-missing", [*p, "--params", str(r / "nope.yaml")], "ConfigError", "nope.yaml"),
        ("unknown-profile", ["prepare-data", "--profile", "huge", "--out", out], "ConfigError", "huge"),
        ("unknown-key", [*p, *s("sim.image_sizee=64")], "ConfigError", "sim.image_sizee"),
        ("unknown-section", [*p, *s("simm.image_size=64")], "ConfigError", "simm"),
        ("override-no-equals", [*p, "--set", "sim.image_size"], "ConfigError", "sim.image_size"),
        ("yaml11-exponent", [*b, *s("policy.lr=1e-3")], "ConfigError", "1.0e-3"),
        ("wrong-type", [*p, *s("sim.image_size=big")], "ConfigError", "sim.image_size"),
        ("unknown-task", [*p, *s("sim.tasks=[push, fly]")], "ConfigError", "fly"),
        # numbers
        ("nan-float", [*f, *s("rft.bc_coef=.nan")], "ConfigError", "rft.bc_coef"),
        ("inf-float", [*p, *s("prepare_data.action_noise=.inf")], "ConfigError", "prepare_data.action_noise"),
        ("num-threads-zero", [*b, *s("common.num_threads=0")], "ConfigError", "common.num_threads"),
        ("seed-out-of-range", [*b, *s("common.seed=-1")], "ConfigError", "common.seed"),
        ("seed-too-big", [*b, *s("common.seed=99999999999")], "ConfigError", "common.seed"),
        ("float-for-int", [*p, *s("sim.image_size=64.0")], "ConfigError", "sim.image_size"),
        # environment and files
        ("mujoco-gl", [*p], "StageError", "MUJOCO_GL"),
        ("truncated-safetensors", [*e, "--policy", f"base={r / 'truncated-policy'}"], "ValueError",
         "model.safetensors is not a readable safetensors"),
        ("dataset-missing", [*b[:4], str(r / "nothing"), *b[5:]], "ArtifactNotFoundError", "nothing"),
        ("dataset-wrong-kind", [*b[:4], pol, *b[5:]], "ArtifactKindError", "dataset"),
        # output locations that cannot work, refused before the work
        ("out-is-file", [*p[:-1], str(r / "a-file")], "ArtifactDestinationError", "a-file"),
        ("out-is-user-dir", [*b[:-1], str(r / "user"), "--overwrite"], "ArtifactDestinationError", "user"),
        ("out-exists", [*w[:-1], wm], "ArtifactExistsError", "world_model"),
        ("out-parent-is-file", [*p[:-1], str(r / "a-file" / "x")], "ArtifactDestinationError", "a-file"),
        ("out-bad-scheme", [*p[:-1], "ftp://host/x"], "ValueError", "ftp://host/x"),
        ("out-bad-bucket", [*p[:-1], "s3://B_/x"], "ValueError", "B_"),
        ("summary-is-dir", [*p, "--summary-json", str(r)], "ConfigError", "--summary-json"),
        ("checkpoint-dir-is-file", [*b, "--checkpoint-dir", str(r / "a-file")], "ConfigError", "a-file"),
        # evaluate
        ("policy-path-name", [*e, "--policy", f"../../x={pol}"], "ConfigError", "../../x"),
        ("policy-no-uri", [*e, "--policy", "base"], "ConfigError", "NAME=URI"),
        ("policy-twice", [*e, "--policy", f"a={pol}", "--policy", f"a={pol}"], "ConfigError", "'a'"),
        ("policy-expert", [*e, "--policy", f"expert={pol}"], "ConfigError", "expert"),
        ("eval-world-model-missing", [*e, "--policy", f"a={pol}", "--world-model", str(r / "nowm")],
         "ArtifactNotFoundError", "nowm"),
        # promote
        ("promote-no-record", [*pr, "--policy", pol, "--evaluation", ev], "CompatibilityError", "rft"),
        ("promote-eval-missing", [*pr, "--policy", pol, "--evaluation", str(r / "noeval")],
         "ArtifactNotFoundError", "noeval"),
        ("promote-bad-metric", [*pr, "--policy", pol, "--evaluation", ev, *s("promote.metric=best")],
         "ConfigError", "promote.metric"),
    ]


ROWS = _rows(Path("/ROOT"))


@pytest.mark.parametrize("index", range(len(ROWS)), ids=[row[0] for row in ROWS])
def test_bad_input_is_one_named_error_line_before_any_work(index, fake, capsys, monkeypatch):
    name, argv, error_class, names = _rows(fake)[index]
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("MUJOCO_GL", "nonsense" if name == "mujoco-gl" else "osmesa")
    rc = cli.main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if not line.startswith(("INFO ", "DEBUG ", "WARNING "))]
    assert rc == 2, err
    assert len(lines) == 1, err
    command = argv[0]
    match = re.fullmatch(rf"vla-rft {re.escape(command)}: error \((\w+)\): (.+)", lines[0])
    assert match, lines[0]
    if error_class:
        assert match[1] == error_class, lines[0]
    assert "unexpected" not in lines[0], lines[0]
    assert names in match[2], lines[0]
    assert "Traceback" not in err
    assert not (fake / "out").exists(), "a refused command wrote its output"
    assert (fake / "user" / "notes.txt").read_text() == "mine"


def test_an_expert_that_never_succeeds_is_a_named_error(tmp_path, capsys, monkeypatch):
    """One episode of one step: the expert cannot succeed; the error names the setting to change."""
    monkeypatch.chdir(ROOT)
    rc = cli.main(["prepare-data", "--profile", "quick", "--out", str(tmp_path / "ds"), "--set", "sim.tasks=[push]",
                   "--set", "prepare_data.episodes_per_task=1", "--set", "sim.max_episode_steps=1",
                   "--set", "sim.num_workers=0"])
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith(("INFO", "DEBUG"))]
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith("vla-rft prepare-data: error (StageError): the scripted expert succeeded in none"), err
    assert "sim.max_episode_steps=1" in err[0] and not (tmp_path / "ds").exists()
