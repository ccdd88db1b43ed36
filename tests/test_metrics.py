"""Tests of the evaluation measures (pixels in [0, 1], arrays (N, H, W))."""

import numpy as np
import pytest
from skimage.metrics import structural_similarity

from vaegan_jax import metrics


def _images(n: int = 6, side: int = 28, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.0, 1.0, (n, side, side))


def test_identical_images_score_perfectly() -> None:
    images = _images()
    np.testing.assert_allclose(metrics.pcc(images, images), 1.0)
    np.testing.assert_allclose(metrics.mse(images, images), 0.0)
    np.testing.assert_allclose(metrics.ssim(images, images), 1.0)
    np.testing.assert_allclose(metrics.ssim(images, images, "gaussian11"), 1.0)


def test_pcc_matches_numpy_corrcoef() -> None:
    true, rec = _images(seed=1), _images(seed=2)
    expected = [np.corrcoef(t.ravel(), r.ravel())[0, 1] for t, r in zip(true, rec)]
    np.testing.assert_allclose(metrics.pcc(true, rec), expected)


def test_pcc_of_a_constant_image_is_nan() -> None:
    true = _images(n=2)
    rec = true.copy()
    rec[1] = 0.5
    result = metrics.pcc(true, rec)
    assert result[0] == pytest.approx(1.0) and np.isnan(result[1])


def test_mse_by_hand() -> None:
    true = np.zeros((2, 2, 2))
    rec = np.array([[[1.0, 0.0], [0.0, 0.0]], [[0.5, 0.5], [0.5, 0.5]]])
    np.testing.assert_allclose(metrics.mse(true, rec), [0.25, 0.25])


@pytest.mark.parametrize(
    ("window", "options"),
    [
        ("uniform7", {}),
        ("gaussian11", {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False}),
    ],
)
def test_ssim_equals_scikit_image(window: str, options: dict) -> None:
    true, rec = _images(seed=3), _images(seed=4)
    rec = 0.5 * true + 0.5 * rec
    expected = [structural_similarity(t, r, data_range=1.0, **options) for t, r in zip(true, rec)]
    np.testing.assert_allclose(metrics.ssim(true, rec, window), expected)


def test_unknown_ssim_window_raises() -> None:
    with pytest.raises(ValueError, match="window"):
        metrics.ssim(_images(), _images(), "box3")


def test_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="shape"):
        metrics.mse(_images(n=3), _images(n=4))
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        metrics.pcc(np.zeros((3, 784)), np.zeros((3, 784)))


def test_identification_is_perfect_when_reconstructions_are_the_stimuli() -> None:
    images = _images(n=10)
    np.testing.assert_allclose(metrics.identification_accuracy(images, images), 1.0)
    np.testing.assert_allclose(metrics.identification_accuracy(images, images, n_way=5), 1.0)


def test_identification_is_zero_when_each_reconstruction_shows_another_stimulus() -> None:
    # Two stimuli, each reconstruction an exact copy of the other one: every comparison fails.
    images = _images(n=2)
    rec = images[[1, 0]]
    np.testing.assert_allclose(metrics.identification_accuracy(images, rec), 0.0)


def test_two_way_identification_counts_ordered_pairs() -> None:
    # Three stimuli; reconstruction 0 is exactly stimulus 1, so it beats neither other stimulus (0/2);
    # reconstructions 1 and 2 are their own stimuli (2/2 each).
    images = _images(n=3, seed=5)
    rec = images[[1, 1, 2]]
    np.testing.assert_allclose(metrics.identification_accuracy(images, rec), [0.0, 1.0, 1.0])


def test_n_way_identification_is_the_exact_mean_over_distractor_sets() -> None:
    # Reconstruction 0 beats exactly 2 of the 4 other stimuli: it wins 3-way against C(2,2)/C(4,2) = 1/6
    # of the distractor pairs. Checked against brute force over all pairs.
    rng = np.random.default_rng(6)
    images = rng.uniform(0.0, 1.0, (5, 8, 8))
    rec = images + rng.normal(0.0, 1.0, images.shape)
    corr = np.corrcoef(rec.reshape(5, -1), images.reshape(5, -1))[:5, 5:]
    expected = []
    for i in range(5):
        others = [j for j in range(5) if j != i]
        wins = [corr[i, i] > max(corr[i, a], corr[i, b]) for a_pos, a in enumerate(others) for b in others[a_pos + 1 :]]
        expected.append(np.mean(wins))
    np.testing.assert_allclose(metrics.identification_accuracy(images, rec, n_way=3), expected)


def test_n_way_raises_when_too_few_images() -> None:
    images = _images(n=4)
    with pytest.raises(ValueError, match="at least 5"):
        metrics.identification_accuracy(images, images, n_way=5)
    with pytest.raises(ValueError, match="n_way >= 2"):
        metrics.identification_accuracy(images, images, n_way=1)


def test_reconstruction_metrics_keys_and_shapes() -> None:
    true, rec = _images(n=6, seed=7), _images(n=6, seed=8)
    result = metrics.reconstruction_metrics(true, rec, n_ways=(2, 5, 10))
    assert set(result) == {"pcc", "mse", "ssim", "ssim_gaussian11", "ident_2way", "ident_5way"}
    assert all(values.shape == (6,) for values in result.values())
    np.testing.assert_allclose(result["ssim"], metrics.ssim(true, rec))


def test_summarize_gives_plain_floats_and_a_bracketing_interval() -> None:
    values = np.random.default_rng(9).normal(0.8, 0.05, 10)
    summary = metrics.summarize(values, n_boot=500, seed=1)
    assert summary["mean"] == pytest.approx(values.mean())
    assert summary["sd"] == pytest.approx(values.std(ddof=1))
    low, high = summary["ci95"]
    assert all(type(x) is float for x in (summary["mean"], summary["sd"], low, high))
    assert low < summary["mean"] < high
    assert summary == metrics.summarize(values, n_boot=500, seed=1)
