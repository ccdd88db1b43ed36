"""Configuration: presets, `--set` overrides and the values no run can use."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from vaegan_jax import config as config_lib
from vaegan_jax.config import Config, InferenceConfig
from vaegan_jax.errors import ConfigError


@pytest.mark.parametrize("assignment, message", [
    ("train.split_seed=-1", "train.split_seed must be non-negative"),
    ("train.val_trials=-2", "train.val_trials must be non-negative"),
    ("model.image_size=-28", "model.image_size must be non-negative"),
    ("model.latent_dim=0", "model.latent_dim must be at least 1"),
    ("model.generator_features=16,0", "model.generator_features must be at least 1"),
    ("model.discriminator_strides=0,2", "model.discriminator_strides must be at least 1"),
    ("optim.lr_decay_steps=0", "optim.lr_decay_steps must be at least 1"),
    ("inference.temperature=nan", "inference.temperature must be a finite number"),
    ("loss.kl_candidates=4,inf", "loss.kl_candidates must be a finite number"),
    ("train.batch_size=abc", "expected an integer"),
    ("train.epochs=1,x,2", "expected comma-separated integers"),
])
def test_counts_and_sizes_no_run_can_use_are_refused(tiny_config: Config, assignment: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_lib.override(tiny_config, [assignment])


@pytest.mark.parametrize("name", sorted(config_lib.PRESETS))
def test_every_preset_is_valid(name: str) -> None:
    config_lib.validate(config_lib.preset(name))


def test_a_config_written_with_the_retired_channels_field_still_loads(tiny_config: Config) -> None:
    # Runs of earlier versions recorded model.channels = 1, the only value the loaders ever produced.
    written = json.loads(json.dumps(config_lib.to_dict(tiny_config)))  # as a checkpoint stores it: tuples as lists
    written["model"]["channels"] = 1
    assert config_lib.from_dict(written) == tiny_config
    written["model"]["channels"] = 3
    with pytest.raises(ConfigError, match="unknown fields \\['channels'\\]"):
        config_lib.from_dict(written)


def test_decoding_before_the_runs_choice_is_the_posterior_mean() -> None:
    chosen_later = InferenceConfig(samples=32, temperature=-1.0, black_level=-1.0)
    assert (chosen_later.samples_in_use, chosen_later.temperature_in_use, chosen_later.black_level_in_use) == (0, 0.0, 0.0)
    assert InferenceConfig(samples=32, temperature=0.0).samples_in_use == 0
    sampling = InferenceConfig(samples=32, temperature=0.75, black_level=0.05)
    assert (sampling.samples_in_use, sampling.temperature_in_use, sampling.black_level_in_use) == (32, 0.75, 0.05)


_spec = importlib.util.spec_from_file_location("train_cli", Path(__file__).resolve().parent.parent / "train.py")
train_cli = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(train_cli)


@pytest.mark.parametrize("epochs, message", [
    ("", "expected three epoch counts"), ("abc", "expected three epoch counts"), ("1,2", "expected three epoch counts"),
    ("1,-2,3", "expected three epoch counts"), ("0,0,0", "at least one stage must train"),
])
def test_malformed_epochs_are_a_one_line_usage_error(epochs: str, message: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        train_cli.parse_args(["--epochs", epochs])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1 and "--epochs" in err[0] and message in err[0], err
    assert train_cli.parse_args(["--epochs", "20,0,0"]).epochs == "20,0,0"
