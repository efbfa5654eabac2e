"""Dataset versions in DVC: a dataset read at a git revision of a DVC repository, and episodes
appended as a new version (``dvc add``, git commit + tag, ``dvc push``, ``git push``).

The repository (``data.dvc_repo``: a path or URL) is cloned for every read and write, so a pod
without a checkout works the same as a laptop, and a version is exactly a git commit: its
``.dvc`` file (or ``dvc.lock``) names the directory's DVC hash, the remote in its ``.dvc/config``
holds the bytes. Credentials for the remote come from the environment (``AWS_ACCESS_KEY_ID`` ...),
as for every other S3 access; none is written anywhere.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from vla_rft.errors import StageError


class VersionError(StageError):
    """A dataset version could not be read or written (unknown revision, DVC or git failure)."""


def _tool(name: str) -> str:
    beside = Path(sys.executable).with_name(name)
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        raise VersionError(f"`{name}` is not installed; dataset versions need git and dvc[s3]")
    return found


def _run(args: list[str], cwd: str | Path | None, what: str) -> str:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "DVC_NO_ANALYTICS": "1"}
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        lines = [ln.strip() for ln in (result.stderr + "\n" + result.stdout).splitlines() if ln.strip()]
        why = next((ln for ln in reversed(lines) if ln.startswith(("ERROR", "fatal", "error"))), lines[-1] if lines else
                   f"exit code {result.returncode}")
        raise VersionError(f"{what} failed: {why}")
    return result.stdout.strip()


def _git(*args: str, cwd: str | Path | None = None, what: str = "git") -> str:
    return _run([_tool("git"), "-c", "user.name=vla-rft", "-c", "user.email=vla-rft@localhost", *args], cwd, what)


def _dvc(*args: str, cwd: str | Path, what: str) -> str:
    return _run([_tool("dvc"), *args], cwd, what)


def repo_location(repo: str) -> str:
    """``data.dvc_repo`` as a clonable location: ``.`` is the working directory's git repository."""
    if repo != ".":
        return str(Path(repo).resolve()) if Path(repo).exists() else repo
    try:
        return _git("rev-parse", "--show-toplevel", what="git rev-parse")
    except VersionError:
        raise VersionError(f"data.dvc_repo is '.' but {Path.cwd()} is not inside a git repository; set "
                           "data.dvc_repo to the dataset repository's git URL or path") from None


def _clone(repo: str, dest: Path, rev: str | None = None) -> str:
    """Clone ``repo`` into ``dest`` (at ``rev`` if given); returns the commit checked out."""
    where = repo_location(repo)
    _git("clone", "--quiet", where, str(dest), what=f"git clone {where}")
    if rev:
        try:
            _git("checkout", "--quiet", rev, cwd=dest, what="git checkout")
        except VersionError:
            raise VersionError(f"revision {rev!r} does not exist in {where} (data.source dvc:{rev})") from None
    return _git("rev-parse", "HEAD", cwd=dest)


def _dvc_hash(clone: Path, path: str) -> str | None:
    """The DVC hash of output ``path`` as the checked-out commit records it (its .dvc file or dvc.lock)."""
    dvc_file = clone / f"{path}.dvc"
    if dvc_file.exists():
        outs = (yaml.safe_load(dvc_file.read_text()) or {}).get("outs") or []
        return next((o.get("md5") for o in outs if o.get("path") == Path(path).name), None)
    lock = clone / "dvc.lock"
    if lock.exists():
        for stage in ((yaml.safe_load(lock.read_text()) or {}).get("stages") or {}).values():
            for out in stage.get("outs") or []:
                if out.get("path") == path:
                    return out.get("md5")
    return None


