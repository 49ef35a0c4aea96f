"""Metrics: SNR over valid samples (with the silent / zero cases), per-example fields, summaries."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest
from _attack_helpers import linear_problem

from jaxadv import attacks as A
from jaxadv.attacks.metrics import AttackMetrics


def test_snr_db_cases():
    x = jnp.array([[1.0, 2.0, 2.0, 9.0], [0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    adv = jnp.array([[1.1, 2.1, 1.9, -5.0], [0.1, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    lengths = jnp.array([3, 4, 4])
    snr = np.asarray(A.snr_db(x, adv, lengths))
    # row 0: sum x^2 = 9, sum d^2 = 0.03 over the 3 valid samples (the padding is ignored)
    np.testing.assert_allclose(snr[0], 10 * np.log10(9 / 0.03), rtol=1e-5)
    assert snr[1] == -np.inf  # silent clip, non-zero perturbation
    assert snr[2] == np.inf  # zero perturbation
    zero = np.asarray(A.snr_db(x[1:2], x[1:2], lengths[1:2]))
    assert zero[0] == np.inf  # silent and unperturbed: +inf, not NaN
    bug = np.asarray(A.snr_db(x, adv, lengths, formula="authors_targeted"))
    np.testing.assert_allclose(bug[0], 10 * np.log10(3.0 / (0.1 / 3) ** 2), rtol=1e-5)


def test_evaluate_fields():
    fn, params, x, lengths, labels = linear_problem(n=32, classes=3, batch=4, seed=5)
    res = A.deepfool(fn, params, x, lengths, labels, config=A.DeepFoolConfig(steps=5))
    m = A.evaluate(fn, params, x, lengths, labels, res)
    p0 = np.asarray(fn(params, x, lengths).probs)
    p1 = np.asarray(fn(params, res.adversarial, lengths).probs)
    rows = np.arange(4)
    y = np.asarray(labels)
    new = p1.argmax(1)
    np.testing.assert_array_equal(np.asarray(m.original), p0.argmax(1))
    np.testing.assert_array_equal(np.asarray(m.new_label), new)
    np.testing.assert_allclose(np.asarray(m.new_confidence), p1[rows, new], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(m.gt_confidence), p0[rows, y], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(m.gt_confidence_adv), p1[rows, y], rtol=1e-6)
    d = np.asarray(res.adversarial, np.float64) - np.asarray(x)
    np.testing.assert_allclose(np.asarray(m.l2), np.linalg.norm(d, axis=1), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(m.linf), np.abs(d).max(1), rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(m.fooled), new != y)
    np.testing.assert_array_equal(np.asarray(m.steps), np.asarray(res.steps))
    assert np.all(np.isnan(np.asarray(m.target_confidence)))  # untargeted


def test_summarize_tables():
    m = AttackMetrics(
        success=np.array([True, True, False, True]),
        fooled=np.array([True, True, False, False]),
        original=np.zeros(4, int),
        new_label=np.array([1, 2, 0, 1]),
        new_confidence=np.array([0.6, 0.8, 0.9, 0.4]),
        gt_confidence=np.array([0.9, 0.7, 0.8, 0.6]),
        gt_confidence_adv=np.array([0.1, 0.2, 0.9, 0.3]),
        target_confidence=np.full(4, np.nan),
        snr_db=np.array([30.0, 40.0, 10.0, np.inf]),
        l2=np.zeros(4),
        linf=np.zeros(4),
        steps=np.array([1, 2, 3, 4]),
    )
    s = A.summarize(m)
    assert s["n"] == 4 and s["success_pct"] == 75.0 and s["fooled_pct"] == 50.0
    assert s["gt"] == pytest.approx(0.75)  # all examples
    assert s["new"] == pytest.approx(0.6)  # successes
    assert s["gt_new"] == pytest.approx(0.2)  # successes
    assert s["gt_new_all"] == pytest.approx(0.375)
    assert s["snr"] == pytest.approx(35.0) and s["snr_nonfinite"] == 1.0  # +inf left out
    assert s["steps"] == 2.5
    assert set(A.TABLE2) <= set(s) and set(A.TABLE3) <= set(s) and set(s) == set(A.SUMMARY_COLUMNS)
    none = A.summarize(m._replace(success=np.zeros(4, bool)))
    assert none["success_pct"] == 0.0 and math.isnan(none["new"]) and math.isnan(none["snr"])


def test_evaluate_target_confidence():
    fn, params, x, lengths, labels = linear_problem(n=32, classes=3, batch=4, seed=6)
    targets = (np.asarray(labels) + 1) % 3
    res = A.carlini_wagner(
        fn, params, x, lengths, labels, targets=targets,
        config=A.CWConfig(binary_search_steps=2, max_iterations=20),
    )  # fmt: skip
    m = A.evaluate(fn, params, x, lengths, labels, res, targets=targets)
    p1 = np.asarray(fn(params, res.adversarial, lengths).probs)
    np.testing.assert_allclose(
        np.asarray(m.target_confidence), p1[np.arange(4), targets], rtol=1e-6
    )
