"""CLIP's text transformer (Radford et al. 2021) with transformers' parameter and config names.

Written here rather than imported because `transformers.models.clip` costs ~2.3 s of import on a
2-core CPU, a quarter of a whole text-to-image run. Checkpoints stay transformers': the same
config.json and state-dict keys load into either implementation, and parity tests hold them equal.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from spacetime.models.attention import dot_product_attention

ACTIVATIONS = {
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),  # OpenAI CLIP's approximation
    "gelu": F.gelu,
}


@dataclass(frozen=True)
class CLIPTextConfig:
    """The fields of transformers' CLIPTextConfig that change the computation."""

    vocab_size: int = 49408
    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    max_position_embeddings: int = 77
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    bos_token_id: int = 49406
    eos_token_id: int = 49407
    pad_token_id: int = 1

    def __post_init__(self):
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(
                f"hidden_act must be one of {', '.join(ACTIVATIONS)}, got {self.hidden_act!r}"
            )
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} does not split into {self.num_attention_heads} heads"
            )

    @classmethod
    def from_dict(cls, cfg: dict) -> CLIPTextConfig:
        """From a transformers config.json; keys that do not change inference are ignored."""
        own = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in cfg.items() if k in own and v is not None})

    def to_dict(self) -> dict:
        """A config.json that transformers' CLIPTextModel.from_pretrained reads."""
        return {
            "architectures": ["CLIPTextModel"],
            "model_type": "clip_text_model",
            **dataclasses.asdict(self),
            "attention_dropout": 0.0,
            "dropout": 0.0,
            "projection_dim": self.hidden_size,
        }


class CLIPAttention(nn.Module):
    """Causal multi-head self-attention (q_proj/k_proj/v_proj/out_proj, all with bias)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (
            nn.Linear(dim, dim) for _ in range(4)
        )

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        q, k, v = (
            rearrange(proj(x), "b n (nh d) -> b nh n d", nh=self.heads)
            for proj in (self.q_proj, self.k_proj, self.v_proj)
        )
        out = dot_product_attention(q, k, v, mask)
        return self.out_proj(rearrange(out, "b nh n d -> b n (nh d)"))


class CLIPMLP(nn.Module):
    def __init__(self, dim: int, inner: int, act: str):
        super().__init__()
        self.act = ACTIVATIONS[act]
        self.fc1 = nn.Linear(dim, inner)
        self.fc2 = nn.Linear(inner, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class CLIPEncoderLayer(nn.Module):
    """Pre-norm transformer layer."""

    def __init__(self, cfg: CLIPTextConfig):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.self_attn = CLIPAttention(cfg.hidden_size, cfg.num_attention_heads)
        self.layer_norm2 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.mlp = CLIPMLP(cfg.hidden_size, cfg.intermediate_size, cfg.hidden_act)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        x = x + self.self_attn(self.layer_norm1(x), mask)
        return x + self.mlp(self.layer_norm2(x))


class CLIPEmbeddings(nn.Module):
    def __init__(self, cfg: CLIPTextConfig):
        super().__init__()
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.position_embedding = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)

    def forward(self, ids: Tensor) -> Tensor:
        positions = torch.arange(ids.shape[1], device=ids.device)
        return self.token_embedding(ids) + self.position_embedding(positions)


class CLIPEncoder(nn.Module):
    def __init__(self, cfg: CLIPTextConfig):
        super().__init__()
        self.layers = nn.ModuleList(CLIPEncoderLayer(cfg) for _ in range(cfg.num_hidden_layers))


class CLIPTextModel(nn.Module):
    """Token ids (b, n) → hidden states (b, n, d), causal, as CLIP's text tower."""

    def __init__(self, cfg: CLIPTextConfig):
        super().__init__()
        self.config = cfg
        self.embeddings = CLIPEmbeddings(cfg)
        self.encoder = CLIPEncoder(cfg)
        self.final_layer_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self._init_weights()

    def _init_weights(self) -> None:
        """CLIP's initialisation scale for training from scratch (embeddings N(0, 0.02))."""
        for m in self.modules():
            if isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, std=0.02)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, ids: Tensor, skip: int = 0) -> Tensor:
        """Last hidden state after the final norm; skip=k stops k layers early (clip-skip)."""
        n = ids.shape[1]
        mask = torch.full((n, n), float("-inf"), device=ids.device).triu(1)
        x = self.embeddings(ids)
        mask = mask.to(x.dtype)
        for layer in self.encoder.layers[: len(self.encoder.layers) - skip]:
            x = layer(x, mask)
        return self.final_layer_norm(x)
