"""Read a data set from a .mat or .npz file; the layout is recognised from the keys, not the file name.

The file format is recognised from its content (a zip archive is read as .npz, anything else with
scipy.io.loadmat), so a misnamed file still loads. Three key layouts are understood:

Layout 1, the Donders file (`69dataset.mat`): keys X, Y, labels and optionally prior; other keys are
ignored. X (N, P) images, one per row, stored column-major (MATLAB order), P a square pixel count;
Y (N, V) voxel responses; labels (N,) or (N, 1) integer classes; prior (M, P) image-only data stored like
X. Test split: the last five trials of each label class in file order (trials 45-49 and 95-99 of the
real file, the split every published result uses); train: all other trials. Every class needs more than
five trials. Name "69-donders".

Layout 2, the DGMM file (`digit69_28x28.mat`): keys stimTrn, stimTest (N, P) images stored like X,
fmriTrn, fmriTest (N, V) voxels, and optionally labelTrn, labelTest (both or neither). With 90 training
and 10 test trials (the real file) the trial indices follow the Donders numbering: test = 45-49, 95-99,
train = the other 90 in order. Other sizes are numbered by position: train 0..n-1, test n..n+m-1.
Name "69-dgmm".

Layout 3, this project's own .npz for other data sets (also accepted inside a .mat):

    train_images  (N, H, H)  required; 0..255 (integers, or whole-valued floats), or floats in [0, 1];
                             row-major, stored upright
    train_voxels  (N, V)     required; real numbers, finite
    test_images   (M, H, H)  required; same as train_images
    test_voxels   (M, V)     required; same V as train_voxels
    train_labels  (N,)       optional; integer class labels (give test_labels too, or neither)
    test_labels   (M,)       optional; integer class labels
    extra_images  (K, H, H)  optional; image-only data (e.g. for stage-I pre-training), same rules

Images must be square (H x H, H >= 11: the evaluation's SSIM window); any integer dtype holding 0..255 is
read as 8-bit, and so are floats holding whole numbers 0..255 with some above 1 (MATLAB's class double, as in
both real files); other float images must lie in [0, 1]; bool, complex, string and object arrays are refused. The file
is read with `np.load(allow_pickle=False)`. Trial indices are positions: train 0..N-1, test
N..N+M-1. The data set is named after the file stem. Write one with e.g.
`np.savez("mine.npz", train_images=..., train_voxels=..., test_images=..., test_voxels=...)`.

In every layout images become float32 in [0, 1] of shape (N, H, H), upright: integer images and
whole-valued float images reaching above 1 are read as 0..255; other float images must lie in [0, 1].
Voxels become float32 and must be finite. Labels become int64 (whole-valued floats are accepted, as
MATLAB stores them). The content hash is the SHA-256 of the file bytes. Any problem raises a one-line
DataError naming the file.

.mat files must be MATLAB v4-v7 (v7.3 is HDF5: re-save with -v7). Each variable comes back in its
MATLAB class, so a double 0/1 image that MATLAB stored compactly as bytes stays 0/1. Only real numeric
variables are read; cells, structs, strings, sparse and complex variables are ignored unless a layout
needs them, which is then an error. Reading the bytes as arrays is files.py's; a damaged MAT-5 file is
refused before scipy parses it (mat5.py), because scipy's reader can crash the process on one bad byte.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from vaegan_jax.data import files
from vaegan_jax.data.dataset import Dataset, Trials, make_dataset
from vaegan_jax.errors import DataError

DONDERS_TEST_PER_CLASS = 5

_LAYOUTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "Donders": (("X", "Y", "labels"), ("prior",)),
    "DGMM": (("stimTrn", "stimTest", "fmriTrn", "fmriTest"), ("labelTrn", "labelTest")),
    "npz": (
        ("train_images", "train_voxels", "test_images", "test_voxels"),
        ("train_labels", "test_labels", "extra_images"),
    ),
}
_DGMM_TEST = np.array([45, 46, 47, 48, 49, 95, 96, 97, 98, 99])
_DGMM_N_TRAIN = 90
_KEYS_SHOWN = 20


def load_dataset(path: str | os.PathLike[str]) -> Dataset:
    """Load a data set from a .mat or .npz file in one of the three documented key layouts."""
    source, data = files.read_bytes(path)
    content_hash = hashlib.sha256(data).hexdigest()
    arrays = files.open_arrays(data, source)
    layout = _recognise_layout(arrays, source)
    if layout == "Donders":
        return from_donders_mapping(arrays, source, content_hash)
    if layout == "DGMM":
        return from_dgmm_mapping(arrays, source, content_hash)
    return from_npz_mapping(arrays, source, content_hash, name=Path(path).stem)


def load_voxel_rows(path: str | os.PathLike[str], key: str | None = None) -> np.ndarray:
    """(N, V) float32 voxel rows from a .npy file, or from the array `key` of a .npz or .mat file (by default its
    only array), checked as the loaders check a data set's voxels."""
    source, data = files.read_bytes(path)
    if data.startswith(files.NPY_MAGIC):
        if key is not None:
            raise DataError(f"{source}: a .npy file holds a single array; name none")
        key, value = "the array", files.read_npy(data, source)
    else:
        arrays = files.open_arrays(data, source)
        names = sorted(arrays)
        if key is None and len(names) != 1:
            shown = ", ".join(names[:_KEYS_SHOWN]) + (", ..." if len(names) > _KEYS_SHOWN else "")
            raise DataError(f"{source}: holds {len(names)} arrays ({shown}); name the one with the voxels (decode.py --key)")
        key = names[0] if key is None else key
        if key not in arrays:
            raise DataError(f"{source}: no array {key!r}; it holds {', '.join(names[:_KEYS_SHOWN])}")
        value = arrays[key]
    voxels = _voxels(value, key, source)
    if len(voxels) == 0:
        raise DataError(f"{source}: {key} holds no voxel rows")
    return voxels


