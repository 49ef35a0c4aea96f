"""A model that is not one of the five, for the adapter tests and the README tutorial: a Flax
band-energy classifier at 16 kHz with labels of its own ("low", "high")."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import jaxadv

SAMPLE_RATE = 16_000
LABELS = ("low", "high")


class BandEnergy(nn.Module):
    """log mean power below and above 2 kHz → ``Dense(2)``: ``[B, n]`` at 16 kHz → ``[B, 2]``."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        power = jnp.abs(jnp.fft.rfft(x, axis=-1)) ** 2
        cut = power.shape[-1] // 4  # 2 kHz of the 8 kHz band
        low = jnp.log(jnp.mean(power[:, :cut], axis=-1) + 1e-8)
        high = jnp.log(jnp.mean(power[:, cut:], axis=-1) + 1e-8)
        return nn.Dense(2)(jnp.stack([low, high], axis=-1))


MODULE = BandEnergy()


@functools.cache
def build() -> jaxadv.WrappedModel:
    """The wrapped model (the same objects every call): logits ``[low - high, high - low]``."""
    variables = MODULE.init(jax.random.key(0), jnp.zeros((1, 8000)))
    variables = jax.tree.map(np.asarray, variables)
    variables["params"]["Dense_0"]["kernel"] = np.array([[1.0, -1.0], [-1.0, 1.0]], np.float32)
    variables["params"]["Dense_0"]["bias"] = np.zeros(2, np.float32)
    return jaxadv.wrap(
        MODULE.apply, variables, sample_rate=SAMPLE_RATE, labels=LABELS, chunking=(8000, 4000),
        name="band",
    )  # fmt: skip


def tone(freq: float, seconds: float, seed: int = 0) -> np.ndarray:
    """A tone with a little noise at 16 kHz, peak about 0.5."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    rng = np.random.default_rng(seed)
    return (0.5 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.size)).astype(
        np.float32
    )
