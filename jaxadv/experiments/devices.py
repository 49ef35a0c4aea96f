"""Data parallelism over the local devices: batches split along their first axis, params
replicated (one device: plain transfers)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def shard(
    arrays: Sequence[np.ndarray], n_rows: int, rows: int | None = None
) -> tuple[list[Any], int]:
    """Put batch arrays on all local devices, split along the batch axis.

    The batch is padded (by repeating its last row) to ``rows`` (default ``n_rows``) rounded up to
    a multiple of the device count; returns the device arrays and the number of real rows. With
    one device this is a plain transfer.
    """
    import jax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    devs = jax.local_devices()
    n = len(devs)
    pad = max(rows or n_rows, n_rows) - n_rows
    pad += (-(n_rows + pad)) % n
    if pad:
        arrays = [np.concatenate([a, np.repeat(a[-1:], pad, axis=0)]) for a in arrays]
    if n == 1:
        return [jax.device_put(a) for a in arrays], n_rows
    mesh = Mesh(np.array(devs), ("batch",))
    out = []
    for a in arrays:
        spec = PartitionSpec("batch", *([None] * (a.ndim - 1)))
        out.append(jax.device_put(a, NamedSharding(mesh, spec)))
    return out, n_rows


def replicate(tree: Any) -> Any:
    """Params on every local device (replicated), so sharded batches need no transfers."""
    import jax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    devs = jax.local_devices()
    if len(devs) == 1:
        return tree
    sharding = NamedSharding(Mesh(np.array(devs), ("batch",)), PartitionSpec())
    return jax.device_put(tree, sharding)
