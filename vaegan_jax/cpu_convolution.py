"""The networks' convolutions, run member by member on the CPU when vmapped over an ensemble.

A vmapped convolution with a batched kernel (an ensemble's members) lowers to one grouped convolution,
which XLA's CPU backend runs about 17x slower than the members' convolutions one after another
(measured: 1.75 s vs 0.40 s per `fast` stage-I step for 4 members). Accelerators batch natively.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

_NHWC = ("NHWC", "HWIO", "NHWC")


def _one_member_at_a_time(fn):
    """`fn` of arrays, which `jax.vmap` runs once per member on the CPU instead of batching (see above)."""
    op = jax.custom_batching.custom_vmap(fn)

    @op.def_vmap
    def rule(axis_size, in_batched, *args):
        if jax.default_backend() != "cpu":
            return jax.vmap(fn, in_axes=[0 if b else None for b in in_batched])(*args), True
        members = [fn(*(a[k] if b else a for a, b in zip(args, in_batched))) for k in range(axis_size)]
        return jnp.stack(members), True

    return op


@functools.cache
def _conv(strides: tuple[int, int], padding: tuple[tuple[int, int], ...]):
    """lax.conv_general_dilated (NHWC, HWIO) with a gradient, each part run member by member under vmap."""

    def forward(x, kernel):
        return jax.lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=_NHWC)

    forward_op = _one_member_at_a_time(forward)
    input_grad = _one_member_at_a_time(lambda x, kernel, g: jax.vjp(lambda x: forward(x, kernel), x)[1](g)[0])
    kernel_grad = _one_member_at_a_time(lambda x, kernel, g: jax.vjp(lambda k: forward(x, k), kernel)[1](g)[0])

    @jax.custom_vjp
    def conv(x, kernel):
        return forward_op(x, kernel)

    conv.defvjp(
        lambda x, kernel: (forward_op(x, kernel), (x, kernel)),
        lambda residuals, g: (input_grad(*residuals, g), kernel_grad(*residuals, g)),
    )
    return conv


def conv_general_dilated(
    lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int], padding: str | Sequence[tuple[int, int]],
    lhs_dilation: Sequence[int] | None = None, rhs_dilation: Sequence[int] | None = None,
    dimension_numbers: Any = None, feature_group_count: int = 1, batch_group_count: int = 1, precision: Any = None,
    preferred_element_type: Any = None,
) -> jax.Array:
    """The plain NHWC convolutions of these networks, fast for an ensemble's members on the CPU.

    Has lax.conv_general_dilated's signature, so flax's `nn.Conv(conv_general_dilated=...)` can use it.
    """
    nhwc = jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC)
    numbers = nhwc if dimension_numbers is None else jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
    undilated = all(d is None or tuple(d) == (1, 1) for d in (lhs_dilation, rhs_dilation))
    if numbers != nhwc or not undilated or feature_group_count != 1 or batch_group_count != 1:
        raise NotImplementedError("only undilated, ungrouped 2-D NHWC convolutions")
    if precision is not None or preferred_element_type is not None:
        raise NotImplementedError("only the default precision and output type")
    if isinstance(padding, str):
        padding = jax.lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], window_strides, padding)
    strides = tuple(int(s) for s in window_strides)
    return _conv(strides, tuple((int(lo), int(hi)) for lo, hi in padding))(lhs, rhs.astype(lhs.dtype))
