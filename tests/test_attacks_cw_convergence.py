"""C&W's convergence options (issue 17 item 2): each one works, and the defaults are unchanged.

* ``lr_schedule``: a decaying learning rate ends closer to the minimal distance than a constant
  one at the same budget (Adam's constant-lr iterate oscillates at ~lr per coordinate).
* ``lr_relative``: with the step relative to the clip's level, scaling a problem by 10 (clip,
  bias, and ``const`` with it) scales the distances by exactly 100 ("sum" mode); without, not.
* abort rules: no abort before ``abort_min_iterations``; ``abort_on="distance"`` stops a step
  whose best distance stalled.
* ``const_update="geometric"``: the rule in log space (NumPy and JAX).
* ``restart="best"``: the next binary-search step starts from the best successful modifier.
* the ``audio()`` preset: jit == eager, batch == alone (row independence, a silent clip too).

The faithful presets are covered by ``tests/test_attacks_goldens.py`` (unchanged goldens).
"""

from __future__ import annotations

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _attack_helpers import chunked_problem, linear_problem

from jaxadv import attacks as A
from jaxadv.attacks import cw, engine, search


def _min_sq_distance(params, x, lengths, labels):
    """Squared minimal L2 distance to the boundary of a 2-class linear model, per example."""
    w, b = np.asarray(params["w"], np.float64), np.asarray(params["b"], np.float64)
    valid = np.arange(x.shape[1])[None, :] < np.asarray(lengths)[:, None]
    out = []
    for i, y in enumerate(np.asarray(labels)):
        wi = np.where(valid[i], w[:, 1 - y] - w[:, y], 0.0)
        f = np.where(valid[i], np.asarray(x[i], np.float64), 0.0) @ wi + b[1 - y] - b[y]
        out.append((f / np.linalg.norm(wi)) ** 2)
    return np.array(out)


def test_new_fields_default_to_carlini():
    cfg = A.CWConfig()
    assert (cfg.lr_schedule, cfg.lr_relative, cfg.restart, cfg.abort_on) == (
        "constant",
        "none",
        "zero",
        "loss",
    )
    assert (cfg.abort_period, cfg.abort_min_iterations, cfg.abort_tolerance) == (None, 0, 1e-4)
    for preset in ("carlini", "foolbox1", "authors", "authors_cochlear_targeted"):
        c = getattr(A.CWConfig, preset)()
        assert c.lr_schedule == "constant" and c.lr_relative == "none" and c.restart == "zero"
        assert c.const_update in ("carlini", "authors")


@pytest.mark.parametrize("schedule", ["cosine", "exponential"])
def test_lr_schedule_gets_closer_than_constant_lr(schedule):
    fn, params, x, lengths, labels = linear_problem(n=32, classes=2, batch=4)
    dmin = _min_sq_distance(params, x, lengths, labels)
    base = A.CWConfig(
        binary_search_steps=1,
        max_iterations=200,
        learning_rate=3e-2,
        initial_const=1.0,
        abort_early=False,
    )
    excess = {}
    for name, cfg in (
        ("constant", base),
        (schedule, dataclasses.replace(base, lr_schedule=schedule, lr_final=1e-3)),
    ):
        r = A.carlini_wagner(fn, params, x, lengths, labels, config=cfg)
        assert bool(np.all(np.asarray(r.success)))
        excess[name] = np.asarray(r.distance, np.float64) / dmin - 1
    assert np.all(excess[schedule] > -1e-4), excess  # never inside the boundary
    assert np.all(excess[schedule] < 0.5 * excess["constant"]), excess
    assert np.all(excess[schedule] < 5e-3), excess


@pytest.mark.parametrize("relative", ["rms", "peak", "none"])
def test_lr_relative_makes_results_scale_invariant(relative):
    """Problem P(s) = (clip s x, bias s b): its boundary distances scale with s, and with
    ``const`` scaled by s too the objective is s^2 times P(1)'s. Adam ignores the gradient's
    scale, so only a step relative to the clip makes the iterates scale with it."""
    fn, params, x, lengths, labels = linear_problem(n=32, classes=2, batch=4)
    dist, consts = [], []
    for s in (0.01, 0.1):  # small clips: the tanh box is nearly linear at both scales
        p = {"w": params["w"], "b": params["b"] * s}
        cfg = A.CWConfig(
            binary_search_steps=4,
            max_iterations=100,
            learning_rate=1e-1,
            initial_const=10.0 * s,
            const_update="geometric",
            lr_schedule="cosine",
            lr_relative=relative,
            abort_early=False,
        )
        r = A.carlini_wagner(fn, p, x * s, lengths, labels, config=cfg)
        assert bool(np.all(np.asarray(r.success)))
        dist.append(np.asarray(r.distance, np.float64))
        consts.append(np.asarray(r.best_const, np.float64))
    ratio = dist[1] / dist[0]
    if relative == "none":
        assert np.max(np.abs(ratio / 100 - 1)) > 0.05, ratio  # the test has teeth
    else:
        np.testing.assert_allclose(ratio, 100.0, rtol=1e-3)
        np.testing.assert_allclose(consts[1] / consts[0], 10.0, rtol=1e-5)


