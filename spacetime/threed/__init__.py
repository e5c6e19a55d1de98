"""Text → 3D: a voxel field distilled from a diffusion model (DreamFusion, MVDream), then a mesh.

Modules, one job each: field (signed distance or density + albedo grid), render (volume rendering),
cameras (training views), sds (score distillation math), guidance (models as SDS guides),
regularisers, optimise (the loop), export (marching cubes, cleanup, .glb/.obj/.ply), atlas (UV
charts), texels (UV rasterisation), texture (baking the albedo into an image), rasterise
(mesh renders and turntables), metrics (against the world's primitives), pipeline (text_to_mesh).
This package module stays free of torch so that `python -m spacetime.mesh --help` is instant.
"""

# Sized for a prompt → mesh in under 3 minutes on one core of a 2-core CPU with the world models
# (300 four-view steps at 64x64: ~0.45 s each, then marching cubes and a turntable).
DEFAULT_STEPS = 300
# Refining the fast path's field needs fewer: with the world's small multi-view model the shape
# drifts as steps add up (mean IoU 0.96 fast; a torus 0.84 after 100 steps, 0.68 after 300:
# docs/mesh_quality.md).
REFINE_STEPS = 100
DEFAULT_TEXTURE_SIZE = 1024  # side of the texture the albedo is baked into, in texels

__all__ = ["DEFAULT_STEPS", "DEFAULT_TEXTURE_SIZE", "REFINE_STEPS", "text_to_mesh"]


def __getattr__(name: str):
    if name == "text_to_mesh":
        from spacetime.threed.pipeline import text_to_mesh

        return text_to_mesh
    raise AttributeError(f"module 'spacetime.threed' has no attribute {name!r}")
