"""Certified robustness in dB: randomized smoothing (Cohen, Rosenfeld & Kolter, ICML 2019) on the
waveform, for any classifier function.

The *smoothed* classifier ``g(x) = argmax_c P(f(x + σ z) = c)``, ``z ~ N(0, I)`` on the clip's
valid samples, has a certificate (Cohen et al., Theorem 1): if the top class has probability at
least ``p_A > 1/2`` under the noise, no perturbation with ``‖δ‖₂ < R = σ Φ⁻¹(p_A)`` changes
``g(x + δ)``. jaxadv states it in the attacks' unit: the **certified SNR**
``10 log10(‖x‖² / R²)`` dB. With probability at least ``1 - α`` (over the sampling), no
perturbation with an SNR above the certified SNR changes the smoothed prediction.

:func:`certify` is Cohen's CERTIFY:

1. ``n0`` noisy copies pick the candidate class ``ĉ`` (the most frequent);
2. ``n`` *independent* copies count how often ``f`` says ``ĉ``: ``k`` of ``n``;
3. ``p_A`` is the one-sided ``1 - α`` Clopper–Pearson lower bound of ``k / n``. If
   ``p_A ≤ 1/2`` the clip abstains (prediction ``-1``, no certificate, certified SNR ``+inf``).
   Otherwise ``R = σ Φ⁻¹(p_A)``.

:func:`predict` is Cohen's PREDICT. It returns the top class of ``n`` copies, or abstains when a
two-sided binomial test cannot tell the two most frequent classes apart at level ``α``.

``σ`` is an absolute noise level in sample units. ``σ = 0.01`` is white noise at −40 dBFS RMS. It
must not depend on the clip: the smoothed classifier a defender deploys is one fixed function,
and the theorem is about that function. ``noise_dbfs`` gives σ in dBFS.

Monte-Carlo on the device: every clip's noise comes from its own key (``keys[b]``), so a clip's
counts do not depend on the batch it is in. One compiled program draws ``per_step`` copies of
every clip per step and adds up the class counts over ``n / per_step`` steps
(``jax.lax.fori_loop``). Only the ``[B, C]`` count table comes back to the host.

Float32 pitfalls, handled here:

- Counts are int32. A float32 count stops growing at 2²⁴ ≈ 1.7 × 10⁷ samples.
- ``x + σ z`` is formed in float32 *after* drawing ``z`` at unit scale. This keeps small σ from
  being lost against the sampler's resolution.
- Clopper–Pearson and ``Φ⁻¹`` run on the host in float64 (SciPy). In float32, ``Φ⁻¹`` of a
  ``p_A`` within ``10⁻⁷`` of 1 is ``+inf``.
- The noise is added to the valid samples only. The padding stays zero, as the attacks keep it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxadv.attacks import common

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class SmoothingConfig:
    """Randomized-smoothing settings (Cohen et al.'s defaults: ``n0=100``, ``n=100_000``,
    ``α=0.001``).

    Args:
      sigma: noise standard deviation in sample units (absolute, the same for every clip).
      n0: noisy copies that select the candidate class.
      n: independent noisy copies that estimate its probability.
      alpha: the certificate holds with probability at least ``1 - alpha``.
      per_step: copies of each clip per step of the sampling loop. It bounds memory:
        ``B * per_step * N`` floats.
    """

    sigma: float = 0.01
    n0: int = 100
    n: int = 10_000
    alpha: float = 0.001
    per_step: int = 100

    def __post_init__(self) -> None:
        if not (self.sigma > 0 and math.isfinite(self.sigma)):
            raise ValueError(f"sigma must be a positive noise level, got {self.sigma!r}")
        if self.n0 < 1 or self.n < 1 or self.per_step < 1:
            raise ValueError(
                f"n0, n and per_step must be >= 1, got {self.n0}, {self.n}, {self.per_step}"
            )
        if not 0.0 < self.alpha < 0.5:
            raise ValueError(f"alpha must be in (0, 0.5), got {self.alpha!r}")

    @classmethod
    def at_dbfs(cls, noise_dbfs: float, **kw: Any) -> SmoothingConfig:
        """σ from a noise level in dBFS (RMS relative to full scale 1.0): ``σ = 10^(dBFS/20)``."""
        return cls(sigma=float(10 ** (noise_dbfs / 20)), **kw)


class Certificate(NamedTuple):
    """:func:`certify`'s result, per clip ``[B]``.

    ``prediction`` is the smoothed class, or -1 to abstain. ``counts`` are the ``n`` estimation
    draws per class ``[B, C]``. ``p_lower`` is the Clopper–Pearson lower bound of the top class's
    probability. ``radius`` is the certified L2 radius in sample units (0 when abstaining).
    ``snr_db`` is the certified SNR in dB (``+inf`` when abstaining).
    """

    prediction: np.ndarray
    counts: np.ndarray
    p_lower: np.ndarray
    radius: np.ndarray
    snr_db: np.ndarray


def clopper_pearson_lower(k: Any, n: int, alpha: float) -> np.ndarray:
    """One-sided ``1 - alpha`` lower confidence bound of a binomial proportion: the ``alpha``
    quantile of Beta(k, n - k + 1), 0 for ``k = 0`` (float64, SciPy)."""
    from scipy.stats import beta

    k = np.asarray(k, np.float64)
    with np.errstate(invalid="ignore"):
        lo = beta.ppf(alpha, k, n - k + 1)
    return np.where(k > 0, lo, 0.0)


def certified_radius(p_lower: Any, sigma: float) -> np.ndarray:
    """Cohen et al.'s ``R = σ Φ⁻¹(p_A)`` (float64), 0 where ``p_A ≤ 1/2``."""
    from scipy.stats import norm

    p = np.asarray(p_lower, np.float64)
    return np.where(p > 0.5, sigma * norm.ppf(np.clip(p, 0.5, 1.0)), 0.0)