def _abort_problem():
    # a tiny const: the hinge hardly moves while the distance grows, so Carlini's loss rule
    # aborts at its first check after the start (iteration 10 of 100)
    return A.CWConfig(
        binary_search_steps=1, max_iterations=100, learning_rate=1e-2, initial_const=1e-3
    )


def test_abort_min_iterations():
    fn, params, x, lengths, labels = linear_problem(n=32, classes=2, batch=4)
    cfg = _abort_problem()
    r = A.carlini_wagner(fn, params, x, lengths, labels, config=cfg)
    np.testing.assert_array_equal(np.asarray(r.steps), 11)  # Carlini: stops at iteration 10
    for n, period in ((35, None), (40, None), (40, 7)):
        cfg_n = dataclasses.replace(cfg, abort_min_iterations=n, abort_period=period)
        steps = np.asarray(A.carlini_wagner(fn, params, x, lengths, labels, config=cfg_n).steps)
        at = steps - 1  # the iteration the step stopped at (a check) or 100 (ran to the end)
        assert np.all(at >= n), (n, steps)
        assert np.all((at % (period or 10) == 0) | (steps == 100)), (n, steps)
    # a later first abort than without the rule, and never later than ``abort_period`` after the
    # first possible one when the loss keeps rising: here Carlini's check at 10 compares with 0
    cfg_11 = dataclasses.replace(cfg, abort_min_iterations=10)
    np.testing.assert_array_equal(
        np.asarray(A.carlini_wagner(fn, params, x, lengths, labels, config=cfg_11).steps), 11
    )


def test_abort_on_distance_stops_a_stalled_step():
    fn, params, x, lengths, labels = linear_problem(n=32, classes=2, batch=4)
    cfg = A.CWConfig(
        binary_search_steps=1,
        max_iterations=400,
        learning_rate=1e-2,
        initial_const=10.0,
        abort_on="distance",
        abort_period=20,
        abort_min_iterations=60,
        abort_tolerance=1e-3,
    )
    r = A.carlini_wagner(fn, params, x, lengths, labels, config=cfg)
    steps = np.asarray(r.steps)
    assert bool(np.all(np.asarray(r.success)))
    assert np.all(steps > 60) and np.all(steps < 400), steps
    assert np.all((steps - 1) % 20 == 0), steps  # stopped at a check
    # tolerance 0 asks for no decrease at all: a stall only when the best distance did not move
    strict = A.carlini_wagner(
        fn, params, x, lengths, labels, config=dataclasses.replace(cfg, abort_tolerance=0.0)
    )
    assert np.all(np.asarray(strict.steps) >= steps)


@pytest.mark.parametrize("xp", [np, jnp])
def test_geometric_const_search(xp):
    rule = search.GeometricBisection(1e-3, 5)
    st = rule.init(xp, 1, np.float64 if xp is np else None)
    seq, done = [], []
    for ok in [True, True, False, True, False]:
        st, finished = rule.update(xp, st, xp.asarray([ok]))
        seq.append(float(st.const[0]))
        done.append(bool(finished[0]))
    a = np.sqrt(1e-5 * 1e-4)
    b = np.sqrt(1e-5 * a)
    np.testing.assert_allclose(seq, [1e-4, 1e-5, a, b, np.sqrt(b * a)], rtol=1e-6)
    assert done == [False] * 4 + [True]
    # failures first: x factor until a success, then the bracket [c / factor, c]
    rule = search.GeometricBisection(1e-3, 4, factor=100.0)
    st = rule.init(xp, 1, np.float64 if xp is np else None)
    seq = []
    for ok in [False, True, False]:
        st, _ = rule.update(xp, st, xp.asarray([ok]))
        seq.append(float(st.const[0]))
    np.testing.assert_allclose(seq, [1e-1, 1e-2, np.sqrt(1e-2 * 1e-1)], rtol=1e-6)


