"""Starting points for networks beyond random initialisation."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.covariance import ledoit_wolf
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


def fit_latent_readout(
    voxels: np.ndarray, latent_means: np.ndarray, prior_latents: np.ndarray | None = None, encoding_weight: float = 0.0
) -> LatentReadout:
    """Ridge voxels -> latent means, one penalty chosen by leave-one-out cross-validation on these trials only;
    with `encoding_weight` w > 0, its map is mixed (1 - w : w) with the inverted encoding model's
    (`encoding_readout`, the prior from `prior_latents`). The variance is the ridge's leave-one-out residual variance."""
    voxels, latent_means = np.asarray(voxels, np.float64), np.asarray(latent_means, np.float64)
    ridge = RidgeCV(alphas=RIDGE_ALPHAS, store_cv_results=True).fit(voxels, latent_means)
    residual_variance = ridge.cv_results_[:, :, list(RIDGE_ALPHAS).index(ridge.alpha_)].mean(axis=0)
    coef, intercept = ridge.coef_.T, ridge.intercept_
    if encoding_weight > 0:
        prior = latent_means if prior_latents is None else np.asarray(prior_latents, np.float64)
        inverted = encoding_readout(voxels, latent_means, prior)
        coef = (1 - encoding_weight) * coef + encoding_weight * inverted.coef
        intercept = (1 - encoding_weight) * intercept + encoding_weight * inverted.intercept
    return LatentReadout(coef, intercept, residual_variance)


def encoding_readout(voxels: np.ndarray, latent_means: np.ndarray, prior_latents: np.ndarray) -> LatentReadout:
    """The posterior mean of the latent under a linear encoding model, as a linear map of the voxels.

    Each voxel is ridge-regressed on the latent means (its own penalty by leave-one-out), the voxels' noise
    covariance is the Ledoit-Wolf estimate from those leave-one-out residuals, and the latent's prior is the
    Gaussian of `prior_latents` (the visual latents of stage I's image-only extras, far more than the trials;
    its covariance Ledoit-Wolf too, so that a few latents still give one). Both are Gaussian, so the posterior
    mean is linear in the voxels; its variance is returned on the diagonal. Alone it decodes worse than the
    ridge map (its voxel weights are fitted on 80-odd trials and then trusted), but its errors differ from the
    ridge map's: mixed, the two did better than either (docs/experiments.md).
    """
    weights, bias, residuals = _encoding_model(latent_means, voxels)
    noise_precision = np.linalg.inv(ledoit_wolf(residuals)[0])
    prior_mean = prior_latents.mean(axis=0)
    prior_precision = np.linalg.inv(ledoit_wolf(prior_latents)[0])
    posterior_covariance = np.linalg.inv(weights @ noise_precision @ weights.T + prior_precision)
    coef = noise_precision @ weights.T @ posterior_covariance
    intercept = (prior_mean @ prior_precision - bias @ noise_precision @ weights.T) @ posterior_covariance
    return LatentReadout(coef, intercept, np.diag(posterior_covariance))


def _encoding_model(latents: np.ndarray, voxels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ridge voxels ~ latents, each voxel's penalty the one of RIDGE_ALPHAS with the least leave-one-out error:
    the weights (latent dims x voxels), the intercepts and the leave-one-out residuals (trials x voxels)."""
    centred_latents, centred_voxels = latents - latents.mean(axis=0), voxels - voxels.mean(axis=0)
    n, dims = centred_latents.shape
    best_error = np.full(voxels.shape[1], np.inf)
    weights, residuals = np.zeros((dims, voxels.shape[1])), np.zeros_like(voxels)
    for alpha in RIDGE_ALPHAS:
        solve = np.linalg.solve(centred_latents.T @ centred_latents + alpha * np.eye(dims), centred_latents.T)
        leverage = np.einsum("nd,dn->n", centred_latents, solve) + 1.0 / n
        coef = solve @ centred_voxels
        loo = (centred_voxels - centred_latents @ coef) / (1.0 - leverage)[:, None]
        error = np.mean(loo**2, axis=0)
        better = error < best_error
        best_error[better], weights[:, better], residuals[:, better] = error[better], coef[:, better], loo[:, better]
    return weights, voxels.mean(axis=0) - latents.mean(axis=0) @ weights, residuals


def visual_latent_means(config: Config, states: States, images: jax.Array, chunk: int = 512) -> np.ndarray:
    """The visual encoder's posterior means of model-sized images (running BatchNorm statistics), `chunk` at a time."""
    visual = states["visual_encoder"]
    encoder = build_networks(config.model)["visual_encoder"]
    variables = {"params": visual.params, "batch_stats": visual.batch_stats}
    return np.concatenate([
        np.asarray(encoder.apply(variables, images[start:start + chunk], train=False)[0])
        for start in range(0, len(images), chunk)
    ])


def ridge_initialised_cognitive_encoder(
    config: Config, states: States, voxels: jax.Array, images: jax.Array, prior_images: jax.Array | None = None
) -> States:
    """States whose linear cognitive encoder maps voxels to the visual encoder's posterior means by ridge.

    With 80-odd trials and thousands of voxels, a closed-form ridge solution (alpha by leave-one-out
    cross-validation on the fitting trials only) is a far better start for stage II than random weights;
    the log-variance head starts at the ridge's leave-one-out residual variance, the uncertainty that
    the voxels leave about each latent dimension. With `train.readout_mix` w > 0 the map is mixed with the
    inverted encoding model's, whose prior is the visual latents of `prior_images` (model-sized: the images
    stage I learnt from; by default the trials' own).
    """
    latents = visual_latent_means(config, states, images)
    mix = config.train.readout_mix
    prior = visual_latent_means(config, states, prior_images) if mix > 0 and prior_images is not None else None
    readout = fit_latent_readout(np.asarray(voxels), latents, prior, mix)
    params = jax.tree.map(lambda x: x, states["cognitive_encoder"].params)
    params["mu"] = {"kernel": jnp.asarray(readout.coef, jnp.float32), "bias": jnp.asarray(readout.intercept, jnp.float32)}
    params["logvar"] = {
        "kernel": jnp.zeros_like(params["logvar"]["kernel"]),
        "bias": jnp.asarray(np.log(readout.residual_variance), jnp.float32),
    }
    cognitive = states["cognitive_encoder"]
    return {**states, "cognitive_encoder": cognitive.replace(params=params, opt_state=cognitive.tx.init(params))}


def ridge_initialised_members(
    config: Config, states: States, voxels: jax.Array, images: jax.Array, prior_images: jax.Array | None = None
) -> States:
    """`ridge_initialised_cognitive_encoder` for every member of states stacked on a leading member axis."""
    return stack_members([
        ridge_initialised_cognitive_encoder(config, take_member(states, k), voxels, images, prior_images)
        for k in range(len(states["cognitive_encoder"].step))
    ])