def radius_to_snr_db(x: Any, lengths: Any, radius: Any) -> np.ndarray:
    """The SNR in dB of a perturbation of L2 norm ``radius`` on each clip: ``10 log10(‖x‖² /
    R²)`` over the valid samples. It is ``+inf`` where ``R = 0``."""
    x = np.asarray(x, np.float64)
    valid = np.arange(x.shape[1])[None, :] < np.asarray(lengths)[:, None]
    energy = np.sum(np.where(valid, x * x, 0.0), axis=1)
    r2 = np.asarray(radius, np.float64) ** 2
    with np.errstate(divide="ignore"):
        return np.where(r2 > 0, 10 * np.log10(energy / np.where(r2 > 0, r2, 1.0)), np.inf)


@functools.partial(jax.jit, static_argnames=("fn", "steps", "per_step", "num_classes"))
def _count(
    fn: Any,
    params: Any,
    x: Array,
    lengths: Array,
    keys: Array,
    sigma: Array,
    *,
    steps: int,
    per_step: int,
    num_classes: int,
) -> Array:
    """``[B, C]`` int32: how often ``fn`` predicts each class over ``steps * per_step`` noisy
    copies of every clip (noise on the valid samples only; clip ``b``'s draws from ``keys[b]``)."""
    b, n = x.shape
    valid = common.valid_mask(n, lengths)

    def body(i: Array, counts: Array) -> Array:
        ks = jax.vmap(lambda k: jax.random.fold_in(k, i))(keys)
        z = jax.vmap(lambda k: jax.random.normal(k, (per_step, n), jnp.float32))(ks)
        noisy = jnp.where(valid[:, None, :], x[:, None, :] + sigma * z, 0.0)
        flat = noisy.reshape(b * per_step, n)
        lens = jnp.repeat(lengths, per_step)
        pred = jnp.argmax(fn(params, flat, lens).probs, axis=-1).reshape(b, per_step)
        return counts + jnp.sum(jax.nn.one_hot(pred, num_classes, dtype=jnp.int32), axis=1)

    return jax.lax.fori_loop(0, steps, body, jnp.zeros((b, num_classes), jnp.int32))


def sample_counts(
    fn: Any,
    params: Any,
    x: Any,
    lengths: Any,
    keys: Any,
    *,
    sigma: float,
    num: int,
    per_step: int = 100,
) -> np.ndarray:
    """``[B, C]`` class counts of ``fn`` over ``num`` Gaussian copies (σ ``sigma``) of each clip
    (``num`` a multiple of ``per_step``; clip ``b``'s noise from ``keys[b]``)."""
    _check(int(num), int(per_step), "num")
    x = jnp.asarray(x, jnp.float32)
    lengths = jnp.asarray(lengths, jnp.int32)
    keys = jnp.asarray(keys)
    steps = int(num) // int(per_step)
    c = common.num_classes(fn, params, tuple(x.shape))
    counts = _count(fn, params, x, lengths, keys, jnp.float32(sigma), steps=steps,
                    per_step=int(per_step), num_classes=c)  # fmt: skip
    return np.asarray(counts)


