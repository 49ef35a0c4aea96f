"""The contract between classifiers and attacks.

A *classifier function* is any hashable callable ``fn(params, x, lengths) -> ModelOutput`` where
``params`` is a pytree of arrays (passed in, never closed over), ``x`` is a waveform batch
``[B, N]`` (float32 samples at 32 kHz in [-1, 1]) and ``lengths`` ``[B]`` (int32) the valid samples
of each clip. Being hashable (a frozen dataclass) lets attacks take it as a static jit argument: the
same classifier and shapes never compile twice.

``ModelOutput`` carries what every attack needs:

* ``logits [B, Q, C]``: the per-chunk scores the attacks differentiate. For the Iqbal models these
  are the pre-softmax logits of each 128-frame chunk (the authors' ``dense_1/BiasAdd:0``); for the
  single-output Cochlear models ``Q = 1``.
* ``mask [B, Q]``: which chunk slots belong to the clip (the others are padding).
* ``probs [B, C]``: the clip-level probabilities that decide the predicted label.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp

Array = jax.Array


class ModelOutput(NamedTuple):
    """Outputs of a classifier function (see the module docstring for the shapes)."""

    logits: Array
    mask: Array
    probs: Array


class ClassifierFn(Protocol):
    """``fn(params, x [B, N], lengths [B]) -> ModelOutput``; must be hashable."""

    def __call__(self, params: Any, x: Array, lengths: Array) -> ModelOutput: ...


@dataclasses.dataclass(frozen=True)
class LinearClassifier:
    """A linear classifier on the raw waveform: ``logits = x @ w + b`` (one chunk per clip).

    Used for closed-form goldens (the minimal L2 perturbation of a linear model is known) and as
    the smallest example of the classifier contract. ``params = {"w": [N, C], "b": [C]}``;
    samples beyond a clip's length are ignored.
    """

    def __call__(self, params: Any, x: Array, lengths: Array) -> ModelOutput:
        n = x.shape[1]
        valid = jnp.arange(n)[None, :] < jnp.asarray(lengths)[:, None]
        logits = jnp.where(valid, x, 0.0) @ params["w"] + params["b"]
        return ModelOutput(
            logits[:, None, :],
            jnp.ones((x.shape[0], 1), bool),
            jax.nn.softmax(logits, axis=-1),
        )
