"""L-BFGS (``mode="jax"``) on the attack engine: the first step of a solve (issue 17 item 4).

* The stall: with a large ``c`` the first trial ``P(x0 - g)`` of ``first_step="unit"`` lands on a
  vertex of the box, and backtracking along the projected path ``P(x0 - alpha g)`` barely moves
  it (``alpha |g| >> 1`` for all ``max_linesearch`` trials), so the solve ends without moving. On
  a classifier of ``sin(omega x)`` features (the objective changes on a scale much shorter than
  the box, as a deep model's does) "unit" stalls on several clips while ``"scipy"`` (the chord to
  the Cauchy point) and ``"inverse_norm"`` (``min(1, 1 / ||g||)``, the default) move and succeed.
* The exact trial points of each rule after a row's initial evaluation.
* The faithful presets keep ``"unit"``; the field is validated.
"""

from __future__ import annotations

import dataclasses
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _attack_helpers import linear_problem, other_class

from jaxadv import attacks as A
from jaxadv.attacks import engine
from jaxadv.classifier import ModelOutput

L = importlib.import_module("jaxadv.attacks.lbfgs")


@dataclasses.dataclass(frozen=True)
class Wiggly:
    """``logits = sin(omega x) @ w`` over the valid samples (one chunk per clip)."""

    omega: float = 50.0

    def __call__(self, params, x, lengths):
        valid = jnp.arange(x.shape[1])[None, :] < lengths[:, None]
        logits = jnp.where(valid, jnp.sin(self.omega * x), 0.0) @ params["w"]
        return ModelOutput(
            logits[:, None, :], jnp.ones((x.shape[0], 1), bool), jax.nn.softmax(logits, -1)
        )


def _wiggly_problem():
    rng = np.random.default_rng(0)
    n, k, b = 32, 3, 6
    fn = Wiggly()
    params = {"w": jnp.asarray(rng.normal(0, 0.3, (n, k)).astype(np.float32))}
    x = jnp.asarray(rng.uniform(-0.3, 0.3, (b, n)).astype(np.float32))
    lengths = jnp.asarray([32, 32, 20, 28, 32, 25], jnp.int32)
    labels = jnp.argmax(fn(params, x, lengths).probs, -1).astype(jnp.int32)
    return fn, params, x, lengths, labels, ((labels + 1) % k).astype(jnp.int32)


LARGE_C = A.LBFGSConfig(binary_search_steps=1, max_iterations=40, initial_const=1e7)


def test_unit_first_step_stalls_with_a_large_const_and_the_fixes_move():
    fn, params, x, lengths, labels, targets = _wiggly_problem()
    res = {}
    for rule in L.FIRST_STEPS:
        cfg = dataclasses.replace(LARGE_C, first_step=rule)
        r = A.lbfgs(fn, params, x, lengths, labels, targets=targets, config=cfg)
        res[rule] = jax.tree.map(np.asarray, r)
    unit = res["unit"]
    stalled = (unit.iterations == 0) & (unit.steps == LARGE_C.max_linesearch)
    assert stalled.sum() >= 2 and not unit.success[stalled].any(), unit  # the symptom
    for rule in ("scipy", "inverse_norm"):
        assert np.all(res[rule].iterations > 0), (rule, res[rule])
        assert np.all(res[rule].success), (rule, res[rule])


def _after_initial_evaluation(config, fn, params, problem):
    """The state once the row's initial evaluation (CE and its gradient at x0) is done."""
    algo = L.LBFGSAttack(config)
    st = algo.init(fn, params, problem)
    e = algo.evaluate(fn, params, problem, algo.query(st))
    st = algo.step(problem, st, e, jnp.ones(problem.x.shape[:1], bool))
    return algo, st


@pytest.mark.parametrize("rule", L.FIRST_STEPS)
def test_first_trial_points(rule):
    fn, params, x, lengths, labels = linear_problem(classes=3)
    targets = other_class(labels, 3)
    problem = engine.Problem(x, lengths, labels, targets)
    cfg = A.LBFGSConfig(initial_const=100.0, first_step=rule)
    algo, st = _after_initial_evaluation(cfg, fn, params, problem)
    valid = np.asarray(problem.valid)
    x0 = np.where(valid, np.clip(np.asarray(x), -1, 1), np.asarray(x))
    g = np.asarray(st.g)
    norm = np.linalg.norm(g, axis=-1, keepdims=True)
    assert np.all(norm > 1.0) and np.all(g[~valid] == 0)  # a large c: ||g|| > 1

    def proj(v):
        return np.where(valid, np.clip(v, -1, 1), x0)

    first, alpha = algo.query(st)[0], 1.0 if rule != "inverse_norm" else 1.0 / norm
    np.testing.assert_allclose(np.asarray(first), proj(x0 - alpha * g), atol=1e-6)
    # the backtracking path: half the step
    half = np.asarray(algo.query(st._replace(alpha=st.alpha * 0.5))[0])
    if rule == "scipy":  # the chord from x0 to the Cauchy point P(x0 - g)
        np.testing.assert_allclose(half, x0 + 0.5 * (proj(x0 - g) - x0), atol=1e-6)
    else:  # the projected path
        np.testing.assert_allclose(half, proj(x0 - 0.5 * alpha * g), atol=1e-6)
    if rule == "inverse_norm":
        assert np.all(np.linalg.norm(np.asarray(first) - x0, axis=-1) <= 1.0 + 1e-5)


def test_presets_keep_the_unit_first_step_and_the_field_is_checked():
    assert A.LBFGSConfig().first_step == "inverse_norm"
    for preset in (A.LBFGSConfig.authors, A.LBFGSConfig.authors_cochlear, A.LBFGSConfig.foolbox1):
        assert preset().first_step == "unit" and preset("scipy").first_step == "unit"
    with pytest.raises(ValueError, match=r"first_step must be one of \['inverse_norm', 'scipy'"):
        A.LBFGSConfig(first_step="cauchy")


def test_engine_algorithm_is_the_jax_mode_only():
    assert isinstance(L.algorithm(A.LBFGSConfig()), L.LBFGSAttack)
    with pytest.raises(ValueError, match="mode='scipy' runs scipy on the host"):
        L.algorithm(A.LBFGSConfig(mode="scipy"))
