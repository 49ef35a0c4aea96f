"""Small classifiers and synthetic audio for tests, benchmarks and examples.

Not the paper's models: they follow the classifier contract (:mod:`jaxadv.classifier`) so attacks
can be tested and timed without checkpoints.

* :class:`ChunkedLinearClassifier`: a per-chunk linear model with several chunks per clip and the
  authors' clip decision (mean of the chunk softmaxes), for goldens of the multi-chunk paths.
* :class:`SmallCNN`: a tiny Flax CNN on a :mod:`jaxadv.frontend` front-end (log-mel), ``Q = 1``.
* :func:`synthetic_batch` / :func:`train_small_cnn`: four classes of synthetic sounds (low tone,
  high tone, white noise, click train) of random level and length, and a few seconds of Adam.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxadv import config as C
from jaxadv import frontend
from jaxadv.classifier import ModelOutput

Array = jax.Array

TOY_CLASSES = ("low_tone", "high_tone", "white_noise", "clicks")


@dataclasses.dataclass(frozen=True)
class ChunkedLinearClassifier:
    """Linear scores per chunk of ``chunk`` samples; clip probabilities = mean chunk softmax.

    ``params = {"w": [chunk, C], "b": [C]}``; ``N`` must be a multiple of ``chunk``; a chunk is
    valid if it holds at least one valid sample (samples beyond the length are ignored).
    """

    chunk: int

    def __call__(self, params: Any, x: Array, lengths: Array) -> ModelOutput:
        b, n = x.shape
        if n % self.chunk:
            raise ValueError(f"N={n} is not a multiple of chunk={self.chunk}")
        q = n // self.chunk
        xm = jnp.where(frontend.valid_mask(n, lengths), x, 0.0)
        logits = xm.reshape(b, q, self.chunk) @ params["w"] + params["b"]
        mask = jnp.arange(q)[None, :] * self.chunk < jnp.asarray(lengths)[:, None]
        probs = frontend.merge_chunks(jax.nn.softmax(logits, -1), mask, "mean")
        return ModelOutput(logits, mask, probs)


class _CNN(nn.Module):
    channels: tuple[int, ...]
    num_classes: int

    @nn.compact
    def __call__(self, feats: Array, mask: Array) -> Array:
        h = feats[..., None]  # [B, T, F, 1]
        for c in self.channels:
            h = nn.relu(nn.Conv(c, (3, 3))(h))
            h = nn.max_pool(h, (1, 2), strides=(1, 2))  # pool frequency only
        w = mask.astype(h.dtype)[:, :, None, None]
        h = jnp.sum(h * w, 1) / jnp.maximum(jnp.sum(w, 1), 1.0)  # masked mean over time
        return nn.Dense(self.num_classes)(h.reshape(h.shape[0], -1))


@dataclasses.dataclass(frozen=True)
class SmallCNN:
    """A tiny CNN classifier on a log-mel front-end (``"kapre"`` or ``"iqbal_attack"``...).

    Features are the front-end's dB values mapped by ``(db + 40) / 20``; ``Q = 1`` chunk per clip
    (for chunked front-ends the chunks are concatenated in time), real logits.
    """

    frontend: str = "kapre"
    channels: tuple[int, ...] = (8, 16)
    num_classes: int = len(TOY_CLASSES)

    @property
    def module(self) -> _CNN:
        return _CNN(self.channels, self.num_classes)

    def features(self, x: Array, lengths: Array) -> tuple[Array, Array]:
        fe = frontend.get_frontend(self.frontend)
        out = fe(x, lengths)
        if hasattr(out, "chunks"):  # [B, Q, 128, F] -> [B, Q * 128, F]
            b, q, t, f = out.chunks.shape
            return out.chunks.reshape(b, q * t, f), jnp.repeat(out.mask, t, axis=1)
        return out.values, out.mask

    def init(self, key: Array, n_samples: int) -> Any:
        """Parameters for clips of ``n_samples`` samples."""
        x = jnp.zeros((1, n_samples), jnp.float32)
        feats, mask = self.features(x, jnp.array([n_samples]))
        return self.module.init(key, feats, mask)

    def __call__(self, params: Any, x: Array, lengths: Array) -> ModelOutput:
        feats, mask = self.features(x, lengths)
        logits = self.module.apply(params, (feats + 40.0) / 20.0, mask)
        return ModelOutput(
            logits[:, None, :], jnp.ones((x.shape[0], 1), bool), jax.nn.softmax(logits, -1)
        )


@functools.partial(jax.jit, static_argnames=("batch", "n"))
def synthetic_batch(key: Array, batch: int, n: int) -> tuple[Array, Array, Array]:
    """``batch`` synthetic clips ``[B, n]`` at 32 kHz, lengths ``[B]`` in ``[n/2, n]``, labels ``[B]``.

    Classes (:data:`TOY_CLASSES`): 0 a 300-600 Hz tone, 1 a 2-4 kHz tone, 2 white noise, 3 a
    20-50 Hz click train; level 0.05-0.5 peak; plus -46 dB background noise; zero beyond the
    length.
    """
    k = jax.random.split(key, 7)
    labels = jax.random.randint(k[0], (batch,), 0, len(TOY_CLASSES))
    t = jnp.arange(n) / C.SAMPLE_RATE
    u = jax.random.uniform(k[1], (batch, 1))
    phase = jax.random.uniform(k[2], (batch, 1)) * 2 * jnp.pi
    low = jnp.sin(2 * jnp.pi * (300 + 300 * u) * t + phase)
    high = jnp.sin(2 * jnp.pi * (2000 + 2000 * u) * t + phase)
    white = jax.random.normal(k[3], (batch, n)) / 3.0
    period = jnp.round(C.SAMPLE_RATE / (20 + 30 * u)).astype(jnp.int32)
    clicks = (jnp.mod(jnp.arange(n)[None, :] + (phase * 100).astype(jnp.int32), period) < 8) * 1.0
    sig = jnp.stack([low, high, white, clicks], 1)[jnp.arange(batch), labels]
    level = 0.05 + 0.45 * jax.random.uniform(k[4], (batch, 1))
    x = level * sig / jnp.maximum(jnp.max(jnp.abs(sig), -1, keepdims=True), 1e-6)
    x = x + 0.005 * jax.random.normal(k[5], (batch, n))
    lengths = jax.random.randint(k[6], (batch,), n // 2, n + 1)
    x = jnp.where(frontend.valid_mask(n, lengths), jnp.clip(x, -1, 1), 0.0)
    return x.astype(jnp.float32), lengths.astype(jnp.int32), labels.astype(jnp.int32)


def train_small_cnn(
    model: SmallCNN,
    key: Array,
    *,
    n: int = 8192,
    steps: int = 150,
    batch: int = 32,
    learning_rate: float = 3e-3,
) -> Any:
    """Train ``model`` with Adam on fresh :func:`synthetic_batch` draws; returns the parameters."""
    k_init, k_data = jax.random.split(key)
    params = model.init(k_init, n)
    opt = optax.adam(learning_rate)

    @jax.jit
    def step(params, opt_state, k):
        x, lengths, labels = synthetic_batch(k, batch, n)

        def loss(p):
            logits = model(p, x, lengths).logits[:, 0]
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

        value, grads = jax.value_and_grad(loss)(params)
        updates, opt_state = opt.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state, value

    opt_state = opt.init(params)
    for k in jax.random.split(k_data, steps):
        params, opt_state, _ = step(params, opt_state, k)
    return params
