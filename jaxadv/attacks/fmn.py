"""Fast Minimum-Norm attack (FMN; Pintor et al. 2021, https://arxiv.org/abs/2102.12827), L2 / Linf.

Reference: Foolbox 3.3.4 ``L2FMNAttack`` / ``LInfFMNAttack`` (``foolbox/attacks/fast_minimum_norm.py``,
started from the clean clip, no initial attack), the same algorithm as the authors' and adv_lib's
``fmn``. Per example, ``steps`` iterations; iteration ``i`` (one forward+backward at ``x + delta``):

* the margin ``m = s_y - max_{j != y} s_j`` (untargeted) or ``max_{j != t} s_j - s_t``
  (targeted) of the clip scores (:func:`jaxadv.attacks.common.clip_scores`) and its gradient
  ``g``; the clip is adversarial when the decision criterion holds
  (:func:`jaxadv.attacks.criteria.decision`: ``argmax != y`` / ``argmax == t``);
* best-so-far: an adversarial iterate with ``||delta|| <=`` the best norm replaces the best;
* the norm constraint ``eps`` (``gamma_i`` cosine annealed from ``gamma_init`` to
  ``gamma_final``)::

      adversarial now:        eps = min(eps * (1 - gamma_i), ||best delta||)
      adversarial found once: eps = eps * (1 + gamma_i)
      never adversarial yet:  eps = (||delta|| + |m| / ||g||_dual) * (1 + overshoot)
                              (the first-boundary linear estimate; Foolbox: overshoot 0)

  then ``eps = min(eps, worst)`` (``worst``: the norm of the farthest point of the box);
* a step down the margin ``delta -= a_i * g / ||g||_2`` (L2-normalised for both norms, as in
  the paper and Foolbox), ``alpha_i`` cosine annealed from ``alpha_init`` to ``alpha_final``;
* projection onto the ``eps`` ball (L2: rescale if longer; Linf: clip each sample to
  ``[-eps, eps]``) and onto the [-1, 1] box.

Step scale (``step_scale``), the audio adaptation. Foolbox's ``a_i = alpha_i`` is an absolute L2
length tuned for images in [0, 1] (minimal L2 perturbations ~0.1-1). A 2 s clip has ``||x|| ~ 25``
and its minimal perturbation is ~1e-3 of that (~90 dB SNR), so an absolute step of 1 -> 0.01 is
10-1000 times the ball it is projected onto: every step jumps to the ball's edge along the new
gradient and the direction never settles. ``step_scale="epsilon"`` (default) makes the step
relative to the current constraint: ``a_i = alpha_i * eps`` (L2) or ``alpha_i * eps * sqrt(n)``
(Linf; ``n`` valid samples, the L2 radius of the Linf ball's corners, so ``alpha_i`` is again a
fraction of the ball), i.e. scale-free: the same trajectory for a clip and the clip times 100.
The initial norm needs no adaptation: FMN's first ``eps`` is already the linearised boundary
distance ``|m| / ||g||_dual`` of the first evaluation (DeepFool's first step).

Presets: the default (audio: ``step_scale="epsilon"``) and :meth:`FMNConfig.foolbox3` (Foolbox
3.3.4's stock behaviour, absolute steps; its ``L2FMNAttack.project`` multiplies by
``min(1, norms / norms) = 1``, i.e. never projects onto the L2 ball: ``project=False`` for L2
reproduces that; Linf projects).

Runs on the attack engine (:mod:`jaxadv.attacks.engine`). Every row runs exactly ``steps``
iterations (there is no early stop), so in :func:`run` all rows finish together and compaction
never shrinks the batch (``compact_levels`` defaults to 0); in a sweep, slots refill as jobs end.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxadv.attacks import common, criteria, engine
from jaxadv.classifier import ClassifierFn

Array = jax.Array

NORMS = ("l2", "linf")
STEP_SCALES = ("epsilon", "absolute")
TINY = 1e-12  # floor of every norm that divides (Foolbox)


def below_one(*, lo_open: bool) -> common.Rule:
    """A finite number in ``[0, 1)`` (``(0, 1)`` if ``lo_open``): a multiplicative ``gamma``."""
    base = common.number(0.0, 1.0, lo_open=lo_open)
    return common.Rule(base.text[:-1] + ")", lambda v: base.ok(v) and v < 1.0)


def cosine(start: float, end: float, i: Array, steps: int) -> Array:
    """Cosine annealing from ``start`` (``i = 0``) towards ``end`` (``i = steps``), per example."""
    t = i.astype(jnp.float32) / steps
    return end + (start - end) * (1.0 + jnp.cos(math.pi * t)) / 2.0


def schedule_clock(st: Any) -> Array:
    """``[B]`` iterations that count for the schedules and the budget: those run minus the
    uncounted search (``search_steps``)."""
    return st.it - st.searched


def count_search(st: Any, found: Array, search_steps: int) -> Array:
    """``[B]`` the uncounted search iterations after this one: +1 while no iterate (this one
    included) was adversarial and fewer than ``search_steps`` were spent searching."""
    return st.searched + ((~found) & (st.searched < search_steps)).astype(jnp.int32)


def margin(out: Any, problem: engine.Problem, scores: str) -> Array:
    """``[B]`` clip-score margin, > 0 while not adversarial: ``s_y - max_{j!=y} s_j`` or
    ``max_{j!=t} s_j - s_t`` (targeted)."""
    s = common.clip_scores(out, scores)[:, None, :]
    cls = problem.labels if problem.targets is None else problem.targets
    real, other = common.class_score(s, cls)[:, 0], common.other_max(s, cls)[:, 0]
    return other - real if problem.targeted else real - other


def lp_norm(d: Array, valid: Array, p: str) -> Array:
    """``[B]`` norm of ``d [B, N]`` over the valid samples: ``"l1"``, ``"l2"`` or ``"linf"``."""
    a = jnp.where(valid, jnp.abs(d), 0.0)
    if p == "l1":
        return jnp.sum(a, -1)
    if p == "linf":
        return jnp.max(a, -1)
    return jnp.sqrt(jnp.sum(a * a, -1))


def worst_norm(problem: engine.Problem, p: str) -> Array:
    """``[B]`` norm of the farthest perturbation inside the box (Foolbox's ``worst_norm``)."""
    lo, hi = common.BOX
    return lp_norm(jnp.maximum(problem.x - lo, hi - problem.x), problem.valid, p)


def project_box(problem: engine.Problem, delta: Array) -> Array:
    """``delta`` with ``x + delta`` clipped to the box, exactly zero beyond the valid samples."""
    return jnp.where(problem.valid, jnp.clip(problem.x + delta, *common.BOX) - problem.x, 0.0)


def clip_to_box(problem: engine.Problem) -> engine.Problem:
    """The clean clip clipped to the box (the iterates stay inside it)."""
    return problem._replace(x=jnp.where(problem.valid, jnp.clip(problem.x, *common.BOX), problem.x))


@dataclasses.dataclass(frozen=True)
class FMNConfig:
    """Fast Minimum-Norm settings (default: audio-scale steps; :meth:`foolbox3`: Foolbox 3.3.4).

    Attributes:
      norm: ``"l2"`` or ``"linf"``.
      steps: iterations per example (each one forward+backward).
      alpha_init, alpha_final: the step, cosine annealed; a fraction of the ball with
        ``step_scale="epsilon"`` (default 0.3 -> 0.003), an absolute L2 length with
        ``"absolute"`` (Foolbox ``max_stepsize`` 1, ``min_stepsize`` 1/100 of it).
      gamma_init, gamma_final: the ``eps`` update factor, cosine annealed (default 0.2 -> 0.001;
        Foolbox and the paper: 0.05 -> 0.001).
      step_scale: ``"epsilon"`` (step ``alpha * eps``, Linf ``alpha * eps * sqrt(n)``;
        scale-free, the default) or ``"absolute"`` (step ``alpha``: Foolbox, the paper).
      project: project onto the ``eps`` ball (False: Foolbox 3.3.4's L2 attack, whose
        projection is the identity; the box is always enforced).
      overshoot: the first-boundary estimate is ``(||delta|| + |m| / ||g||_dual) *
        (1 + overshoot)`` (Foolbox, the paper: 0; default DeepFool's 0.02). With 0 the ball
        ends exactly on the linearised boundary, so on a (locally) linear model the iterate
        approaches the boundary from inside and, with the projection, may never cross it.
      search_steps: up to this many iterations before the first adversarial iterate are not
        counted in ``steps`` and do not advance the ``alpha``/``gamma`` schedules (0: Foolbox and
        the paper, every iteration counts). A row then runs ``steps`` plus its search (at most
        ``search_steps``): on the clips where the margin's gradient turns as the path curves
        (DeepFool needs 150-300 steps there), the plain budget ends before any adversarial is
        found, and a search under the annealed steps crawls; with the search outside the
        schedule every clip gets its full refinement. In a sweep only the hard clips pay.
      scores: ``"log_probs"`` or ``"logits"`` (the margin's scores, see :mod:`jaxadv.attacks.common`).
      compact_levels: see :func:`jaxadv.attacks.common.compact_map` (0: every row runs ``steps``
        iterations, so a batch never shrinks in :func:`~jaxadv.attacks.engine.run`).
    """

    norm: str = "l2"
    steps: int = 100
    alpha_init: float = 0.3
    alpha_final: float = 0.003
    gamma_init: float = 0.2
    gamma_final: float = 0.001
    step_scale: str = "epsilon"
    project: bool = True
    overshoot: float = 0.02
    search_steps: int = 400
    scores: str = "log_probs"
    compact_levels: int = 0

    def __post_init__(self) -> None:
        common.check_fields(
            self,
            {
                "norm": common.choice(NORMS),
                "steps": common.integer(1),
                "alpha_init": common.number(0.0, lo_open=True),
                "alpha_final": common.number(0.0),
                "gamma_init": below_one(lo_open=True),
                "gamma_final": below_one(lo_open=False),
                "step_scale": common.choice(STEP_SCALES),
                "project": common.BOOLEAN,
                "overshoot": common.number(0.0),
                "search_steps": common.integer(0),
                "scores": common.SCORES_RULE,
                "compact_levels": common.COMPACT_RULE,
            },
        )

    @classmethod
    def foolbox3(cls, norm: str = "l2") -> FMNConfig:
        """Foolbox 3.3.4 ``L2FMNAttack()`` / ``LInfFMNAttack()``: 100 steps, absolute steps
        1 -> 0.01, gamma 0.05 -> 0.001; L2 without the ball projection (as 3.3.4 runs)."""
        return cls(
            norm=norm,
            alpha_init=1.0,
            alpha_final=0.01,
            gamma_init=0.05,
            gamma_final=0.001,
            step_scale="absolute",
            project=norm == "linf",
            overshoot=0.0,
            search_steps=0,
        )


class FMNResult(NamedTuple):
    """Result of :func:`fmn` (all ``[B]`` unless noted).

    Attributes:
      adversarial: ``[B, N]`` the smallest adversarial iterate (the clean clip if none was).
      success: some iterate was adversarial (``argmax != label`` / ``argmax == target``).
      steps: evaluations (forward+backward) used: ``config.steps`` plus the row's uncounted
        search (at most ``config.search_steps``).
      distance: the config norm of ``adversarial - x`` over the valid samples (0 if failed).
      epsilon: the final norm constraint.
    """

    adversarial: Array
    success: Array
    steps: Array
    distance: Array
    epsilon: Array


class _State(NamedTuple):
    delta: Array  # [B, N] current perturbation
    eps: Array  # [B] norm constraint
    best_delta: Array  # [B, N]
    best_norm: Array  # [B] inf until an adversarial iterate
    found: Array  # [B]
    it: Array  # [B] iterations run
    searched: Array  # [B] of them, uncounted search iterations (``search_steps``)


def _evaluate_margin(fn: Any, params: Any, problem: engine.Problem, delta: Array, scores: str):
    """Margin ``[rows]``, adversarial ``[rows]`` and the margin's gradient ``[rows, N]`` at
    ``x + delta`` (one forward+backward)."""
    crit = criteria.decision(problem.labels, problem.targets)

    def objective(xa):
        out = fn(params, xa, problem.lengths)
        m = margin(out, problem, scores)
        return jnp.sum(m), (m, crit.is_adversarial(out))

    (_, (m, ok)), g = jax.value_and_grad(objective, has_aux=True)(problem.x + delta)
    return m, ok, jnp.where(problem.valid, g, 0.0)


@dataclasses.dataclass(frozen=True)
class FMN:
    """FMN as an engine :class:`~jaxadv.attacks.engine.Algorithm` (one evaluation = one
    forward+backward of the margin at ``x + delta``)."""

    config: FMNConfig

    def prepare(self, problem: engine.Problem) -> engine.Problem:
        return clip_to_box(problem)

    def init(self, fn: Any, params: Any, problem: engine.Problem) -> _State:
        del fn, params
        b = problem.x.shape[0]
        full = functools.partial(jnp.full, (b,))
        zero = jnp.zeros_like(problem.x)
        return _State(
            delta=zero,
            eps=full(jnp.inf, jnp.float32),
            best_delta=zero,
            best_norm=full(jnp.inf, jnp.float32),
            found=full(False, bool),
            it=full(0, jnp.int32),
            searched=full(0, jnp.int32),
        )

    def query(self, st: _State) -> Array:
        return st.delta

    def evaluate(self, fn: Any, params: Any, problem: engine.Problem, q: Any) -> Any:
        return _evaluate_margin(fn, params, problem, q, self.config.scores)

    def step(self, problem: engine.Problem, st: _State, e: Any, active: Array) -> _State:
        cfg = self.config
        m, ok, g = e
        valid = problem.valid
        dual = "l1" if cfg.norm == "linf" else "l2"
        clock = schedule_clock(st)
        alpha = cosine(cfg.alpha_init, cfg.alpha_final, clock, cfg.steps)
        gamma = cosine(cfg.gamma_init, cfg.gamma_final, clock, cfg.steps)
        # best-so-far (the evaluated iterate)
        norm = lp_norm(st.delta, valid, cfg.norm)
        better = ok & (norm <= st.best_norm)
        best_norm = jnp.where(better, norm, st.best_norm)
        best_delta = common.where_b(better, st.delta, st.best_delta)
        found = st.found | ok
        # the norm constraint
        boundary = norm + jnp.abs(m) / jnp.maximum(lp_norm(g, valid, dual), TINY)
        boundary = boundary * (1.0 + cfg.overshoot)
        eps = jnp.where(
            ok,
            jnp.minimum(st.eps * (1.0 - gamma), best_norm),
            jnp.where(found, st.eps * (1.0 + gamma), boundary),
        )
        eps = jnp.minimum(eps, worst_norm(problem, cfg.norm))
        # step down the margin, L2-normalised
        size = alpha
        if cfg.step_scale == "epsilon":
            size = alpha * eps
            if cfg.norm == "linf":
                size = size * jnp.sqrt(problem.lengths.astype(jnp.float32))
        unit = g / jnp.maximum(lp_norm(g, valid, "l2"), TINY)[:, None]
        delta = st.delta - size[:, None] * unit
        if cfg.project:
            if cfg.norm == "l2":
                n2 = lp_norm(delta, valid, "l2")
                delta = delta * jnp.minimum(1.0, eps / jnp.maximum(n2, TINY))[:, None]
            else:
                delta = jnp.clip(delta, -eps[:, None], eps[:, None])
        return _State(
            delta=project_box(problem, delta),
            eps=eps,
            best_delta=best_delta,
            best_norm=best_norm,
            found=found,
            it=st.it + 1,
            searched=count_search(st, found, cfg.search_steps),
        )

    def done(self, st: _State) -> Array:
        return schedule_clock(st) >= self.config.steps

    def result(self, fn, params, problem, st: _State, evaluations: Array) -> FMNResult:
        del fn, params
        adv = jnp.where(problem.valid, problem.x + st.best_delta, problem.x)
        return FMNResult(
            adversarial=adv,
            success=st.found,
            steps=evaluations,
            distance=lp_norm(st.best_delta, problem.valid, self.config.norm),
            epsilon=st.eps,
        )


def _fmn_impl(
    fn: ClassifierFn,
    params: Any,
    x: Array,
    lengths: Array,
    labels: Array,
    targets: Array | None,
    *,
    config: FMNConfig,
) -> FMNResult:
    problem = engine.Problem(x, lengths, labels, targets)
    return engine.run(FMN(config), fn, params, problem, compact_levels=config.compact_levels)


_fmn_jit = jax.jit(_fmn_impl, static_argnames=("fn", "config"))


def fmn(
    fn: ClassifierFn,
    params: Any,
    x: Array,
    lengths: Array,
    labels: Array,
    *,
    targets: Array | None = None,
    config: FMNConfig = FMNConfig(),
    key: Any = None,
) -> FMNResult:
    """Fast Minimum-Norm (L2 or Linf), untargeted or targeted, one compiled program.

    Args:
      fn: classifier function (hashable; see :mod:`jaxadv.classifier`).
      params: its parameters.
      x: ``[B, N]`` waveforms (32 kHz, in [-1, 1]; clipped to the box first).
      lengths: ``[B]`` valid samples per clip (the perturbation is exactly zero beyond).
      labels: ``[B]`` ground-truth classes (untargeted: the class to move away from).
      targets: optional ``[B]`` target classes (targeted; may differ per example).
      config: :class:`FMNConfig` (presets: the default, :meth:`FMNConfig.foolbox3`).
      key: unused (deterministic attack).

    Returns:
      :class:`FMNResult`.
    """
    del key
    common.check_config("fmn", config, FMNConfig)
    x, lengths, labels, targets = common.validate("fmn", fn, params, x, lengths, labels, targets)
    return _fmn_jit(fn, params, x, lengths, labels, targets, config=config)
