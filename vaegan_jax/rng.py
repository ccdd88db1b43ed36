"""The random streams of a run, each named for what it draws.

Member k of an ensemble has one base key, seeded `train.seed + k` (`steps.member_keys`). Every stream folds
its own number into that key, so no two streams share a key, and an epoch's draws depend on nothing but
(member, stage, epoch): a resumed run draws what an uninterrupted one would.
"""

from __future__ import annotations

import jax

from vaegan_jax.steps import member_keys

__all__ = ["INIT", "VALIDATE", "member_keys", "init", "train", "validate", "decode"]

# Stream numbers: a stage's own number (1, 2, 3) trains it; 0 and VALIDATE are outside that range.
INIT = 0
VALIDATE = 2**31 - 1


def init(key: jax.Array) -> jax.Array:
    """One member's key for initialising its networks (what `steps.create_members` folds in)."""
    return jax.random.fold_in(key, INIT)


def train(keys: jax.Array, stage: int, epoch: int) -> jax.Array:
    """Each member's key for epoch `epoch` (0-based, within the stage) of stage `stage`: batches, noise, dropout."""
    return jax.vmap(lambda key: jax.random.fold_in(jax.random.fold_in(key, stage), epoch))(keys)


def validate(keys: jax.Array, epochs_done: int) -> jax.Array:
    """Each member's key for the validation losses after `epochs_done` epochs (their posterior and prior draws)."""
    return jax.vmap(lambda key: jax.random.fold_in(jax.random.fold_in(key, VALIDATE), epochs_done))(keys)


def decode(keys: jax.Array) -> jax.Array:
    """Each member's key for decoding fMRI by posterior draws: the base key itself, fixed for the run's life.

    Fixed, so a reconstruction is deterministic; and the base key, because the run's choice of decoding
    temperature (choices.py) scored the draws of exactly these keys.
    """
    return keys
