"""Loading the three file layouts from small files written on the fly, and refusing bad ones clearly."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from vaegan_jax.data import Dataset, from_donders_mapping, load_dataset
from vaegan_jax.errors import DataError

STANDARD_TEST = [45, 46, 47, 48, 49, 95, 96, 97, 98, 99]
STANDARD_TRAIN = [i for i in range(100) if i not in STANDARD_TEST]


def top_left_image(side: int) -> np.ndarray:
    """An asymmetric upright test image: full ink in the top-left quadrant, a faint mark top-right."""
    image = np.zeros((side, side), dtype=np.uint8)
    image[: side // 2, : side // 2] = 255
    image[0, side - 1] = 7
    return image


def column_major_rows(images: np.ndarray) -> np.ndarray:
    """(N, H, H) upright images as (N, H*H) rows stored column-major, like MATLAB's X."""
    return np.stack([image.reshape(-1, order="F") for image in images])


def donders_arrays(n_voxels: int = 50, n_prior: int = 3, seed: int = 0) -> dict[str, np.ndarray]:
    """A Donders-layout mapping: 100 trials (50 sixes then 50 nines), 28x28, like the real file."""
    rng = np.random.default_rng(seed)
    upright = rng.integers(0, 256, size=(100, 28, 28), dtype=np.uint8)
    upright[0] = top_left_image(28)
    return {
        "X": column_major_rows(upright),
        "Y": rng.normal(0.01, 0.02, size=(100, n_voxels)),
        "labels": np.repeat(np.array([1, 2], dtype=np.uint8), 50)[:, None],
        "prior": column_major_rows(np.stack([top_left_image(28)] * n_prior)),
        "description": np.array(["a test file"]),
        "structural": np.zeros((4, 4, 3), dtype=np.uint16),
    }


