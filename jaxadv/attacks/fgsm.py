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
  values at a time as one batched forward pass of ``B * block`` clips, on the attack engine
  (:mod:`jaxadv.attacks.engine`), until every example has its ``eps``, instead of up to 1000
  sequential forward passes per example.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxadv.attacks import common, criteria, engine
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


def _sign_gradient(fn, params, problem: engine.Problem, scores: str) -> Array:
    """``sign(d CE / dx)`` on the valid samples, pointing up CE(label) or down CE(target)."""
    targeted = problem.targeted
    classes = problem.targets if targeted else problem.labels

    def loss(xx):
        return jnp.sum(common.cross_entropy(fn(params, xx, problem.lengths), classes, scores))

    s = jnp.sign(jax.grad(loss)(problem.x))
    return jnp.where(problem.valid, -s if targeted else s, 0)


class _SNRState(NamedTuple):
    adv: Array  # [B, N]
    success: Array
    eps: Array
    done: Array


@dataclasses.dataclass(frozen=True)
class FGSMAtSNR:
    """The authors' one sign step at a fixed SNR: one evaluation (gradient, then a forward)."""

    config: FGSMConfig

    def init(self, fn: Any, params: Any, problem: engine.Problem) -> _SNRState:
        b = problem.x.shape[0]
        z = jnp.zeros((b,), jnp.float32)
        return _SNRState(jnp.zeros_like(problem.x), z > 0, z, z > 0)

    def query(self, st: _SNRState) -> tuple:
        return ()

    def evaluate(self, fn: Any, params: Any, problem: engine.Problem, q: Any) -> Any:
        x, valid = problem.x, problem.valid
        s = _sign_gradient(fn, params, problem, self.config.scores)
        delta = scale_to_snr(x, s, valid, self.config.snr_db)
        adv = x + delta
        if self.config.clip:
            adv = jnp.where(valid, jnp.clip(adv, *common.BOX), x)
        out = fn(params, adv, problem.lengths)
        success = criteria.decision(problem.labels, problem.targets).is_adversarial(out)
        return adv, success, jnp.max(jnp.abs(delta), axis=-1)

    def step(self, problem: engine.Problem, st: _SNRState, e: Any, active: Array) -> _SNRState:
        return _SNRState(*e, jnp.ones_like(st.done))

    def done(self, st: _SNRState) -> Array:
        return st.done

    def result(self, fn, params, problem, st: _SNRState, evaluations: Array) -> FGSMResult:
        return FGSMResult(st.adv, st.success, evaluations, st.eps)


class _SearchState(NamedTuple):
    step: Array  # [B, N] sign(g) * (max - min)
    phase: Array  # 0 = coarse grid, 1 = fine grid
    pos: Array  # next grid index
    eps_hi: Array  # the coarse hit the fine grid ends at
    eps_found: Array
    done: Array
    success: Array
    steps: Array  # forward evaluations (grid values tried)
    adv: Array


