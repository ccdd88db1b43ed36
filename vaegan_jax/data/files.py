"""A data file's bytes as arrays: .npz or MATLAB v4-v7 .mat, recognised by content; pickles are never loaded.

Every problem is a one-line DataError naming the file. A damaged MAT-5 file is refused before scipy parses
it (mat5.py), because scipy's reader can crash the process on one bad byte.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io

from vaegan_jax.data import mat5
from vaegan_jax.errors import DataError

NPY_MAGIC = b"\x93NUMPY"
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")


def read_bytes(path: str | os.PathLike[str]) -> tuple[str, bytes]:
    """The path as it appears in error messages (one line), and the file's bytes."""
    source = one_line(os.fspath(path))
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise DataError(f"{source}: cannot read the file ({describe(exc)})") from exc
    if not data:
        raise DataError(f"{source}: the file is empty")
    return source, data


def read_npy(data: bytes, source: str) -> np.ndarray:
    """The array of a .npy file's bytes."""
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as exc:
        # Broad on purpose: numpy raises many unrelated types for a damaged header or a pickled array.
        raise DataError(f"{source}: not a readable .npy file ({describe(exc)})") from exc


def open_arrays(data: bytes, source: str) -> Mapping[str, np.ndarray]:
    """Parse the file bytes as .npz or .mat, whichever the content says, into a key -> array mapping."""
    if data.startswith(NPY_MAGIC):
        raise DataError(f"{source}: this is a single-array .npy file; save the arrays with np.savez into an .npz")
    if data[:128].startswith(b"MATLAB 7.3") or _HDF5_SIGNATURE in (data[:8], data[512:520]):
        raise DataError(
            f"{source}: MATLAB v7.3 (HDF5) .mat files are not supported; re-save it in MATLAB with "
            "save(filename, '-v7')"
        )
    if data[:4] in _ZIP_MAGICS:
        try:
            npz = np.load(io.BytesIO(data), allow_pickle=False)
        except Exception as exc:
            # Broad on purpose: numpy and zipfile raise many unrelated types for a damaged archive.
            raise DataError(f"{source}: not a readable .npz archive ({describe(exc)})") from exc
        return _NpzArrays(npz, source)
    numeric, others = mat5.scan(data, source) if mat5.is_mat5(data) else (None, {})
    try:
        # mat_dtype restores each variable's MATLAB class: MATLAB stores whole-valued doubles as small
        # integers, and without it a 0/1 double image would come back as uint8 and be read as 0..255.
        contents = scipy.io.loadmat(io.BytesIO(data), mat_dtype=True, variable_names=numeric)
    except Exception as exc:
        # Broad on purpose: scipy's MAT parser raises many unrelated types (ValueError, struct.error,
        # zlib.error, MemoryError, ...) when fed bytes that are not a MAT file.
        raise DataError(f"{source}: neither a readable .mat (MATLAB v4-v7) nor .npz file ({describe(exc)})") from exc
    arrays = {key: value for key, value in contents.items() if not key.startswith("__")}
    return _MatArrays(arrays, others, source)


class _NpzArrays(Mapping[str, np.ndarray]):
    """The arrays of an .npz archive, read on access so that unused keys can never fail the load."""

    def __init__(self, npz: Any, source: str) -> None:
        self._npz = npz
        self._source = source

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self._npz.files:
            raise KeyError(key)
        try:
            return self._npz[key]
        except Exception as exc:
            # Broad on purpose: a damaged archive member can fail in zipfile, zlib or numpy's header parser.
            raise DataError(f"{self._source}: cannot read key {key!r} ({describe(exc)})") from exc

    def __iter__(self) -> Iterator[str]:
        return iter(self._npz.files)

    def __len__(self) -> int:
        return len(self._npz.files)


class _MatArrays(Mapping[str, np.ndarray]):
    """The numeric variables of a .mat file; other variables count as keys but are refused when used."""

    def __init__(self, arrays: dict[str, Any], others: dict[str, str], source: str) -> None:
        self._arrays = arrays
        self._others = others
        self._source = source

    def __getitem__(self, key: str) -> np.ndarray:
        if key in self._others:
            raise DataError(f"{self._source}: {key} is a MATLAB {self._others[key]} array, not a numeric matrix")
        value = self._arrays[key]
        # scipy stores a variable it failed to read as a message string instead of raising.
        if isinstance(value, str):
            raise DataError(f"{self._source}: cannot read {key} ({one_line(value)})")
        return value

    def __iter__(self) -> Iterator[str]:
        return iter([*self._arrays, *self._others])

    def __len__(self) -> int:
        return len(self._arrays) + len(self._others)


def describe(exc: BaseException) -> str:
    """An exception as one short line."""
    text = " ".join(str(exc).split())
    if len(text) > 200:
        text = text[:197] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def one_line(text: str) -> str:
    """Text with line breaks escaped, so error messages that quote it stay on one line."""
    # The sentinel makes a trailing line break count as a second line.
    return text if len((text + "x").splitlines()) == 1 else repr(text)[1:-1]
