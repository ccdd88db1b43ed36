"""Property: whatever arrays a file holds, the loader returns a valid Dataset or a one-line DataError."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import scipy.io
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vaegan_jax.data import Dataset, load_dataset
from vaegan_jax.data.dataset import SMALLEST_IMAGE_SIDE
from vaegan_jax.errors import DataError

LAYOUT_KEYS = {
    "donders": ["X", "Y", "labels", "prior"],
    "dgmm": ["stimTrn", "stimTest", "fmriTrn", "fmriTest", "labelTrn", "labelTest"],
    "npz": [
        "train_images", "train_voxels", "test_images", "test_voxels", "train_labels", "test_labels", "extra_images",
    ],
}
STRAY_KEYS = ["description", "structural", "images", "voxels", "Z"]
DTYPES = [
    np.uint8, np.int8, np.int16, np.uint16, np.int64, np.uint64,
    np.float16, np.float32, np.float64, np.bool_, np.complex64, "<U3", "S2",
]
SPECIAL_VALUES = [np.nan, np.inf, -np.inf, -1.0, 0.0, 0.5, 1.0, 1.5, 255.0, 256.0, 1e300, -1e300]


@st.composite
def well_formed_shape(draw: st.DrawFn, key: str, sizes: dict[str, int]) -> tuple[int, ...]:
    """The shape `key` should have in a valid file of the given sizes."""
    n, m, side, voxels, extra = (sizes[k] for k in ("n", "m", "side", "voxels", "extra"))
    column = draw(st.booleans())
    shapes = {
        "X": (n + m, side * side), "Y": (n + m, voxels), "labels": (n + m, 1) if column else (n + m,),
        "prior": (extra, side * side),
        "stimTrn": (n, side * side), "stimTest": (m, side * side), "fmriTrn": (n, voxels), "fmriTest": (m, voxels),
        "labelTrn": (n, 1), "labelTest": (m, 1),
        "train_images": (n, side, side), "test_images": (m, side, side), "extra_images": (extra, side, side),
        "train_voxels": (n, voxels), "test_voxels": (m, voxels), "train_labels": (n,), "test_labels": (m,),
    }
    return shapes.get(key, (2, 3))


def is_label_key(key: str) -> bool:
    """Whether `key` holds class labels in its layout."""
    return "label" in key.lower()


def is_image_key(key: str) -> bool:
    """Whether `key` holds images in its layout."""
    return key in {"X", "prior", "stimTrn", "stimTest", "train_images", "test_images", "extra_images"}


@st.composite
def array_for(draw: st.DrawFn, key: str, sizes: dict[str, int], pristine: bool) -> np.ndarray:
    """A value for `key`: valid when pristine, else usually plausible, sometimes of a wrong shape, dtype or content."""
    if not pristine and draw(st.integers(0, 4)) == 0:
        shape = tuple(draw(st.lists(st.integers(0, 5), min_size=0, max_size=4)))
    else:
        shape = draw(well_formed_shape(key, sizes))
    size = int(np.prod(shape))
    if not pristine and draw(st.integers(0, 5)) == 0:
        dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    elif is_label_key(key):
        dtype = np.dtype(draw(st.sampled_from([np.uint8, np.int64, np.float64])))
    elif is_image_key(key):
        dtype = np.dtype(draw(st.sampled_from([np.uint8, np.float32, np.float64])))
    else:
        dtype = np.dtype(draw(st.sampled_from([np.float32, np.float64])))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if dtype.kind in "US":
        return np.full(shape, "ab", dtype=dtype)
    if is_label_key(key):
        values = np.sort(rng.integers(1, 3, size=size)).astype(np.float64)
        if size == sizes["n"] + sizes["m"]:
            values = np.repeat([1.0, 2.0], [size // 2, size - size // 2])
    elif is_image_key(key) and dtype.kind in "iu":
        values = rng.integers(0, 256, size=size).astype(np.float64)
    else:
        values = rng.random(size)
    if size and not pristine and draw(st.integers(0, 3)) == 0:
        values[rng.integers(0, size)] = draw(st.sampled_from(SPECIAL_VALUES))
    with np.errstate(invalid="ignore", over="ignore"):
        if dtype.kind in "iub":
            values = np.nan_to_num(values, nan=0.0, posinf=300.0, neginf=-300.0).clip(-300.0, 300.0)
        return values.astype(dtype).reshape(shape)


@st.composite
def file_contents(draw: st.DrawFn, pristine: bool) -> dict[str, np.ndarray]:
    """A key -> array mapping of one layout: valid when pristine, else with keys dropped, added or mixed in."""
    sizes = {
        "n": draw(st.integers(6, 16) if pristine else st.integers(0, 16)),
        "m": draw(st.integers(6, 12) if pristine else st.integers(0, 12)),
        "side": draw(st.integers(SMALLEST_IMAGE_SIDE, 13) if pristine else st.integers(0, 13)),
        "voxels": draw(st.integers(1, 6) if pristine else st.integers(0, 6)),
        "extra": draw(st.integers(0, 3)),
    }
    layout = draw(st.sampled_from(sorted(LAYOUT_KEYS)))
    keys = [key for key in LAYOUT_KEYS[layout] if pristine or draw(st.integers(0, 7)) > 0]
    if not pristine:
        keys += draw(st.lists(st.sampled_from(STRAY_KEYS + LAYOUT_KEYS["npz"] + ["X"]), max_size=2, unique=True))
    return {key: draw(array_for(key, sizes, pristine)) for key in dict.fromkeys(keys)}


def check_valid(dataset: Dataset) -> None:
    """Every promise a loaded Dataset makes."""
    side = dataset.image_size
    assert side >= SMALLEST_IMAGE_SIDE
    for trials in (dataset.train, dataset.test):
        assert len(trials) > 0
        assert trials.images.dtype == np.float32 and trials.voxels.dtype == np.float32
        assert trials.images.ndim == 3 and trials.images.shape[1:] == (side, side)
        assert trials.images.min() >= 0.0 and trials.images.max() <= 1.0
        assert trials.voxels.ndim == 2 and trials.voxels.shape[1] == dataset.n_voxels >= 1
        assert np.all(np.isfinite(trials.voxels))
        assert len(trials.images) == len(trials.voxels) == len(trials.indices)
        assert trials.labels is None or (trials.labels.dtype == np.int64 and trials.labels.shape == (len(trials),))
    assert set(dataset.train.indices.tolist()).isdisjoint(dataset.test.indices.tolist())
    if dataset.extra_images is not None:
        extra = dataset.extra_images
        assert extra.dtype == np.float32 and extra.shape[1:] == (side, side) and len(extra) > 0
        assert extra.min() >= 0.0 and extra.max() <= 1.0


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    pristine=st.booleans(),
    as_mat=st.booleans(),
    damage=st.sampled_from(["none", "none", "truncate", "flip"]),
    cut=st.floats(0.0, 1.0),
)
def test_loader_returns_valid_dataset_or_one_line_data_error(
    data: st.DataObject, pristine: bool, as_mat: bool, damage: str, cut: float
) -> None:
    contents = data.draw(file_contents(pristine))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / ("data.mat" if as_mat else "data.npz")
        if as_mat:
            scipy.io.savemat(path, contents)
        else:
            with open(path, "wb") as handle:
                np.savez(handle, **contents)
        raw = bytearray(path.read_bytes())
        position = int(cut * (len(raw) - 1))
        if damage == "truncate" and not pristine:
            path.write_bytes(bytes(raw[:position]))
        elif damage == "flip" and not pristine:
            raw[position] ^= 0xFF
            path.write_bytes(bytes(raw))
        try:
            dataset = load_dataset(path)
        except DataError as error:
            message = str(error)
            assert not pristine, f"a valid file was refused: {message}"
            assert len(message.splitlines()) == 1 and str(path) in message, message
        else:
            check_valid(dataset)
