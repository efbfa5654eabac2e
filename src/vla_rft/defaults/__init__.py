"""The defaults shipped with the package: a copy of the repo's ``params.yaml`` (a test keeps them equal).

Installed from a wheel and run outside the repo, the CLI has no ``params.yaml`` in the working
directory; it then uses this copy (and says so), and ``vla-rft params > params.yaml`` writes it
out to start from. Imports nothing of ours.
"""

from __future__ import annotations

from pathlib import Path

#: the packaged params.yaml
PARAMS_PATH = Path(__file__).with_name("params.yaml")
#: the file looked for in the working directory when no ``--params`` is given
LOCAL_PARAMS = "params.yaml"


def params_path(requested: str | Path | None = None) -> Path:
    """The params file to read: ``requested`` as given, else ./params.yaml, else the packaged defaults."""
    if requested is not None:
        return Path(requested)
    if Path(LOCAL_PARAMS).exists():
        return Path(LOCAL_PARAMS)
    return PARAMS_PATH


def uses_packaged_defaults(requested: str | Path | None = None) -> bool:
    """True when :func:`params_path` falls back to the package's copy."""
    return params_path(requested) == PARAMS_PATH
