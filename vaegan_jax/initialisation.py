"""Starting points for networks beyond random initialisation."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.linear_model import RidgeCV

from vaegan_jax.baselines import RIDGE_ALPHAS
from vaegan_jax.config import Config
from vaegan_jax.models import build_networks
from vaegan_jax.steps import States, stack_members, take_member


@dataclasses.dataclass(frozen=True)
class LatentReadout:
    """A linear map voxels -> latent means, and the variance it leaves about each latent dimension."""

    coef: np.ndarray
    intercept: np.ndarray
    residual_variance: np.ndarray

    def predict(self, voxels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mu, logvar) of the posterior the linear cognitive encoder would give these voxels."""
        mu = np.asarray(voxels, np.float64) @ self.coef + self.intercept
        return mu.astype(np.float32), np.broadcast_to(np.log(self.residual_variance), mu.shape).astype(np.float32)


def fit_latent_readout(voxels: np.ndarray, latent_means: np.ndarray) -> LatentReadout:
    """Ridge voxels -> latent means, one penalty chosen by leave-one-out cross-validation on these trials only."""
    ridge = RidgeCV(alphas=RIDGE_ALPHAS, store_cv_results=True).fit(
        np.asarray(voxels, np.float64), np.asarray(latent_means, np.float64)
    )
    residual_variance = ridge.cv_results_[:, :, list(RIDGE_ALPHAS).index(ridge.alpha_)].mean(axis=0)
    return LatentReadout(ridge.coef_.T, ridge.intercept_, residual_variance)


def visual_latent_means(config: Config, states: States, images: jax.Array) -> np.ndarray:
    """The visual encoder's posterior means of model-sized images (running BatchNorm statistics)."""
    visual = states["visual_encoder"]
    mu, _ = build_networks(config.model)["visual_encoder"].apply(
        {"params": visual.params, "batch_stats": visual.batch_stats}, images, train=False
    )
    return np.asarray(mu)


def ridge_initialised_cognitive_encoder(config: Config, states: States, voxels: jax.Array, images: jax.Array) -> States:
    """States whose linear cognitive encoder maps voxels to the visual encoder's posterior means by ridge.

    With 80-odd trials and thousands of voxels, a closed-form ridge solution (alpha by leave-one-out
    cross-validation on the fitting trials only) is a far better start for stage II than random weights;
    the log-variance head starts at the ridge's leave-one-out residual variance, the uncertainty that
    the voxels leave about each latent dimension.
    """
    readout = fit_latent_readout(np.asarray(voxels), visual_latent_means(config, states, images))
    params = jax.tree.map(lambda x: x, states["cognitive_encoder"].params)
    params["mu"] = {"kernel": jnp.asarray(readout.coef, jnp.float32), "bias": jnp.asarray(readout.intercept, jnp.float32)}
    params["logvar"] = {
        "kernel": jnp.zeros_like(params["logvar"]["kernel"]),
        "bias": jnp.asarray(np.log(readout.residual_variance), jnp.float32),
    }
    cognitive = states["cognitive_encoder"]
    return {**states, "cognitive_encoder": cognitive.replace(params=params, opt_state=cognitive.tx.init(params))}


def ridge_initialised_members(config: Config, states: States, voxels: jax.Array, images: jax.Array) -> States:
    """`ridge_initialised_cognitive_encoder` for every member of states stacked on a leading member axis."""
    return stack_members([
        ridge_initialised_cognitive_encoder(config, take_member(states, k), voxels, images)
        for k in range(len(states["cognitive_encoder"].step))
    ])
