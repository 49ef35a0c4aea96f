"""Projected gradient descent at an SNR budget (Madry et al. 2018, https://arxiv.org/abs/1706.06083).

Reference: Foolbox 3.3.4 ``L2PGD`` / ``LinfPGD`` (``foolbox/attacks/projected_gradient_descent.py``
and ``gradient_descent_base.py``: random start in the ball, ``steps`` steps of size
``rel_stepsize * eps`` along the normalised gradient (L2) or its sign (L∞), projection onto the
ball and the box). The radius is per example, from a budget in dB so that every perturbation of
the ball has at least that SNR:

* L2: ``eps = ||x||_2 * 10^(-snr_db / 20)`` over the clip's valid samples (on the sphere the SNR
  is exactly ``snr_db``);
* L∞: ``eps = RMS(x) * 10^(-snr_db / 20)``: a perturbation with ``|delta_t| <= eps`` has
  ``RMS(delta) <= eps``, so its SNR is at least ``snr_db`` (equal for ``|delta_t| = eps``, what
  the sign steps tend to).

Loss: the cross-entropy of the label, ascended (untargeted), or of the target, descended
(Madry; ``loss="ce"``), or FMN's margin (``"margin"``). With ``abort_early`` (default) an example
stops at its first adversarial iterate, which is its result (the attack answers "is there an
adversarial example within the budget?"; finished examples leave their slot in a sweep); without
it every example runs every step and the result is the first adversarial iterate if any, else
the last iterate (Foolbox returns the last). The random start is drawn per example from its key
in fixed blocks of samples (:func:`jaxadv.attacks.noise.block_noise`), so it does not depend on
the batch or the padded width: uniform in the L∞ ball; for L2 a uniformly random direction on
the sphere scaled by ``u^(1/n)`` (uniform in the ball; for audio lengths practically the sphere).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxadv.attacks import common, criteria, engine
from jaxadv.attacks.fmn import TINY, clip_to_box, lp_norm, margin, project_box
from jaxadv.attacks.noise import block_noise
from jaxadv.classifier import ClassifierFn

Array = jax.Array

NORMS = ("l2", "linf")
LOSSES = ("ce", "margin")


@dataclasses.dataclass(frozen=True)
class PGDConfig:
    """PGD settings (Foolbox 3.3.4's ``L2PGD`` step size and count by default).

    Attributes:
      snr_db: the budget: every perturbation of the ball has an SNR of at least this (dB).
      norm: ``"l2"`` or ``"linf"`` (the ball; see the module docstring for its radius).
      steps: gradient steps (each one forward+backward; one more evaluation checks the last).
      rel_stepsize: step size as a fraction of the radius (Foolbox L2PGD 0.025, LinfPGD 0.033).
      random_start: start uniformly in the ball (Madry; needs a key) instead of at ``x``.
      loss: ``"ce"`` (Madry) or ``"margin"``.
      abort_early: stop an example at its first adversarial iterate.
      scores: ``"log_probs"`` or ``"logits"`` (see :mod:`jaxadv.attacks.common`).
    """

    snr_db: float = 40.0
    norm: str = "l2"
    steps: int = 50
    rel_stepsize: float = 0.025
    random_start: bool = True
    loss: str = "ce"
    abort_early: bool = True
    scores: str = "log_probs"

    def __post_init__(self) -> None:
        common.check_fields(
            self,
            {
                "snr_db": common.number(),
                "norm": common.choice(NORMS),
                "steps": common.integer(1),
                "rel_stepsize": common.number(0.0, lo_open=True),
                "random_start": common.BOOLEAN,
                "loss": common.choice(LOSSES),
                "abort_early": common.BOOLEAN,
                "scores": common.SCORES_RULE,
            },
        )

    @classmethod
    def foolbox3(cls, norm: str = "l2", snr_db: float = 40.0) -> PGDConfig:
        """Foolbox 3.3.4 ``L2PGD()`` (50 steps of 0.025 eps) / ``LinfPGD()`` (40 of 0.033 eps),
        without early abort (every example runs every step)."""
        if norm == "linf":
            return cls(snr_db, "linf", 40, 0.01 / 0.3, abort_early=False)
        return cls(snr_db, "l2", 50, 0.025, abort_early=False)


class PGDResult(NamedTuple):
    """Result of :func:`pgd` (all ``[B]`` unless noted).

    Attributes:
      adversarial: ``[B, N]`` the first adversarial iterate, else the last one.
      success: some iterate was adversarial.
      steps: evaluations (forward+backward) used.
      epsilon: the ball's radius (L2 or L∞ norm, per the config).
      distance: the norm of ``adversarial - x`` (same norm) over the valid samples.
    """

    adversarial: Array
    success: Array
    steps: Array
    epsilon: Array
    distance: Array


class _State(NamedTuple):
    delta: Array  # [B, N] the iterate to evaluate next
    adv_delta: Array  # [B, N] the first adversarial iterate (or the last evaluated)
    found: Array
    it: Array  # evaluations so far


def radius(problem: engine.Problem, norm: str, snr_db: float) -> Array:
    """``[B]`` the radius of the ball whose perturbations all have an SNR >= ``snr_db``."""
    valid = problem.valid
    scale = 10.0 ** (-snr_db / 20.0)
    if norm == "l2":
        return lp_norm(problem.x, valid, "l2") * scale
    n = jnp.maximum(problem.lengths.astype(jnp.float32), 1.0)
    rms = jnp.sqrt(jnp.sum(jnp.where(valid, problem.x**2, 0.0), -1) / n)
    return rms * scale


def project(delta: Array, eps: Array, valid: Array, norm: str) -> Array:
    """``delta`` projected onto the ``norm`` ball of radius ``eps [B]`` (zero beyond ``valid``)."""
    if norm == "linf":
        return jnp.where(valid, jnp.clip(delta, -eps[:, None], eps[:, None]), 0.0)
    n2 = lp_norm(delta, valid, "l2")
    factor = jnp.minimum(1.0, eps / jnp.maximum(n2, TINY))
    return jnp.where(valid, delta * factor[:, None], 0.0)


def random_start(problem: engine.Problem, eps: Array, norm: str) -> Array:
    """A start uniform in the ball, per example from its key (independent of the padding)."""
    z = jax.vmap(block_noise, in_axes=(0, None))(problem.keys, problem.x.shape[1])
    valid = problem.valid
    if norm == "linf":  # the normal CDF turns the standard normal samples into uniform ones
        u = 2.0 * jax.scipy.special.ndtr(z) - 1.0
        return jnp.where(valid, u * eps[:, None], 0.0)
    z = jnp.where(valid, z, 0.0)
    direction = z / jnp.maximum(lp_norm(z, valid, "l2"), TINY)[:, None]
    n = jnp.maximum(problem.lengths.astype(jnp.float32), 1.0)
    # the radius factor from a stream no noise block uses (blocks are folded in from 0 up)
    u = jax.vmap(lambda k: jax.random.uniform(jax.random.fold_in(k, 2**31 - 1)))(problem.keys)
    return direction * (eps * u ** (1.0 / n))[:, None]


@dataclasses.dataclass(frozen=True)
class PGD:
    """PGD as an engine :class:`~jaxadv.attacks.engine.Algorithm` (one evaluation = one
    forward+backward of the loss at ``x + delta``)."""

    config: PGDConfig

    def prepare(self, problem: engine.Problem) -> engine.Problem:
        return clip_to_box(problem)

    def init(self, fn: Any, params: Any, problem: engine.Problem) -> _State:
        del fn, params
        cfg = self.config
        b = problem.x.shape[0]
        full = functools.partial(jnp.full, (b,))
        delta = jnp.zeros_like(problem.x)
        if cfg.random_start:
            eps = radius(problem, cfg.norm, cfg.snr_db)
            delta = project_box(problem, random_start(problem, eps, cfg.norm))
        return _State(delta, jnp.zeros_like(problem.x), full(False, bool), full(0, jnp.int32))

    def query(self, st: _State) -> Array:
        return st.delta

    def evaluate(self, fn: Any, params: Any, problem: engine.Problem, q: Any) -> Any:
        """Adversarial ``[rows]`` and the step direction ``[rows, N]`` (the gradient of the
        loss, normalised (L2) or its sign (L∞), signed to move towards adversarial) at
        ``x + q``."""
        cfg = self.config
        cls = problem.labels if problem.targets is None else problem.targets
        crit = criteria.decision(problem.labels, problem.targets)

        def objective(xa):
            out = fn(params, xa, problem.lengths)
            if cfg.loss == "margin":  # > 0 while not adversarial: descend it
                loss = -margin(out, problem, cfg.scores)
            else:
                ce = common.cross_entropy(out, cls, cfg.scores)
                loss = -ce if problem.targeted else ce  # up the label's CE, down the target's
            return jnp.sum(loss), crit.is_adversarial(out)

        (_, ok), g = jax.value_and_grad(objective, has_aux=True)(problem.x + q)
        valid = problem.valid
        g = jnp.where(valid, g, 0.0)
        if cfg.norm == "linf":
            return ok, jnp.sign(g)
        return ok, g / jnp.maximum(lp_norm(g, valid, "l2"), TINY)[:, None]

    def step(self, problem: engine.Problem, st: _State, e: Any, active: Array) -> _State:
        cfg = self.config
        ok, direction = e
        first = ok & ~st.found
        adv_delta = common.where_b(first | ~st.found, st.delta, st.adv_delta)
        eps = radius(problem, cfg.norm, cfg.snr_db)
        delta = st.delta + (cfg.rel_stepsize * eps)[:, None] * direction
        delta = project_box(problem, project(delta, eps, problem.valid, cfg.norm))
        return _State(delta, adv_delta, st.found | ok, st.it + 1)

    def done(self, st: _State) -> Array:
        over = st.it > self.config.steps  # steps + 1 evaluations: the last step is checked
        return over | st.found if self.config.abort_early else over

    def result(self, fn, params, problem, st: _State, evaluations: Array) -> PGDResult:
        del fn, params
        cfg = self.config
        adv = jnp.where(problem.valid, problem.x + st.adv_delta, problem.x)
        return PGDResult(
            adversarial=adv,
            success=st.found,
            steps=evaluations,
            epsilon=radius(problem, cfg.norm, cfg.snr_db),
            distance=lp_norm(st.adv_delta, problem.valid, cfg.norm),
        )


def _pgd_impl(
    fn: ClassifierFn,
    params: Any,
    x: Array,
    lengths: Array,
    labels: Array,
    targets: Array | None,
    keys: Array | None,
    *,
    config: PGDConfig,
) -> PGDResult:
    problem = engine.Problem(x, lengths, labels, targets, keys)
    return engine.run(PGD(config), fn, params, problem)


_pgd_jit = jax.jit(_pgd_impl, static_argnames=("fn", "config"))


def pgd(
    fn: ClassifierFn,
    params: Any,
    x: Array,
    lengths: Array,
    labels: Array,
    *,
    targets: Array | None = None,
    config: PGDConfig = PGDConfig(),
    key: Any = None,
) -> PGDResult:
    """PGD (L2 or L∞) at an SNR budget, untargeted or targeted, one compiled program.

    Args:
      fn: classifier function (hashable; see :mod:`jaxadv.classifier`).
      params: its parameters.
      x: ``[B, N]`` waveforms (32 kHz, in [-1, 1]; clipped to the box first).
      lengths: ``[B]`` valid samples per clip (the perturbation is exactly zero beyond).
      labels: ``[B]`` ground-truth classes.
      targets: optional ``[B]`` target classes.
      config: :class:`PGDConfig`.
      key: one PRNG key (example ``b`` uses ``fold_in(key, b)``) or ``B`` keys, for the random
        start (needed with ``random_start``; unused without).

    Returns:
      :class:`PGDResult`.
    """
    common.check_config("pgd", config, PGDConfig)
    x, lengths, labels, targets = common.validate("pgd", fn, params, x, lengths, labels, targets)
    keys = common.example_keys(key, x.shape[0]) if config.random_start else None
    return _pgd_jit(fn, params, x, lengths, labels, targets, keys, config=config)
