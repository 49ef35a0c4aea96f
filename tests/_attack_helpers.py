"""Small problems shared by the attack tests (imported by ``tests/test_attacks_*.py``)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxadv import toy
from jaxadv.classifier import LinearClassifier


@functools.cache
def linear_problem(n: int = 32, classes: int = 2, batch: int = 4, seed: int = 1):
    """A LinearClassifier with a batch of clips of mixed lengths (labels = its predictions)."""
    rng = np.random.default_rng(seed)
    params = {
        "w": jnp.asarray(rng.normal(size=(n, classes)).astype(np.float32) * 0.3),
        "b": jnp.asarray(rng.normal(size=(classes,)).astype(np.float32) * 0.1),
    }
    x = jnp.asarray(rng.uniform(-0.3, 0.3, size=(batch, n)).astype(np.float32))
    lengths = jnp.asarray(rng.integers(n // 2, n + 1, size=batch), jnp.int32).at[0].set(n)
    fn = LinearClassifier()
    labels = jnp.argmax(fn(params, x, lengths).probs, -1).astype(jnp.int32)
    return fn, params, x, lengths, labels


@functools.cache
def chunked_problem(seed: int = 2):
    """A 4-chunk linear classifier (5 classes), 6 clips: mixed lengths, row 5 silent (all zeros).

    Labels are the model's predictions (row 5's too), so every untargeted attack starts from a
    correctly classified clip; the padding beyond each length holds non-zero junk, which the
    attacks must leave untouched.
    """
    rng = np.random.default_rng(seed)
    chunk, q, classes, batch = 16, 4, 5, 6
    n = chunk * q
    fn = toy.ChunkedLinearClassifier(chunk)
    params = {
        "w": jnp.asarray(rng.normal(size=(chunk, classes)).astype(np.float32) * 0.5),
        "b": jnp.asarray(rng.normal(size=(classes,)).astype(np.float32) * 0.05),
    }
    x = rng.uniform(-0.4, 0.4, size=(batch, n)).astype(np.float32)
    lengths = np.array([64, 40, 64, 23, 50, 64], np.int32)
    x[5] = 0.0
    for i, length in enumerate(lengths):
        x[i, length:] = 0.7  # padding junk
    x, lengths = jnp.asarray(x), jnp.asarray(lengths)
    labels = jnp.argmax(fn(params, x, lengths).probs, -1).astype(jnp.int32)
    return fn, params, x, lengths, labels


def other_class(labels, classes: int, shift: int = 1):
    """A per-example target different from each label (mixed targets within the batch)."""
    return ((labels + shift + jnp.arange(labels.shape[0]) % (classes - 1)) % classes).astype(
        jnp.int32
    )


@functools.cache
def trained_cnn(n: int = 4096):
    """A SmallCNN on the kapre front-end trained for a few seconds on synthetic sounds."""
    model = toy.SmallCNN(frontend="kapre")
    params = toy.train_small_cnn(model, jax.random.key(0), n=n, steps=150)
    return model, params
