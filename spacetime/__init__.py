"""spacetime: extend a text-to-image latent diffusion model to video and 3D."""

__version__ = "0.1.0"