def from_donders_mapping(
    mapping: Mapping[str, np.ndarray], source: str, content_hash: str, *, name: str = "69-donders"
) -> Dataset:
    """Build a Dataset from Donders-layout arrays (X, Y, labels, optional prior) with the standard split."""
    images = _rows_to_images(mapping["X"], "X", source)
    voxels = _voxels(mapping["Y"], "Y", source)
    labels = _labels(mapping["labels"], "labels", source)
    if not images.shape[0] == voxels.shape[0] == labels.shape[0]:
        raise DataError(
            f"{source}: X has {images.shape[0]} images, Y {voxels.shape[0]} voxel rows and labels "
            f"{labels.shape[0]} entries; they must agree"
        )
    train_idx, test_idx = _last_per_class_split(labels, source)
    prior = mapping.get("prior")
    extra = None if prior is None else _rows_to_images(prior, "prior", source)
    return make_dataset(
        name,
        source,
        Trials(images[train_idx], voxels[train_idx], labels[train_idx], train_idx),
        Trials(images[test_idx], voxels[test_idx], labels[test_idx], test_idx),
        extra,
        content_hash,
    )


def from_dgmm_mapping(mapping: Mapping[str, np.ndarray], source: str, content_hash: str) -> Dataset:
    """Build a Dataset from DGMM-layout arrays, numbering the trials as in the Donders file."""
    train_images = _rows_to_images(mapping["stimTrn"], "stimTrn", source)
    test_images = _rows_to_images(mapping["stimTest"], "stimTest", source)
    train_labels, test_labels = _label_pair(mapping, "labelTrn", "labelTest", source)
    n_train, n_test = len(train_images), len(test_images)
    if n_train == _DGMM_N_TRAIN and n_test == len(_DGMM_TEST):
        test_idx = _DGMM_TEST.copy()
        train_idx = np.setdiff1d(np.arange(n_train + n_test), test_idx)
    else:
        train_idx = np.arange(n_train)
        test_idx = n_train + np.arange(n_test)
    return make_dataset(
        "69-dgmm",
        source,
        Trials(train_images, _voxels(mapping["fmriTrn"], "fmriTrn", source), train_labels, train_idx),
        Trials(test_images, _voxels(mapping["fmriTest"], "fmriTest", source), test_labels, test_idx),
        None,
        content_hash,
    )


