"""Shared fixtures: a small data set on disk, the tiny configuration, trained runs, and a compilation cache.

Every training test uses the same configuration and data shapes, so XLA compiles each program once; the
persistent compilation cache (also inherited by the `train.py` subprocesses) makes the repeats cheap. The
cache is this session's own and is deleted at its end, so what ran before never changes what a test sees.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

# Before jax is imported anywhere: a run costs seconds when its programs come from the cache, minutes when not.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="vaegan_jax-test-xla-cache-")
    atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
# The tests compile many small programs and run few steps of each: XLA's backend optimisations cost more
# compile time than they save (a tiny ensemble run: 63 s at the default level, 40 s without them; the suite:
# 16 min 11 s, 13 min 01 s). A test that needs optimised programs runs them in a fresh process with
# `xla_environment(optimised=True)`; the flag is part of the compilation cache's key, so the two levels
# never share a cached program. pytest-xdist's workers inherit the flag from the main process.
QUICK_COMPILE = "--xla_backend_optimization_level=0"
if QUICK_COMPILE not in os.environ.get("XLA_FLAGS", "").split():
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {QUICK_COMPILE}".strip()

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from tensorboard.backend.event_processing import event_accumulator  # noqa: E402
from xdist.scheduler import LoadFileScheduling  # noqa: E402

from vaegan_jax import config as config_lib  # noqa: E402
from vaegan_jax.checkpoints import CheckpointStore  # noqa: E402
from vaegan_jax.config import Config  # noqa: E402
from vaegan_jax.data import Dataset, load_dataset, load_synthetic  # noqa: E402
from vaegan_jax.data.origin import DataOrigin  # noqa: E402
from vaegan_jax.runs import RunPaths  # noqa: E402
from vaegan_jax.training import Trainer, run_training  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
N_VOXELS = 16
# 24 training trials: 4 carved off for validation leave 20, four batches of 5 (one compiled step, called four times).
N_TRAIN, N_TEST = 24, 4
TINY_ARGS = ["--preset", "tiny", "--no-extra-images", "--no-progress"]


def draw_shapes(rng: np.random.Generator, labels: np.ndarray, side: int = 28) -> np.ndarray:
    """(N, side, side) uint8 images: a blurred ring with a stroke, a "6" for label 1 and a "9" (the "6"
    turned upside down) otherwise, each with its own position, size, width and slant."""
    y, x = np.mgrid[:side, :side] + 0.5
    images = []
    for label in labels:
        cy, cx = side * 0.62 + rng.normal(0.0, 1.0), side / 2 + rng.normal(0.0, 1.0)
        radius, width = side * 0.18 + rng.normal(0.0, 0.5), rng.uniform(1.0, 1.6)
        ring = np.exp(-((np.hypot(y - cy, x - cx) - radius) ** 2) / (2 * width**2))
        stroke_x = cx - radius + (cy - y) * rng.uniform(0.0, 0.3)
        stroke = np.exp(-((x - stroke_x) ** 2) / (2 * width**2)) * (y < cy) * (y > side * 0.15)
        image = np.clip(ring + stroke, 0.0, 1.0)
        images.append(image if label == 1 else image[::-1, ::-1])
    return np.rint(np.array(images) * 255).astype(np.uint8)


def write_small_dataset(
    path: Path, seed: int = 0, n_train: int = N_TRAIN, n_test: int = N_TEST, n_voxels: int = N_VOXELS, n_extra: int = 0
) -> Path:
    """An .npz of drawn sixes and nines with voxels that carry a noisy linear code of the image, and
    `n_extra` image-only extras when asked."""
    rng = np.random.default_rng(seed)
    labels = np.tile(np.array([1, 2]), (n_train + n_test) // 2)
    images = draw_shapes(rng, labels)
    code = rng.normal(size=(images[0].size, n_voxels)) / images[0].size
    voxels = images.reshape(len(images), -1) / 255.0 @ code + rng.normal(0.0, 0.01, (len(images), n_voxels))
    extras = {"extra_images": draw_shapes(rng, np.tile(np.array([1, 2]), n_extra // 2))} if n_extra else {}
    np.savez(
        path,
        train_images=images[:n_train], train_voxels=voxels[:n_train], train_labels=labels[:n_train],
        test_images=images[n_train:], test_voxels=voxels[n_train:], test_labels=labels[n_train:], **extras,
    )
    return path


# A session fixture is built once per pytest-xdist worker: the files that share a trained run go to one
# worker, so that the run trains once; any other file goes whole to one worker, as with `--dist loadfile`.
# (xdist_group marks cannot do it: pytest 9 reports node ids without the group that `--dist loadgroup` reads.)
SHARED_RUNS = {
    "test_reliability.py": "trained", "test_steps.py": "trained", "test_training.py": "trained",
    "test_eval.py": "run_dir", "test_trained_run.py": "run_dir",
}


class SharedRunScheduling(LoadFileScheduling):
    """pytest-xdist's loadfile scheduling, with the files of each SHARED_RUNS group in one scope."""

    def _split_scope(self, nodeid: str) -> str:
        file = super()._split_scope(nodeid)
        return SHARED_RUNS.get(Path(file).name, file)


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> SharedRunScheduling:
    """The test suite's scheduling whenever it runs on pytest-xdist workers."""
    return SharedRunScheduling(config, log)


