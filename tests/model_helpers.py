"""Random but well-scaled classifier params for the model tests (JAX only).

Fresh Keras-style initialisation gives near-uniform outputs, which would let a test pass whatever
the masking or batching does. :func:`calibrated_params` draws He-normal kernels and random biases,
then sets every BN's statistics from one training-mode pass over real-looking audio (so each BN
sees inputs of its own scale) and perturbs them: outputs are then unsaturated and input-dependent.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxadv import config as C
from jaxadv.classifier import Classifier
from jaxadv.frontend import standardise


def make_audio(n: int, seed: int) -> np.ndarray:
    """A 32 kHz test clip: three decaying tones over noise of a random level, peak ~0.5."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / C.SAMPLE_RATE
    x = rng.uniform(0.01, 0.2) * rng.standard_normal(n)
    for _ in range(3):
        f, a, d = rng.uniform(100, 12000), rng.uniform(0.05, 0.3), rng.uniform(0, 8)
        x += a * np.sin(2 * np.pi * f * t + rng.uniform(0, 6.3)) * np.exp(-d * t)
    return x.astype(np.float32)


def _random_weights(shapes, rng: np.random.Generator):
    """He-normal kernels, small random biases, BN scale in [0.8, 1.2] (NumPy: no compiling)."""

    def draw(path, leaf):
        names = [p.key for p in path]
        name, in_bn = names[-1], any("bn" in n for n in names)
        if name in ("kernel", "recurrent_kernel"):
            fan_in = int(np.prod(leaf.shape[:-1]))
            gain = 2.0 if name == "kernel" else 1.0
            v = rng.normal(0, np.sqrt(gain / fan_in), leaf.shape)
        elif name == "scale":
            v = rng.uniform(0.8, 1.2, leaf.shape)
        else:  # bias
            v = rng.normal(0, 0.1 if in_bn else 0.05, leaf.shape)
        return jnp.asarray(v, jnp.float32)

    return jax.tree_util.tree_map_with_path(draw, shapes)


def calibrated_params(clf: Classifier, seed: int = 0, mean: float = -30.0, std: float = 15.0):
    """Params of ``clf`` with random weights and data-calibrated, perturbed BN statistics."""
    rng = np.random.default_rng(seed)
    shapes = clf.abstract_params()["model"]
    stats0 = jax.tree_util.tree_map_with_path(
        lambda p, s: jnp.ones(s.shape) if p[-1].key == "var" else jnp.zeros(s.shape),
        shapes["batch_stats"],
    )
    variables = {"params": _random_weights(shapes["params"], rng), "batch_stats": stats0}
    iqbal = clf.family == "iqbal"
    n = 40000 if iqbal else 24000
    x = np.stack([make_audio(n, 1000 * seed + i) for i in range(8)])
    lengths = np.full(8, n, np.int32)
    module = clf.module()

    @jax.jit
    def train_pass(variables):
        if iqbal:
            chunks, _ = clf.frontend(x, lengths)
            inputs = (standardise(chunks, mean, std).reshape(-1, 128, 64, 1),)
        else:
            inputs = (x, lengths)
        return module.apply(variables, *inputs, train=True, mutable=["batch_stats"])

    out, upd = train_pass(variables)
    m = C.KERAS_BN_MOMENTUM
    leaves, tree = jax.tree_util.tree_flatten_with_path(upd["batch_stats"])
    old = jax.tree_util.tree_leaves(variables["batch_stats"])
    stats = {}
    for (path, new), prev in zip(leaves, old, strict=True):
        batch = (np.asarray(new) - m * np.asarray(prev)) / (1 - m)  # undo the running average
        stats[tuple(p.key for p in path)] = batch
    out_stats = []
    for path, _ in leaves:
        keys = tuple(p.key for p in path)
        var = stats[keys[:-1] + ("var",)]
        var = np.maximum(var, 0.1 * var.mean() + 1e-6)  # no near-constant channel blows up
        if keys[-1] == "var":  # random factors with geometric mean ~1: no drift with depth
            out_stats.append(var * np.exp(rng.uniform(-0.05, 0.05, var.shape)))
        else:
            out_stats.append(stats[keys] + 0.02 * np.sqrt(var) * rng.standard_normal(var.shape))
    bs = jax.tree_util.tree_unflatten(tree, [jnp.asarray(v, jnp.float32) for v in out_stats])
    gain = 2.5 / float(jnp.abs(out).max())  # largest logit ~2.5: unsaturated, not uniform

    def rescale(path, leaf):
        names = [p.key for p in path]
        is_out = names[0] == "dense" or (names[0] == "trunk" and names[1].startswith("head_"))
        return leaf * gain if is_out and names[-1] == "kernel" else leaf

    weights = jax.tree_util.tree_map_with_path(rescale, variables["params"])
    params = {"model": {"params": weights, "batch_stats": bs}}
    if iqbal:
        params["norm"] = {"mean": jnp.float32(mean), "std": jnp.float32(std)}
    return params
