"""Fast Gradient Sign Method (Goodfellow et al. 2015, https://arxiv.org/abs/1412.6572).

Two modes over one gradient ``g = d CE / dx`` of the cross-entropy of the scores on the
ground-truth label (summed over valid chunks for ``scores="logits"``; untargeted: step up the loss
of ``labels``; targeted: step down the loss of ``targets``):

* ``mode="snr"`` — the paper authors' FGSM (VinodS7/audio-adversaries
  ``src/attacks/fast_gradient_method.py``, ORIGINALS.md §5.3): ``delta = sign(g)`` rescaled so that
  ``RMS(delta) = RMS(x) / rms_ratio`` over the clip's valid samples, i.e. the SNR is exactly
  ``snr_db``. Not clipped by default (the authors did not clip).
* ``mode="search"`` — Foolbox 1.x ``GradientSignAttack`` (ATTACKS_REFERENCE.md §2.4): the smallest
  ``eps`` on the grid ``linspace(0, max_eps, epsilons + 1)[1:]`` for which
  ``clip(x + eps * sign(g) * (max - min))`` is adversarial; if it is found at grid index ``< 20``
  the search is repeated once over ``linspace(0, eps, 21)[1:]``. The grid is evaluated ``block``
  values at a time as one batched forward pass of ``B * block`` clips inside a single
  ``lax.while_loop`` that stops when every example has its ``eps``, instead of up to 1000
  sequential forward passes per example.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxadv.attacks import common
from jaxadv.attacks.noise import scale_to_snr
from jaxadv.classifier import ClassifierFn

Array = jax.Array

MODES = ("snr", "search")


@dataclasses.dataclass(frozen=True)
class FGSMConfig:
    """FGSM settings.

    Attributes:
      mode: ``"snr"`` (fixed SNR, the authors) or ``"search"`` (Foolbox 1.x minimal-eps search).
      snr_db: SNR of the perturbation in dB (``mode="snr"``); ``20 log10(rms_ratio)``.
      clip: clip the ``"snr"`` result to the [-1, 1] box (the SNR is then no longer exact).
      scores: ``"log_probs"`` or ``"logits"`` (see :mod:`jaxadv.attacks.common`).
      epsilons: grid size of the search (Foolbox 1.x: 1000).
      max_epsilon: largest eps of the grid, relative to the box range (Foolbox 1.x: 1).
      refine_below: repeat the search with a finer grid if the first hit has index < this (20).
      refine_steps: size of the finer grid ``linspace(0, eps_i, refine_steps + 1)[1:]`` (20).
      block: eps values evaluated per forward pass (the forward batch is ``B * block`` clips).
    """

    mode: str = "snr"
    snr_db: float = 20.0
    clip: bool = False
    scores: str = "log_probs"
    epsilons: int = 1000
    max_epsilon: float = 1.0
    refine_below: int = 20
    refine_steps: int = 20
    block: int = 10

    def __post_init__(self) -> None:
        common.check_fields(
            self,
            {
                "mode": common.choice(MODES),
                "snr_db": common.number(),
                "clip": common.BOOLEAN,
                "scores": common.SCORES_RULE,
                "epsilons": common.integer(1),
                "max_epsilon": common.number(0, lo_open=True),
                "refine_below": common.integer(0),  # 0: never refine
                "refine_steps": common.integer(1),
                "block": common.integer(1),
            },
        )

    @classmethod
    def authors(cls, rms_ratio: float = 6.0) -> FGSMConfig:
        """``experiment1``: one sign step at ``RMS(x)/rms_ratio`` (6 -> 15.56 dB), CE on the logits."""
        return cls(mode="snr", snr_db=20.0 * math.log10(rms_ratio), scores="logits")

    @classmethod
    def foolbox1(cls) -> FGSMConfig:
        """Foolbox 1.8 ``GradientSignAttack(epsilons=1000, max_epsilon=1)`` (CE on log-softmax)."""
        return cls(mode="search")


class FGSMResult(NamedTuple):
    """Result of :func:`fgsm` (all ``[B]`` unless noted).

    Attributes:
      adversarial: ``[B, N]`` perturbed waveforms (``x`` exactly beyond each clip's length).
      success: the clip decision changed (untargeted: ``argmax != labels``; targeted: ``== targets``).
      steps: model evaluations on perturbed inputs (``"snr"``: 1; ``"search"``: eps values tried).
      epsilon: ``"snr"``: the per-sample amplitude of the perturbation; ``"search"``: the eps found
        (relative to the box range; the perturbation is ``eps * 2`` per sample before clipping),
        or the largest eps tried for a failed example (whose ``adversarial`` is that point).
    """

    adversarial: Array
    success: Array
    steps: Array
    epsilon: Array


def _sign_gradient(fn, params, x, lengths, classes, scores, targeted):
    def loss(xx):
        return jnp.sum(common.cross_entropy(fn(params, xx, lengths), classes, scores))

    g = jax.grad(loss)(x)
    s = jnp.sign(g)
    return -s if targeted else s


def _fgsm_impl(
    fn: ClassifierFn,
    params: Any,
    x: Array,
    lengths: Array,
    labels: Array,
    targets: Array | None,
    *,
    config: FGSMConfig,
) -> FGSMResult:
    b, n = x.shape
    valid = common.valid_mask(n, lengths)
    targeted = targets is not None
    classes = targets if targeted else labels
    s = jnp.where(
        valid, _sign_gradient(fn, params, x, lengths, classes, config.scores, targeted), 0
    )

    if config.mode == "snr":
        delta = scale_to_snr(x, s, valid, config.snr_db)
        adv = x + delta
        if config.clip:
            adv = jnp.where(valid, jnp.clip(adv, *common.BOX), x)
        out = fn(params, adv, lengths)
        success = common.decision(out.probs, labels, targets)
        eps = jnp.max(jnp.abs(delta), axis=-1)
        return FGSMResult(adv, success, jnp.ones((b,), jnp.int32), eps)

    # --- Foolbox 1.x minimal-eps search, `block` eps values per forward pass -------------------
    lo, hi = common.BOX
    k = config.block
    n_coarse, n_fine = config.epsilons, config.refine_steps
    grid = jnp.asarray(np.linspace(0, config.max_epsilon, n_coarse + 1)[1:], jnp.float32)
    frac = jnp.arange(1, n_fine + 1, dtype=jnp.float32) / n_fine  # linspace(0, e, 21)[1:] / e
    step = s * (hi - lo)

    def perturb(eps):  # eps [B, K] -> [B, K, N]
        xe = jnp.clip(x[:, None, :] + eps[:, :, None] * step[:, None, :], lo, hi)
        return jnp.where(valid[:, None, :], xe, x[:, None, :])

    def body(st):
        phase, pos, eps_hi, eps_found, done, success, steps, adv, _ = st
        idx = pos[:, None] + jnp.arange(k)[None, :]
        coarse = phase[:, None] == 0
        size = jnp.where(coarse, n_coarse, n_fine)
        eps = jnp.where(
            coarse,
            grid[jnp.minimum(idx, n_coarse - 1)],
            eps_hi[:, None] * frac[jnp.minimum(idx, n_fine - 1)],
        )
        live = (idx < size) & ~done[:, None]
        xe = perturb(eps)
        out = fn(params, xe.reshape(b * k, n), jnp.repeat(lengths, k))
        cls = jnp.repeat(classes, k)
        pred = jnp.argmax(out.probs, axis=-1)
        hit = ((pred == cls) if targeted else (pred != cls)).reshape(b, k) & live
        anyhit = hit.any(axis=1)
        first = jnp.argmax(hit, axis=1)
        i = pos + first
        e_hit = jnp.take_along_axis(eps, first[:, None], axis=1)[:, 0]
        x_hit = jnp.take_along_axis(xe, first[:, None, None], axis=1)[:, 0]
        refine = anyhit & (phase == 0) & (i < config.refine_below)
        finish = anyhit & ~refine
        exhausted = ~anyhit & ~done & (pos + k >= jnp.where(phase == 0, n_coarse, n_fine))
        # A fine grid that misses (it ends at the coarse hit, so only by rounding) keeps that hit.
        keep_coarse = exhausted & (phase == 1)
        steps = steps + live.sum(axis=1)
        success = success | finish | keep_coarse
        eps_found = jnp.where(finish, e_hit, eps_found)
        adv = jnp.where((finish | refine)[:, None], x_hit, adv)
        eps_found = jnp.where(refine, e_hit, eps_found)  # provisional, replaced by the fine hit
        # A failed example ends at the largest eps of the grid.
        fail = exhausted & (phase == 0)
        eps_found = jnp.where(fail, config.max_epsilon, eps_found)
        adv = jnp.where(fail[:, None], perturb(jnp.full((b, 1), config.max_epsilon))[:, 0], adv)
        eps_hi = jnp.where(refine, e_hit, eps_hi)
        pos = jnp.where(refine, 0, pos + k)
        phase = jnp.where(refine, 1, phase)
        done = done | finish | exhausted
        return phase, pos, eps_hi, eps_found, done, success, steps, adv, jnp.all(done)

    zi = jnp.zeros((b,), jnp.int32)
    zf = jnp.zeros((b,), jnp.float32)
    zb = jnp.zeros((b,), bool)
    init = (zi, zi, zf, zf, zb, zb, zi, x, jnp.asarray(False))
    st = jax.lax.while_loop(lambda st: ~st[-1], body, init)
    _, _, _, eps_found, _, success, steps, adv, _ = st
    return FGSMResult(adv, success, steps, eps_found)


_fgsm_jit = jax.jit(_fgsm_impl, static_argnames=("fn", "config"))


def fgsm(
    fn: ClassifierFn,
    params: Any,
    x: Array,
    lengths: Array,
    labels: Array,
    *,
    targets: Array | None = None,
    config: FGSMConfig = FGSMConfig(),
    key: Any = None,
) -> FGSMResult:
    """Fast Gradient Sign Method at a fixed SNR or with Foolbox 1.x's minimal-eps search.

    Args:
      fn: classifier function (hashable; see :mod:`jaxadv.classifier`).
      params: its parameters.
      x: ``[B, N]`` waveforms (32 kHz, in [-1, 1]).
      lengths: ``[B]`` valid samples per clip.
      labels: ``[B]`` ground-truth classes (the loss is the CE on these when untargeted).
      targets: optional ``[B]`` target classes (may differ per example): step down CE(target).
      config: :class:`FGSMConfig`.
      key: unused (deterministic attack).

    Returns:
      :class:`FGSMResult`.
    """
    del key
    common.check_config("fgsm", config, FGSMConfig)
    x, lengths, labels, targets = common.validate("fgsm", fn, params, x, lengths, labels, targets)
    return _fgsm_jit(fn, params, x, lengths, labels, targets, config=config)
