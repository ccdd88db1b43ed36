"""vaegan_jax: D-VAE/GAN (Ren et al., NeuroImage 2021) in JAX/Flax, for reconstructing seen images from fMRI."""

__version__ = "0.1.0"
