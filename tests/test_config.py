"""Configuration: presets, `--set` overrides and the values no run can use."""

from __future__ import annotations

import json

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
