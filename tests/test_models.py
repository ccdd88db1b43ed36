"""The four networks: output shapes for every preset, the paper's geometry, BatchNorm modes, output range, convolutions."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from vaegan_jax import config as config_lib
from vaegan_jax import cpu_convolution
from vaegan_jax.config import ModelConfig
from vaegan_jax.models import build_networks, example_inputs, spatial_sizes

BATCH = 2
N_VOXELS = 3092
NATIVE_69 = 28
TinyNetworks = tuple[ModelConfig, dict[str, nn.Module], dict[str, dict], dict[str, jax.Array]]


def model_config(preset: str) -> ModelConfig:
    """A preset's model with the 69 set's native size where the preset leaves the size open."""
    model = config_lib.preset(preset).model
    return model if model.image_size else dataclasses.replace(model, image_size=NATIVE_69)


def shapes(tree: object) -> object:
    return jax.tree.map(lambda leaf: tuple(leaf.shape), tree)


@pytest.mark.parametrize("preset", ["tiny", "fast", "seed", "paper"])
def test_every_network_of_every_preset_has_the_documented_output_shapes(preset: str) -> None:
    # Shapes only (jax.eval_shape): the paper and seed networks are too large to run for this on a CPU.
    cfg = model_config(preset)
    nets = build_networks(cfg)
    inputs = example_inputs(cfg, N_VOXELS, BATCH)
    outputs = {}
    for name, net in nets.items():
        variables = jax.eval_shape(lambda x, net=net: net.init(jax.random.key(0), x, train=False), inputs[name])
        outputs[name] = shapes(jax.eval_shape(lambda v, x, net=net: net.apply(v, x, train=False), variables, inputs[name]))
    latent = (BATCH, cfg.latent_dim)
    assert outputs["visual_encoder"] == (latent, latent)
    assert outputs["cognitive_encoder"] == (latent, latent)
    assert outputs["generator"] == (BATCH, cfg.image_size, cfg.image_size, 1)
    side = cfg.image_size
    for stride in cfg.discriminator_strides:
        side = -(-side // stride)
    assert outputs["discriminator"] == ((BATCH,), (BATCH, side * side * cfg.discriminator_features[-1]))


def test_the_paper_preset_has_the_official_geometry() -> None:
    cfg = model_config("paper")
    nets = build_networks(cfg)
    inputs = example_inputs(cfg, N_VOXELS, BATCH)
    params = {name: shapes(jax.eval_shape(lambda x, net=net: net.init(jax.random.key(0), x, train=False), inputs[name]))
              for name, net in nets.items()}
    # method.md: E_vis conv 64/128/256 to 13x13, then FC1024 and two heads of 128.
    assert params["visual_encoder"]["params"]["Dense_0"]["kernel"] == (13 * 13 * 256, 1024)
    assert params["visual_encoder"]["params"]["mu"]["kernel"] == (1024, 128)
    # E_cog: FC1024 on the voxels.
    assert params["cognitive_encoder"]["params"]["Dense_0"]["kernel"] == (N_VOXELS, 1024)
    # G: FC to 13*13*256, deconv 128/64/32 (5x5), a conv to one channel.
    gen = params["generator"]["params"]
    assert gen["Dense_0"]["kernel"] == (128, 13 * 13 * 256)
    assert [gen[f"SubpixelConvTranspose_{i}"]["kernel"] for i in range(3)] == [
        (5, 5, 256, 128), (5, 5, 128, 64), (5, 5, 64, 32)]
    assert gen["Conv_0"]["kernel"] == (5, 5, 32, 1)
    assert spatial_sizes(100, 3)[::-1] == [13, 25, 50, 100]
    # D: the first conv has no BN; Dis_l is the 4th conv's 7x7x256 output; FC256 then the logit.
    disc = params["discriminator"]
    assert len(disc["batch_stats"]) == 4
    assert disc["params"]["Dense_0"]["kernel"] == (7 * 7 * 256, 256)


@pytest.fixture(scope="module")
def tiny_networks() -> TinyNetworks:
    """The tiny preset's networks, initialised, with random inputs."""
    cfg = model_config("tiny")
    nets = build_networks(cfg)
    key = jax.random.key(1)
    inputs = {
        "visual_encoder": jax.random.uniform(key, (BATCH, cfg.image_size, cfg.image_size, 1), minval=-1, maxval=1),
        "cognitive_encoder": jax.random.normal(key, (BATCH, 16)),
        "generator": 3.0 * jax.random.normal(key, (BATCH, cfg.latent_dim)),
    }
    inputs["discriminator"] = inputs["visual_encoder"]
    variables = {name: net.init(key, inputs[name], train=False) for name, net in nets.items()}
    return cfg, nets, variables, inputs


def test_generator_images_lie_in_the_model_range(tiny_networks: TinyNetworks) -> None:
    cfg, nets, variables, inputs = tiny_networks
    image = nets["generator"].apply(variables["generator"], inputs["generator"], train=False)
    assert image.shape == (BATCH, NATIVE_69, NATIVE_69, 1)
    assert float(jnp.min(image)) >= -1.0 and float(jnp.max(image)) <= 1.0


def test_batch_norm_learns_running_statistics_only_in_training_mode(tiny_networks: TinyNetworks) -> None:
    _, nets, variables, inputs = tiny_networks
    for name, net in nets.items():
        _, updates = net.apply(variables[name], inputs[name], train=True, mutable=["batch_stats"])
        before, after = jax.tree.leaves(variables[name]["batch_stats"]), jax.tree.leaves(updates["batch_stats"])
        assert any(not np.array_equal(a, b) for a, b in zip(before, after)), name
        # Inference uses the running averages: an example's output does not depend on the rest of its batch.
        alone = net.apply(variables[name], inputs[name][:1], train=False)
        batched = net.apply(variables[name], inputs[name], train=False)
        for one, many in zip(jax.tree.leaves(alone), jax.tree.leaves(batched)):
            np.testing.assert_allclose(one[0], many[0], rtol=1e-5, atol=1e-6, err_msg=name)


def test_the_member_by_member_convolution_is_lax_convolution_under_vmap_and_grad() -> None:
    k_x, k_w, k_g = jax.random.split(jax.random.key(7), 3)
    x = jax.random.normal(k_x, (2, 9, 9, 3))
    kernels = jax.random.normal(k_w, (3, 5, 5, 3, 4))

    def loss(conv, kernel, x):
        return jnp.sum(jnp.sin(conv(x, kernel, (2, 2), "SAME")))

    def members(conv):
        return jax.vmap(jax.value_and_grad(lambda w, x: loss(conv, w, x), argnums=(0, 1)), in_axes=(0, None))(kernels, x)

    def lax_conv(x, kernel, strides, padding):
        return jax.lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))

    ours, reference = members(cpu_convolution.conv_general_dilated), members(lax_conv)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(reference)):
        # Each element sums dozens of terms up to the array's largest, in another order: float32 rounding
        # reaches 2e-6 of that largest (measured on one CPU), where a wrong convolution is off by its order.
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * np.abs(b).max())
    with pytest.raises(NotImplementedError):
        cpu_convolution.conv_general_dilated(x, kernels[0], (1, 1), "SAME", rhs_dilation=(2, 2))
    with pytest.raises(NotImplementedError):
        cpu_convolution.conv_general_dilated(x, kernels[0], (1, 1), "SAME", precision=jax.lax.Precision.HIGHEST)
