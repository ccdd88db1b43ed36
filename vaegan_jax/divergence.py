"""Telling where a training epoch went non-finite, from the per-member, per-step metrics it returned."""

from __future__ import annotations

import numpy as np

from vaegan_jax.steps import Stage


def first_non_finite(stage: Stage, epoch: int, metrics: dict[str, np.ndarray]) -> str | None:
    """Where epoch `epoch` of `stage` first went non-finite (member, step, networks, loss values), or None.

    `metrics` are an `EpochRunner`'s: losses with axes (member, step), finiteness flags with axis (member).
    """
    n_members = len(metrics[f"finite/{stage.learners[0]}"])
    for k in range(n_members):
        where = f"{stage.name} epoch {epoch}" + (f", member {k}" if n_members > 1 else "")
        losses = {learner: np.atleast_1d(metrics[f"loss/{learner}"][k]) for learner in stage.learners}
        n_steps = len(next(iter(losses.values())))
        for step in range(n_steps):
            # One network's blow-up reaches the others' losses within the same step, so name them all.
            bad = [f"{learner} ({float(values[step])})" for learner, values in losses.items()
                   if not np.isfinite(values[step])]
            if bad:
                return f"{where}, step {step + 1} of {n_steps}: non-finite loss of {', '.join(bad)}"
        broken = [learner for learner in stage.learners if not bool(metrics[f"finite/{learner}"][k])]
        if broken:
            return f"{where}: non-finite parameters or BatchNorm statistics of {', '.join(broken)}"
    return None