@dataclasses.dataclass(frozen=True)
class FGSMSearch:
    """Foolbox 1.x's minimal-eps search: ``block`` grid values per evaluation (``B * block`` clips
    in one forward pass), coarse grid then a finer one below an early hit."""

    config: FGSMConfig

    def _perturb(self, problem: engine.Problem, step: Array, eps: Array) -> Array:
        """``clip(x + eps * step)`` on the valid samples; eps ``[B, K]`` -> ``[B, K, N]``."""
        x = problem.x
        xe = jnp.clip(x[:, None, :] + eps[:, :, None] * step[:, None, :], *common.BOX)
        return jnp.where(problem.valid[:, None, :], xe, x[:, None, :])

    def _grid(self, st: _SearchState) -> tuple[Array, Array]:
        """This evaluation's eps ``[B, K]`` and which of them are real grid values."""
        cfg = self.config
        n_coarse, n_fine, k = cfg.epsilons, cfg.refine_steps, cfg.block
        grid = jnp.asarray(np.linspace(0, cfg.max_epsilon, n_coarse + 1)[1:], jnp.float32)
        frac = jnp.arange(1, n_fine + 1, dtype=jnp.float32) / n_fine  # linspace(0, e, 21)[1:] / e
        idx = st.pos[:, None] + jnp.arange(k)[None, :]
        coarse = st.phase[:, None] == 0
        eps = jnp.where(
            coarse,
            grid[jnp.minimum(idx, n_coarse - 1)],
            st.eps_hi[:, None] * frac[jnp.minimum(idx, n_fine - 1)],
        )
        live = (idx < jnp.where(coarse, n_coarse, n_fine)) & ~st.done[:, None]
        return eps, live

    def init(self, fn: Any, params: Any, problem: engine.Problem) -> _SearchState:
        b = problem.x.shape[0]
        lo, hi = common.BOX
        zi, zf, zb = jnp.zeros((b,), jnp.int32), jnp.zeros((b,), jnp.float32), jnp.zeros((b,), bool)
        step = _sign_gradient(fn, params, problem, self.config.scores) * (hi - lo)
        return _SearchState(step, zi, zi, zf, zf, zb, zb, zi, problem.x)

    def query(self, st: _SearchState) -> Any:
        eps, live = self._grid(st)
        return st.step, eps, live

    def evaluate(self, fn: Any, params: Any, problem: engine.Problem, q: Any) -> Any:
        """First live hit of each row's block: (any hit, its index, its eps, its clip)."""
        step, eps, live = q
        b, n = problem.x.shape
        k = eps.shape[1]
        xe = self._perturb(problem, step, eps)
        out = fn(params, xe.reshape(b * k, n), jnp.repeat(problem.lengths, k))
        rep = criteria.decision(
            jnp.repeat(problem.labels, k),
            None if problem.targets is None else jnp.repeat(problem.targets, k),
        )
        hit = rep.is_adversarial(out).reshape(b, k) & live
        first = jnp.argmax(hit, axis=1)
        e_hit = jnp.take_along_axis(eps, first[:, None], axis=1)[:, 0]
        x_hit = jnp.take_along_axis(xe, first[:, None, None], axis=1)[:, 0]
        return hit.any(axis=1), first, e_hit, x_hit

    def step(self, problem: engine.Problem, st: _SearchState, e: Any, active: Array) -> Any:
        cfg = self.config
        anyhit, first, e_hit, x_hit = e
        _, live = self._grid(st)
        k = cfg.block
        n_coarse, n_fine = cfg.epsilons, cfg.refine_steps
        i = st.pos + first
        refine = anyhit & (st.phase == 0) & (i < cfg.refine_below)
        finish = anyhit & ~refine
        size = jnp.where(st.phase == 0, n_coarse, n_fine)
        exhausted = ~anyhit & ~st.done & (st.pos + k >= size)
        # A fine grid that misses (it ends at the coarse hit, so only by rounding) keeps that hit.
        keep_coarse = exhausted & (st.phase == 1)
        eps_found = jnp.where(finish | refine, e_hit, st.eps_found)  # refine: provisional
        adv = jnp.where((finish | refine)[:, None], x_hit, st.adv)
        # A failed example ends at the largest eps of the grid.
        fail = exhausted & (st.phase == 0)
        eps_found = jnp.where(fail, cfg.max_epsilon, eps_found)
        b = problem.x.shape[0]
        at_max = self._perturb(problem, st.step, jnp.full((b, 1), cfg.max_epsilon))[:, 0]
        adv = jnp.where(fail[:, None], at_max, adv)
        return st._replace(
            phase=jnp.where(refine, 1, st.phase),
            pos=jnp.where(refine, 0, st.pos + k),
            eps_hi=jnp.where(refine, e_hit, st.eps_hi),
            eps_found=eps_found,
            done=st.done | finish | exhausted,
            success=st.success | finish | keep_coarse,
            steps=st.steps + live.sum(axis=1),
            adv=adv,
        )

    def done(self, st: _SearchState) -> Array:
        return st.done

    def result(self, fn, params, problem, st: _SearchState, evaluations: Array) -> FGSMResult:
        return FGSMResult(st.adv, st.success, st.steps, st.eps_found)


ALGORITHMS = {"snr": FGSMAtSNR, "search": FGSMSearch}


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
    problem = engine.Problem(x, lengths, labels, targets)
    return engine.run(ALGORITHMS[config.mode](config), fn, params, problem)


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