def dgmm_arrays(donders: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The DGMM-layout rearrangement of a Donders mapping (test rows = trials 45-49, 95-99)."""
    return {
        "stimTrn": donders["X"][STANDARD_TRAIN],
        "stimTest": donders["X"][STANDARD_TEST],
        "fmriTrn": donders["Y"][STANDARD_TRAIN],
        "fmriTest": donders["Y"][STANDARD_TEST],
        "labelTrn": donders["labels"][STANDARD_TRAIN],
        "labelTest": donders["labels"][STANDARD_TEST],
    }


def npz_arrays(side: int = 16, seed: int = 0) -> dict[str, np.ndarray]:
    """A project-layout mapping: 20 train and 6 test trials of side x side images, 12 voxels."""
    rng = np.random.default_rng(seed)
    train_images = rng.integers(0, 256, size=(20, side, side), dtype=np.uint8)
    train_images[0] = top_left_image(side)
    return {
        "train_images": train_images,
        "train_voxels": rng.normal(size=(20, 12)),
        "test_images": rng.random((6, side, side)),
        "test_voxels": rng.normal(size=(6, 12)).astype(np.float32),
        "train_labels": np.tile(np.arange(4), 5),
        "test_labels": np.array([0, 1, 2, 3, 0, 1]),
        "extra_images": rng.random((5, side, side)).astype(np.float32),
    }


def write(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    """Write a mapping as .mat or .npz, chosen by the suffix of `path`."""
    if path.suffix == ".mat":
        scipy.io.savemat(path, arrays)
    else:
        with open(path, "wb") as handle:
            np.savez(handle, **arrays)
    return path


def assert_valid(dataset: Dataset) -> None:
    """The invariants every loaded data set keeps."""
    for trials in (dataset.train, dataset.test):
        assert trials.images.dtype == np.float32 and trials.voxels.dtype == np.float32
        assert trials.images.min() >= 0.0 and trials.images.max() <= 1.0
        assert trials.images.shape[1] == trials.images.shape[2] == dataset.image_size
        assert np.all(np.isfinite(trials.voxels))
        assert len(trials.images) == len(trials.voxels) == len(trials.indices)
    assert set(dataset.train.indices).isdisjoint(dataset.test.indices)


def assert_refused(path: Path, *fragments: str) -> None:
    """Loading `path` raises a one-line DataError naming the file and containing each fragment."""
    with pytest.raises(DataError) as caught:
        load_dataset(path)
    message = str(caught.value)
    assert len(message.splitlines()) == 1, message
    assert path.name in message, message
    for fragment in fragments:
        assert fragment in message, message


@pytest.mark.parametrize("suffix", [".mat", ".npz"])
def test_donders_layout_loads_with_standard_split(tmp_path: Path, suffix: str) -> None:
    arrays = donders_arrays()
    path = write(tmp_path / f"69dataset{suffix}", arrays)
    dataset = load_dataset(path)
    assert_valid(dataset)
    assert dataset.name == "69-donders"
    assert dataset.source == str(path)
    assert dataset.test.indices.tolist() == STANDARD_TEST
    assert dataset.train.indices.tolist() == STANDARD_TRAIN
    assert dataset.test.labels.tolist() == [1] * 5 + [2] * 5
    assert dataset.n_voxels == 50 and dataset.image_size == 28
    assert dataset.extra_images is not None and dataset.extra_images.shape == (3, 28, 28)
    np.testing.assert_allclose(dataset.test.voxels, arrays["Y"][STANDARD_TEST].astype(np.float32))
    assert dataset.train.images.dtype == np.float32
    assert dataset.train.images[0].max() == 1.0


@pytest.mark.parametrize("suffix", [".mat", ".npz"])
def test_column_major_images_come_back_upright(tmp_path: Path, suffix: str) -> None:
    dataset = load_dataset(write(tmp_path / f"d{suffix}", donders_arrays()))
    expected = top_left_image(28).astype(np.float32) / 255
    np.testing.assert_array_equal(dataset.train.images[0], expected)
    for image in dataset.extra_images:
        np.testing.assert_array_equal(image, expected)


def test_dgmm_layout_matches_donders_numbering(tmp_path: Path) -> None:
    donders = donders_arrays()
    from_donders = load_dataset(write(tmp_path / "69dataset.mat", donders))
    dataset = load_dataset(write(tmp_path / "digit69_28x28.mat", dgmm_arrays(donders)))
    assert_valid(dataset)
    assert dataset.name == "69-dgmm"
    assert dataset.extra_images is None
    assert dataset.test.indices.tolist() == STANDARD_TEST
    assert dataset.train.indices.tolist() == STANDARD_TRAIN
    for split in ("train", "test"):
        ours, theirs = getattr(dataset, split), getattr(from_donders, split)
        np.testing.assert_array_equal(ours.images, theirs.images)
        np.testing.assert_array_equal(ours.voxels, theirs.voxels)
        np.testing.assert_array_equal(ours.labels, theirs.labels)
    expected = top_left_image(28).astype(np.float32) / 255
    np.testing.assert_array_equal(dataset.train.images[0], expected)


def test_dgmm_layout_of_another_size_is_numbered_by_position(tmp_path: Path) -> None:
    arrays = dgmm_arrays(donders_arrays())
    arrays = {key: value[:8] for key, value in arrays.items()}
    del arrays["labelTrn"], arrays["labelTest"]
    dataset = load_dataset(write(tmp_path / "small.mat", arrays))
    assert dataset.train.indices.tolist() == list(range(8))
    assert dataset.test.indices.tolist() == list(range(8, 16))
    assert dataset.train.labels is None and dataset.test.labels is None


@pytest.mark.parametrize("suffix", [".npz", ".mat"])
def test_npz_layout_loads_row_major_square_images(tmp_path: Path, suffix: str) -> None:
    arrays = npz_arrays()
    path = write(tmp_path / f"brains{suffix}", arrays)
    dataset = load_dataset(path)
    assert_valid(dataset)
    assert dataset.name == "brains"
    assert dataset.image_size == 16 and dataset.n_voxels == 12
    assert dataset.train.indices.tolist() == list(range(20))
    assert dataset.test.indices.tolist() == list(range(20, 26))
    np.testing.assert_array_equal(dataset.train.images[0], top_left_image(16).astype(np.float32) / 255)
    np.testing.assert_allclose(dataset.test.images, arrays["test_images"].astype(np.float32))
    assert dataset.train.labels.dtype == np.int64
    assert dataset.test.labels.tolist() == [0, 1, 2, 3, 0, 1]
    assert dataset.extra_images.shape == (5, 16, 16)


def test_npz_layout_without_optional_keys(tmp_path: Path) -> None:
    arrays = npz_arrays(side=12)
    for key in ("train_labels", "test_labels", "extra_images"):
        del arrays[key]
    dataset = load_dataset(write(tmp_path / "miyawaki.npz", arrays))
    assert dataset.train.labels is None and dataset.extra_images is None
    assert dataset.image_size == 12


def test_layout_comes_from_keys_not_file_name(tmp_path: Path) -> None:
    donders = donders_arrays()
    misnamed = write(tmp_path / "dgmm.mat", donders)
    assert load_dataset(misnamed).name == "69-donders"
    # The format comes from the content too: an .npz archive saved under a .mat name still loads.
    npz_as_mat = tmp_path / "digit69_28x28.mat"
    write(tmp_path / "x.npz", dgmm_arrays(donders)).rename(npz_as_mat)
    assert load_dataset(npz_as_mat).name == "69-dgmm"


def test_content_hash_and_fingerprint(tmp_path: Path) -> None:
    path = write(tmp_path / "69dataset.mat", donders_arrays())
    first, again = load_dataset(path), load_dataset(path)
    assert first.fingerprint == again.fingerprint
    other = load_dataset(write(tmp_path / "other.mat", donders_arrays(seed=1)))
    assert other.fingerprint != first.fingerprint
    arrays = donders_arrays()
    direct = from_donders_mapping(arrays, "x", hashlib.sha256(path.read_bytes()).hexdigest())
    assert direct.fingerprint == first.fingerprint


def test_from_donders_mapping_takes_a_name() -> None:
    dataset = from_donders_mapping(donders_arrays(), "generated", "0" * 64, name="synthetic-69")
    assert dataset.name == "synthetic-69" and dataset.source == "generated"
    assert dataset.test.indices.tolist() == STANDARD_TEST


def test_donders_split_is_last_five_of_each_class(tmp_path: Path) -> None:
    arrays = donders_arrays()
    order = np.random.default_rng(3).permutation(100)
    arrays.update(X=arrays["X"][order], Y=arrays["Y"][order], labels=arrays["labels"][order])
    dataset = load_dataset(write(tmp_path / "shuffled.mat", arrays))
    labels = arrays["labels"].ravel()
    expected = sorted(np.concatenate([np.flatnonzero(labels == c)[-5:] for c in (1, 2)]).tolist())
    assert dataset.test.indices.tolist() == expected


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    assert_refused(tmp_path / "absent.mat", "cannot read")
    (tmp_path / "folder.npz").mkdir()
    assert_refused(tmp_path / "folder.npz", "cannot read")


@pytest.mark.parametrize(
    ("name", "content", "fragment"),
    [
        ("notes.txt", b"just some text\nover two lines\n", "neither"),
        ("garbage.mat", bytes(range(256)) * 8, "neither"),
        ("empty.mat", b"", "the file is empty"),
        ("garbage.npz", b"PK\x03\x04" + b"\x00" * 60, ".npz"),
        ("array.npz", None, ".npy"),
        ("v73.mat", b"MATLAB 7.3 MAT-file".ljust(512, b" ") + b"\x89HDF\r\n\x1a\n" + bytes(64), "-v7"),
    ],
)
def test_unreadable_content(tmp_path: Path, name: str, content: bytes | None, fragment: str) -> None:
    path = tmp_path / name
    if content is None:
        with open(path, "wb") as handle:
            np.save(handle, np.zeros(3))
    else:
        path.write_bytes(content)
    assert_refused(path, fragment)


def test_truncated_npz(tmp_path: Path) -> None:
    path = write(tmp_path / "cut.npz", npz_arrays())
    path.write_bytes(path.read_bytes()[:-200])
    assert_refused(path)


def test_images_too_small_to_score_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "tiny_images.npz", npz_arrays(side=10))
    assert_refused(path, "train images are 10x10", "at least 11x11")


def test_unknown_layout_lists_keys_and_layouts(tmp_path: Path) -> None:
    path = write(tmp_path / "odd.npz", {"images": np.zeros((2, 4, 4)), "Y": np.zeros((2, 3))})
    assert_refused(path, "'images'", "'Y'", "Donders", "DGMM", "train_images", "missing X, labels")


def test_keys_of_two_layouts_are_ambiguous(tmp_path: Path) -> None:
    arrays = donders_arrays()
    arrays.update(npz_arrays())
    assert_refused(write(tmp_path / "both.npz", arrays), "more than one layout")


def test_key_names_with_line_breaks_stay_on_one_line(tmp_path: Path) -> None:
    assert_refused(write(tmp_path / "breaks.npz", {"a\nb": np.zeros(2), "c\u2028d": np.zeros(2)}), "unknown key layout")


def test_object_array_in_an_ignored_key_is_harmless(tmp_path: Path) -> None:
    arrays = donders_arrays()
    arrays["funloc"] = np.array([np.zeros(3), "name"], dtype=object)
    dataset = load_dataset(write(tmp_path / "69dataset.mat", arrays))
    assert dataset.name == "69-donders"


def test_object_array_in_a_required_key(tmp_path: Path) -> None:
    arrays = npz_arrays()
    arrays["train_voxels"] = np.array([[1.0, "x"]] * 20, dtype=object)
    path = tmp_path / "obj.npz"
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)
    assert_refused(path, "train_voxels")


def bad(**changes: object) -> dict[str, object]:
    """npz-layout arrays with some keys replaced (None removes a key)."""
    arrays: dict[str, object] = dict(npz_arrays())
    for key, value in changes.items():
        if value is None:
            del arrays[key]
        else:
            arrays[key] = value
    return arrays


@pytest.mark.parametrize(
    ("arrays", "fragment"),
    [
        (bad(train_voxels=np.zeros((19, 12))), "20 images but 19 voxel rows"),
        (bad(test_voxels=np.zeros((6, 11))), "voxels"),
        (bad(train_voxels=np.full((20, 12), np.nan)), "NaN"),
        (bad(test_voxels=np.r_[np.zeros((5, 12)), np.full((1, 12), np.inf)]), "infinite"),
        (bad(train_voxels=np.full((20, 12), 1e300)), "float32"),
        (bad(train_images=np.zeros((20, 16, 15), dtype=np.uint8)), "square"),
        (bad(train_images=np.zeros((20, 0, 0), dtype=np.uint8)), "square"),
        (bad(test_images=np.zeros((0, 16, 16)), test_voxels=np.zeros((0, 12)), test_labels=np.zeros(0, int)), "empty"),
        (bad(train_voxels=np.zeros((20, 12, 2))), "2-D"),
        (bad(train_voxels=np.zeros((20, 0))), "no voxels"),
        (bad(train_images=np.zeros((20, 256))), "train_images"),
        (bad(train_voxels=np.array([["a"] * 12] * 20)), "real numbers"),
        (bad(train_voxels=np.zeros((20, 12), dtype=complex)), "real numbers"),
        (bad(train_images=np.ones((20, 16, 16), dtype=bool)), "real numbers"),
        (bad(test_images=np.full((6, 16, 16), 2.5)), "[0, 1] or hold whole numbers 0..255"),
        (bad(test_images=np.full((6, 16, 16), -1.0)), "got -1..-1"),
        (bad(test_images=np.full((6, 16, 16), np.nan)), "NaN"),
        (bad(train_images=np.full((20, 16, 16), 300, dtype=np.int16)), "0..255"),
        (bad(train_images=np.full((20, 16, 16), -1, dtype=np.int8)), "0..255"),
        (bad(train_labels=np.full(20, 0.5)), "whole-number"),
        (bad(train_labels=np.zeros((20, 2), dtype=int)), "vector"),
        (bad(train_labels=np.zeros(19, dtype=int)), "labels"),
        (bad(test_labels=None), "give both or neither"),
        (bad(extra_images=np.zeros((3, 8, 8))), "extra images"),
        (bad(train_voxels=np.float64(3.0)), "2-D"),
    ],
)
def test_bad_npz_contents(tmp_path: Path, arrays: dict[str, np.ndarray], fragment: str) -> None:
    assert_refused(write(tmp_path / "bad.npz", arrays), fragment)


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"X": np.zeros((100, 783), dtype=np.uint8)}, "not a square"),
        ({"Y": np.zeros((99, 50))}, "must agree"),
        ({"labels": np.repeat([1, 2, 3], [50, 47, 3])[:, None]}, "class 3 has only 3 trials"),
        ({"X": np.zeros((0, 784), dtype=np.uint8), "Y": np.zeros((0, 50)), "labels": np.zeros((0, 1))}, "no trials"),
        ({"prior": np.zeros((4, 100), dtype=np.uint8)}, "extra images"),
        ({"X": np.full((100, 784), 127.5)}, "whole numbers 0..255"),
        ({"X": np.full((100, 784), 256.0)}, "got 256..256"),
    ],
)
def test_bad_donders_contents(tmp_path: Path, change: dict[str, np.ndarray], fragment: str) -> None:
    arrays = donders_arrays()
    arrays.update(change)
    assert_refused(write(tmp_path / "69dataset.mat", arrays), fragment)


def test_bad_dgmm_contents(tmp_path: Path) -> None:
    arrays = dgmm_arrays(donders_arrays())
    arrays["fmriTest"] = arrays["fmriTest"][:, :40]
    assert_refused(write(tmp_path / "digit69_28x28.mat", arrays), "train has 50 voxels but test has 40")


def mat5_bytes(arrays: dict[str, np.ndarray], order: str = "<", data_type: int = 9) -> bytes:
    """A minimal uncompressed MAT-5 file of double-class matrices, stored with the given type code.

    scipy writes only native byte order, never a bad type code and never MATLAB's compact storage of
    whole-valued doubles as integers, so the tests build such files themselves. Code 2 stores uint8,
    any other code stores float64 bytes.
    """
    endian = b"IM" if order == "<" else b"MI"
    out = [b"MATLAB 5.0 MAT-file, written by the tests".ljust(116), bytes(8), struct.pack(order + "H", 0x0100), endian]

    def element(code: int, payload: bytes) -> bytes:
        return struct.pack(order + "II", code, len(payload)) + payload + bytes(-len(payload) % 8)

    for name, array in arrays.items():
        body = (
            element(6, struct.pack(order + "II", 6, 0))
            + element(5, struct.pack(order + "ii", *array.shape))
            + element(1, name.encode())
            + element(data_type, array.astype("u1" if data_type == 2 else order + "f8").tobytes(order="F"))
        )
        out.append(struct.pack(order + "II", 14, len(body)) + body)
    return b"".join(out)


@pytest.mark.parametrize("order", ["<", ">"])
def test_hand_written_mat5_in_either_byte_order(tmp_path: Path, order: str) -> None:
    arrays = npz_arrays(side=12)
    double = {
        "stimTrn": column_major_rows(arrays["train_images"]) / 255.0,
        "stimTest": column_major_rows(arrays["test_images"]),
        "fmriTrn": arrays["train_voxels"],
        "fmriTest": arrays["test_voxels"].astype(np.float64),
    }
    path = tmp_path / "hand.mat"
    path.write_bytes(mat5_bytes(double, order))
    dataset = load_dataset(path)
    np.testing.assert_allclose(dataset.train.images, arrays["train_images"] / 255.0, rtol=1e-6)
    np.testing.assert_allclose(dataset.test.voxels, arrays["test_voxels"])


def test_unknown_mat5_type_code_is_refused_not_a_crash(tmp_path: Path) -> None:
    # scipy's reader indexes a C table with this code unchecked; 253 used to kill the process.
    path = tmp_path / "damaged.mat"
    path.write_bytes(mat5_bytes({"X": np.zeros((2, 4))}, data_type=253))
    assert_refused(path, "damaged .mat file", "unknown type 253")


def test_compressed_mat_with_matlab_extras(tmp_path: Path) -> None:
    arrays = donders_arrays()
    arrays["funloc"] = np.array([np.zeros(3), "name"], dtype=object)
    arrays["masks"] = {"v1": np.ones((2, 2), dtype=np.uint8)}
    path = tmp_path / "69dataset.mat"
    scipy.io.savemat(path, arrays, do_compression=True)
    dataset = load_dataset(path)
    assert dataset.test.indices.tolist() == STANDARD_TEST
    np.testing.assert_array_equal(dataset.train.images[0], top_left_image(28).astype(np.float32) / 255)


def real_classes(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every numeric variable as MATLAB class double, as in both real 69 files (data.md)."""
    return {key: value.astype(np.float64) if value.dtype.kind in "iuf" else value for key, value in arrays.items()}


@pytest.mark.parametrize("layout", ["Donders", "DGMM"])
def test_real_files_double_classes_load_on_the_0_255_scale(tmp_path: Path, layout: str) -> None:
    # scipy.io.savemat of float64 0..255 images and float64 labels: what loadmat(mat_dtype=True) gives
    # for the real files, whose images are class double holding whole numbers 0..255.
    donders = donders_arrays()
    arrays = real_classes(donders if layout == "Donders" else dgmm_arrays(donders))
    image_key = "X" if layout == "Donders" else "stimTrn"
    assert arrays[image_key].dtype == np.float64 and arrays[image_key].max() == 255.0
    dataset = load_dataset(write(tmp_path / f"{layout}.mat", arrays))
    assert_valid(dataset)
    reference = load_dataset(write(tmp_path / f"{layout}-uint8.mat", dgmm_arrays(donders) if layout == "DGMM" else donders))
    np.testing.assert_array_equal(dataset.train.images, reference.train.images)
    np.testing.assert_array_equal(dataset.test.images, reference.test.images)
    np.testing.assert_array_equal(dataset.train.labels, reference.train.labels)
    assert dataset.test.indices.tolist() == STANDARD_TEST
    np.testing.assert_array_equal(dataset.train.images[0], top_left_image(28).astype(np.float32) / 255)


def test_compactly_stored_double_0_255_images_as_matlab_writes_them(tmp_path: Path) -> None:
    # MATLAB stores a whole-valued double variable as miUINT8 bytes; loadmat(mat_dtype=True) returns float64.
    arrays = npz_arrays(side=12)
    path = tmp_path / "compact.mat"
    images = mat5_bytes(
        {"stimTrn": column_major_rows(arrays["train_images"]), "stimTest": column_major_rows(arrays["train_images"][:6])},
        data_type=2,
    )
    voxels = mat5_bytes({"fmriTrn": arrays["train_voxels"], "fmriTest": arrays["train_voxels"][:6]})
    path.write_bytes(images + voxels[128:])
    dataset = load_dataset(path)
    np.testing.assert_array_equal(dataset.train.images, arrays["train_images"].astype(np.float32) / np.float32(255))


def test_whole_valued_double_images_keep_their_class(tmp_path: Path) -> None:
    # MATLAB stores whole-valued doubles as uint8; 0/1 double images must stay 0/1, not become 1/255.
    arrays = npz_arrays(side=12)
    binary = (arrays["train_images"] > 127).astype(np.float64)
    path = tmp_path / "binary.mat"
    images = mat5_bytes({"stimTrn": column_major_rows(binary), "stimTest": column_major_rows(binary)}, data_type=2)
    voxels = mat5_bytes({"fmriTrn": arrays["train_voxels"], "fmriTest": arrays["train_voxels"]})
    path.write_bytes(images + voxels[128:])
    dataset = load_dataset(path)
    np.testing.assert_array_equal(dataset.train.images, binary.astype(np.float32))
    assert dataset.train.images.max() == 1.0


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (np.zeros((20, 12), dtype=complex), "complex"),
        (np.array([np.zeros(12)] * 20 + ["x"], dtype=object), "cell"),
        ("some text", "char"),
        (np.ones((20, 12), dtype=bool), "bool"),
    ],
)
def test_non_numeric_mat_variables_in_used_keys(tmp_path: Path, value: object, fragment: str) -> None:
    arrays: dict[str, object] = dict(npz_arrays())
    arrays["train_voxels"] = value
    path = tmp_path / "odd.mat"
    scipy.io.savemat(path, arrays)
    assert_refused(path, "train_voxels", fragment)