@pytest.fixture(scope="session")
def data_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small data set as a file that `train.py --data` reads."""
    return write_small_dataset(tmp_path_factory.mktemp("data") / "small.npz")


@pytest.fixture(scope="session")
def dataset(data_file: Path) -> Dataset:
    """The small data set, loaded."""
    return load_dataset(data_file)


@pytest.fixture(scope="session")
def tiny_config() -> Config:
    """The tiny preset as train.py runs it with TINY_ARGS: epochs (2, 2, 1), a checkpoint every epoch."""
    return config_lib.override(config_lib.preset("tiny"), ["train.use_extra_images=false"])


def run_script(script: str, args: list[str], **kwargs: Any) -> subprocess.CompletedProcess:
    """`python SCRIPT ARGS` in a fresh process, from the repository root."""
    return subprocess.run(
        [sys.executable, script, *args], cwd=REPO, capture_output=True, text=True, timeout=300, **kwargs
    )


def xla_environment(devices: int = 1, optimised: bool = False) -> dict[str, str]:
    """An environment in which jax on the CPU sees `devices` devices and XLA compiles at its default
    optimisation level when `optimised`, at the tests' quick level otherwise."""
    flags = [flag for flag in os.environ["XLA_FLAGS"].split() if not (optimised and flag == QUICK_COMPILE)]
    return {**os.environ, "XLA_FLAGS": " ".join([*flags, f"--xla_force_host_platform_device_count={devices}"])}


def run_processes(
    script: str, args: list[str], n_processes: int, devices_each: int,
    extra_args: Callable[[int], list[str]] = lambda process_id: [],
) -> list[subprocess.CompletedProcess]:
    """`python SCRIPT ARGS` as the `n_processes` processes of one multi-process run on localhost (process i
    also gets `extra_args(i)`), in `xla_environment(devices_each)`."""
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        port = probe.getsockname()[1]
    flags = ["--coordinator", f"localhost:{port}", "--num-processes", str(n_processes)]
    with concurrent.futures.ThreadPoolExecutor(n_processes) as pool:
        return list(pool.map(
            lambda i: run_script(script, [*args, *extra_args(i), *flags, "--process-id", str(i)],
                                 env=xla_environment(devices_each)),
            range(n_processes),
        ))


def run_train_py(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess:
    """`python train.py ARGS` in a fresh process, from the repository root."""
    return run_script("train.py", args, **kwargs)


def checkpoint_arrays(run: Path, template: Any, step: int | None = None) -> dict[str, np.ndarray]:
    """The arrays of a run's checkpoint `step` (default: the newest) as flat {path: numpy array}."""
    store = CheckpointStore(RunPaths(run).checkpoints, read_only=True)
    try:
        step = store.latest_step() if step is None else step
        assert step is not None, f"{run}: no checkpoint"
        arrays, _ = store.restore(step, template)
    finally:
        store.close()
    return flat_arrays(arrays)


def tensorboard_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of a run's TensorBoard folder as TensorBoard's own reader gives it: {tag: [(step, value)]}."""
    accumulator = event_accumulator.EventAccumulator(str(folder), size_guidance={event_accumulator.SCALARS: 0})
    accumulator.Reload()
    return {tag: [(event.step, event.value) for event in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}


def flat_arrays(tree: Any) -> dict[str, np.ndarray]:
    """Every array leaf of a pytree as numpy, keyed by its path (typed PRNG keys as their raw data)."""
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    out = {}
    for path, leaf in leaves:
        if hasattr(leaf, "dtype") and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        out[jax.tree_util.keystr(path)] = np.asarray(leaf)
    return out


def leaves(tree: Any) -> list[np.ndarray]:
    """A pytree's array leaves as numpy, in tree order."""
    return [np.asarray(leaf) for leaf in jax.tree.leaves(tree)]


def assert_trees_identical(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    """Same keys, dtypes, shapes and bit-for-bit values; a NaN equals nothing, so two diverged runs differ."""
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        assert a[key].shape == b[key].shape, key
        assert np.array_equal(a[key], b[key]), key


@pytest.fixture(scope="session")
def trained(tiny_config: Config, dataset: Dataset, tmp_path_factory: pytest.TempPathFactory) -> Trainer:
    """A whole tiny three-stage run, trained in this process once per session."""
    paths = RunPaths(tmp_path_factory.mktemp("trained") / "run")
    paths.root.mkdir()
    trainer = Trainer(tiny_config, dataset, paths, progress=False, log=lambda message: None)
    trainer.train()
    return trainer


@pytest.fixture(scope="session")
def train_py_run(data_file: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """The same run through `python train.py` in a fresh process, which succeeded: (run folder, completed process)."""
    out = tmp_path_factory.mktemp("train_py") / "run"
    done = run_train_py([*TINY_ARGS, "--data", str(data_file), "--out", str(out)])
    assert done.returncode == 0, done.stderr
    return out, done


@pytest.fixture(scope="session")
def run_dir(tiny_config: Config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny three-stage run (an epoch per stage) on the embedded synthetic set, trained once per session.

    The synthetic set, not conftest's small file: its ten test trials allow 5- and 10-way identification.
    The cognitive encoder reads 300 selected voxels, so evaluation has to rebuild the selection.
    """
    config = config_lib.override(tiny_config, ["train.epochs=1,1,1", "train.selected_voxels=300"])
    out = tmp_path_factory.mktemp("eval") / "run"
    run_training(config, load_synthetic(), out, progress=False, log=lambda message: None,
                 origin=DataOrigin(synthetic_seed=0))
    return out


@pytest.fixture(scope="session")
def report(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """The run evaluated by `python eval.py` in a fresh process, with the default split and baselines."""
    out = tmp_path_factory.mktemp("report") / "eval"
    done = subprocess.run(
        [sys.executable, "eval.py", "--ckpt", str(run_dir), "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    return out, done


@pytest.fixture
def one_line_error(capsys: pytest.CaptureFixture) -> Callable[[], str]:
    """Reads what a failed `cli.run` printed: asserts stderr is one `error: ...` line and returns it."""

    def read() -> str:
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        assert err.startswith("error: "), err
        return err

    return read
