"""Where an ensemble's members live: a mesh over the local devices, the member axis split across it."""

from __future__ import annotations

import math
from typing import Any

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MEMBERS = "members"


def member_mesh(n_members: int) -> Mesh:
    """A one-axis mesh over as many devices as divide the member count evenly (one device for one member)."""
    devices = jax.devices()
    n_devices = math.gcd(n_members, len(devices))
    return jax.make_mesh((n_devices,), (MEMBERS,), devices=devices[:n_devices],
                         axis_types=(jax.sharding.AxisType.Auto,))


def place_members(tree: Any, mesh: Mesh) -> Any:
    """Arrays with a leading member axis, split across the mesh's devices."""
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec(MEMBERS)))


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Arrays every member reads (the data set), copied to each device of the mesh."""
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))
