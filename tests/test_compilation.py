"""EpochRunner compiles its programs in the first epoch only: no recompilation as training goes on.

Both tests run stage II's runner: the code of every stage's, with two learners' programs to compile instead of
stage I's three (half the test's time).
"""

from pathlib import Path

import jax
import pytest

from vaegan_jax import config as config_lib
from vaegan_jax.config import Config
from vaegan_jax.data import Dataset
from vaegan_jax.sharding import place_members, replicate
from vaegan_jax.steps import STAGES, EpochRunner
from vaegan_jax.runs import RunPaths
from vaegan_jax.training import Trainer


def _trainer(tiny_config: Config, dataset: Dataset, tmp_path: Path, steps_per_call: int) -> Trainer:
    """The tiny preset on the small data set (four batches per epoch), writing nowhere yet."""
    config = config_lib.override(tiny_config, [f"train.steps_per_call={steps_per_call}"])
    return Trainer(config, dataset, RunPaths(tmp_path), progress=False)


def _run_epochs(trainer: Trainer, runner: EpochRunner, epochs: int) -> list[int]:
    """Train `epochs` epochs of stage II; the runner's compilation count after each."""
    states, counts = trainer.states, []
    for epoch in range(epochs):
        states, metrics = runner(states, trainer.arrays["paired"], jax.random.split(jax.random.key(epoch), 1))
        assert metrics["loss/discriminator"].shape == (1, runner.n_batches)
        counts.append(runner.compilations())
    return counts


@pytest.mark.slow
def test_chunked_epochs_compile_full_chunks_and_remainder_once(
    tiny_config: Config, dataset: Dataset, tmp_path: Path
) -> None:
    trainer = _trainer(tiny_config, dataset, tmp_path, steps_per_call=3)
    runner = trainer.epoch_runners[2]
    assert runner.chunk == 3 and runner.n_batches % runner.chunk != 0, "the data should leave a remainder chunk"
    assert _run_epochs(trainer, runner, 3) == [2, 2, 2]


@pytest.mark.slow
def test_whole_epoch_scan_compiles_once(
    tiny_config: Config, dataset: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trainer = _trainer(tiny_config, dataset, tmp_path, steps_per_call=0)
    # steps_per_call 0 means "whole epoch" on accelerators; pretend to be one while the runner is built.
    with monkeypatch.context() as patch:
        patch.setattr(jax, "default_backend", lambda: "gpu")
        runner = EpochRunner(trainer.config, STAGES[1], len(trainer.arrays["paired"]["image"]))
    assert runner.chunk == runner.n_batches
    assert _run_epochs(trainer, runner, 3) == [1, 1, 1]


def test_a_one_step_chunk_runs_its_step_without_a_loop(tiny_config: Config, dataset: Dataset, tmp_path: Path) -> None:
    # A scan of one step compiles to a while loop even unrolled, and on the CPU a convolution's gradient runs
    # about 9x slower in one: `tiny` runs a step per call, and so does the remainder of an epoch of 4k + 1 batches.
    trainer = _trainer(tiny_config, dataset, tmp_path, steps_per_call=1)
    runner = trainer.epoch_runners[2]
    keys = jax.random.split(jax.random.key(0), 1)
    states, (order, step_keys), varying = place_members((trainer.states, runner.plan(keys), runner.member_loss), runner.mesh)
    data = replicate(trainer.arrays["paired"], runner.mesh)
    with jax.set_mesh(runner.mesh):
        program = str(jax.make_jaxpr(runner.run_chunk)(states, data, order[:, :1], step_keys[:, :1], varying))
        two_steps = str(jax.make_jaxpr(runner.run_chunk)(states, data, order[:, :2], step_keys[:, :2], varying))
    assert "scan[" not in program and "scan[" in two_steps