def _keys(key: Any, batch: int) -> Any:
    """Per-clip keys from ``key`` (one key or ``[B]`` keys)."""
    key = jnp.asarray(key)
    if key.ndim == 0 or (key.dtype == jnp.uint32 and key.shape == (2,)):
        return jax.random.split(key, batch)
    if key.shape[0] != batch:
        raise ValueError(f"keys must be one key or one per clip ({batch}), got {key.shape}")
    return key


def _check(n: int, per_step: int, what: str) -> None:
    if n % per_step:
        raise ValueError(
            f"{what} ({n}) must be a multiple of per_step ({per_step}): the counts are exact"
        )


def certify(
    fn: Any,
    params: Any,
    x: Any,
    lengths: Any,
    key: Any,
    config: SmoothingConfig = SmoothingConfig(),
) -> Certificate:
    """Cohen et al.'s CERTIFY on a batch of clips ``x [B, N]`` (valid ``lengths [B]``).

    ``key``: one PRNG key (split per clip) or ``[B]`` keys (one per clip, so that a clip's
    certificate does not depend on its batch). The selection and the estimation draws use
    independent keys (``fold_in`` 0 and 1), as the bound requires.
    """
    s0 = min(config.per_step, config.n0)  # the selection pass is often smaller than a step
    _check(config.n0, s0, "n0")
    _check(config.n, config.per_step, "n")
    x = np.asarray(x, np.float32)
    lengths = np.asarray(lengths, np.int32)
    keys = _keys(key, x.shape[0])
    sel = jax.vmap(lambda k: jax.random.fold_in(k, 0))(keys)
    est = jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys)
    kw = {"sigma": config.sigma, "per_step": config.per_step}
    c0 = sample_counts(fn, params, x, lengths, sel, num=config.n0, sigma=config.sigma,
                       per_step=s0)  # fmt: skip
    top = c0.argmax(axis=1)
    counts = sample_counts(fn, params, x, lengths, est, num=config.n, **kw)
    k = counts[np.arange(len(top)), top]
    p_lower = clopper_pearson_lower(k, config.n, config.alpha)
    radius = certified_radius(p_lower, config.sigma)
    pred = np.where(p_lower > 0.5, top, -1)
    return Certificate(pred, counts, p_lower, radius, radius_to_snr_db(x, lengths, radius))


def predict(
    fn: Any,
    params: Any,
    x: Any,
    lengths: Any,
    key: Any,
    config: SmoothingConfig = SmoothingConfig(),
) -> np.ndarray:
    """Cohen et al.'s PREDICT: the smoothed class of each clip, or -1 to abstain.

    It abstains when a two-sided binomial test (``n_A`` vs ``n_A + n_B`` at 1/2) of the two most
    frequent classes over ``config.n`` draws has a p-value above ``alpha``. Returns ``[B]``.
    """
    from scipy.stats import binomtest

    _check(config.n, config.per_step, "n")
    x = np.asarray(x, np.float32)
    keys = _keys(key, x.shape[0])
    counts = sample_counts(fn, params, x, lengths, keys, sigma=config.sigma, num=config.n,
                           per_step=config.per_step)  # fmt: skip
    order = np.argsort(-counts, axis=1, kind="stable")
    out = np.full(len(counts), -1, np.int64)
    for i, (a, b) in enumerate(order[:, :2]):
        na, nb = int(counts[i, a]), int(counts[i, b])
        if binomtest(na, na + nb, 0.5).pvalue <= config.alpha:
            out[i] = a
    return out


def certified_accuracy(cert: Certificate, labels: Any, snr_db: Any) -> np.ndarray:
    """Share of clips whose smoothed prediction is their label *and* is certified at each SNR of
    ``snr_db`` (a clip certified at ``s`` dB counts for every budget above ``s``): ``[len(snr_db)]``
    in [0, 1], non-increasing as the budget's SNR falls (stronger perturbations)."""
    ok = np.asarray(cert.prediction) == np.asarray(labels)
    s = np.asarray(cert.snr_db)[:, None]
    return np.mean(ok[:, None] & (s <= np.asarray(snr_db, np.float64)[None, :]), axis=0)
