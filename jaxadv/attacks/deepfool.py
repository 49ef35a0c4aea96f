"""DeepFool, L2 and L-infinity (Moosavi-Dezfooli et al. 2016, https://arxiv.org/abs/1511.04599).

Untargeted and minimal: linearise the scores at the current point and step to the nearest
linearised decision boundary among candidate classes, until ``argmax probs`` differs from the
model's *original prediction* (not the ground truth). Runs on the attack engine
(:mod:`jaxadv.attacks.engine`): one compiled program over the batch; finished examples are frozen.

Per step: ONE forward pass and ``K`` vector-Jacobian products (``jax.vjp`` once, then its pullback
over ``K`` cotangents ``e_k - e_orig``: ``vmap``-ed on accelerators, one at a time in a ``lax.map``
on CPU, see ``pullbacks``), not ``K`` separate forward+backward passes
(Foolbox 3 runs ``candidates - 1`` of those). With ``scores="logits"`` and multi-chunk clips the
authors' per-chunk rule is followed (cotangents per chunk and class, distances and directions
averaged over the valid chunks, as ``deep_fool_method.py`` does over its batch of chunks).

For candidate ``k`` (chunk ``q``): ``f = s_k - s_orig`` and ``w = grad f``;
distance ``d = (|f| + numerator_eps) / (||w|| + 1e-8)`` (L2) or ``/ (||w||_1 + 1e-8)`` (Linf);
the chosen ``(d, w)`` (smallest ``d``; the authors: largest) gives the step
``r = (d + step_eps) * w / (||w|| + 1e-8)`` (L2) or ``(d + step_eps) * sign(w)`` (Linf).

Presets (see ``jaxadv/attacks/README.md``):

* default / :meth:`DeepFoolConfig.foolbox3`: Foolbox 3.3.4 ``L2DeepFoolAttack``: top-10 candidates
  of the original scores, overshoot 0.02 on the total perturbation ``x0 + 1.02 * p_total``, 50
  steps, ``step_eps = 1e-4``.
* :meth:`DeepFoolConfig.foolbox1`: Foolbox 1.8: per-step overshoot ``x += 1.05 * r``, top-10,
  only "residual" candidates (score below the original class), 100 steps, no ``step_eps``.
* :meth:`DeepFoolConfig.authors`: VinodS7/audio-adversaries (ORIGINALS.md §5.4): all classes except
  class 0 (never a candidate in their loop), the LARGEST candidate distance, ``+1e-5`` in the
  numerator, overshoot 0.02 (cumulative), 200 steps, ``scores="logits"``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxadv.attacks import common, criteria, engine
from jaxadv.classifier import ClassifierFn

Array = jax.Array

NORMS = ("l2", "linf")
OVERSHOOT_MODES = ("cumulative", "per_step")
SELECT = ("min", "max")
PULLBACKS = ("auto", "vmap", "map")
NORM_EPS = 1e-8  # added to every gradient norm (Foolbox), keeps silent inputs finite


@dataclasses.dataclass(frozen=True)
class DeepFoolConfig:
    """DeepFool settings.

    Attributes:
      norm: ``"l2"`` or ``"linf"``.
      steps: maximum number of steps.
      candidates: number of top classes of the original clip probabilities considered (including
        the original class, as Foolbox's ``candidates``/``subsample``); None = all classes.
      overshoot: ``x0 + (1 + overshoot) * p_total`` (cumulative) or ``x + (1 + overshoot) * r``.
      overshoot_mode: ``"cumulative"`` (DeepFool paper, Foolbox 3, authors) or ``"per_step"``.
      select: ``"min"`` (DeepFool) or ``"max"`` (the authors' code, a deviation).
      residual: only candidates whose current clip score is below the original class's (FB 1.x).
      exclude: classes never used as candidates (the authors: ``(0,)``).
      numerator_eps: added to ``|f|`` in the distance (the authors: 1e-5).
      step_eps: added to the chosen distance for the step (Foolbox 3: 1e-4).
      scores: ``"log_probs"`` or ``"logits"`` (see :mod:`jaxadv.attacks.common`).
      pullbacks: how the ``K`` (times chunks) pullbacks of a step run when their gradients are
        kept (``vjp_batch=None``): ``"vmap"``, all in one batched pullback (best on GPU/TPU);
        ``"map"``, one cotangent at a time in a ``lax.map`` (on a 2-core CPU 0.88x the time of
        ``"vmap"`` for the full-size VGG13: ``benchmarks/deepfool_step.py``); ``"auto"``, ``"map"``
        on CPU and ``"vmap"`` elsewhere. The same values up to float summation order.
      vjp_batch: None = the gradients of every pullback kept for the direction; an int =
        ``lax.map`` over batches of that many cotangents keeping only norms, then one more
        pullback for the chosen direction (memory ``~ vjp_batch * B * N`` instead of
        ``K * Q * B * N``; for the authors' 40 classes x many chunks).
      compact_levels: each step evaluates only the examples not yet adversarial, in a batch of
        ``B``, ``B/2``, ... (``compact_levels`` halvings; 0 = always the whole batch); same
        results (see :func:`jaxadv.attacks.common.compact_map`).
    """

    norm: str = "l2"
    steps: int = 50
    candidates: int | None = 10
    overshoot: float = 0.02
    overshoot_mode: str = "cumulative"
    select: str = "min"
    residual: bool = False
    exclude: tuple[int, ...] = ()
    numerator_eps: float = 0.0
    step_eps: float = 1e-4
    scores: str = "log_probs"
    pullbacks: str = "auto"
    vjp_batch: int | None = None
    compact_levels: int = common.COMPACT_LEVELS

    def __post_init__(self) -> None:
        common.check_fields(
            self,
            {
                "norm": common.choice(NORMS),
                "steps": common.integer(1),
                "candidates": common.integer(2, none=True),  # the original class and one more
                # >= -1: a zero step (1 + overshoot = 0) is allowed, the benchmarks time steps so
                "overshoot": common.number(-1.0),
                "overshoot_mode": common.choice(OVERSHOOT_MODES),
                "select": common.choice(SELECT),
                "residual": common.BOOLEAN,
                "exclude": common.int_tuple(0),
                "numerator_eps": common.number(0.0),
                "step_eps": common.number(0.0),
                "scores": common.SCORES_RULE,
                "pullbacks": common.choice(PULLBACKS),
                "vjp_batch": common.integer(1, none=True),
                "compact_levels": common.COMPACT_RULE,
            },
        )

    @classmethod
    def foolbox3(cls, norm: str = "l2") -> DeepFoolConfig:
        """Foolbox 3.3.4 ``L2DeepFoolAttack`` / ``LinfDeepFoolAttack`` defaults."""
        return cls(norm=norm)

    @classmethod
    def foolbox1(cls, norm: str = "l2") -> DeepFoolConfig:
        """Foolbox 1.8 ``DeepFoolAttack(steps=100, subsample=10)`` (CE differences = log-probs)."""
        return cls(
            norm=norm,
            steps=100,
            candidates=10,
            overshoot=0.05,
            overshoot_mode="per_step",
            residual=True,
            step_eps=0.0,
        )

    @classmethod
    def authors(cls) -> DeepFoolConfig:
        """The paper authors' ``DeepFool(model)`` as run (``deep_fool_method.py``)."""
        return cls(
            norm="l2",
            steps=200,
            candidates=None,
            overshoot=0.02,
            overshoot_mode="cumulative",
            select="max",
            exclude=(0,),
            numerator_eps=1e-5,
            step_eps=0.0,
            scores="logits",
        )


class DeepFoolResult(NamedTuple):
    """Result of :func:`deepfool` (all ``[B]`` unless noted).

    Attributes:
      adversarial: ``[B, N]`` the first adversarial iterate, or the last iterate after ``steps``.
      success: ``argmax probs(adversarial) != original``.
      steps: DeepFool steps taken (perturbation updates).
      original: the model's original prediction (the class moved away from).
    """

    adversarial: Array
    success: Array
    steps: Array
    original: Array


def _candidates(probs: Array, config: DeepFoolConfig) -> Array:
    """Candidate classes ``[B, K]`` (top classes after the original prediction)."""
    c = probs.shape[-1]
    k = c if config.candidates is None else min(config.candidates, c)
    order = jnp.argsort(-probs, axis=-1, stable=True)  # order[:, 0] == argmax probs
    return order[:, 1:k]


class _State(NamedTuple):
    xc: Array  # [B, N] current iterate
    p_total: Array  # [B, N] sum of the steps
    orig: Array  # [B] the model's original prediction
    cand: Array  # [B, K] candidate classes
    excluded: Array  # [B, K] candidates never used
    adv: Array  # [B] the current iterate is adversarial
    steps: Array  # [B] perturbation updates
    it: Array  # [B] iterations run


def _mapped(pullbacks: str) -> bool:
    """Whether the pullbacks run one at a time (``"map"``, or ``"auto"`` on CPU)."""
    return pullbacks == "map" or (pullbacks == "auto" and jax.default_backend() == "cpu")


def _norm(g: Array, linf: bool) -> Array:  # [..., N] -> [...]
    return jnp.sum(jnp.abs(g), -1) if linf else jnp.sqrt(jnp.sum(g * g, -1))


@dataclasses.dataclass(frozen=True)
class DeepFool:
    """DeepFool as an engine :class:`~jaxadv.attacks.engine.Algorithm` (one evaluation = one
    forward and ``K`` pullbacks at the current iterate)."""

    config: DeepFoolConfig

    def prepare(self, problem: engine.Problem) -> engine.Problem:
        """The clean clip clipped to the box (DeepFool's iterates stay inside it)."""
        x = jnp.where(problem.valid, jnp.clip(problem.x, *common.BOX), problem.x)
        return problem._replace(x=x)

    def init(self, fn: Any, params: Any, problem: engine.Problem) -> _State:
        b = problem.x.shape[0]
        probs = fn(params, problem.x, problem.lengths).probs
        cand = _candidates(probs, self.config)  # [B, K]
        excluded = jnp.zeros(cand.shape, bool)
        for e in self.config.exclude:
            excluded = excluded | (cand == e)
        zi = jnp.zeros((b,), jnp.int32)
        return _State(
            problem.x,
            jnp.zeros_like(problem.x),
            jnp.argmax(probs, axis=-1),
            cand,
            excluded,
            jnp.zeros((b,), bool),
            zi,
            zi,
        )

    def query(self, st: _State) -> Any:
        return st.xc, st.orig, st.cand, st.excluded

    def evaluate(self, fn: Any, params: Any, problem: engine.Problem, q: Any) -> Any:
        """One DeepFool step of a batch of rows: (adversarial now?, step r [rows, N])."""
        config = self.config
        xc, org, cnd, excl = q
        lens, val = problem.lengths, problem.valid
        rows, n = xc.shape
        k = cnd.shape[1]
        linf = config.norm == "linf"

        def scores_of(xx):
            out = fn(params, xx, lens)
            s, m = common.chunk_scores(out, config.scores)
            return s, (m, out)

        s, pullback, (m, out) = jax.vjp(scores_of, xc, has_aux=True)
        q = s.shape[1]
        now_adv = criteria.Misclassification(org).is_adversarial(out)  # away from the prediction
        # f[b, q, j] = s[b, q, cand_j] - s[b, q, orig]
        s_orig = common.class_score(s, org)
        f = jnp.take_along_axis(s, cnd[:, None, :], axis=-1) - s_orig[:, :, None]
        # cotangent (j, q'): e_{cand_j} - e_orig on chunk q' only -> gradient of f[:, q', j]
        diff = jax.nn.one_hot(cnd, s.shape[-1]) - jax.nn.one_hot(org, s.shape[-1])[:, None]
        eye_q = jnp.eye(q, dtype=s.dtype)
        cts = eye_q[None, :, None, :, None] * jnp.swapaxes(diff, 0, 1)[:, None, :, None, :]
        cts = cts.reshape(k * q, rows, q, s.shape[-1])  # [K*Q, rows, Q, C]

        def grad_of(ct):
            return jnp.where(val, pullback(ct)[0], 0.0)

        mq = m.astype(s.dtype)
        nq = jnp.maximum(mq.sum(1), 1.0)  # [rows]
        if config.vjp_batch is None:
            if _mapped(config.pullbacks):  # one pullback at a time: smaller working set on CPU
                g = jax.lax.map(grad_of, cts)
            else:
                g = jax.vmap(grad_of)(cts)
            g = g.reshape(k, q, rows, n)  # [K, Q, rows, N]
            gnorm = jnp.moveaxis(_norm(g, linf), (0, 1), (2, 1))  # [rows, Q, K]
        else:
            gnorm = jax.lax.map(
                lambda ct: _norm(grad_of(ct), linf), cts, batch_size=config.vjp_batch
            )
            gnorm = jnp.moveaxis(gnorm.reshape(k, q, rows), (0, 1), (2, 1))
        dist_q = (jnp.abs(f) + config.numerator_eps) / (gnorm + NORM_EPS)  # [rows, Q, K]
        dist = jnp.sum(dist_q * mq[:, :, None], 1) / nq[:, None]  # chunk mean [rows, K]
        ok = ~excl
        if config.residual:
            cs = jnp.sum(s * mq[:, :, None], 1) / nq[:, None]  # clip scores [rows, C]
            ok = ok & (jnp.take_along_axis(cs, cnd, -1) < jnp.take_along_axis(cs, org[:, None], -1))
        if config.select == "min":
            best = jnp.argmin(jnp.where(ok, dist, jnp.inf), axis=1)
        else:
            best = jnp.argmax(jnp.where(ok, dist, -jnp.inf), axis=1)
        d = jnp.take_along_axis(dist, best[:, None], 1)[:, 0]
        # direction: chunk mean of the chosen candidate's gradients
        if config.vjp_batch is None:
            gsel = jnp.take_along_axis(g, best[None, None, :, None], axis=0)[0]  # [Q, rows, N]
            w = jnp.sum(gsel * jnp.swapaxes(mq, 0, 1)[:, :, None], 0) / nq[:, None]
        else:
            ct = jax.nn.one_hot(cnd[jnp.arange(rows), best], s.shape[-1]) - jax.nn.one_hot(
                org, s.shape[-1]
            )
            w = grad_of((mq / nq[:, None])[:, :, None] * ct[:, None, :])
        if linf:
            r = (d + config.step_eps)[:, None] * jnp.sign(w)
        else:
            r = ((d + config.step_eps) / (_norm(w, linf) + NORM_EPS))[:, None] * w
        return now_adv, jnp.where(val, r, 0.0)

    def step(self, problem: engine.Problem, st: _State, e: Any, active: Array) -> _State:
        config = self.config
        now_adv, r = e
        adv = st.adv | (active & now_adv)
        moving = ~adv
        p_total = jnp.where(moving[:, None], st.p_total + r, st.p_total)
        if config.overshoot_mode == "cumulative":
            x_new = problem.x + (1.0 + config.overshoot) * p_total
        else:
            x_new = st.xc + (1.0 + config.overshoot) * r
        x_new = jnp.where(problem.valid, jnp.clip(x_new, *common.BOX), problem.x)
        return st._replace(
            xc=jnp.where(moving[:, None], x_new, st.xc),
            p_total=p_total,
            adv=adv,
            steps=st.steps + moving.astype(jnp.int32),
            it=st.it + 1,
        )

    def done(self, st: _State) -> Array:
        return st.adv | (st.it >= self.config.steps)

    def result(self, fn, params, problem, st: _State, evaluations: Array) -> DeepFoolResult:
        del evaluations
        out = fn(params, st.xc, problem.lengths)
        success = criteria.Misclassification(st.orig).is_adversarial(out)
        return DeepFoolResult(st.xc, success, st.steps, st.orig)


def _deepfool_impl(
    fn: ClassifierFn,
    params: Any,
    x: Array,
    lengths: Array,
    *,
    config: DeepFoolConfig,
) -> DeepFoolResult:
    problem = engine.Problem(x, lengths, jnp.zeros_like(lengths))  # moves away from argmax(x)
    return engine.run(DeepFool(config), fn, params, problem, compact_levels=config.compact_levels)


_deepfool_jit = jax.jit(_deepfool_impl, static_argnames=("fn", "config"))


def deepfool(
    fn: ClassifierFn,
    params: Any,
    x: Array,
    lengths: Array,
    labels: Array,
    *,
    targets: Array | None = None,
    config: DeepFoolConfig = DeepFoolConfig(),
    key: Any = None,
) -> DeepFoolResult:
    """DeepFool (L2 or Linf), untargeted, away from the model's original prediction.

    Args:
      fn: classifier function (hashable; see :mod:`jaxadv.classifier`).
      params: its parameters.
      x: ``[B, N]`` waveforms (32 kHz, in [-1, 1]; clipped to the box first).
      lengths: ``[B]`` valid samples per clip.
      labels: ``[B]`` ground-truth classes (validated, used by the metrics; DeepFool moves away from
        the model's prediction, like the original algorithm and the authors).
      targets: must be None (DeepFool is untargeted).
      config: :class:`DeepFoolConfig`.
      key: unused (deterministic attack).

    Returns:
      :class:`DeepFoolResult`.
    """
    del key
    common.check_config("deepfool", config, DeepFoolConfig)
    x, lengths, labels, _ = common.validate(
        "deepfool", fn, params, x, lengths, labels, targets, targeted="never"
    )
    return _deepfool_jit(fn, params, x, lengths, config=config)