@contextlib.contextmanager
def checkout(repo: str, path: str, rev: str | None = None) -> Iterator[tuple[Path, Path | None, dict[str, Any]]]:
    """A clone of ``repo`` at ``rev`` with ``path`` pulled from the DVC remote: yields (clone, directory or None,
    version).

    ``version``: ``repo``, ``rev`` (as asked), ``commit`` (resolved), ``path``, ``dvc_md5``. The
    directory is None when that commit tracks nothing at ``path`` (a first version is yet to come).
    """
    with tempfile.TemporaryDirectory(prefix="vla-rft-dvc-") as tmp:
        clone = Path(tmp) / "repo"
        commit = _clone(repo, clone, rev)
        md5 = _dvc_hash(clone, path)
        version = {"repo": repo_location(repo), "rev": rev, "commit": commit, "path": path, "dvc_md5": md5}
        if md5 is None:
            yield clone, None, version
            return
        _dvc("pull", "--quiet", path, cwd=clone, what=f"dvc pull {path} at {commit[:12]} from its remote")
        yield clone, clone / path, version


def fetch(repo: str, rev: str, path: str) -> contextlib.AbstractContextManager:
    """``path`` at git revision ``rev`` of ``repo``, pulled from its DVC remote (see :func:`checkout`); refused
    when that revision tracks nothing there."""

    @contextlib.contextmanager
    def _fetch():
        with checkout(repo, path, rev) as (_, directory, version):
            if directory is None:
                raise VersionError(f"{version['repo']} at {rev!r} ({version['commit'][:12]}) tracks no DVC output "
                                   f"{path!r} (data.dvc_path)")
            yield directory, version

    return _fetch()


@dataclass
class Appendable:
    """A clone of the dataset repository on its default branch, ready to commit one new version of ``path``."""

    clone: Path
    path: str
    previous: Path | None  #: the current version's directory (pulled), None before the first version
    version: dict[str, Any]  #: the current version (see :func:`checkout`)
    tag_prefix: str

    def versions(self) -> list[str]:
        """Tags of the earlier versions, oldest first."""
        tags = _git("tag", "--list", f"{self.tag_prefix}-v*", cwd=self.clone).split()
        return sorted(tags, key=lambda t: int(t.rsplit("-v", 1)[1]) if t.rsplit("-v", 1)[1].isdigit() else -1)

    def commit(self, directory: Path, message: str) -> dict[str, Any]:
        """Make ``directory`` the new version: dvc add, git commit + tag, dvc push, git push. Returns it."""
        target = self.clone / self.path
        if target.exists():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(directory, target)
        _dvc("add", "--quiet", self.path, cwd=self.clone, what=f"dvc add {self.path}")
        ignore = Path(self.path).parent / ".gitignore"
        _git("add", f"{self.path}.dvc", *([str(ignore)] if (self.clone / ignore).exists() else []), cwd=self.clone)
        _git("commit", "--quiet", "-m", message, cwd=self.clone, what="git commit")
        tag = f"{self.tag_prefix}-v{len(self.versions()) + 1}"
        _git("tag", tag, cwd=self.clone)
        _dvc("push", "--quiet", self.path, cwd=self.clone, what=f"dvc push {self.path} to the DVC remote")
        branch = _git("rev-parse", "--abbrev-ref", "HEAD", cwd=self.clone)
        _git("push", "--quiet", "origin", f"HEAD:refs/heads/{branch}", f"refs/tags/{tag}", cwd=self.clone,
             what=f"git push of {tag} to {self.version['repo']} (another run may have pushed first: run cycles "
                  "one at a time, --max-concurrency 1)")
        return {"repo": self.version["repo"], "rev": tag, "commit": _git("rev-parse", "HEAD", cwd=self.clone),
                "path": self.path, "dvc_md5": _dvc_hash(self.clone, self.path), "tag": tag}


@contextlib.contextmanager
def appendable(repo: str, path: str, tag_prefix: str) -> Iterator[Appendable]:
    """Clone ``repo`` on its default branch with the current version of ``path`` pulled (if any)."""
    with checkout(repo, path) as (clone, directory, version):
        yield Appendable(clone, path, directory, version, tag_prefix)
