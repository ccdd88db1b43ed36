"""Tests of the reference decoders."""

import numpy as np
import pytest

from vaegan_jax import metrics
from vaegan_jax.baselines import LatentRidgeDecoder, MeanImageDecoder, RidgeDecoder
from vaegan_jax.data import synthetic
from vaegan_jax.data.dataset import VoxelScaler


def _linear_data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Voxels (n, 40) and images (n, 4, 4) that are an exact linear map of them, values inside [0, 1]."""
    rng = np.random.default_rng(seed)
    weights = rng.normal(0.0, 0.02, (40, 16))
    voxels = rng.normal(0.0, 1.0, (n, 40))
    images = (0.5 + voxels @ weights).reshape(n, 4, 4)
    return voxels, images, weights


def test_ridge_recovers_a_noise_free_linear_map() -> None:
    voxels, images, _ = _linear_data(300)
    decoder = RidgeDecoder().fit(voxels, images)
    assert decoder.alpha_ == pytest.approx(decoder.alphas.min())
    np.testing.assert_allclose(decoder.predict(voxels[:50]), images[:50], atol=1e-3)
    assert decoder.name == "ridge"


def test_ridge_generalises_to_new_trials_of_the_same_map() -> None:
    rng = np.random.default_rng(1)
    voxels, images, weights = _linear_data(300, seed=1)
    test_voxels = rng.normal(0.0, 1.0, (20, 40))
    expected = np.clip(0.5 + test_voxels @ weights, 0.0, 1.0).reshape(20, 4, 4)
    np.testing.assert_allclose(RidgeDecoder().fit(voxels, images).predict(test_voxels), expected, atol=1e-3)


def test_ridge_predictions_are_clipped_to_the_unit_interval() -> None:
    rng = np.random.default_rng(2)
    voxels = rng.normal(0.0, 1.0, (60, 30))
    images = (voxels[:, :9] * 2.0 + 0.5).reshape(60, 3, 3)
    prediction = RidgeDecoder().fit(voxels, images).predict(voxels * 10)
    assert prediction.shape == (60, 3, 3)
    assert prediction.min() >= 0.0 and prediction.max() <= 1.0
    assert prediction.min() == 0.0 and prediction.max() == 1.0


def test_ridge_alpha_is_chosen_inside_its_grid() -> None:
    rng = np.random.default_rng(3)
    voxels = rng.normal(0.0, 1.0, (100, 200))
    images = np.clip(0.3 + 0.1 * voxels[:, :16].reshape(100, 4, 4) + rng.normal(0.0, 0.2, (100, 4, 4)), 0, 1)
    decoder = RidgeDecoder().fit(voxels, images)
    assert decoder.alphas.min() < decoder.alpha_ < decoder.alphas.max()


def test_ridge_picks_more_shrinkage_for_noisier_targets() -> None:
    rng = np.random.default_rng(4)
    voxels = rng.normal(0.0, 1.0, (80, 100))
    signal = 0.05 * voxels[:, :4].reshape(80, 2, 2)
    clean = RidgeDecoder().fit(voxels, 0.5 + signal + rng.normal(0.0, 0.01, (80, 2, 2)))
    noisy = RidgeDecoder().fit(voxels, 0.5 + signal + rng.normal(0.0, 0.3, (80, 2, 2)))
    assert noisy.alpha_ > clean.alpha_


def test_mean_decoder_returns_the_mean_training_image() -> None:
    rng = np.random.default_rng(5)
    images = rng.uniform(0.0, 1.0, (12, 5, 5))
    decoder = MeanImageDecoder().fit(rng.normal(size=(12, 7)), images)
    prediction = decoder.predict(rng.normal(size=(3, 7)))
    assert prediction.shape == (3, 5, 5)
    np.testing.assert_allclose(prediction, np.repeat(images.mean(axis=0)[None], 3, axis=0))
    assert decoder.name == "mean-image"


def test_fit_rejects_mismatched_inputs() -> None:
    with pytest.raises(ValueError, match="voxel rows"):
        RidgeDecoder().fit(np.zeros((5, 3)), np.zeros((4, 2, 2)))
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        MeanImageDecoder().fit(np.zeros((5, 3)), np.zeros((5, 4)))


@pytest.fixture(scope="module")
def synthetic_fits() -> dict:
    """One default latent-ridge fit and one ridge fit on synthetic set 0, shared by the tests that need them."""
    dataset = synthetic.load_synthetic(0)
    scaler = VoxelScaler.fit(dataset.train.voxels)
    train_voxels = scaler.transform(dataset.train.voxels)
    return {
        "dataset": dataset,
        "test_voxels": scaler.transform(dataset.test.voxels),
        "latent": LatentRidgeDecoder().fit(train_voxels, dataset.train.images, dataset.extra_images),
        "ridge": RidgeDecoder().fit(train_voxels, dataset.train.images),
    }


def _tiny_config(seed: int = 0) -> LatentRidgeDecoder:
    # Batches larger than the 32 images of the tests below: every step then sees all of them.
    return LatentRidgeDecoder(latent_dim=4, epochs=3, hidden=(32,), batch_size=64, seed=seed)


def test_latent_ridge_beats_ridge_on_the_synthetic_test_split(synthetic_fits: dict) -> None:
    # Measured on seeds 0-2: PCC 0.849 vs 0.810, SSIM 0.730 vs 0.566; seed 0 alone 0.864/0.724 vs 0.814/0.557.
    dataset, test_voxels = synthetic_fits["dataset"], synthetic_fits["test_voxels"]
    latent = metrics.reconstruction_metrics(dataset.test.images, synthetic_fits["latent"].predict(test_voxels))
    ridge = metrics.reconstruction_metrics(dataset.test.images, synthetic_fits["ridge"].predict(test_voxels))
    assert latent["pcc"].mean() > ridge["pcc"].mean() + 0.02
    assert latent["ssim"].mean() > ridge["ssim"].mean() + 0.1
    assert synthetic_fits["latent"].name == "latent-ridge"


def test_latent_ridge_predicts_unit_interval_images_of_the_stimulus_shape(synthetic_fits: dict) -> None:
    decoder, test_voxels = synthetic_fits["latent"], synthetic_fits["test_voxels"]
    assert decoder.alphas.min() < decoder.alpha_ < decoder.alphas.max()
    # Voxels far outside the training range push the latent codes far out; the decoder must still clip.
    for voxels in (test_voxels, test_voxels * 100.0):
        prediction = decoder.predict(voxels)
        assert prediction.shape == (10, 28, 28)
        assert np.all(np.isfinite(prediction)) and prediction.min() >= 0.0 and prediction.max() <= 1.0


@pytest.mark.parametrize("make", [RidgeDecoder, MeanImageDecoder, lambda: _tiny_config()], ids=["ridge", "mean", "latent"])
def test_a_prediction_depends_on_its_own_trial_alone(make) -> None:
    # A decoder that learned from the trials it predicts (their mean or scale, a refit) would predict a
    # trial differently beside other trials, or after predicting far-off ones.
    rng = np.random.default_rng(9)
    voxels, images, extra = rng.normal(size=(12, 30)), rng.uniform(size=(12, 5, 5)), rng.uniform(size=(20, 5, 5))
    test, far = rng.normal(size=(6, 30)), rng.normal(50.0, 20.0, size=(6, 30))
    decoder = make().fit(voxels, images, extra)
    together = decoder.predict(test)
    alone = np.concatenate([decoder.predict(test[i : i + 1]) for i in range(len(test))])
    np.testing.assert_allclose(together, alone, atol=1e-6)
    np.testing.assert_allclose(decoder.predict(np.concatenate([test, far]))[: len(test)], together, atol=1e-6)
    np.testing.assert_array_equal(decoder.predict(test), together)


def test_latent_ridge_is_deterministic_for_a_seed() -> None:
    rng = np.random.default_rng(6)
    # 12 trials + 20 extras: the same 32-image pool as the next test, so the two share one compilation.
    voxels, images, extra = rng.normal(size=(12, 30)), rng.uniform(size=(12, 5, 5)), rng.uniform(size=(20, 5, 5))
    first = _tiny_config(seed=3).fit(voxels, images, extra).predict(voxels[:5])
    second = _tiny_config(seed=3).fit(voxels, images, extra).predict(voxels[:5])
    other = _tiny_config(seed=4).fit(voxels, images, extra).predict(voxels[:5])
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, other)


def test_latent_ridge_works_without_extra_images() -> None:
    rng = np.random.default_rng(7)
    voxels, images = rng.normal(size=(32, 30)), rng.uniform(size=(32, 5, 5))
    prediction = _tiny_config().fit(voxels, images).predict(voxels[:3])
    assert prediction.shape == (3, 5, 5)
    assert np.all(np.isfinite(prediction)) and prediction.min() >= 0.0 and prediction.max() <= 1.0


def test_latent_ridge_rejects_extra_images_of_another_size() -> None:
    rng = np.random.default_rng(8)
    with pytest.raises(ValueError, match="extra images"):
        _tiny_config().fit(rng.normal(size=(10, 4)), rng.uniform(size=(10, 5, 5)), rng.uniform(size=(3, 6, 6)))


@pytest.mark.parametrize("make", [RidgeDecoder, MeanImageDecoder, _tiny_config], ids=["ridge", "mean", "latent-ridge"])
def test_refitting_the_readout_forgets_the_voxels_fit_read(make) -> None:
    rng = np.random.default_rng(6)
    # The pool of the determinism test above: one compilation for both.
    voxels, images, extra = rng.normal(size=(12, 30)), rng.uniform(size=(12, 5, 5)), rng.uniform(size=(20, 5, 5))
    new_voxels, held_out = rng.normal(size=(8, 10)), rng.normal(size=(4, 10))
    first = make().fit(voxels, images, extra).fit_readout(new_voxels, images[:8]).predict(held_out)
    second = make().fit(-voxels, images, extra).fit_readout(new_voxels, images[:8]).predict(held_out)
    np.testing.assert_array_equal(first, second)
    if make is not _tiny_config:
        # Nothing of these decoders learns from images alone: a refit is a fit.
        np.testing.assert_allclose(first, make().fit(new_voxels, images[:8]).predict(held_out), atol=1e-12)
