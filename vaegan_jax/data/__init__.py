"""Data sets: the Dataset type, the file loaders, validation splits and voxel scaling."""

from vaegan_jax.data.dataset import Dataset, Trials, VoxelScaler, carve_validation
from vaegan_jax.data.loaders import from_dgmm_mapping, from_donders_mapping, from_npz_mapping, load_dataset
from vaegan_jax.data.synthetic import load_synthetic

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
