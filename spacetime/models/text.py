"""Prompt → token embeddings with a CLIP text encoder (Radford et al. 2021), as SD uses it."""

from __future__ import annotations

import re

import torch
from torch import Tensor, nn

from spacetime.models.clip import CLIPTextModel

CLOSED_VOCABULARY_LIMIT = 1000  # word-level tokenizers of small models; CLIP's BPE has 49408


class TextEncoder(nn.Module):
    """CLIP tokenizer + text transformer: pad to the tokenizer's length (77), last hidden state."""

    def __init__(self, tokenizer, model: CLIPTextModel):
        super().__init__()
        self.tokenizer = tokenizer
        self.model = model

    @property
    def dim(self) -> int:
        return self.model.config.hidden_size

    @property
    def device(self) -> torch.device:
        return self.model.final_layer_norm.weight.device

    def vocabulary(self) -> list[str] | None:
        """The words of a closed, word-level vocabulary (small models), or None for open BPE ones."""
        vocab = self.tokenizer.get_vocab()
        if len(vocab) > CLOSED_VOCABULARY_LIMIT:
            return None
        # Single letters are the tokenizer's spelling fallback, not words (except "a").
        words = {t[: -len("</w>")] for t in vocab if t.endswith("</w>")}
        return sorted(w for w in words if len(w) > 1 or w == "a")

    def unknown_words(self, prompt: str) -> list[str]:
        """Words of `prompt` outside a closed vocabulary (always [] for open vocabularies)."""
        known = self.vocabulary()
        if known is None:
            return []
        return [w for w in re.findall(r"[a-z]+", prompt.lower()) if w not in known]

    def tokenize(self, prompts: list[str]) -> Tensor:
        """(b, n) token ids, padded/truncated to the tokenizer's model_max_length."""
        return self.tokenizer(prompts)

    def forward(self, prompts: list[str], clip_skip: int | None = None) -> Tensor:
        """(b, n, d) embeddings; clip_skip=k takes the hidden state k layers before the last,
        passed through the final layer norm (as diffusers and A1111 do)."""
        ids = self.tokenize(prompts).to(self.device)
        layers = self.model.config.num_hidden_layers
        if clip_skip and not 0 <= clip_skip < layers:
            raise ValueError(f"clip_skip must be in [0, {layers - 1}], got {clip_skip}")
        return self.model(ids, skip=clip_skip or 0)

    @torch.no_grad()
    def encode(self, prompts: list[str], clip_skip: int | None = None) -> Tensor:
        return self.forward(prompts, clip_skip)
