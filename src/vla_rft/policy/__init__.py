"""The VLA policy: model, frozen instruction encoder, behaviour-cloning pretraining.

Attributes load lazily, so ``vla_rft.policy.configuration`` (and ``vla_rft.config``, which may
import it) stays free of torch and transformers.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "PolicyConfig": "vla_rft.policy.configuration",
    "VLAPolicy": "vla_rft.policy.modeling",
    "ChunkGaussian": "vla_rft.policy.modeling",
    "SentenceEncoder": "vla_rft.policy.text",
    "get_sentence_encoder": "vla_rft.policy.text",
    "embed_instructions": "vla_rft.policy.text",
    "train_policy_bc": "vla_rft.policy.train",
    "behaviour_cloning_loss": "vla_rft.policy.train",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'vla_rft.policy' has no attribute {name!r}")
