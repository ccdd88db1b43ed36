"""Starting points for networks beyond random initialisation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.linear_model import RidgeCV

from vaegan_jax.config import Config
from vaegan_jax.models import build_networks
from vaegan_jax.steps import States

RIDGE_ALPHAS = np.logspace(-1, 7, 33)


def ridge_initialised_cognitive_encoder(config: Config, states: States, voxels: jax.Array, images: jax.Array) -> States:
    """States whose linear cognitive encoder maps voxels to the visual encoder's posterior means by ridge.

    With 80-odd trials and thousands of voxels, a closed-form ridge solution (alpha by leave-one-out
    cross-validation on the fitting trials only) is a far better start for stage II than random weights;
    the log-variance head starts at the ridge's leave-one-out residual variance, the uncertainty that
    the voxels leave about each latent dimension.
    """
    visual = states["visual_encoder"]
    mu, _ = build_networks(config.model)["visual_encoder"].apply(
        {"params": visual.params, "batch_stats": visual.batch_stats}, images, train=False
    )
    ridge = RidgeCV(alphas=RIDGE_ALPHAS, store_cv_results=True).fit(
        np.asarray(voxels, np.float64), np.asarray(mu, np.float64)
    )
    residual_variance = ridge.cv_results_[:, :, list(RIDGE_ALPHAS).index(ridge.alpha_)].mean(axis=0)
    params = jax.tree.map(lambda x: x, states["cognitive_encoder"].params)
    params["mu"] = {"kernel": jnp.asarray(ridge.coef_.T, jnp.float32), "bias": jnp.asarray(ridge.intercept_, jnp.float32)}
    params["logvar"] = {
        "kernel": jnp.zeros_like(params["logvar"]["kernel"]),
        "bias": jnp.asarray(np.log(residual_variance), jnp.float32),
    }
    cognitive = states["cognitive_encoder"]
    return {**states, "cognitive_encoder": cognitive.replace(params=params, opt_state=cognitive.tx.init(params))}