@pytest.mark.parametrize("restart", ["zero", "best"])
def test_restart_best_starts_the_next_step_at_the_best_modifier(restart):
    fn, params, x, lengths, labels = linear_problem(n=32, classes=2, batch=4)
    cfg = A.CWConfig(
        binary_search_steps=2,
        max_iterations=30,
        learning_rate=1e-2,
        initial_const=10.0,
        abort_early=False,
        restart=restart,
    )
    algo = cw.CarliniWagnerL2(cfg)
    problem = engine.Problem(x, lengths, labels)
    st = algo.init(fn, params, problem)
    step = jax.jit(
        lambda st: algo.step(
            problem, st, algo.evaluate(fn, params, problem, algo.query(st)), ~st.done
        )
    )
    for _ in range(30):
        st = step(st)
    assert np.all(np.asarray(st.search.count) == 1) and np.all(np.asarray(st.it) == 0)
    assert np.all(np.isfinite(np.asarray(st.best_dist)))  # every row succeeded in step 1
    if restart == "zero":
        np.testing.assert_array_equal(np.asarray(st.m), 0.0)
    else:
        w0, _ = cw._tanh_rows(problem)
        xa = np.where(problem.valid, np.tanh(np.asarray(w0 + st.m)), np.asarray(x))
        np.testing.assert_allclose(xa, np.asarray(st.best_adv), atol=1e-6)
        assert np.all(np.abs(np.asarray(st.m)).max(1) > 0)


def _small_audio(**kw):
    return dataclasses.replace(A.CWConfig.audio(), binary_search_steps=3, max_iterations=12, **kw)


SMALL_CONFIGS = {
    "audio": _small_audio(),
    "exponential_peak_distance": _small_audio(
        lr_schedule="exponential",
        lr_relative="peak",
        abort_on="distance",
        abort_period=3,
        abort_min_iterations=3,
        abort_tolerance=1e-2,
        learning_rate=1e-2,
    ),
}


@pytest.mark.parametrize("name", list(SMALL_CONFIGS))
def test_jit_equals_eager(name):
    fn, params, x, lengths, labels = chunked_problem()
    x, lengths, labels = x[:3], lengths[:3], labels[:3]
    cfg = SMALL_CONFIGS[name]
    jitted = A.carlini_wagner(fn, params, x, lengths, labels, config=cfg)
    with jax.disable_jit():
        eager = A.carlini_wagner(fn, params, x, lengths, labels, config=cfg)
    for field, u, v in zip(jitted._fields, jitted, eager, strict=True):
        u, v = np.asarray(u), np.asarray(v)
        if u.dtype == bool or np.issubdtype(u.dtype, np.integer):
            np.testing.assert_array_equal(u, v, err_msg=field)
        else:
            np.testing.assert_allclose(u, v, atol=1e-5, rtol=1e-5, err_msg=field)


def test_batch_equals_alone():
    """Per-row lr scales, restarts and abort rules couple no rows (row 5 is a silent clip)."""
    fn, params, x, lengths, labels = chunked_problem()
    cfg = SMALL_CONFIGS["exponential_peak_distance"]
    batch = A.carlini_wagner(fn, params, x, lengths, labels, config=cfg)
    for i in range(x.shape[0]):
        one = slice(i, i + 1)
        alone = A.carlini_wagner(fn, params, x[one], lengths[one], labels[one], config=cfg)
        for field, u, v in zip(batch._fields, batch, alone, strict=True):
            np.testing.assert_allclose(
                np.asarray(u)[one], np.asarray(v), atol=1e-6, rtol=1e-5, err_msg=field
            )


BAD_NEW_FIELDS = [
    ("lr_schedule", "step", r"one of \['constant', 'cosine', 'exponential'\]"),
    ("lr_final", 0.0, r"a finite number in \(0, 1\]"),
    ("lr_relative", "std", r"one of \['none', 'peak', 'rms'\]"),
    ("abort_period", 0, "None or an integer >= 1"),
    ("abort_min_iterations", -1, "an integer >= 0"),
    ("abort_on", "margin", r"one of \['distance', 'loss'\]"),
    ("abort_tolerance", 1.5, r"a finite number in \[0, 1\]"),
    ("restart", "last", r"one of \['best', 'zero'\]"),
    ("const_factor", 1.0, "a finite number > 1"),
    ("const_update", "log", r"one of \['authors', 'carlini', 'geometric'\]"),
]


@pytest.mark.parametrize("field,value,rule", BAD_NEW_FIELDS)
def test_bad_new_field(field, value, rule):
    message = rf"CWConfig: {field} must be {rule}, got {re.escape(repr(value))}$"
    with pytest.raises(ValueError, match=message):
        A.CWConfig(**{field: value})
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(A.CWConfig.audio(), **{field: value})
