"""Images and manifests: hadolint and kubernetes-validate pass, and the security rules hold."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DOCKERFILES = [ROOT / "images" / "Dockerfile", ROOT / "images" / "Dockerfile.cuda"]


def _tool(name: str) -> str:
    path = BIN / name
    return str(path) if path.exists() else (shutil.which(name) or name)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_passes(dockerfile):
    result = subprocess.run([_tool("hadolint"), str(dockerfile)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_really_lints(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install -y curl\n")
    result = subprocess.run([_tool("hadolint"), str(bad)], capture_output=True, text=True)
    assert result.returncode != 0 and "DL3007" in result.stdout


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_images_run_as_non_root_with_rendering_set(dockerfile):
    text = dockerfile.read_text()
    users = [line.split()[1] for line in text.splitlines() if line.startswith("USER ")]
    assert users and not users[-1].startswith(("root", "0")), "the last USER must be non-root"
    assert "MUJOCO_GL=osmesa" in text
    assert "torch==2.13.0" in text


def _manifest_files():
    kustomization = yaml.safe_load((ROOT / "manifests" / "kustomization.yaml").read_text())
    return [ROOT / "manifests" / r for r in kustomization["resources"]] + [ROOT / "manifests" / "secret-template.yaml"]


def test_kubernetes_validate_strict():
    files = [str(f) for f in _manifest_files()]
    result = subprocess.run([_tool("kubernetes-validate"), "-k", "1.30.0", "--strict", *files],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("passed") >= 10


def _docs():
    for path in _manifest_files():
        yield from (d for d in yaml.safe_load_all(path.read_text()) if d)


def _pod_specs():
    for doc in _docs():
        if doc["kind"] in ("Deployment", "Job"):
            yield doc["metadata"]["name"], doc["spec"]["template"]["spec"]


def test_every_container_is_restricted_and_bounded():
    specs = list(_pod_specs())
    assert len(specs) >= 2
    for name, spec in specs:
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"], name
            assert sc["readOnlyRootFilesystem"] is True, name
            assert {"cpu", "memory"} <= set(c["resources"]["requests"]) and {"cpu", "memory"} <= set(c["resources"]["limits"]), name


def test_manifests_hold_no_real_secret():
    for doc in _docs():
        if doc["kind"] == "Secret":
            values = list((doc.get("stringData") or {}).values()) + list((doc.get("data") or {}).values())
            assert values and all(v.startswith("REPLACE_WITH_") for v in values)
        for c in (doc.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])):
            for env in c.get("env", []):
                if any(k in env["name"].upper() for k in ("KEY", "PASSWORD", "SECRET", "USER")):
                    assert "valueFrom" in env and "value" not in env, env["name"]
