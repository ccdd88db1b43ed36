"""Tests of the evaluation measures (pixels in [0, 1], arrays (N, H, W))."""

import itertools

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from vaegan_jax import metrics

GAUSSIAN_11 = np.outer(*2 * [np.exp(-np.arange(-5, 6) ** 2 / (2 * 1.5**2))])
UNIFORM_7 = np.ones((7, 7))


def _images(n: int = 6, side: int = 28, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.0, 1.0, (n, side, side))


def wang_ssim(x: np.ndarray, y: np.ndarray, window: np.ndarray, sample_covariance: bool) -> float:
    """Mean SSIM over every window position inside the image, written from Wang et al. (2004), eqs. 13-15.

    Window-weighted means, variances and covariance, C1 = (0.01 L)^2 and C2 = (0.03 L)^2 with L = 1;
    `sample_covariance` scales the second moments by n / (n - 1) for an n-pixel window.
    """
    w = window / window.sum()
    patches_x, patches_y = sliding_window_view(x, window.shape), sliding_window_view(y, window.shape)

    def weighted(a: np.ndarray) -> np.ndarray:
        return np.einsum("ijkl,kl->ij", a, w)

    mu_x, mu_y = weighted(patches_x), weighted(patches_y)
    dx, dy = patches_x - mu_x[..., None, None], patches_y - mu_y[..., None, None]
    scale = window.size / (window.size - 1) if sample_covariance else 1.0
    var_x, var_y, cov = (scale * weighted(a * b) for a, b in ((dx, dx), (dy, dy), (dx, dy)))
    c1, c2 = 0.01**2, 0.03**2
    return float(np.mean((2 * mu_x * mu_y + c1) * (2 * cov + c2) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))))


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
    ("window", "weights", "sample_covariance"),
    # The Gaussian window is the paper's (11x11, sigma 1.5, population moments); the uniform one
    # scikit-image's default (7x7, sample moments).
    [("uniform7", UNIFORM_7, True), ("gaussian11", GAUSSIAN_11, False)],
)
def test_ssim_equals_the_definition_of_wang_et_al(window: str, weights: np.ndarray, sample_covariance: bool) -> None:
    true, rec = _images(seed=3), _images(seed=4)
    rec = 0.5 * true + 0.5 * rec
    expected = [wang_ssim(t, r, weights, sample_covariance) for t, r in zip(true, rec)]
    np.testing.assert_allclose(metrics.ssim(true, rec, window), expected, rtol=0, atol=1e-9)


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


def test_ties_and_a_constant_reconstruction_count_as_failures() -> None:
    # Stimuli 2 and 3 are the same image, so reconstructions 2 and 3 correlate exactly as well with the
    # other one's stimulus as with their own: a tie, which is no success. Reconstruction 0 is constant.
    images = _images(n=4, seed=10)
    images[3] = images[2]
    rec = images + np.random.default_rng(11).normal(0.0, 0.05, images.shape)
    rec[0] = 0.5
    # Reconstructions 1-3 beat the two stimuli they do not show: 2 of 3 others, or 2 of 2 for number 1.
    np.testing.assert_allclose(metrics.identification_accuracy(images, rec), [0.0, 1.0, 2 / 3, 2 / 3])
    # 3-way: the sets of two others it beats both of, out of C(3, 2) = 3.
    np.testing.assert_allclose(metrics.identification_accuracy(images, rec, n_way=3), [0.0, 1.0, 1 / 3, 1 / 3])


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
    np.testing.assert_allclose(result["pcc"], [np.corrcoef(t.ravel(), r.ravel())[0, 1] for t, r in zip(true, rec)])
    np.testing.assert_allclose(result["ssim"], [wang_ssim(t, r, UNIFORM_7, True) for t, r in zip(true, rec)], atol=1e-9)
    np.testing.assert_allclose(result["ssim_gaussian11"], [wang_ssim(t, r, GAUSSIAN_11, False) for t, r in zip(true, rec)],
                               atol=1e-9)


def test_summarize_gives_plain_floats_and_a_bracketing_interval() -> None:
    values = np.random.default_rng(9).normal(0.8, 0.05, 10)
    summary = metrics.summarize(values, n_boot=500, seed=1)
    assert summary["mean"] == pytest.approx(values.mean())
    assert summary["sd"] == pytest.approx(values.std(ddof=1))
    low, high = summary["ci95"]
    assert all(type(x) is float for x in (summary["mean"], summary["sd"], low, high))
    assert low < summary["mean"] < high
    assert summary == metrics.summarize(values, n_boot=500, seed=1)


def test_the_bootstrap_interval_is_the_percentile_interval_of_the_exact_bootstrap_distribution() -> None:
    # Six values have 6^6 equally likely resamples: their means' 2.5th and 97.5th percentiles are the exact
    # percentile-bootstrap interval. 200,000 random resamples land within 0.02 standard errors of it (the
    # distribution is a lattice of a few hundred atoms); a 90% interval would be 0.26 off.
    values = np.array([0.12, 0.31, 0.47, 0.58, 0.83, 1.35])
    resample_means = np.array(list(itertools.product(values, repeat=len(values)))).mean(axis=1)
    exact = np.percentile(resample_means, [2.5, 97.5])
    standard_error = values.std() / np.sqrt(len(values))
    np.testing.assert_allclose(metrics.summarize(values, n_boot=200_000, seed=0)["ci95"], exact,
                               atol=0.05 * standard_error)


def test_a_paired_difference_is_the_mean_difference_and_its_standard_error() -> None:
    first, second = np.array([0.9, 0.8, 0.7, 0.6]), np.array([0.8, 0.8, 0.5, 0.7])
    mean, standard_error = metrics.paired_difference(first, second)
    assert mean == pytest.approx(0.05)
    assert standard_error == pytest.approx(np.std([0.1, 0.0, 0.2, -0.1], ddof=1) / 2.0)
    with pytest.raises(ValueError, match="at least 2"):
        metrics.paired_difference(first[:1], second[:1])
