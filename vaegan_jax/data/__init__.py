"""Data sets: the Dataset type, the file loaders, validation splits and voxel scaling."""

from typing import Any

from vaegan_jax.data.dataset import Dataset, Trials, VoxelScaler, carve_validation
from vaegan_jax.data.loaders import from_dgmm_mapping, from_donders_mapping, from_npz_mapping, load_dataset

__all__ = [
    "Dataset",
    "Trials",
    "VoxelScaler",
    "carve_validation",
    "from_dgmm_mapping",
    "from_donders_mapping",
    "from_npz_mapping",
    "load_dataset",
    "load_synthetic",
]


def __getattr__(name: str) -> Any:
    """Import the synthetic generator on first use, so `python -m vaegan_jax.data.synthetic` runs it fresh."""
    if name == "load_synthetic":
        from vaegan_jax.data.synthetic import load_synthetic

        return load_synthetic
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
