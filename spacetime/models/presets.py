"""Model sizes as plain Python: the embedded world models and the tiny ones tests train."""

from __future__ import annotations

from spacetime.models.inflate import MVDream
from spacetime.models.unet import UNetConfig
from spacetime.models.vae import VAEConfig

# f = 8 and 4 latent channels, like SD, so the world VAE is a drop-in for SD's.
WORLD_VAE = VAEConfig(
    block_out_channels=(16, 32, 64, 64),
    layers_per_block=1,
    norm_num_groups=8,
    scaling_factor=1.0,  # replaced by 1/std of the trained latents at export (as SD chose 0.18215)
    sample_size=64,
)
WORLD_UNET = UNetConfig(
    block_out_channels=(64, 128),
    attention=(True, True),
    heads=(4, 4),
    layers_per_block=2,
    cross_attention_dim=64,
    use_linear_projection=True,
    norm_num_groups=16,
    sample_size=8,
)
# The world multi-view model (MVDream) on top of WORLD_UNET: narrow cross-view attention (2 heads of
# 8, ~0.1 M parameters over its 11 spatial attentions) and a 64-wide camera MLP keep the shipped
# fp16 folder under 15 MB; a set of 4 views of one solid needs little cross-view bandwidth.
WORLD_MULTIVIEW = MVDream(heads=2, head_dim=8, camera_hidden=64)
# transformers CLIPTextConfig fields; vocab and special-token ids come from the tokenizer.
WORLD_TEXT = dict(
    hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
    max_position_embeddings=16,
)  # fmt: skip

TINY_VAE = VAEConfig(
    block_out_channels=(8, 8, 16, 16), layers_per_block=1, norm_num_groups=4,
    scaling_factor=1.0, sample_size=64,
)  # fmt: skip
TINY_UNET = UNetConfig(
    block_out_channels=(16, 32), attention=(False, True), heads=(2, 2), layers_per_block=1,
    cross_attention_dim=16, use_linear_projection=True, norm_num_groups=8, sample_size=8,
)  # fmt: skip
TINY_TEXT = dict(
    hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
    max_position_embeddings=16,
)  # fmt: skip

PRESETS = {
    "world": (WORLD_VAE, WORLD_UNET, WORLD_TEXT),
    "tiny": (TINY_VAE, TINY_UNET, TINY_TEXT),
}
