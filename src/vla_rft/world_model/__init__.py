"""The world model: an action-conditioned video predictor that serves as the learned simulator.

``WorldModel`` (modeling) predicts K frames from one context frame and K actions and chains chunks
with ``rollout``; ``ImaginedSimulator`` puts it behind the real simulator's batched interface;
``train_world_model`` (train) fits it to the offline dataset; ``evaluate_world_model`` (evaluate)
scores it on val chunks against copy-last-frame and shuffled-action baselines. Names load lazily,
so ``vla_rft.config`` can import the configuration without importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "WorldModelConfig": "vla_rft.world_model.configuration",
    "WorldModel": "vla_rft.world_model.modeling",
    "ImaginedSimulator": "vla_rft.world_model.modeling",
    "ImaginedObservation": "vla_rft.world_model.modeling",
    "ImaginedStep": "vla_rft.world_model.modeling",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'vla_rft.world_model' has no attribute {name!r}")
