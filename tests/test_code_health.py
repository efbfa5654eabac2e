"""The package's structure: every module imports on its own, imports flow one way, every setting is read."""

from __future__ import annotations

import ast
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "vla_rft"


def _modules() -> list[str]:
    names = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names.append(".".join(parts))
    return names


def test_every_module_imports_on_its_own_in_a_fresh_interpreter():
    """One subprocess imports each module in a fresh interpreter state (no import order can hide a cycle)."""
    script = (
        "import importlib, json, sys, traceback\n"
        "failed = {}\n"
        "for name in json.loads(sys.argv[1]):\n"
        "    for key in [k for k in sys.modules if k == 'vla_rft' or k.startswith('vla_rft.')]:\n"
        "        del sys.modules[key]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception:\n"
        "        failed[name] = traceback.format_exc().splitlines()[-1]\n"
        "print(json.dumps(failed))\n"
    )
    out = subprocess.run([sys.executable, "-c", script, json.dumps(_modules())], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    failed = json.loads(out.stdout.strip().splitlines()[-1])
    assert not failed, failed


def _package_imports(path: Path) -> set[str]:
    """Modules of ours that ``path`` imports at module level or inside functions."""
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("vla_rft"):
            found.add(node.module)
            for alias in node.names:
                found.add(f"{node.module}.{alias.name}")
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("vla_rft"))
    return found


def test_no_module_imports_one_that_imports_it_back():
    modules = set(_modules())
    graph = {}
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC.parent).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.parts[-1] == "__init__" else rel.parts)
        graph[name] = {m for m in _package_imports(path) if m in modules and m != name}
    cycles = sorted(f"{a} <-> {b}" for a, deps in graph.items() for b in deps if a in graph.get(b, ()) and a < b)
    assert not cycles, cycles


def test_errors_module_is_a_leaf():
    assert _package_imports(SRC / "errors.py") == set()


def _config_classes():
    from vla_rft.config import Config

    for f in dataclasses.fields(Config):
        if dataclasses.is_dataclass(f.type) or f.name != "profile":
            cls = type(getattr(Config(), f.name))
            if dataclasses.is_dataclass(cls):
                yield f.name, cls


def _reads(path: Path, config_class: str | None) -> set[str]:
    """Attribute names read in ``path``: ``x.name`` for any ``x`` but ``self`` (a model's own attributes
    share names with settings), plus ``self.name`` inside ``config_class``'s methods other than
    ``__post_init__`` (validation is not use)."""
    tree = ast.parse(path.read_text())
    names = set()

    def visit(node, in_config_method):
        if isinstance(node, ast.Attribute):
            is_self = isinstance(node.value, ast.Name) and node.value.id == "self"
            if not is_self or in_config_method:
                names.add(node.attr)
        for child in ast.iter_child_nodes(node):
            if isinstance(node, ast.ClassDef) and node.name == config_class and isinstance(child, ast.FunctionDef):
                visit(child, child.name != "__post_init__")
            else:
                visit(child, in_config_method)

    visit(tree, False)
    return names


def test_every_setting_is_read_by_the_code():
    """A field that is validated and then never read is a setting that silently does nothing."""
    paths = list(SRC.rglob("*.py"))
    unread = []
    for section, cls in _config_classes():
        defined_in = Path(sys.modules[cls.__module__].__file__).resolve()
        read = set().union(*(_reads(p, cls.__name__ if p.resolve() == defined_in else None) for p in paths))
        unread += [f"{section}.{f.name}" for f in dataclasses.fields(cls) if f.name not in read]
    assert not unread, f"settings never read outside their validation: {unread}"


def _module_file(name: str) -> Path | None:
    path = SRC.joinpath(*name.split(".")[1:])
    for candidate in (path / "__init__.py", path.with_suffix(".py")):
        if candidate.exists():
            return candidate
    return None


def _imports_in(node: ast.AST) -> set[str]:
    found = set()
    for n in ast.walk(node):
        if isinstance(n, ast.ImportFrom) and n.module and n.module.startswith("vla_rft"):
            found.add(n.module)
            found.update(f"{n.module}.{a.name}" for a in n.names if _module_file(f"{n.module}.{a.name}"))
        elif isinstance(n, ast.Import):
            found.update(a.name for a in n.names if a.name.startswith("vla_rft"))
    return found


def _closure(start: set[str]) -> set[Path]:
    """Files of every module reachable from ``start`` (module-level and function-level imports, parents too)."""
    seen: set[str] = set()
    todo = list(start)
    while todo:
        name = todo.pop()
        if name in seen or _module_file(name) is None:
            continue
        seen.add(name)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(2, len(parts))]
        todo += _imports_in(ast.parse(_module_file(name).read_text()))
    return {_module_file(n).resolve() for n in seen}


def test_dvc_stages_list_every_module_their_command_runs():
    """`dvc repro` re-runs a stage when code it runs changes only if dvc.yaml lists that code."""
    import yaml

    stages_tree = ast.parse((SRC / "stages.py").read_text())
    cli_tree = ast.parse((SRC / "cli.py").read_text())
    top = {m for tree in (stages_tree, cli_tree) for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))
           for m in _imports_in(n)}
    functions = {n.name: n for n in stages_tree.body if isinstance(n, ast.FunctionDef)}

    def reached(name: str) -> set[str]:
        """The stage function and every stages.py function it calls, directly or through others."""
        seen, todo = set(), [name]
        while todo:
            fn = todo.pop()
            if fn not in seen:
                seen.add(fn)
                todo += [n.id for n in ast.walk(functions[fn]) if isinstance(n, ast.Name) and n.id in functions]
        return seen

    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    missing = {}
    for stage, spec in dvc.items():
        imported = {m for fn in reached(stage) for m in _imports_in(functions[fn])}
        needed = _closure(top | imported) | {(SRC / "stages.py").resolve(),
                                                                   (SRC / "cli.py").resolve()}
        deps = [(ROOT / d).resolve() for d in spec["deps"]]
        uncovered = sorted(str(p.relative_to(ROOT)) for p in needed
                           if not any(p == d or d in p.parents for d in deps))
        if uncovered:
            missing[stage] = uncovered
    assert not missing, f"dvc.yaml deps miss code the stage runs: {missing}"


def test_no_repo_root_directory_shadows_a_module_kfp_imports():
    """`python -m vla_rft.cli` from the repo root puts the root on sys.path, where a directory without
    __init__.py imports as a namespace package. kfp.local guards `import docker` with `except ImportError`
    only; a root `docker/` folder made that import succeed as an empty package, and `pipeline run --local`
    died with "module 'docker' has no attribute 'DockerClient'" wherever the docker SDK is not installed."""
    import kfp

    kfp_imports = set()
    for path in Path(kfp.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(errors="replace"))):
            if isinstance(node, ast.Import):
                kfp_imports |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                kfp_imports.add(node.module.split(".")[0])
    root_dirs = {p.name for p in ROOT.iterdir() if p.is_dir() and not p.name.startswith(".")}
    shadowing = sorted(root_dirs & kfp_imports)
    assert not shadowing, f"repo-root directories named like modules kfp imports: {shadowing}"
    # and the module that failed imports from the repo root, in a fresh interpreter
    result = subprocess.run([sys.executable, "-c", "import kfp.local.task_dispatcher"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