def from_npz_mapping(mapping: Mapping[str, np.ndarray], source: str, content_hash: str, name: str) -> Dataset:
    """Build a Dataset from arrays in the project's own layout (see the module docstring)."""
    train_images = _square_images(mapping["train_images"], "train_images", source)
    test_images = _square_images(mapping["test_images"], "test_images", source)
    train_labels, test_labels = _label_pair(mapping, "train_labels", "test_labels", source)
    extra = mapping.get("extra_images")
    n_train = len(train_images)
    return make_dataset(
        name,
        source,
        Trials(
            train_images,
            _voxels(mapping["train_voxels"], "train_voxels", source),
            train_labels,
            np.arange(n_train),
        ),
        Trials(
            test_images,
            _voxels(mapping["test_voxels"], "test_voxels", source),
            test_labels,
            n_train + np.arange(len(test_images)),
        ),
        None if extra is None else _square_images(extra, "extra_images", source),
        content_hash,
    )


def _recognise_layout(arrays: Mapping[str, np.ndarray], source: str) -> str:
    """The one layout whose required keys are all present, or a DataError listing keys and layouts."""
    keys = set(arrays)
    matches = [name for name, (required, _) in _LAYOUTS.items() if keys.issuperset(required)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise DataError(f"{source}: the keys fit more than one layout ({', '.join(matches)}); keep one set of keys")
    shown = ", ".join(repr(key) for key in sorted(keys)[:_KEYS_SHOWN])
    more = f" and {len(keys) - _KEYS_SHOWN} more" if len(keys) > _KEYS_SHOWN else ""
    expected = "; ".join(
        f"{name}: {', '.join(required)} (optional {', '.join(optional)})"
        for name, (required, optional) in _LAYOUTS.items()
    )
    hint = ""
    best = max(_LAYOUTS, key=lambda name: len(keys.intersection(_LAYOUTS[name][0])))
    missing = [key for key in _LAYOUTS[best][0] if key not in keys]
    if len(missing) < len(_LAYOUTS[best][0]):
        hint = f"; closest is {best}, missing {', '.join(missing)}"
    raise DataError(
        f"{source}: unknown key layout; found keys [{shown}{more}]; known layouts need {expected}{hint}"
    )


def _numeric(value: Any, key: str, source: str) -> np.ndarray:
    """The value as a real-valued integer or float array, or a DataError naming its dtype."""
    array = np.asarray(value)
    if array.dtype.kind not in "iuf":
        raise DataError(f"{source}: {key} must hold real numbers, got dtype {array.dtype}")
    return array


def _pixels(array: np.ndarray, key: str, source: str) -> np.ndarray:
    """Pixel values as float32 in [0, 1]; integers and whole-valued floats above 1 are read as 0..255."""
    if array.size == 0:
        return array.astype(np.float32)
    if array.dtype.kind in "iu":
        low, high = int(array.min()), int(array.max())
        if low < 0 or high > 255:
            raise DataError(f"{source}: integer images in {key} must lie in 0..255, got {low}..{high}")
        return (array.astype(np.float32) / np.float32(255.0)).astype(np.float32)
    if not np.all(np.isfinite(array)):
        raise DataError(f"{source}: {key} contains NaN or infinite pixel values")
    low, high = float(array.min()), float(array.max())
    if low >= 0.0 and high <= 1.0:
        return array.astype(np.float32)
    # MATLAB keeps 8-bit images as class double holding whole numbers 0..255 (both real 69 files do).
    if low >= 0.0 and high <= 255.0 and np.all(array == np.round(array)):
        return (array.astype(np.float32) / np.float32(255.0)).astype(np.float32)
    raise DataError(
        f"{source}: float images in {key} must lie in [0, 1] or hold whole numbers 0..255, got {low:g}..{high:g}"
    )


def _rows_to_images(value: Any, key: str, source: str) -> np.ndarray:
    """(N, P) rows of column-major (MATLAB) images as (N, side, side) upright float32 images."""
    rows = _numeric(value, key, source)
    if rows.ndim != 2:
        raise DataError(f"{source}: {key} must be a 2-D (images, pixels) array, got shape {rows.shape}")
    side = math.isqrt(rows.shape[1])
    if side == 0 or side * side != rows.shape[1]:
        raise DataError(f"{source}: {key} rows hold {rows.shape[1]} pixels, not a square image")
    pixels = _pixels(rows, key, source)
    # A C-order reshape of a column-major image gives its transpose; swapping the axes makes it upright.
    return np.ascontiguousarray(pixels.reshape(-1, side, side).transpose(0, 2, 1))


def _square_images(value: Any, key: str, source: str) -> np.ndarray:
    """(N, H, H) row-major images as float32 in [0, 1]."""
    images = _numeric(value, key, source)
    if images.ndim != 3 or images.shape[1] != images.shape[2] or images.shape[1] == 0:
        raise DataError(f"{source}: {key} must be (images, H, H) square images, got shape {images.shape}")
    return np.ascontiguousarray(_pixels(images, key, source))


def _voxels(value: Any, key: str, source: str) -> np.ndarray:
    """(N, V) voxel responses as finite float32."""
    array = _numeric(value, key, source)
    if array.ndim != 2:
        raise DataError(f"{source}: {key} must be a 2-D (trials, voxels) array, got shape {array.shape}")
    if array.shape[1] == 0:
        raise DataError(f"{source}: {key} has no voxels")
    with np.errstate(over="ignore"):
        voxels = array.astype(np.float32)
    # Checked after the cast: float64 values beyond float32's range would otherwise turn into inf silently.
    if not np.all(np.isfinite(voxels)):
        raise DataError(f"{source}: {key} contains NaN or infinite values (or values too large for float32)")
    return voxels


def _labels(value: Any, key: str, source: str) -> np.ndarray:
    """Class labels, (N,), (N, 1) or (1, N), as int64; floats are accepted when they are whole numbers."""
    array = _numeric(value, key, source)
    if not (array.ndim == 1 or (array.ndim == 2 and 1 in array.shape)):
        raise DataError(f"{source}: {key} must be a vector of class labels, got shape {array.shape}")
    flat = array.ravel()
    # Whole numbers below 2**53 survive the trip through float64 and int64 exactly.
    limit = 2.0**53
    if flat.dtype.kind == "f":
        wide = flat.astype(np.float64)
        valid = bool(np.all(np.isfinite(wide)) and np.all(wide == np.round(wide)) and np.all(np.abs(wide) < limit))
    else:
        valid = flat.size == 0 or (int(flat.min()) > -limit and int(flat.max()) < limit)
    if not valid:
        raise DataError(f"{source}: {key} must hold whole-number class labels")
    return flat.astype(np.int64)


def _label_pair(
    mapping: Mapping[str, np.ndarray], train_key: str, test_key: str, source: str
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Both label vectors or neither; one without the other is a DataError."""
    train, test = mapping.get(train_key), mapping.get(test_key)
    if (train is None) != (test is None):
        present, absent = (train_key, test_key) if test is None else (test_key, train_key)
        raise DataError(f"{source}: has {present} but no {absent}; give both or neither")
    if train is None or test is None:
        return None, None
    return _labels(train, train_key, source), _labels(test, test_key, source)


def _last_per_class_split(labels: np.ndarray, source: str) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) trial indices: the test split is the last five trials of each class in file order."""
    if labels.size == 0:
        raise DataError(f"{source}: the file holds no trials")
    test_parts = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if len(members) <= DONDERS_TEST_PER_CLASS:
            raise DataError(
                f"{source}: class {label} has only {len(members)} trials; the test split takes the last "
                f"{DONDERS_TEST_PER_CLASS} of each class and training needs more"
            )
        test_parts.append(members[-DONDERS_TEST_PER_CLASS:])
    test_idx = np.sort(np.concatenate(test_parts))
    return np.setdiff1d(np.arange(labels.size), test_idx), test_idx
