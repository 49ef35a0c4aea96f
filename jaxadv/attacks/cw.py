"""Carlini & Wagner L2 (https://arxiv.org/abs/1608.04644), untargeted and targeted.

Reference: carlini/nn_robust_attacks ``l2_attack.py`` (ATTACKS_REFERENCE.md §2.2). Box by the tanh
change of variables on [-1, 1]: ``w0 = atanh(x * 0.999999)``, ``x' = tanh(w0 + m)``; the distance is
to ``x~0 = tanh(w0)`` (Carlini's "reconstructed original"). Loss per example::

    const * sum_chunks max(0, margin + kappa) + distance(x' - x~0)

with ``margin = s_y - max_{j != y} s_j`` (untargeted) or ``max_{j != t} s_j - s_t`` (targeted) on
the scores (see :mod:`jaxadv.attacks.common`). Optax Adam on ``m`` (re-initialised at every
binary-search step); per-example binary search over ``const`` with Carlini's rule (success:
``up = min(up, c)``, ``c = (lo + up) / 2`` if ``up < 1e9``; failure: ``lo = max(lo, c)``,
``c = (lo + up) / 2`` if ``up < 1e9`` else ``c * 10``); per-example early abort (every
``max_iterations // 10`` iterations, stop the step if ``loss > 0.9999 * prev``); best-so-far
adversarial per example (smallest distance among successful iterates).

Everything runs on the attack engine (:mod:`jaxadv.attacks.engine`): each example advances independently through
(binary-search step, iteration): an example that aborts early starts its next ``const`` at the
next iteration; the loop ends when every example has run all its steps. Each iteration is exactly
one forward+backward of the batch (``value_and_grad`` with ``has_aux`` returning the outputs of the
same forward, used for the success test and the best-so-far update of the pre-update iterate, as
Carlini does).

A failed example returns the iterate with the lowest loss of its last binary-search step (the
step with the largest ``const`` under Carlini's rule), never zeros (Foolbox 3's bug).

Convergence options (issue 17; defaults off, so the faithful presets are unchanged; preset
:meth:`CWConfig.audio`): a learning-rate schedule over each binary-search step
(``lr_schedule``, ``lr_final``), a learning rate relative to each clip's level
(``lr_relative``: the Adam update of row ``b`` times its RMS or peak), the const search in log
space (``const_update="geometric"``, ``const_factor``), each step starting from the best
successful modifier so far (``restart="best"``), and abort rules that small steps do not fool
(``abort_period``, ``abort_min_iterations``, ``abort_on="distance"``, ``abort_tolerance``).
Why (measured on the demo VGG13, ``benchmarks/cw_convergence.py``; the attacks README has the
table): ``const`` has to come down to ~1e-8..1e-7 for most clips (perturbations ~90-110 dB
below the signal), which Carlini's halving never reaches from ``c0 = 1e-3`` (one step at a
fixed ``c`` of 1e-3 ends at ~55 dB SNR, at 1e-7 at ~98 dB, same Adam settings); Adam's
per-coordinate step is ~lr whatever the gradient, so an absolute lr of 1e-2 spreads ~40 dB-SNR
noise over every sample in the first iteration and a constant lr keeps the iterate at that
level; Carlini's abort rule stops a step within a tenth of it whenever the growing distance
outweighs the falling hinge (the demo preset: 24 of 180 iterations per clip).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxadv import config as C
from jaxadv.attacks import common, criteria, engine, search
from jaxadv.classifier import ClassifierFn

Array = jax.Array


def _dist_sum(ss: Array, nvalid: Array) -> Array:
    return ss


def _dist_range(ss: Array, nvalid: Array) -> Array:
    return ss / (common.BOX[1] - common.BOX[0]) ** 2


def _dist_mean(ss: Array, nvalid: Array) -> Array:
    return ss / nvalid


# distance term from the sum of squares over valid samples and the number of valid samples
DISTANCES = {
    "sum": _dist_sum,  # Carlini, Foolbox 3
    "range": _dist_range,  # Foolbox 1.x: / (max - min)^2
    "mean": _dist_mean,  # the authors: tf.reduce_mean
}


CONST_UPDATES = {
    "carlini": search.CarliniBisection,
    "authors": search.AuthorsHalving,
    "geometric": search.GeometricBisection,
}
SUCCESS = ("margin", "threshold")
LR_SCHEDULES = ("constant", "cosine", "exponential")  # over each binary-search step
LR_RELATIVE = ("none", "rms", "peak")  # per-example lr multiplier: 1, RMS or peak |x| of the clip
ABORT_ON = ("loss", "distance")
RESTARTS = ("zero", "best")  # the modifier each binary-search step starts from


def _lr_scale(problem: engine.Problem, how: str) -> Array:
    """``[B]`` multiplier of the learning rate: 1, or the clip's RMS / peak over its valid samples.

    A silent clip (level 0) keeps the absolute learning rate.
    """
    b = problem.x.shape[0]
    if how == "none":
        return jnp.ones((b,), jnp.float32)
    xv = jnp.where(problem.valid, jnp.clip(problem.x, *common.BOX), 0.0)
    if how == "rms":
        level = jnp.sqrt(common.sum_squares(xv, problem.valid) / problem.lengths)
    else:
        level = jnp.max(jnp.abs(xv), axis=1)
    return jnp.where(level > 0, level, 1.0).astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class CWConfig:
    """Carlini & Wagner L2 settings (defaults = Carlini's reference, :meth:`carlini`).

    Attributes:
      binary_search_steps: binary-search steps over ``const`` (Carlini's rule repeats the last step
        with ``const = upper`` when this is >= 10).
      max_iterations: Adam iterations per binary-search step.
      learning_rate: Adam step size.
      initial_const: first ``const``.
      confidence: kappa of the hinge (and of the margin success test).
      abort_early: stop a step when the loss has not decreased by 0.01 % over a tenth of it.
      abort_prev_init: the loss an abort check compares against first (Carlini: inf; authors 1e6).
      adam_eps: Adam epsilon (optax form ``m_hat / (sqrt(v_hat) + eps)``).
      distance: ``"sum"`` (Carlini), ``"range"`` (Foolbox 1.x, divided by (max - min)^2 = 4) or
        ``"mean"`` (the authors; mean over the clip's valid samples).
      scores: ``"log_probs"`` or ``"logits"``.
      success: ``"margin"`` (Carlini's ``compare`` with kappa on the clip scores) or
        ``"threshold"`` (the authors: untargeted ``probs[y] < 0.0244 and argmax != y``, targeted
        ``probs[t] >= 0.975``). Both also require the clip decision to have changed.
      const_update: ``"carlini"``, ``"authors"`` (as coded: halve on success, else unchanged) or
        ``"geometric"`` (:class:`~jaxadv.attacks.search.GeometricBisection`, ``const_factor``).
      untargeted_threshold, targeted_threshold: the authors' probability thresholds.
      compact_levels: each iteration evaluates only the examples still running, in a batch of
        ``B``, ``B/2``, ... (``compact_levels`` halvings; 0 = always the whole batch). Results are
        the same; only the cost of the slowest examples' iterations shrinks (one compiled
        branch per size, see :func:`jaxadv.attacks.common.compact_map`).
      lr_schedule: the learning rate over each binary-search step (Adam is re-initialised, so the
        schedule restarts): ``"constant"`` (Carlini), ``"cosine"`` (optax cosine decay) or
        ``"exponential"``, from ``learning_rate`` down to ``learning_rate * lr_final`` at the
        step's last iteration.
      lr_final: the schedule's last learning rate as a fraction of ``learning_rate``, in (0, 1].
      lr_relative: ``"none"`` (Carlini), ``"rms"`` or ``"peak"``: row ``b``'s Adam update is
        multiplied by its clip's RMS or peak ``|x|`` over the valid samples (a silent clip keeps
        the absolute rate), so the step follows the clip's level (``learning_rate`` is then
        relative: 1e-4 x RMS is an 80 dB-SNR step).
      abort_period: iterations between abort checks (None: ``max_iterations // 10``, Carlini).
      abort_min_iterations: no abort before this iteration of a step (0: Carlini); the checks
        before it still record the loss (distance) the next check compares against.
      abort_on: ``"loss"`` (Carlini: stop when the loss fell by less than ``abort_tolerance``
        since the last check) or ``"distance"`` (once the step has succeeded: stop when its best
        distance fell by less than ``abort_tolerance``; before that the loss rule).
      abort_tolerance: relative decrease an abort check asks for (Carlini 1e-4: ``0.9999``).
      restart: the modifier each binary-search step starts from: ``"zero"`` (Carlini) or
        ``"best"`` (the best successful modifier so far, else where the last step ended).
      const_factor: ``const_update="geometric"``: ``const`` is divided (success) or multiplied
        (failure) by this until both bounds are known, then bisected in log space.
    """

    binary_search_steps: int = 9
    max_iterations: int = 10000
    learning_rate: float = 1e-2
    initial_const: float = 1e-3
    confidence: float = 0.0
    abort_early: bool = True
    abort_prev_init: float = math.inf
    adam_eps: float = 1e-8
    distance: str = "sum"
    scores: str = "log_probs"
    success: str = "margin"
    const_update: str = "carlini"
    untargeted_threshold: float = C.AUTHORS_UNTARGETED_THRESHOLD
    targeted_threshold: float = C.AUTHORS_TARGETED_THRESHOLD
    compact_levels: int = common.COMPACT_LEVELS
    lr_schedule: str = "constant"
    lr_final: float = 1e-2
    lr_relative: str = "none"
    abort_period: int | None = None
    abort_min_iterations: int = 0
    abort_on: str = "loss"
    abort_tolerance: float = 1e-4
    restart: str = "zero"
    const_factor: float = 10.0

    def __post_init__(self) -> None:
        probability = common.number(0.0, 1.0, lo_open=True)
        common.check_fields(
            self,
            {
                "binary_search_steps": common.integer(1),
                "max_iterations": common.integer(1),
                "learning_rate": common.number(0.0, lo_open=True),
                "initial_const": common.number(0.0, lo_open=True),  # 0 stays 0 (x10 on failure)
                "confidence": common.number(0.0),
                "abort_early": common.BOOLEAN,
                "abort_prev_init": common.number(0.0, lo_open=True, finite=False),  # Carlini: inf
                "adam_eps": common.number(0.0, lo_open=True),  # 0: 0/0 at zero gradients
                "distance": common.choice(DISTANCES),
                "scores": common.SCORES_RULE,
                "success": common.choice(SUCCESS),
                "const_update": common.choice(CONST_UPDATES),
                "untargeted_threshold": probability,
                "targeted_threshold": probability,
                "compact_levels": common.COMPACT_RULE,
                "lr_schedule": common.choice(LR_SCHEDULES),
                "lr_final": probability,  # fraction of learning_rate at a step's last iteration
                "lr_relative": common.choice(LR_RELATIVE),
                "abort_period": common.integer(1, none=True),
                "abort_min_iterations": common.integer(0),
                "abort_on": common.choice(ABORT_ON),
                "abort_tolerance": common.number(0.0, 1.0),
                "restart": common.choice(RESTARTS),
                "const_factor": common.number(1.0, lo_open=True),
            },
        )

    @classmethod
    def carlini(cls) -> CWConfig:
        """carlini/nn_robust_attacks defaults: bss 9, 10000 its, lr 1e-2, c0 1e-3, kappa 0."""
        return cls()

    @classmethod
    def audio(cls) -> CWConfig:
        """Convergent settings for audio classifiers (500 iterations per example at most).

        5 binary-search steps of 100 iterations; the const search in log space from 1e-5;
        Adam's step 1e-4 x the clip's RMS, cosine-decayed to 1e-3 of it over each step; each
        step starts from the best successful modifier; the loss abort rule from iteration 50.
        On the demo VGG13 it finds smaller perturbations than DeepFool (``benchmarks/
        cw_convergence.py``).
        """
        return cls(
            binary_search_steps=5,
            max_iterations=100,
            learning_rate=1e-4,
            initial_const=1e-5,
            const_update="geometric",
            lr_schedule="cosine",
            lr_final=1e-3,
            lr_relative="rms",
            restart="best",
            abort_min_iterations=50,
        )

    @classmethod
    def foolbox1(cls) -> CWConfig:
        """Foolbox 1.8 ``CarliniWagnerL2Attack``: bss 5, 1000 its, lr 5e-3, c0 1e-2, range-normalised."""
        return cls(
            binary_search_steps=5,
            max_iterations=1000,
            learning_rate=5e-3,
            initial_const=1e-2,
            distance="range",
            adam_eps=1e-7,
        )

    @classmethod
    def authors(cls) -> CWConfig:
        """The paper authors' call (ORIGINALS.md §5.5), Iqbal and Cochlear untargeted, Iqbal targeted."""
        return cls(
            binary_search_steps=2,
            max_iterations=1000,
            learning_rate=1e-5,
            initial_const=1e-2,
            confidence=500.0,
            abort_early=True,
            abort_prev_init=1e6,
            distance="mean",
            scores="logits",
            success="threshold",
            const_update="authors",
        )

    @classmethod
    def authors_cochlear_targeted(cls) -> CWConfig:
        """The authors' targeted Cochlear setting: 2000 iterations, 1 step, no early abort."""
        return dataclasses.replace(
            cls.authors(), max_iterations=2000, binary_search_steps=1, abort_early=False
        )


class CWResult(NamedTuple):
    """Result of :func:`carlini_wagner` (all ``[B]`` unless noted).

    Attributes:
      adversarial: ``[B, N]`` best successful iterate (smallest distance), or for a failed example
        the lowest-loss iterate of its last binary-search step.
      success: some iterate met the success criterion.
      steps: forward+backward evaluations used by this example (all binary-search steps).
      const: the ``const`` of the example's last binary-search step.
      best_const: the ``const`` at which ``adversarial`` was found (0 if it failed).
      distance: the config's distance of ``adversarial`` to ``x~0``.
    """

    adversarial: Array
    success: Array
    steps: Array
    const: Array
    best_const: Array
    distance: Array


class _State(NamedTuple):
    m: Array  # [B, N] modifier (tanh space)
    opt: Any  # per-example Adam state
    search: search.SearchState  # const, bracket and binary-search step of each example
    it: Array  # iteration within the step
    prev: Array  # loss at the last abort check
    step_ok: Array  # success within the current step
    best_dist: Array
    best_adv: Array
    best_const: Array
    fb_loss: Array  # fallback: lowest loss within the current step
    fb_adv: Array
    fb_dist: Array
    last_const: Array
    done: Array
    lr_scale: Array  # [B] per-example learning-rate multiplier (lr_relative)
    step_best: Array  # smallest successful distance within the current step
    prev_best: Array  # step_best at the last abort check
    best_m: Array  # [B, N] modifier of best_adv (restart="best"; [B, 0] otherwise)


def _distance_of(problem: engine.Problem, config: CWConfig, xa: Array, x0: Array) -> Array:
    ss = common.sum_squares(xa - x0, problem.valid)
    return DISTANCES[config.distance](ss, problem.lengths.astype(jnp.float32))


def _tanh_rows(problem: engine.Problem) -> tuple[Array, Array]:
    """``w0`` (tanh space) and Carlini's reconstructed original ``x~0`` of each row."""
    valid = problem.valid
    w0 = jnp.where(valid, common.to_tanh_space(problem.x), 0.0)
    return w0, jnp.where(valid, common.from_tanh_space(w0), problem.x)


@dataclasses.dataclass(frozen=True)
class CarliniWagnerL2:
    """C&W L2 as an engine :class:`~jaxadv.attacks.engine.Algorithm` (one evaluation = one
    forward+backward of the objective at the current modifier)."""

    config: CWConfig

    @property
    def search(self) -> search.ConstSearch:
        cfg = self.config
        rule = CONST_UPDATES[cfg.const_update]
        if cfg.const_update == "carlini":
            return rule(cfg.initial_const, cfg.binary_search_steps, cfg.binary_search_steps >= 10)
        if cfg.const_update == "geometric":
            return rule(cfg.initial_const, cfg.binary_search_steps, cfg.const_factor)
        return rule(cfg.initial_const, cfg.binary_search_steps)

    @property
    def _adam(self) -> Any:
        cfg = self.config
        lr: Any = cfg.learning_rate
        last = max(cfg.max_iterations - 1, 1)  # the step's last update uses lr * lr_final
        if cfg.lr_schedule == "cosine":
            lr = optax.cosine_decay_schedule(cfg.learning_rate, last, alpha=cfg.lr_final)
        elif cfg.lr_schedule == "exponential":
            lr = optax.exponential_decay(
                cfg.learning_rate, last, cfg.lr_final, end_value=cfg.learning_rate * cfg.lr_final
            )
        return optax.adam(lr, eps=cfg.adam_eps)

    @property
    def _abort_period(self) -> int:
        cfg = self.config
        if cfg.abort_period is not None:
            return cfg.abort_period
        return max(cfg.max_iterations // 10, 1)

    def criterion(self, problem: engine.Problem) -> Any:
        cfg = self.config
        if cfg.success == "margin":
            return criteria.Margin(problem.labels, problem.targets, cfg.confidence, cfg.scores)
        return criteria.ProbabilityThreshold(
            problem.labels, problem.targets, cfg.untargeted_threshold, cfg.targeted_threshold
        )

    def init(self, fn: Any, params: Any, problem: engine.Problem) -> _State:
        del fn, params
        cfg = self.config
        b = problem.x.shape[0]
        _, x0 = _tanh_rows(problem)
        full = functools.partial(jnp.full, (b,))
        return _State(
            m=jnp.zeros_like(problem.x),
            opt=jax.vmap(self._adam.init)(jnp.zeros_like(problem.x)),
            search=self.search.init(jnp, b),
            it=full(0, jnp.int32),
            prev=full(cfg.abort_prev_init, jnp.float32),
            step_ok=full(False, bool),
            best_dist=full(jnp.inf, jnp.float32),
            best_adv=x0,
            best_const=full(0.0, jnp.float32),
            fb_loss=full(jnp.inf, jnp.float32),
            fb_adv=x0,
            fb_dist=full(0.0, jnp.float32),
            last_const=full(cfg.initial_const, jnp.float32),
            done=full(False, bool),
            lr_scale=_lr_scale(problem, cfg.lr_relative),
            step_best=full(jnp.inf, jnp.float32),
            prev_best=full(jnp.inf, jnp.float32),
            best_m=jnp.zeros((b, problem.x.shape[1] if cfg.restart == "best" else 0)),
        )

    def query(self, st: _State) -> tuple[Array, Array]:
        return st.m, st.search.const

    def evaluate(self, fn: Any, params: Any, problem: engine.Problem, q: Any) -> Any:
        """Loss, distance, iterate and success ``[rows]`` and the gradient in tanh space."""
        cfg = self.config
        m, const = q
        w0, x0 = _tanh_rows(problem)
        valid = problem.valid
        cls = problem.labels if problem.targets is None else problem.targets

        def objective(m):
            xa = jnp.where(valid, common.from_tanh_space(w0 + m), problem.x)
            out = fn(params, xa, problem.lengths)
            s, cm = common.chunk_scores(out, cfg.scores)
            real, other = common.class_score(s, cls), common.other_max(s, cls)
            margin = other - real if problem.targeted else real - other
            hinge = common.chunk_sum(jnp.maximum(0.0, margin + cfg.confidence), cm)
            dist = _distance_of(problem, cfg, xa, x0)
            loss = const * hinge + dist
            return jnp.sum(loss), (loss, dist, xa, self.criterion(problem).is_adversarial(out))

        (_, (loss, dist, xa, ok)), g = jax.value_and_grad(objective, has_aux=True)(m)
        return loss, dist, xa, ok, g

    def step(self, problem: engine.Problem, st: _State, e: Any, active: Array) -> _State:
        cfg = self.config
        loss, dist, xa, succeeded, g = e
        # early abort, checked before the iterate counts (Carlini breaks before the best update)
        check = active & (st.it % self._abort_period == 0)
        if not cfg.abort_early:
            check = jnp.zeros_like(active)
        keep = 1.0 - cfg.abort_tolerance
        stalled = loss > keep * st.prev  # Carlini: loss > 0.9999 * prev
        if cfg.abort_on == "distance":  # once the step has succeeded: its best distance stalled
            stalled = jnp.where(st.step_ok, st.step_best > keep * st.prev_best, stalled)
        if cfg.abort_min_iterations:  # earlier checks only record the reference
            stalled = stalled & (st.it >= cfg.abort_min_iterations)
        abort = check & stalled
        prev = jnp.where(check & ~abort, loss, st.prev)
        prev_best = jnp.where(check & ~abort, st.step_best, st.prev_best)
        ev = active & ~abort
        ok = ev & succeeded
        const = st.search.const
        better = ok & (dist < st.best_dist)
        step_better = ok & (dist < st.step_best)
        fb = ev & (loss < st.fb_loss)
        # Adam step on the evaluated examples (per-example learning-rate multiplier)
        upd, new_opt = jax.vmap(self._adam.update)(g, st.opt)
        if cfg.lr_relative != "none":
            upd = upd * st.lr_scale[:, None]
        m = jnp.where(ev[:, None] & problem.valid, st.m + upd, st.m)
        opt_state = common.tree_where_b(ev, new_opt, st.opt)
        it = st.it + ev.astype(jnp.int32)
        step_ok = st.step_ok | ok
        # end of a binary-search step: update const, reset the optimiser
        end = active & (abort | (it >= cfg.max_iterations))
        new_search, finished = self.search.update(jnp, st.search, step_ok)
        opt_zero = jax.vmap(self._adam.init)(jnp.zeros_like(m))
        best_m = st.best_m
        m0 = 0.0
        if cfg.restart == "best":
            best_m = common.where_b(better, st.m, st.best_m)  # the evaluated (pre-update) iterate
            m0 = jnp.where(jnp.isfinite(st.best_dist)[:, None] | better[:, None], best_m, m)
        return _State(
            m=jnp.where(end[:, None], m0, m),
            opt=common.tree_where_b(end, opt_zero, opt_state),
            search=common.tree_where_b(end, new_search, st.search),
            it=jnp.where(end, 0, it),
            prev=jnp.where(end, cfg.abort_prev_init, prev),
            step_ok=step_ok & ~end,
            best_dist=jnp.where(better, dist, st.best_dist),
            best_adv=common.where_b(better, xa, st.best_adv),
            best_const=jnp.where(better, const, st.best_const),
            fb_loss=jnp.where(end, jnp.inf, jnp.where(fb, loss, st.fb_loss)),
            fb_adv=common.where_b(fb, xa, st.fb_adv),
            fb_dist=jnp.where(fb, dist, st.fb_dist),
            last_const=jnp.where(end, const, st.last_const),
            done=st.done | (end & finished),
            lr_scale=st.lr_scale,
            step_best=jnp.where(end, jnp.inf, jnp.where(step_better, dist, st.step_best)),
            prev_best=jnp.where(end, jnp.inf, prev_best),
            best_m=best_m,
        )

    def done(self, st: _State) -> Array:
        return st.done

    def result(self, fn, params, problem, st: _State, evaluations: Array) -> CWResult:
        del fn, params, problem
        success = jnp.isfinite(st.best_dist)
        return CWResult(
            adversarial=common.where_b(success, st.best_adv, st.fb_adv),
            success=success,
            steps=evaluations,
            const=st.last_const,
            best_const=st.best_const,
            distance=jnp.where(success, st.best_dist, st.fb_dist),
        )


def _cw_impl(
    fn: ClassifierFn,
    params: Any,
    x: Array,
    lengths: Array,
    labels: Array,
    targets: Array | None,
    *,
    config: CWConfig,
) -> CWResult:
    problem = engine.Problem(x, lengths, labels, targets)
    return engine.run(
        CarliniWagnerL2(config), fn, params, problem, compact_levels=config.compact_levels
    )


_cw_jit = jax.jit(_cw_impl, static_argnames=("fn", "config"))


def carlini_wagner(
    fn: ClassifierFn,
    params: Any,
    x: Array,
    lengths: Array,
    labels: Array,
    *,
    targets: Array | None = None,
    config: CWConfig = CWConfig(),
    key: Any = None,
) -> CWResult:
    """Carlini & Wagner L2 with a per-example binary search over ``const``, one compiled program.

    Args:
      fn: classifier function (hashable; see :mod:`jaxadv.classifier`).
      params: its parameters.
      x: ``[B, N]`` waveforms (32 kHz; clipped to [-1, 1] before the tanh change of variables).
      lengths: ``[B]`` valid samples per clip (the perturbation is exactly zero beyond).
      labels: ``[B]`` ground-truth classes (untargeted: the class to move away from).
      targets: optional ``[B]`` target classes (targeted; may differ per example).
      config: :class:`CWConfig` (presets :meth:`CWConfig.carlini`, ``foolbox1``, ``authors``).
      key: unused (deterministic attack).

    Returns:
      :class:`CWResult`.
    """
    del key
    common.check_config("carlini_wagner", config, CWConfig)
    x, lengths, labels, targets = common.validate(
        "carlini_wagner", fn, params, x, lengths, labels, targets
    )
    return _cw_jit(fn, params, x, lengths, labels, targets, config=config)
