"""The random streams of a run, each named for what it draws.

Member k of an ensemble has one base key, seeded `train.seed + k` (`member_keys`). Every stream folds its own
number into that key, so no two streams share a key, and an epoch's draws depend on nothing but (member, stage,
epoch): a resumed run draws what an uninterrupted one would.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from vaegan_jax.config import Config, member_count, prior_variants

__all__ = ["INIT", "VALIDATE", "DECODE", "AUGMENT", "member_keys", "init", "train", "augment", "validate", "decode"]

# Stream numbers folded into a member's base key: a stage's own number (1, 2, 3) trains it; INIT, VALIDATE and
# DECODE lie outside that range. No stream draws from the base key itself: under jax's partitionable threefry,
# fold_in(key, i) is split(key, n)[i] and shares its bits with key's own i-th random words.
INIT = 0
VALIDATE = 2**31 - 1
DECODE = 2**31 - 2
# What a training step's key folds in for its images' elastic distortion (train.elastic_augment): beyond the
# children that the step's own split (its noise, prior draws and dropout) hands out, for the same reason.
AUGMENT = 2**31 - 3


def member_keys(config: Config, stage: int = 3) -> jax.Array:
    """The base RNG key of each member in `stage` (default: the run's final members): member k is seeded
    `train.seed + k`, so stage I's members keep their keys when its snapshots join them; stage I's variants
    share their seed's key, so the variant a run keeps trains as a run with its KL weight fixed would."""
    offsets = jnp.arange(member_count(config, stage))
    if prior_variants(config, stage):
        offsets = offsets % config.train.ensemble
    return jax.vmap(jax.random.key)(config.train.seed + offsets)


def init(key: jax.Array) -> jax.Array:
    """One member's key for initialising its networks."""
    return jax.random.fold_in(key, INIT)


def train(keys: jax.Array, stage: int, epoch: int) -> jax.Array:
    """Each member's key for epoch `epoch` (0-based, within the stage) of stage `stage`: batches, noise, dropout."""
    return jax.vmap(lambda key: jax.random.fold_in(jax.random.fold_in(key, stage), epoch))(keys)


def augment(step_key: jax.Array) -> jax.Array:
    """A training step's key for its images' elastic distortion: folded, not split, so that the step's own draws
    stay what they are without augmentation."""
    return jax.random.fold_in(step_key, AUGMENT)


def validate(keys: jax.Array, epochs_done: int) -> jax.Array:
    """Each member's key for the validation losses after `epochs_done` epochs (their posterior and prior draws)."""
    return jax.vmap(lambda key: jax.random.fold_in(jax.random.fold_in(key, VALIDATE), epochs_done))(keys)


def decode(keys: jax.Array) -> jax.Array:
    """The key for decoding fMRI by posterior draws of one member's base key, or of each along a member axis.

    Fixed for the run's life, so a reconstruction is deterministic, and the same for the run's choice of decoding
    temperature (choices.py), which thus scores the draws that the run will decode with.
    """
    if keys.ndim:
        return jax.vmap(decode)(keys)
    return jax.random.fold_in(keys, DECODE)
