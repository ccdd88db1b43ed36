"""vaegan_jax: D-VAE/GAN (Ren et al., NeuroImage 2021) in JAX/Flax, for reconstructing seen images from fMRI.

`load_run(path)` gives a trained run that reconstructs new voxel rows (`TrainedRun.reconstruct`) and
evaluates itself (`TrainedRun.evaluate`); `train.py`, `eval.py` and `decode.py` are the command lines.
"""

from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """Import the run API on first use, so that `import vaegan_jax` stays light (no jax) for the CLIs' --help."""
    if name in ("load_run", "TrainedRun"):
        from vaegan_jax import trained_run

        return getattr(trained_run, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
