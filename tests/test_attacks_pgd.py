"""PGD at an SNR budget: the radius gives exactly the budget (L2) or at least it (L∞), closed-form
success on a linear model (a budget just above / below the minimal distance), targeted, the
random start independent of the batch, jit == eager, sweep == call, and bad settings named."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxadv import attacks as A
from jaxadv.classifier import LinearClassifier

BAD_FIELDS_PGD = [
    (A.PGDConfig, "snr_db", float("nan"), "a finite number"),
    (A.PGDConfig, "norm", "l1", r"one of \['l2', 'linf'\]"),
    (A.PGDConfig, "steps", 0, "an integer >= 1"),
    (A.PGDConfig, "rel_stepsize", 0.0, "a finite number > 0"),
    (A.PGDConfig, "random_start", 1, "True or False"),
    (A.PGDConfig, "loss", "hinge", r"one of \['ce', 'margin'\]"),
    (A.PGDConfig, "abort_early", None, "True or False"),
    (A.PGDConfig, "scores", "probs", "one of"),
]


@pytest.mark.parametrize(("cls", "field", "value", "message"), BAD_FIELDS_PGD)
def test_bad_pgd_settings_are_named(cls, field, value, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(cls(), **{field: value})


def linear_problem(n: int = 2000, b: int = 4, seed: int = 0):
    """Two classes, logits ``x @ w``: the minimal L2 perturbation of clip i is ``|m_i| / ||dw||``
    with the margin ``m = x (w0 - w1)``."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((n, 2)).astype(np.float32) * 0.05
    x = rng.standard_normal((b, n)).astype(np.float32) * 0.1
    params = {"w": jnp.asarray(w), "b": jnp.zeros(2)}
    logits = x @ w
    labels = logits.argmax(-1).astype(np.int32)
    dw = w[:, 0] - w[:, 1]
    m = np.abs(x @ dw)
    dist = m / np.linalg.norm(dw)  # L2 distance to the boundary
    snr_min = 20 * np.log10(np.linalg.norm(x, axis=1) / dist)  # the largest SNR that fools
    return (LinearClassifier(), params, jnp.asarray(x), jnp.full(b, n, jnp.int32),
            jnp.asarray(labels), snr_min)  # fmt: skip


def snr(x, adv):
    x, d = np.asarray(x, np.float64), np.asarray(adv, np.float64) - np.asarray(x, np.float64)
    return 10 * np.log10(np.sum(x**2, -1) / np.maximum(np.sum(d**2, -1), 1e-30))


def test_l2_pgd_fools_exactly_when_the_budget_allows_it():
    fn, params, x, lengths, labels, snr_min = linear_problem()
    key = jax.random.key(0)
    for margin_db, want in ((1.0, True), (-1.0, False)):
        # one budget per clip, 1 dB below (a larger ball) or above its minimal SNR
        for i in range(x.shape[0]):
            cfg = A.PGDConfig(snr_db=float(snr_min[i] - margin_db), steps=100, rel_stepsize=0.05)
            r = A.pgd(fn, params, x[i : i + 1], lengths[i : i + 1], labels[i : i + 1],
                      config=cfg, key=key)  # fmt: skip
            assert bool(r.success[0]) == want, (i, margin_db)
            assert snr(x[i : i + 1], r.adversarial)[0] >= cfg.snr_db - 1e-3  # inside the ball


def test_linf_pgd_keeps_every_sample_within_the_radius_and_the_snr_above_the_budget():
    fn, params, x, lengths, labels, snr_min = linear_problem()
    cfg = A.PGDConfig(snr_db=float(snr_min.min() - 10), norm="linf", steps=30)
    r = A.pgd(fn, params, x, lengths, labels, config=cfg, key=jax.random.key(1))
    d = np.asarray(r.adversarial) - np.asarray(x)
    eps = np.sqrt(np.mean(np.asarray(x) ** 2, -1)) * 10 ** (-cfg.snr_db / 20)
    assert (np.abs(d).max(-1) <= eps * (1 + 1e-5)).all()
    np.testing.assert_allclose(np.asarray(r.epsilon), eps, rtol=1e-5)
    assert (snr(x, r.adversarial) >= cfg.snr_db - 1e-3).all()
    assert bool(r.success.all())  # 10 dB of room: L∞ sign steps get there too


def test_targeted_pgd_reaches_the_target():
    n, c = 1500, 4
    rng = np.random.default_rng(3)
    params = {"w": jnp.asarray(rng.standard_normal((n, c)) * 0.05, jnp.float32), "b": jnp.zeros(c)}
    x = jnp.asarray(rng.standard_normal((3, n)) * 0.1, jnp.float32)
    fn = LinearClassifier()
    labels = jnp.asarray(np.asarray(fn(params, x, jnp.full(3, n)).probs).argmax(-1))
    targets = (labels + 1) % c
    cfg = A.PGDConfig(snr_db=0.0, steps=100, rel_stepsize=0.05)
    r = A.pgd(fn, params, x, jnp.full(3, n), labels, targets=targets, config=cfg,
              key=jax.random.key(0))  # fmt: skip
    pred = np.asarray(fn(params, r.adversarial, jnp.full(3, n)).probs).argmax(-1)
    assert bool(r.success.all()) and (pred == np.asarray(targets)).all()


def test_random_start_does_not_depend_on_the_batch_and_jit_equals_eager():
    fn, params, x, lengths, labels, snr_min = linear_problem(b=3)
    cfg = A.PGDConfig(snr_db=float(snr_min.max() + 5), steps=5, abort_early=False)  # all fail
    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(jax.random.key(7), jnp.arange(3))
    both = A.pgd(fn, params, x, lengths, labels, config=cfg, key=keys)
    alone = A.pgd(fn, params, x[1:2], lengths[1:2], labels[1:2], config=cfg, key=keys[1:2])
    np.testing.assert_allclose(np.asarray(both.adversarial[1]), np.asarray(alone.adversarial[0]),
                               atol=1e-6)  # fmt: skip
    assert (np.asarray(both.steps) == cfg.steps + 1).all()  # no early abort: every step
    with jax.disable_jit():
        eager = A.pgd(fn, params, x, lengths, labels, config=cfg, key=keys)
    np.testing.assert_allclose(np.asarray(eager.adversarial), np.asarray(both.adversarial),
                               atol=1e-6)  # fmt: skip
    with pytest.raises(ValueError, match="needs a random key"):
        A.pgd(fn, params, x, lengths, labels, config=cfg)


def test_a_sweep_gives_the_rows_of_one_call():
    fn, params, x, lengths, labels, snr_min = linear_problem(b=5)
    cfg = A.PGDConfig(snr_db=float(np.median(snr_min)), steps=40)  # some succeed, some do not
    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(jax.random.key(2), jnp.arange(5))
    call = A.pgd(fn, params, x, lengths, labels, config=cfg, key=keys)
    rows, _ = A.sweep("pgd", fn, params, x, lengths, labels, config=cfg, key=keys, slots=2)
    swept = A.engine.stack(rows)
    for f in ("success", "steps"):
        np.testing.assert_array_equal(np.asarray(getattr(swept, f)), np.asarray(getattr(call, f)))
    np.testing.assert_allclose(np.asarray(swept.adversarial), np.asarray(call.adversarial),
                               atol=1e-6)  # fmt: skip
    assert 0 < int(call.success.sum()) < 5
