"""Scaled dot-product attention in one place: torch SDPA, xformers, or a sliced low-memory fallback.

Every attention layer in spacetime (spatial, cross, temporal, cross-view) calls `attention` here, so a
backend choice or a memory fix applies to all of them at once.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from spacetime.checks import ATTENTION_BACKENDS as BACKENDS  # torch-free, for --help

# Module-level choice rather than per-layer processors: one switch for the whole process, like a
# global `torch.backends` flag. `use_attention` scopes it.
_backend = "auto"
_slice_size = 1024
_xformers_available: bool | None = None


def set_attention_backend(name: str, slice_size: int | None = None) -> None:
    """Choose the attention kernel for every layer: auto | sdpa | xformers | sliced."""
    global _backend, _slice_size
    if name not in BACKENDS:
        raise ValueError(f"attention backend must be one of {', '.join(BACKENDS)}, got {name!r}")
    if name == "xformers" and not xformers_available():
        raise ValueError("attention backend 'xformers' needs `pip install spacetime[xformers]`")
    if slice_size is not None:
        if slice_size < 1:
            raise ValueError(f"slice_size must be >= 1, got {slice_size}")
        _slice_size = slice_size
    _backend = name


@contextlib.contextmanager
def use_attention(name: str, slice_size: int | None = None) -> Iterator[None]:
    """Scope an attention backend to a `with` block."""
    old = (_backend, _slice_size)
    set_attention_backend(name, slice_size)
    try:
        yield
    finally:
        set_attention_backend(*old)


def xformers_available() -> bool:
    global _xformers_available
    if _xformers_available is None:
        _xformers_available = importlib.util.find_spec("xformers") is not None
    return _xformers_available


def _sliced(q: Tensor, k: Tensor, v: Tensor, slice_size: int, mask: Tensor | None) -> Tensor:
    """Attention over query chunks: peak memory O(slice_size * n_k) instead of O(n_q * n_k)."""
    scale = 1.0 / math.sqrt(q.shape[-1])
    out = torch.empty_like(q)
    for start in range(0, q.shape[-2], slice_size):
        rows = slice(start, start + slice_size)
        scores = (q[..., rows, :] @ k.transpose(-1, -2)) * scale
        if mask is not None:
            scores = scores + mask[..., rows, :]
        out[..., rows, :] = torch.softmax(scores, dim=-1) @ v
    return out


def _xformers(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
    import xformers.ops  # optional extra; only reached on CUDA with xformers installed

    # xformers wants (b, n, nh, d) and an additive bias broadcast to (b, nh, n_q, n_k)
    bias = None if mask is None else mask.expand(q.shape[0], q.shape[1], -1, -1).contiguous()
    out = xformers.ops.memory_efficient_attention(
        *(rearrange(x, "b nh n d -> b n nh d").contiguous() for x in (q, k, v)), attn_bias=bias
    )
    return rearrange(out, "b n nh d -> b nh n d")


def dot_product_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
    """softmax(q kᵀ / √d + mask) v on (b, nh, n, d) tensors with the chosen backend
    (Vaswani et al. 2017); `mask` is additive, broadcastable to (b, nh, n_q, n_k)."""
    backend = _backend
    if backend == "auto":
        backend = "xformers" if q.is_cuda and xformers_available() else "sdpa"
    if backend == "xformers" and q.is_cuda:
        return _xformers(q, k, v, mask)
    if backend == "sliced":
        return _sliced(q, k, v, _slice_size, mask)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


class Attention(nn.Module):
    """Multi-head attention with diffusers' parameter names (to_q, to_k, to_v, to_out.0)."""

    def __init__(
        self,
        query_dim: int,
        heads: int,
        head_dim: int,
        context_dim: int | None = None,
        qkv_bias: bool = False,
    ):
        super().__init__()
        inner = heads * head_dim
        self.heads = heads
        self.to_q = nn.Linear(query_dim, inner, bias=qkv_bias)
        self.to_k = nn.Linear(context_dim or query_dim, inner, bias=qkv_bias)
        self.to_v = nn.Linear(context_dim or query_dim, inner, bias=qkv_bias)
        # to_out.1 is diffusers' dropout slot; keeping the ModuleList keeps the key `to_out.0`.
        self.to_out = nn.ModuleList([nn.Linear(inner, query_dim), nn.Dropout(0.0)])

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        # x (b, n, c); context (b, m, c_ctx) or None for self-attention
        context = x if context is None else context
        q, k, v = (
            rearrange(proj(src), "b n (nh d) -> b nh n d", nh=self.heads)
            for proj, src in ((self.to_q, x), (self.to_k, context), (self.to_v, context))
        )
        out = rearrange(dot_product_attention(q, k, v), "b nh n d -> b n (nh d)")
        return self.to_out[0](out)
