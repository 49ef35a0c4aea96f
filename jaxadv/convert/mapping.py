"""The one generic mapper: Keras arrays → Flax variables, driven by an extractor's plan.

Each :class:`~jaxadv.convert.architectures.Assign` names a Keras layer, its kind and the Flax module
path. The table :data:`KIND_VARS` says where each Keras array of a kind goes. Every array is
checked against the shape of the Flax variable it fills (from ``jax.eval_shape`` of the model's
init); a missing, extra or mis-shaped array, a Keras layer with arrays that nothing uses, or a
Flax variable that nothing fills, fails with a message naming it.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from jaxadv import models
from jaxadv.convert.architectures import Plan
from jaxadv.convert.keras_h5 import ConversionError, KerasModel

# Keras short weight name → (collection, leaf path below the module) per kind of layer.
KIND_VARS: dict[str, dict[str, tuple[str, ...]]] = {
    "conv": {"kernel": ("params", "kernel"), "bias": ("params", "bias")},
    "dense": {"kernel": ("params", "kernel"), "bias": ("params", "bias")},
    "bn": {
        "gamma": ("params", "scale"),
        "beta": ("params", "bias"),
        "moving_mean": ("batch_stats", "mean"),
        "moving_variance": ("batch_stats", "var"),
    },
    "bigru": {
        f"{d}/{v}": ("params", d, v)
        for d in ("forward", "backward")
        for v in ("kernel", "recurrent_kernel", "bias")
    },
}


def _flatten(tree: Any) -> dict[tuple[str, ...], Any]:
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {tuple(k.key for k in path): leaf for path, leaf in flat}


def _unflatten(flat: dict[tuple[str, ...], Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path, value in flat.items():
        node = out
        for k in path[:-1]:
            node = node.setdefault(k, {})
        node[path[-1]] = value
    return out


def map_weights(km: KerasModel, plan: Plan) -> dict[str, Any]:
    """Build the Flax variables ``{"params", "batch_stats"}`` of ``plan.config`` from ``km``."""
    cfg = plan.config
    abstract = jax.eval_shape(lambda k: models.init_variables(cfg, k), jax.random.key(0))
    want = _flatten(abstract)
    filled: dict[tuple[str, ...], np.ndarray] = {}
    for a in plan.assigns:
        table = KIND_VARS[a.kind]
        arrays = dict(a.layer.weights)
        for kvar, (col, *leaf) in table.items():
            if kvar not in arrays:
                raise ConversionError(
                    f"{km.path}: {a.layer.describe()} has no '{kvar}' array "
                    f"(it has {sorted(arrays)})"
                )
            target = (col, *a.path, *leaf)
            if target not in want:
                raise ConversionError(
                    f"internal: the Flax model has no variable {'/'.join(target)}"
                )
            value = arrays.pop(kvar)
            if target in filled:
                raise ConversionError(f"internal: {'/'.join(target)} assigned twice")
            if value.shape != want[target].shape:
                raise ConversionError(
                    f"{km.path}: {a.layer.paths[kvar]} has shape {value.shape}, but "
                    f"{'/'.join(target)} of {cfg.name} expects {want[target].shape}"
                )
            filled[target] = np.asarray(value, np.float32)
        if arrays:
            extra = [a.layer.paths[k] for k in arrays]
            raise ConversionError(f"{km.path}: unexpected arrays in {a.layer.describe()}: {extra}")
    used = {a.layer.name for a in plan.assigns} | set(plan.verified)
    unused = [
        p for layer in km.layers.values() if layer.name not in used for p in layer.paths.values()
    ]
    if unused:
        raise ConversionError(
            f"{km.path}: arrays that the {cfg.name} mapping does not use: {unused}"
        )
    missing = ["/".join(p) for p in want if p not in filled]
    if missing:
        raise ConversionError(f"{km.path}: no Keras array for Flax variables {missing}")
    return _unflatten(filled)
