"""spacetime: extend a text-to-image latent diffusion model to video and 3D.

from spacetime import load_pipeline
pipe = load_pipeline()      # the shipped model; or a diffusers folder, single file, hub id
images = pipe("a red circle", seed=0, steps=20)        # uint8 array (n, h, w, 3)
"""

__version__ = "0.1.0"
ERRORS = ("SpacetimeError", "CheckpointError", "ArgumentValueError", "ArgumentTypeError")
__all__ = ["load_pipeline", "ImagePipeline", *ERRORS]


def __getattr__(name: str):
    # Lazy: `import spacetime` stays cheap, so CLIs can print --help and errors before torch loads.
    if name in ("load_pipeline", "ImagePipeline"):
        from spacetime.pipelines import image

        return getattr(image, name)
    if name in ERRORS:
        from spacetime import errors

        return getattr(errors, name)
    raise AttributeError(f"module 'spacetime' has no attribute {name!r}")
