"""The package's error classes: a leaf module that imports nothing of ours, so any module may raise them."""

from __future__ import annotations


class ConfigError(ValueError):
    """A value in params.yaml (or an override) is missing, unknown or of the wrong type."""


class CompatibilityError(ValueError):
    """Artifacts that must fit together do not (image size, chunk length, action dimension, tasks)."""


class StageError(RuntimeError):
    """A stage cannot do its work with these inputs in this environment (simulator, expert, disk)."""
