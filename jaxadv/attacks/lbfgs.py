"""Targeted L-BFGS attack (Szegedy et al. 2014, https://arxiv.org/abs/1312.6199).

Minimise, per example and for a constant ``c`` found by a search::

    loss_scale * (distance(x' - x) + c * CE(target))     subject to  -1 <= x' <= 1

with ``CE`` the cross-entropy of the scores on the target (summed over valid chunks with
``scores="logits"``, the authors' ``sparse_softmax_cross_entropy_with_logits`` on the repeated
label; ``-log probs[t]`` by default) and ``distance`` the sum of squares (the authors) or Foolbox
1.x's normalised MSE ``sum / (n * (max - min)^2)``. Every solve starts from ``x``; success of a
solve is ``argmax probs == target`` at its result; the returned adversarial is the successful
result with the smallest distance (for a failed example: the result of its last solve).

Searches over ``c`` (the shared :mod:`jaxadv.attacks.search` objects, in both modes):

* ``"bisect"`` (the authors' ``lbfgs.py`` = Carlini's rule): ``binary_search_steps`` solves starting
  at ``initial_const``; success: ``up = min(up, c)``, ``c = (lo + up) / 2`` (if ``up < 1e9``);
  failure: ``lo = max(lo, c)``, ``c = (lo + up) / 2`` if ``up < 1e9`` else ``c * 10``.
* ``"foolbox1"`` (Foolbox 1.8 ``LBFGSAttack``): ``c = 2 eps, 4 eps, ...`` (at most 30 doublings)
  until a success, then bisection on ``[0, c]`` until ``hi - lo < eps`` (``eps = 1e-5``).

Two solvers:

* ``mode="jax"`` (default): a batch-flat projected L-BFGS on the attack engine
  (:mod:`jaxadv.attacks.engine`, :class:`LBFGSAttack`), one compiled program over the batch.
  Each example is its own problem with its own memory (``[B, 2m, N]``), line search, step size,
  convergence test and search over ``c``; each loop iteration evaluates ONE forward+backward of the
  batch, at every example's own trial point. The box is handled by projection: the trial point is
  ``P(z + alpha d)`` (the projected search path, as L-BFGS-B's Cauchy path), the Armijo test uses
  the actual projected displacement, and the curvature pairs are the actual (projected) steps.
  Projection keeps the authors' variables and objective exactly (a tanh reparametrisation would
  change the objective's geometry and start at ``0.999999 x``). Stopping follows scipy's
  L-BFGS-B: projected-gradient ``max |P(z - g) - z| <= pgtol`` (also at the start of a solve),
  relative reduction ``<= factr * eps64``, ``max_iterations``, and an abnormal line search
  (after one memory reset) ends the solve. The first direction of a solve is ``-g`` from step
  ``min(1, 1 / ||g||)`` (``first_step="inverse_norm"``, the default), from unit step
  (``"unit"``, the presets: its first trial ``P(z - g)`` is scipy's Cauchy point for a fully
  boxed problem, but backtracking follows the projected path) or scipy's chord to that point
  (``"scipy"``); later ones are the L-BFGS direction (compact representation: two reads of the
  ``[B, 2m, N]`` memory per iteration, no gathers) with unit step, backtracked by safeguarded quadratic interpolation (not scipy's Moré-Thuente search, so
  iterates differ); a trial equal to ``f`` at float32 resolution ends the solve.
  ``optax.lbfgs`` was not used: vmapped over examples, its zoom line search's ``lax.cond``
  branches both run (two forward+backward passes per line-search step), and it has no bounds.
* ``mode="scipy"`` (fidelity): ``scipy.optimize.fmin_l_bfgs_b`` per example on the host (bounds
  [-1, 1] on the valid samples, float64 iterates, the model's float32 value and gradient from one
  jitted ``value_and_grad``), like the authors' and Foolbox's code. Host-side by design: it is a
  Python loop over examples and solves, not one compiled program.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxadv.attacks import common, criteria, engine, search
from jaxadv.classifier import ClassifierFn

Array = jax.Array

MODES = ("jax", "scipy")
SEARCHES = ("bisect", "foolbox1")
BEST_OVER = ("solves", "evaluations")
FIRST_STEPS = ("unit", "scipy", "inverse_norm")
ARMIJO = 1e-3  # scipy L-BFGS-B's dcsrch ftol (sufficient decrease)
EPS64 = float(np.finfo(np.float64).eps)
STALL_EPS = 4 * float(np.finfo(np.float32).eps)  # relative change below float32 resolution


def _dist_sum(ss, nvalid):
    return ss


def _dist_normalised(ss, nvalid):
    return ss / (nvalid * (common.BOX[1] - common.BOX[0]) ** 2)


DISTANCES = {"sum": _dist_sum, "normalised": _dist_normalised}


@dataclasses.dataclass(frozen=True)
class LBFGSConfig:
    """L-BFGS attack settings.

    Attributes:
      mode: ``"jax"`` (compiled, batched) or ``"scipy"`` (host ``fmin_l_bfgs_b``, fidelity).
      search: ``"bisect"`` (authors / Carlini rule) or ``"foolbox1"``.
      binary_search_steps: solves per example (``"bisect"``).
      initial_const: first ``c`` (``"bisect"``; ``"foolbox1"`` starts at ``2 * search_epsilon``).
      max_iterations: L-BFGS iterations per solve (scipy ``maxiter``).
      memory: L-BFGS memory ``m`` (scipy default 10; Foolbox 1.x 15).
      distance: ``"sum"`` (sum of squares, the authors) or ``"normalised"`` (Foolbox 1.x).
      loss_scale: objective multiplier (Foolbox 1.x: 1e10; it interacts with ``pgtol``).
      scores: ``"log_probs"`` or ``"logits"``.
      pgtol: projected-gradient tolerance (scipy default 1e-5).
      factr: relative-reduction tolerance in units of float64 eps (scipy default 1e7).
      max_linesearch: trial points per line search before it counts as failed (scipy: 20).
      search_epsilon: precision of the ``"foolbox1"`` search (1e-5).
      max_doublings: doublings of ``c`` in the ``"foolbox1"`` search (30).
      best_over: keep the best success among solve results (``"solves"``, the authors) or among
        every evaluated point (``"evaluations"``, Foolbox's ``Adversarial`` object).
      first_step: ``mode="jax"``: the line search of a steepest-descent start (a solve's first
        iteration, a memory reset, a non-descent L-BFGS direction). ``"inverse_norm"`` (default):
        ``P(z - alpha g)`` from ``alpha = min(1, 1 / ||g||)`` (L-BFGS-B's first step when some
        variable is unbounded; Nocedal & Wright's); ``"scipy"``: scipy L-BFGS-B's rule for a
        fully boxed problem, the chord to the Cauchy point, ``z + alpha (P(z - g) - z)`` from
        ``alpha = 1``; ``"unit"`` (the presets): ``P(z - alpha g)`` from ``alpha = 1``. The
        first trial of ``"unit"`` and ``"scipy"`` is the same point ``P(z - g)``, but with a
        large ``c`` (``||g||`` grows with it) backtracking along the projected path barely moves
        it off the box's vertex: on the demo VGG13 at ``c = 10`` most ``"unit"`` solves end after
        ``max_linesearch`` trials without moving (``benchmarks/README.md``, L-BFGS section).
      compact_levels: ``mode="jax"``: each loop iteration evaluates only the examples still
        solving, in a batch of ``B``, ``B/2``, ... (``compact_levels`` halvings; 0 = always the
        whole batch); same results (see :func:`jaxadv.attacks.common.compact_map`).
    """

    mode: str = "jax"
    search: str = "bisect"
    binary_search_steps: int = 5
    initial_const: float = 0.1
    max_iterations: int = 200
    memory: int = 10
    distance: str = "sum"
    loss_scale: float = 1.0
    scores: str = "log_probs"
    pgtol: float = 1e-5
    factr: float = 1e7
    max_linesearch: int = 20
    search_epsilon: float = 1e-5
    max_doublings: int = 30
    best_over: str = "solves"
    first_step: str = "inverse_norm"
    compact_levels: int = common.COMPACT_LEVELS

    def __post_init__(self) -> None:
        common.check_fields(
            self,
            {
                "mode": common.choice(MODES),
                "search": common.choice(SEARCHES),
                "binary_search_steps": common.integer(1),
                "initial_const": common.number(0.0, lo_open=True),
                "max_iterations": common.integer(1),
                "memory": common.integer(1),
                "distance": common.choice(DISTANCES),
                "loss_scale": common.number(0.0, lo_open=True),
                "scores": common.SCORES_RULE,
                "pgtol": common.number(0.0),
                "factr": common.number(0.0),
                "max_linesearch": common.integer(1),
                "search_epsilon": common.number(0.0, lo_open=True),
                "max_doublings": common.integer(0),
                "best_over": common.choice(BEST_OVER),
                "first_step": common.choice(FIRST_STEPS),
                "compact_levels": common.COMPACT_RULE,
            },
        )

    @classmethod
    def authors(cls, mode: str = "jax") -> LBFGSConfig:
        """The authors' Iqbal setting: ``LBFGS(model, binary_search_steps=2, max_iterations=200)``."""
        return cls(
            mode=mode,
            binary_search_steps=2,
            initial_const=0.1,
            max_iterations=200,
            scores="logits",
            first_step="unit",
        )

    @classmethod
    def authors_cochlear(cls, mode: str = "jax") -> LBFGSConfig:
        """The authors' Cochlear setting: 2 steps, 1000 iterations (CE on the averaged probs)."""
        return dataclasses.replace(cls.authors(mode), max_iterations=1000)

    @classmethod
    def foolbox1(cls, mode: str = "jax") -> LBFGSConfig:
        """Foolbox 1.8 ``LBFGSAttack``: doubling + bisection to 1e-5, m 15, maxiter 150, x1e10."""
        return cls(
            mode=mode,
            search="foolbox1",
            max_iterations=150,
            memory=15,
            distance="normalised",
            loss_scale=1e10,
            best_over="evaluations",
            first_step="unit",
        )


class LBFGSResult(NamedTuple):
    """Result of :func:`lbfgs` (all ``[B]`` unless noted).

    Attributes:
      adversarial: ``[B, N]`` the successful solve result (or evaluated point) with the smallest
        distance; for a failed example the result of its last solve.
      success: some solve result (point) was classified as the target.
      steps: forward+backward evaluations used by this example (all solves, line searches).
      const: the ``c`` of the example's last solve.
      best_const: the ``c`` at which ``adversarial`` was found (0 if it failed).
      distance: the config's distance of ``adversarial`` (without ``loss_scale``).
      iterations: accepted L-BFGS iterations over all solves.
      solves: solves run.
    """

    adversarial: Array
    success: Array
    steps: Array
    const: Array
    best_const: Array
    distance: Array
    iterations: Array
    solves: Array


def const_search(cfg: LBFGSConfig) -> search.ConstSearch:
    """The config's search over ``c`` (:mod:`jaxadv.attacks.search`; L-BFGS never repeats the
    last bisection step)."""
    if cfg.search == "bisect":
        return search.CarliniBisection(cfg.initial_const, cfg.binary_search_steps)
    return search.Foolbox1Doubling(cfg.search_epsilon, cfg.max_doublings)


def _objective(fn, params, z, x0, lengths, targets, const, cfg):
    """Per-example objective ``[B]`` (scaled), CE ``[B]``, distance ``[B]`` and outputs at ``z``."""
    valid = common.valid_mask(z.shape[1], lengths)
    out = fn(params, z, lengths)
    ce = common.cross_entropy(out, targets, cfg.scores)
    dist = DISTANCES[cfg.distance](common.sum_squares(z - x0, valid), lengths.astype(z.dtype))
    return cfg.loss_scale * (dist + const * ce), ce, dist, out


def _clean(problem: engine.Problem) -> Array:
    """``x0``: the clean clip clipped to the box on its valid samples (every solve starts there)."""
    return jnp.where(problem.valid, jnp.clip(problem.x, *common.BOX), problem.x)


class _State(NamedTuple):
    x0: Array  # [B, N] the clean clip, clipped to the box on its valid samples
    lengths: Array  # [B] valid samples (the trial point is built from the state alone)
    z: Array  # [B, N] accepted iterate
    f: Array
    g: Array
    on_target: Array  # argmax probs == target at z
    dist: Array  # at z
    d: Array  # search direction
    alpha: Array
    mem: Array  # [B, 2m, N]: the m steps s_i, then the m gradient changes y_i (circular slots)
    sy: Array  # [B, m, m] s_i . y_j
    yy: Array  # [B, m, m] y_i . y_j
    age: Array  # [B, m] push count when the slot was written; -1 = empty
    clock: Array  # pushes so far
    ptr: Array  # next slot to write
    cnt: Array  # valid slots
    ls: Array  # trials in the current line search
    iters: Array  # accepted iterations in the current solve
    instant: Array  # the solve converged at its start (pgtol): finish without using the evaluation
    initial: Array  # the row's first evaluation (CE and its gradient at x0) is still to come
    gce0: Array  # [B, N] gradient of CE at x0 (every solve starts at x0 with f = s * c * CE0)
    ce0: Array
    on_target0: Array
    search: search.SearchState  # const, bracket and count of the search over c
    solves: Array
    best_dist: Array
    best_adv: Array
    best_const: Array
    last_adv: Array
    last_dist: Array
    last_const: Array
    done: Array
    steps: Array  # evaluations of the solves (not the initial one, nor an instant solve's)
    iterations: Array


def _apply_inverse_hessian(g, mem, sy, yy, age, dots):
    """``H g`` from the compact L-BFGS representation (Byrd, Nocedal & Schnabel 1994).

    ``H = gamma I + [S, gamma Y] M [S^T; gamma Y^T]`` with ``M = [[R^-T (D + gamma Y^T Y) R^-1,
    -R^-T], [-R^-1, 0]]``, ``R`` the upper triangle (in time order) of ``S^T Y`` and ``D`` its
    diagonal (Nocedal & Wright eq. 7.24). Slots are kept in circular order; time order only enters
    the ``[B, m, m]`` masks, so no ``[B, m, N]`` gathers: the ``[B, 2m, N]`` memory is read once
    for ``dots`` (``S^T g``, ``Y^T g``, computed by the caller) and once for the combination.
    """
    m = age.shape[1]
    valid = age >= 0
    both = valid[:, :, None] & valid[:, None, :]
    a = jnp.where(valid, dots[:, :m], 0.0)  # S^T g
    b = jnp.where(valid, dots[:, m:], 0.0)  # Y^T g
    newest = jnp.argmax(jnp.where(valid, age, -1), axis=1)
    rows = jnp.arange(g.shape[0])
    syn, yyn = sy[rows, newest, newest], yy[rows, newest, newest]
    gamma = jnp.where(valid.any(1) & (yyn > 0), syn / jnp.where(yyn > 0, yyn, 1.0), 1.0)
    eye = jnp.eye(m, dtype=g.dtype)
    earlier = age[:, :, None] <= age[:, None, :]
    r = jnp.where(both & earlier, sy, 0.0) + eye * (~valid)[:, None, :]
    diag = jnp.where(valid, jnp.diagonal(sy, axis1=1, axis2=2), 0.0)
    u = jnp.linalg.solve(r, a[..., None])[..., 0]  # R^-1 S^T g
    v = diag * u + gamma[:, None] * (jnp.einsum("bij,bj->bi", jnp.where(both, yy, 0.0), u) - b)
    p = jnp.linalg.solve(jnp.swapaxes(r, 1, 2), v[..., None])[..., 0]
    coef = jnp.concatenate([p, -gamma[:, None] * u], axis=1)  # on [S, Y]
    return gamma[:, None] * g + jnp.einsum("bk,bkn->bn", coef, mem)


@dataclasses.dataclass(frozen=True)
class LBFGSAttack:
    """``mode="jax"`` L-BFGS as an engine :class:`~jaxadv.attacks.engine.Algorithm`.

    One evaluation = one forward+backward of the objective at each row's own trial point. A row's
    first evaluation is CE and its gradient at ``x0`` (``c = 1``; every solve starts there, so its
    value and gradient are ``s * c * CE0`` and ``s * c * grad CE0``); ``steps`` counts the
    evaluations of the solves only (not that one, nor the skipped evaluation of a solve that
    converged at its start), so the engine's evaluation count is not reported.
    """

    config: LBFGSConfig

    @property
    def search(self) -> search.ConstSearch:
        return const_search(self.config)

    def init(self, fn: Any, params: Any, problem: engine.Problem) -> _State:
        del fn, params
        cfg = self.config
        b, n = problem.x.shape
        m = cfg.memory
        f32, i32 = jnp.float32, jnp.int32
        x0 = _clean(problem)
        zeros_b = jnp.zeros((b,), f32)
        zi = jnp.zeros((b,), i32)
        no = jnp.zeros((b,), bool)
        s0 = self.search.init(jnp, b)
        return _State(
            x0=x0,
            lengths=problem.lengths,
            z=x0,
            f=zeros_b,
            g=jnp.zeros_like(x0),
            on_target=no,
            dist=zeros_b,
            d=jnp.zeros_like(x0),
            alpha=jnp.ones((b,), f32),
            mem=jnp.zeros((b, 2 * m, n), f32),
            sy=jnp.zeros((b, m, m), f32),
            yy=jnp.zeros((b, m, m), f32),
            age=jnp.full((b, m), -1, i32),
            clock=zi,
            ptr=zi,
            cnt=zi,
            ls=zi,
            iters=zi,
            instant=no,
            initial=jnp.ones((b,), bool),
            gce0=jnp.zeros_like(x0),
            ce0=zeros_b,
            on_target0=no,
            search=s0,
            solves=zi,
            best_dist=jnp.full((b,), jnp.inf, f32),
            best_adv=x0,
            best_const=zeros_b,
            last_adv=x0,
            last_dist=zeros_b,
            last_const=s0.const,
            done=no,
            steps=zi,
            iterations=zi,
        )

    def query(self, st: _State) -> tuple[Array, Array, Array]:
        """The trial point ``P(z + alpha d)`` (x0 for the initial evaluation: ``d = 0``), its
        ``c`` (1 for the initial evaluation) and ``x0``."""
        valid = common.valid_mask(st.z.shape[1], st.lengths)
        zt = jnp.where(valid, jnp.clip(st.z + st.alpha[:, None] * st.d, *common.BOX), st.x0)
        return zt, jnp.where(st.initial, 1.0, st.search.const), st.x0

    def evaluate(self, fn: Any, params: Any, problem: engine.Problem, q: Any) -> Any:
        """Objective, CE, distance, target hit ``[rows]``, the gradient and the trial points."""
        cfg = self.config
        z, const, x0 = q
        hit = criteria.TargetedMisclassification(problem.targets)

        def tot(zz):
            loss, ce, dist, out = _objective(
                fn, params, zz, x0, problem.lengths, problem.targets, const, cfg
            )
            return jnp.sum(loss), (loss, ce, dist, hit.is_adversarial(out))

        (_, (f, ce, dist, ok)), g = jax.value_and_grad(tot, has_aux=True)(z)
        return f, ce, dist, ok, g, z

    def _steepest(self, project: Any, z: Array, g: Array) -> tuple[Array, Array]:
        """Direction and step of a steepest-descent start (a solve's first iteration, a memory
        reset, a non-descent L-BFGS direction) under ``config.first_step``."""
        rule = self.config.first_step
        if rule == "unit":
            return -g, jnp.ones(g.shape[:1], g.dtype)
        if rule == "scipy":  # the chord to the Cauchy point P(z - g) (theta = 1), unit step
            return project(z - g) - z, jnp.ones(g.shape[:1], g.dtype)
        norm = jnp.sqrt(jnp.sum(g * g, -1))  # "inverse_norm": -g with step min(1, 1 / ||g||)
        return -g, jnp.where(norm > 1.0, 1.0 / jnp.where(norm > 1.0, norm, 1.0), 1.0)

    def step(self, problem: engine.Problem, st: _State, e: Any, active: Array) -> _State:
        cfg = self.config
        b = st.z.shape[0]
        m = cfg.memory
        valid = problem.valid
        x0 = st.x0
        ftol = cfg.factr * EPS64

        def project(v):
            return jnp.where(valid, jnp.clip(v, *common.BOX), x0)

        def pgnorm(z, g):
            return jnp.max(jnp.where(valid, jnp.abs(project(z - g) - z), 0.0), axis=-1)

        ft, ce_t, dist_t, hit_t, gt, zt = e
        gt = jnp.where(valid, gt, 0.0)
        first = active & st.initial
        inst = active & st.instant
        act = active & ~st.initial & ~st.instant
        steps = st.steps + act.astype(jnp.int32)
        const = st.search.const
        best_dist, best_adv, best_const = st.best_dist, st.best_adv, st.best_const
        if cfg.best_over == "evaluations":
            hit = act & hit_t & (dist_t < best_dist)
            best_dist = jnp.where(hit, dist_t, best_dist)
            best_adv = common.where_b(hit, zt, best_adv)
            best_const = jnp.where(hit, const, best_const)
        # projected Armijo test
        dz = zt - st.z
        slope = jnp.sum(st.g * dz, -1)
        accept = act & jnp.isfinite(ft) & (slope < 0) & (ft <= st.f + ARMIJO * slope)
        reject = act & ~accept
        # curvature pair of the accepted step
        yv = gt - st.g
        s_y, y_y = jnp.sum(dz * yv, -1), jnp.sum(yv * yv, -1)
        push = accept & (s_y > EPS64 * y_y) & (s_y > 0)
        rows = jnp.arange(b)
        mem = st.mem.at[rows, st.ptr].set(jnp.where(push[:, None], dz, st.mem[rows, st.ptr]))
        mem = mem.at[rows, m + st.ptr].set(jnp.where(push[:, None], yv, mem[rows, m + st.ptr]))
        written = jax.nn.one_hot(st.ptr, m, dtype=bool) & push[:, None]  # [B, m]
        age = jnp.where(written, st.clock[:, None], st.age)
        clock = st.clock + push.astype(jnp.int32)
        ptr = jnp.where(push, (st.ptr + 1) % m, st.ptr)
        cnt = jnp.where(push, jnp.minimum(st.cnt + 1, m), st.cnt)
        z = common.where_b(accept, zt, st.z)
        f = jnp.where(accept, ft, st.f)
        g = common.where_b(accept, gt, st.g)
        on_target = jnp.where(accept, hit_t, st.on_target)
        dist = jnp.where(accept, dist_t, st.dist)
        iters = st.iters + accept.astype(jnp.int32)
        reduction = st.f - ft
        scale = jnp.maximum(jnp.maximum(jnp.abs(st.f), jnp.abs(ft)), 1.0)
        conv = accept & (
            (pgnorm(z, g) <= cfg.pgtol)
            | (reduction <= ftol * scale)
            | (iters >= cfg.max_iterations)
        )
        # line search: backtrack by safeguarded quadratic interpolation
        ls = jnp.where(accept, 0, st.ls + reject.astype(jnp.int32))
        # A trial whose value equals f to float32 precision cannot show a decrease: the solve has
        # converged at float32 resolution (scipy's factr * eps64 test, but for float32 values).
        stalled = reject & jnp.isfinite(ft) & (jnp.abs(ft - st.f) <= STALL_EPS * scale)
        ls_fail = reject & ~stalled & ((ls >= cfg.max_linesearch) | (slope >= 0))
        abnormal = ls_fail & (cnt == 0)
        reset = ls_fail & (cnt > 0)  # scipy: refresh the memory and retry once from -g
        cnt = jnp.where(reset, 0, cnt)
        ls = jnp.where(reset, 0, ls)
        denom = 2.0 * (ft - st.f - slope)
        a_q = jnp.where(jnp.isfinite(ft) & (denom > 0), -slope * st.alpha / denom, 0.1 * st.alpha)
        a_back = jnp.clip(a_q, 0.1 * st.alpha, 0.5 * st.alpha)
        # new direction after an accepted step or a memory reset; one pass over the memory gives
        # the new pair's products (S^T y, Y^T s, Y^T y) and S^T g, Y^T g
        newdir = (accept & ~conv) | reset
        age = jnp.where(reset[:, None], -1, age)
        # three batched matvecs (XLA:CPU runs one [3, N] x [N, 2m] product per example ~6x slower)
        dots = jnp.stack([jnp.einsum("bn,bjn->bj", v, mem) for v in (dz, yv, g)], 1)  # [B, 3, 2m]
        row = written[:, :, None]
        col = written[:, None, :]
        sy = jnp.where(row, dots[:, 0, None, m:], st.sy)  # s_slot . y_j
        sy = jnp.where(col, dots[:, 1, :m, None], sy)  # s_i . y_slot
        yy = jnp.where(row, dots[:, 1, None, m:], st.yy)
        yy = jnp.where(col, dots[:, 1, m:, None], yy)
        d_new = -_apply_inverse_hessian(g, mem, sy, yy, age, dots[:, 2])
        descent = jnp.sum(g * d_new, -1) < 0
        bad = newdir & ~descent
        cnt = jnp.where(bad, 0, cnt)
        age = jnp.where(bad[:, None], -1, age)
        alpha_new = jnp.ones((b,), jnp.float32)
        if cfg.first_step == "unit":
            d_new = common.where_b(descent, d_new, -g)
        else:  # a steepest-descent start (memory reset or non-descent) follows first_step
            steep = reset | bad
            d_sd, a_sd = self._steepest(project, z, g)
            d_new = common.where_b(steep, d_sd, d_new)
            alpha_new = jnp.where(steep, a_sd, alpha_new)
        d = common.where_b(newdir, d_new, st.d)
        alpha = jnp.where(newdir, alpha_new, jnp.where(reject & ~ls_fail, a_back, st.alpha))

        # end of a solve: success test, best-so-far, search over c, restart
        end = inst | conv | stalled | abnormal
        ok = end & on_target
        if cfg.best_over == "solves":
            better = ok & (dist < best_dist)
            best_dist = jnp.where(better, dist, best_dist)
            best_adv = common.where_b(better, z, best_adv)
            best_const = jnp.where(better, const, best_const)
        new_search, finished = self.search.update(jnp, st.search, ok)
        done = st.done | (end & finished)
        # the initial evaluation: CE and its gradient at x0 (const 1)
        st = st._replace(
            z=z,
            f=f,
            g=g,
            on_target=on_target,
            dist=dist,
            d=d,
            alpha=alpha,
            mem=mem,
            sy=sy,
            yy=yy,
            age=age,
            clock=clock,
            ptr=ptr,
            cnt=cnt,
            ls=ls,
            iters=iters,
            instant=st.instant & ~end,
            initial=st.initial & ~first,
            gce0=common.where_b(first, gt / cfg.loss_scale, st.gce0),
            ce0=jnp.where(first, ce_t, st.ce0),
            on_target0=jnp.where(first, hit_t, st.on_target0),
            search=common.tree_where_b(end, new_search, st.search),
            best_dist=best_dist,
            best_adv=best_adv,
            best_const=best_const,
            last_adv=common.where_b(end, z, st.last_adv),
            last_dist=jnp.where(end, dist, st.last_dist),
            last_const=jnp.where(end, const, st.last_const),
            done=done,
            steps=steps,
            iterations=st.iterations + accept.astype(jnp.int32),
        )
        return self._start(st, (end & ~done) | first, project, pgnorm, x0)

    def _start(self, st: _State, mask: Array, project, pgnorm, x0: Array) -> _State:
        """(Re)start the solve of the rows in ``mask`` at x0 with their current const."""
        cfg = self.config
        const = st.search.const
        g0 = (cfg.loss_scale * const)[:, None] * st.gce0
        f0 = cfg.loss_scale * const * st.ce0
        d0, a0 = self._steepest(project, x0, g0)
        wb = common.where_b
        return st._replace(
            z=wb(mask, x0, st.z),
            f=jnp.where(mask, f0, st.f),
            g=wb(mask, g0, st.g),
            on_target=jnp.where(mask, st.on_target0, st.on_target),
            dist=jnp.where(mask, 0.0, st.dist),
            d=wb(mask, d0, st.d),
            alpha=jnp.where(mask, a0, st.alpha),
            age=jnp.where(mask[:, None], -1, st.age),
            ptr=jnp.where(mask, 0, st.ptr),
            cnt=jnp.where(mask, 0, st.cnt),
            ls=jnp.where(mask, 0, st.ls),
            iters=jnp.where(mask, 0, st.iters),
            instant=jnp.where(mask, pgnorm(x0, g0) <= cfg.pgtol, st.instant),
            solves=st.solves + mask.astype(jnp.int32),
        )

    def done(self, st: _State) -> Array:
        return st.done

    def result(self, fn, params, problem, st: _State, evaluations: Array) -> LBFGSResult:
        del fn, params, problem, evaluations  # steps: the solves' own count (see the class)
        success = jnp.isfinite(st.best_dist)
        return LBFGSResult(
            adversarial=common.where_b(success, st.best_adv, st.last_adv),
            success=success,
            steps=st.steps,
            const=st.last_const,
            best_const=st.best_const,
            distance=jnp.where(success, st.best_dist, st.last_dist),
            iterations=st.iterations,
            solves=st.solves,
        )


def algorithm(config: LBFGSConfig) -> LBFGSAttack:
    """The engine algorithm of ``config`` (``mode="jax"``; the scipy mode runs on the host)."""
    if config.mode != "jax":
        raise ValueError(
            f"lbfgs: mode={config.mode!r} runs scipy on the host, not on the engine; use mode='jax'"
        )
    return LBFGSAttack(config)


def _lbfgs_impl(
    fn: ClassifierFn,
    params: Any,
    x: Array,
    lengths: Array,
    targets: Array,
    *,
    config: LBFGSConfig,
) -> LBFGSResult:
    # L-BFGS never reads the labels (success is argmax == target): -1 marks them absent
    problem = engine.Problem(x, lengths, jnp.full_like(targets, -1), targets)
    return engine.run(
        LBFGSAttack(config), fn, params, problem, compact_levels=config.compact_levels
    )


_lbfgs_jit = jax.jit(_lbfgs_impl, static_argnames=("fn", "config"))


# --- fidelity mode: scipy's L-BFGS-B on the host --------------------------------------------------


def _single_value_and_grad(fn, params, z, x0, lengths, targets, const, *, config):
    def total(zz):
        loss, _, dist, out = _objective(fn, params, zz, x0, lengths, targets, const, config)
        return jnp.sum(loss), (dist, out.probs)

    (val, (dist, probs)), g = jax.value_and_grad(total, has_aux=True)(z)
    return val, g, dist, probs


_single_vg_jit = jax.jit(_single_value_and_grad, static_argnames=("fn", "config"))


def _lbfgs_scipy(fn, params, x, lengths, targets, config: LBFGSConfig) -> LBFGSResult:
    from scipy.optimize import fmin_l_bfgs_b  # host-side fidelity mode only

    cfg = config
    xs = np.asarray(jnp.where(common.valid_mask(x.shape[1], lengths), jnp.clip(x, *common.BOX), x))
    lens, tgts = np.asarray(lengths), np.asarray(targets)
    fields = {k: [] for k in LBFGSResult._fields}
    for i in range(xs.shape[0]):
        row, length = xs[i : i + 1], int(lens[i])
        x0_row = jnp.asarray(row)
        li, ti = jnp.asarray(lens[i : i + 1]), jnp.asarray(tgts[i : i + 1])
        evals = 0

        def evaluate(zv, const, row=row, length=length, x0_row=x0_row, li=li, ti=ti):
            full = row.copy()
            full[0, :length] = zv
            val, g, dist, probs = _single_vg_jit(
                fn, params, jnp.asarray(full, jnp.float32), x0_row, li, ti,
                jnp.full((1,), const, jnp.float32), config=cfg,
            )  # fmt: skip
            # slice on the host: an eager jax slice would compile one program per clip length
            g = np.asarray(g)[0, :length].astype(np.float64)
            return float(val), g, float(np.asarray(dist)[0]), probs

        def func(zv, const):
            nonlocal evals
            evals += 1
            val, g, _, _ = evaluate(zv, const)
            return val, g

        rule = const_search(cfg)
        st = rule.init(np, 1, dtype=np.float64)  # float64 consts, as Python floats were
        c = float(st.const[0])
        best = (np.inf, row[0], 0.0)
        last = (row[0], 0.0, c)
        iters = solves = 0
        while True:
            zv, _, info = fmin_l_bfgs_b(
                func,
                row[0, :length].astype(np.float64),
                args=(c,),
                bounds=[common.BOX] * length,
                m=cfg.memory,
                maxiter=cfg.max_iterations,
                factr=cfg.factr,
                pgtol=cfg.pgtol,
            )
            zv = np.clip(zv, *common.BOX)
            solves += 1
            iters += int(info["nit"])
            _, _, dist, probs = evaluate(zv, c)
            full = row[0].copy()
            full[:length] = zv
            ok = int(np.argmax(np.asarray(probs)[0])) == int(tgts[i])
            if ok and dist < best[0]:
                best = (dist, full, c)
            last = (full, dist, c)
            st, finished = rule.update(np, st, np.array([ok]))
            c = float(st.const[0])
            if bool(finished[0]):
                break
        success = np.isfinite(best[0])
        fields["adversarial"].append(best[1] if success else last[0])
        fields["success"].append(success)
        fields["steps"].append(evals)
        fields["const"].append(last[2])
        fields["best_const"].append(best[2])
        fields["distance"].append(best[0] if success else last[1])
        fields["iterations"].append(iters)
        fields["solves"].append(solves)
    dtypes = {"success": bool, "steps": np.int32, "iterations": np.int32, "solves": np.int32}
    return LBFGSResult(
        **{k: jnp.asarray(np.asarray(v, dtypes.get(k, np.float32))) for k, v in fields.items()}
    )


def lbfgs(
    fn: ClassifierFn,
    params: Any,
    x: Array,
    lengths: Array,
    labels: Array,
    *,
    targets: Array | None = None,
    config: LBFGSConfig = LBFGSConfig(),
    key: Any = None,
) -> LBFGSResult:
    """Targeted L-BFGS attack (box [-1, 1]) with a per-example search over ``c``.

    Args:
      fn: classifier function (hashable; see :mod:`jaxadv.classifier`).
      params: its parameters.
      x: ``[B, N]`` waveforms (32 kHz; clipped to [-1, 1] first, as the authors do).
      lengths: ``[B]`` valid samples per clip (only these are variables).
      labels: ``[B]`` ground-truth classes (validated; targets must differ).
      targets: ``[B]`` target classes (required; may differ per example).
      config: :class:`LBFGSConfig` (presets ``authors``, ``authors_cochlear``, ``foolbox1``).
      key: unused (deterministic attack).

    Returns:
      :class:`LBFGSResult`. ``mode="jax"`` is one compiled program over the batch;
      ``mode="scipy"`` loops over examples on the host.
    """
    del key
    common.check_config("lbfgs", config, LBFGSConfig)
    x, lengths, labels, targets = common.validate(
        "lbfgs", fn, params, x, lengths, labels, targets, targeted="required"
    )
    if config.mode == "scipy":
        return _lbfgs_scipy(fn, params, x, lengths, targets, config)
    return _lbfgs_jit(fn, params, x, lengths, targets, config=config)
