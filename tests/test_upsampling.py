"""SubpixelConvTranspose is the same function as Flax's stride-2 SAME nn.ConvTranspose, values and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from vaegan_jax.models import SubpixelConvTranspose, crop_to_odd_size

KERNEL_SIZES = (3, 4, 5, 6)
INPUT_SIZES = (5, 8)  # odd and even
CHANNELS = ((1, 1), (3, 8), (16, 4))  # (in, out)


@pytest.fixture(autouse=True)
def full_float32_precision():
    """Compare the two functions in full float32: GPUs run float32 convolutions in TF32 by default, where the two
    forms round differently (seen on an H200: gradients apart by 6e-3 on values of 6)."""
    with jax.default_matmul_precision("highest"):
        yield


def _modules(kernel_size: int, features: int) -> tuple[nn.Module, nn.Module]:
    reference = nn.ConvTranspose(features, (kernel_size, kernel_size), strides=(2, 2), padding="SAME")
    return reference, SubpixelConvTranspose(features, kernel_size)


def _inputs(kernel_size: int, size: int, channels_in: int, features: int) -> tuple[jax.Array, dict, jax.Array]:
    """An input batch, parameters of the shared shapes (non-zero bias) and a cotangent for the output."""
    k_x, k_w, k_b, k_t = jax.random.split(jax.random.key(kernel_size * 1000 + size * 100 + channels_in), 4)
    x = jax.random.normal(k_x, (2, size, size, channels_in))
    params = {
        "kernel": jax.random.normal(k_w, (kernel_size, kernel_size, channels_in, features)),
        "bias": jax.random.normal(k_b, (features,)),
    }
    cotangent = jax.random.normal(k_t, (2, 2 * size, 2 * size, features))
    return x, {"params": params}, cotangent


@pytest.mark.parametrize("size", INPUT_SIZES)
@pytest.mark.parametrize("kernel_size", KERNEL_SIZES)
def test_same_output_as_conv_transpose(kernel_size: int, size: int) -> None:
    for channels_in, features in CHANNELS:
        reference, subpixel = _modules(kernel_size, features)
        x, variables, _ = _inputs(kernel_size, size, channels_in, features)
        # Both modules must accept each other's parameters unchanged.
        init_shapes = jax.tree.map(jnp.shape, subpixel.init(jax.random.key(0), x))
        assert init_shapes == jax.tree.map(jnp.shape, reference.init(jax.random.key(0), x))
        expected = reference.apply(variables, x)
        got = subpixel.apply(variables, x)
        assert got.shape == expected.shape == (2, 2 * size, 2 * size, features)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("size", INPUT_SIZES)
@pytest.mark.parametrize("kernel_size", KERNEL_SIZES)
def test_same_gradients_as_conv_transpose(kernel_size: int, size: int) -> None:
    for channels_in, features in CHANNELS:
        reference, subpixel = _modules(kernel_size, features)
        x, variables, cotangent = _inputs(kernel_size, size, channels_in, features)

        def grads(module: nn.Module) -> tuple[dict, jax.Array]:
            # A random cotangent, so every output position and channel weighs differently.
            return jax.grad(lambda v, inp: jnp.sum(module.apply(v, inp) * cotangent), argnums=(0, 1))(variables, x)

        (expected_params, expected_x), (got_params, got_x) = grads(reference), grads(subpixel)
        np.testing.assert_allclose(got_x, expected_x, rtol=1e-5, atol=1e-3)
        np.testing.assert_allclose(got_params["params"]["kernel"], expected_params["params"]["kernel"], rtol=1e-5, atol=1e-3)
        np.testing.assert_allclose(got_params["params"]["bias"], expected_params["params"]["bias"], rtol=1e-5, atol=1e-3)


def test_an_upsampling_to_an_odd_size_favours_neither_edge() -> None:
    # With a mirror-symmetric kernel, 13 -> 25 (the paper's generator) must commute with mirroring the image,
    # as TensorFlow's conv2d_transpose to 25 does; keeping the first 25 of 26 rows would shift it by half a pixel.
    module = SubpixelConvTranspose(4, 5)
    x = jax.random.normal(jax.random.key(1), (1, 13, 13, 3))
    params = module.init(jax.random.key(0), x)["params"]
    params = {**params, "kernel": params["kernel"] + params["kernel"][::-1, ::-1]}

    def upsample(image: jax.Array) -> jax.Array:
        return crop_to_odd_size(module.apply({"params": params}, image), 25)

    np.testing.assert_allclose(upsample(x)[:, ::-1, ::-1], upsample(x[:, ::-1, ::-1]), atol=1e-5)
    assert upsample(x).shape == (1, 25, 25, 4) and crop_to_odd_size(jnp.zeros((1, 26, 26, 4)), 26).shape[1] == 26
