"""Where a run lives: a (members, batch) mesh over every device of every process, and moving arrays on and off it.

Members are split across devices first (they never talk to each other); devices left over split each
training batch, where the batch size divides, and XLA inserts the reductions that BatchNorm and the
gradients need. With several processes (`init_distributed`) the mesh spans all of them and every process
runs the same program on its own devices.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vaegan_jax.errors import ConfigError, summary

MEMBERS = "members"
BATCH = "batch"


def init_distributed(coordinator: str | None, num_processes: int | None, process_id: int | None) -> None:
    """Join a multi-process run ('auto': let jax read the cluster's environment); nothing without a coordinator."""
    if coordinator is None:
        if num_processes is not None or process_id is not None:
            raise ConfigError("--num-processes and --process-id need --coordinator")
        return
    if coordinator != "auto":
        if num_processes is None or process_id is None:
            raise ConfigError("--coordinator HOST:PORT needs --num-processes and --process-id")
        if not 0 <= process_id < num_processes:
            raise ConfigError(f"--process-id {process_id} is not in 0..{num_processes - 1}")
    try:
        if coordinator == "auto":
            jax.distributed.initialize()
        else:
            jax.distributed.initialize(coordinator, num_processes=num_processes, process_id=process_id)
    except (RuntimeError, ValueError) as err:
        raise ConfigError(f"cannot join the other processes via {coordinator}: {summary(err)}") from None


def is_main_process() -> bool:
    """Whether this process writes files and prints (process 0; the only one without jax.distributed)."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Wait until every process gets here (a no-op in a single process)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def any_process(flag: bool) -> bool:
    """Whether `flag` is set on any process, so that all take the same branch (all processes must call it)."""
    if jax.process_count() == 1:
        return flag
    return bool(np.any(multihost_utils.process_allgather(np.array(flag))))


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def training_mesh(n_members: int, batch_size: int) -> Mesh:
    """The largest (members, batch) mesh whose axes divide the member count and the batch size.

    Ties go to more member groups, which need no communication. The mesh takes as many devices from
    each process, so that every process holds part of every array.
    """
    n_processes = jax.process_count()
    by_process = [[d for d in jax.devices() if d.process_index == p] for p in range(n_processes)]
    per_process_max = min(len(local) for local in by_process)
    shapes = [(m, b) for m in _divisors(n_members) for b in _divisors(batch_size)
              if (m * b) % n_processes == 0 and m * b // n_processes <= per_process_max]
    if not shapes:
        raise ConfigError(f"cannot spread {n_members} member(s) with batch size {batch_size} over {n_processes} "
                          f"processes: a divisor of each must multiply to a multiple of {n_processes}")
    members, batch = max(shapes, key=lambda shape: (shape[0] * shape[1], shape[0]))
    chosen = [d for local in by_process for d in local[: members * batch // n_processes]]
    return Mesh(np.array(chosen).reshape(members, batch), (MEMBERS, BATCH),
                axis_types=(jax.sharding.AxisType.Auto,) * 2)


def describe(mesh: Mesh, batch_size: int) -> str:
    """How a run uses the devices, e.g. 'on 4 of 4 device(s): 2 member group(s) x 2 batch shard(s)'."""
    n_devices = jax.device_count()
    text = (f"on {mesh.size} of {n_devices} device(s): {mesh.shape[MEMBERS]} member group(s) x "
            f"{mesh.shape[BATCH]} batch shard(s)")
    if mesh.size < n_devices:
        text += f" (the member count and batch size {batch_size} do not split over more)"
    if jax.process_count() > 1:
        text += f", {jax.process_count()} processes"
    return text


def _put(tree: Any, sharding: NamedSharding) -> Any:
    """`jax.device_put`, also for arrays on this process's devices when the mesh spans several processes."""
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)

    def put(x: Any) -> Any:
        # device_put refuses typed keys and arrays committed to this process's devices, but takes the same
        # value from the host of every process (checking that they agree).
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            return jax.random.wrap_key_data(put(jax.random.key_data(x)), impl=jax.random.key_impl(x))
        if not isinstance(x, jax.Array) or not x.is_fully_addressable:
            return jax.device_put(x, sharding)
        return jax.device_put(np.asarray(x), sharding)

    return jax.tree.map(put, tree)


def place_members(tree: Any, mesh: Mesh) -> Any:
    """Arrays with a leading member axis, split across the mesh's member groups (every process passes the same values)."""
    return _put(tree, NamedSharding(mesh, PartitionSpec(MEMBERS)))


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Arrays every member reads (the data set), copied to each device of the mesh (every process passes the same values)."""
    return _put(tree, NamedSharding(mesh, PartitionSpec()))


def split_batch(tree: Any) -> Any:
    """A batch (leading axis: examples) split over the mesh's batch axis; call under `jax.set_mesh`."""
    return jax.lax.with_sharding_constraint(tree, PartitionSpec(BATCH))


def fetch(tree: Any) -> Any:
    """Arrays as numpy on this process, gathering the shards other processes hold (all processes must call it)."""
    if all(not isinstance(x, jax.Array) or x.is_fully_addressable for x in jax.tree.leaves(tree)):
        return jax.device_get(tree)
    return multihost_utils.process_allgather(tree, tiled=True)
