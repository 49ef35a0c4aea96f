"""Closed-form goldens of the attacks on linear classifiers.

For a linear model the score difference of classes k and y is ``f(x) = w . x + b`` with
``w = W[:, k] - W[:, y]`` (log-softmax differences equal logit differences), so the minimal L2
perturbation that reaches the boundary has norm ``|f| / ||w||`` and the minimal Linf one
``|f| / ||w||_1`` per coordinate, with ``w`` restricted to the clip's valid samples.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest
from _attack_helpers import chunked_problem, linear_problem

from jaxadv import attacks as A


def _valid(x, lengths):
    return np.arange(x.shape[1])[None, :] < np.asarray(lengths)[:, None]


def _margins(params, x, lengths, labels, other):
    """Per example: f = score(other) - score(label) and w = W[:, other] - W[:, label] (valid part)."""
    w_all = np.asarray(params["w"], np.float64)
    b = np.asarray(params["b"], np.float64)
    valid = _valid(x, lengths)
    xv = np.where(valid, np.asarray(x, np.float64), 0.0)
    f, w = [], []
    for i, (y, k) in enumerate(zip(np.asarray(labels), np.asarray(other), strict=True)):
        wi = np.where(valid[i], w_all[:, k] - w_all[:, y], 0.0)
        f.append(xv[i] @ wi + b[k] - b[y])
        w.append(wi)
    return np.array(f), np.array(w)


@pytest.mark.parametrize("scores", ["log_probs", "logits"])
def test_fgsm_snr_exact(scores):
    fn, params, x, lengths, labels = linear_problem(n=32, classes=2, batch=4)
    snr = 13.0
    r = A.fgsm(fn, params, x, lengths, labels, config=A.FGSMConfig(snr_db=snr, scores=scores))
    _, w = _margins(params, x, lengths, labels, 1 - np.asarray(labels))
    valid = _valid(x, lengths)
    xn = np.sqrt(np.sum(np.where(valid, np.asarray(x), 0.0) ** 2, 1))
    # gradient of CE(y) = (1 - p_y)(W_other - W_y): its sign is sign(w)
    delta = np.sign(w) * (xn / (np.sqrt(valid.sum(1)) * 10 ** (snr / 20)))[:, None]
    np.testing.assert_allclose(np.asarray(r.adversarial), np.asarray(x) + delta, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(r.adversarial)[~valid], np.asarray(x)[~valid])


def test_fgsm_snr_chunked_logits_sum_over_chunks():
    # 2-class chunked model: d/dx sum_q CE_q(y) on chunk q is (1 - p_qy)(w_o - w_y) -> sign repeats
    fn, params, x, lengths, _ = chunked_problem()
    params = {"w": params["w"][:, :2], "b": params["b"][:2]}
    labels = jnp.argmax(fn(params, x, lengths).probs, -1).astype(jnp.int32)
    x, lengths, labels = x[:5], lengths[:5], labels[:5]  # non-silent rows
    r = A.fgsm(fn, params, x, lengths, labels, config=A.FGSMConfig(snr_db=10.0, scores="logits"))
    w = np.asarray(params["w"])
    valid = _valid(x, lengths)
    sign = np.stack([np.tile(np.sign(w[:, 1 - y] - w[:, y]), 4) for y in np.asarray(labels)])
    sign = np.where(valid, sign, 0.0)
    xn = np.sqrt(np.sum(np.where(valid, np.asarray(x), 0.0) ** 2, 1))
    delta = sign * (xn / (np.sqrt(valid.sum(1)) * 10.0**0.5))[:, None]
    np.testing.assert_allclose(np.asarray(r.adversarial), np.asarray(x) + delta, atol=1e-6)


def test_fgsm_search_matches_foolbox1_grid():
    """First adversarial eps of linspace(0,1,1001)[1:], refined over linspace(0,eps,21)[1:] if i<20."""
    fn, params, x, lengths, labels = linear_problem(n=32, classes=2, batch=6, seed=3)
    x = x * jnp.asarray([1.0, 1.0, 0.05, 0.1, 1.0, 0.2])[:, None]  # some hits below index 20
    labels = jnp.argmax(fn(params, x, lengths).probs, -1).astype(jnp.int32)
    cfg = dataclasses.replace(A.FGSMConfig.foolbox1(), block=64)
    r = A.fgsm(fn, params, x, lengths, labels, config=cfg)
    f, w = _margins(params, x, lengths, labels, 1 - np.asarray(labels))
    s = np.sign(w)  # sign of the CE gradient
    valid = _valid(x, lengths)
    x64 = np.asarray(x, np.float64)

    def flips(i, eps):
        xe = np.where(valid[i], np.clip(x64[i] + eps * 2 * s[i], -1, 1), 0.0)
        return f[i] + w[i] @ (xe - np.where(valid[i], x64[i], 0.0)) > 0

    grid = np.linspace(0, 1, 1001)[1:]
    refined = 0
    for i in range(x.shape[0]):
        hits = [j for j, e in enumerate(grid) if flips(i, e)]
        assert hits, "test data must be attackable"
        j = hits[0]
        expect = grid[j]
        if j < 20:
            refined += 1
            fine = np.linspace(0, grid[j], 21)[1:]
            expect = fine[[k for k, e in enumerate(fine) if flips(i, e)][0]]
        # keep away from float32 ties at the boundary
        assert abs(f[i] + w[i] @ (2 * expect * s[i])) > 1e-5
        np.testing.assert_allclose(float(r.epsilon[i]), expect, rtol=1e-6)
        xe = np.where(valid[i], np.clip(x64[i] + expect * 2 * s[i], -1, 1), x64[i])
        np.testing.assert_allclose(np.asarray(r.adversarial[i]), xe, atol=1e-6)
    assert bool(np.all(np.asarray(r.success)))
    assert 0 < refined < x.shape[0]  # both branches exercised


@pytest.mark.parametrize("scores", ["log_probs", "logits"])
def test_deepfool_l2_one_step_to_boundary(scores):
    fn, params, x, lengths, labels = linear_problem(n=32, classes=2, batch=4)
    cfg = A.DeepFoolConfig(step_eps=0.0, overshoot=0.02, scores=scores)
    r = A.deepfool(fn, params, x, lengths, labels, config=cfg)
    f, w = _margins(params, x, lengths, labels, 1 - np.asarray(labels))
    dist = np.abs(f) / np.linalg.norm(w, axis=1)
    delta = np.asarray(r.adversarial, np.float64) - np.asarray(x)
    np.testing.assert_allclose(np.linalg.norm(delta, axis=1), 1.02 * dist, rtol=1e-5)
    expect = 1.02 * (dist / np.linalg.norm(w, axis=1))[:, None] * w
    np.testing.assert_allclose(delta, expect, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(r.steps), 1)
    assert bool(np.all(np.asarray(r.success)))


def test_deepfool_l2_foolbox3_step_eps():
    # Foolbox 3 adds 1e-4 to the distance: ||delta|| = 1.02 * (|f|/||w|| + 1e-4)
    fn, params, x, lengths, labels = linear_problem(n=32, classes=2, batch=4)
    r = A.deepfool(fn, params, x, lengths, labels, config=A.DeepFoolConfig.foolbox3())
    f, w = _margins(params, x, lengths, labels, 1 - np.asarray(labels))
    d = np.linalg.norm(np.asarray(r.adversarial, np.float64) - np.asarray(x), axis=1)
    np.testing.assert_allclose(d, 1.02 * (np.abs(f) / np.linalg.norm(w, axis=1) + 1e-4), rtol=1e-5)


def test_deepfool_linf_closed_form():
    fn, params, x, lengths, labels = linear_problem(n=32, classes=2, batch=4)
    cfg = A.DeepFoolConfig(norm="linf", step_eps=0.0)
    r = A.deepfool(fn, params, x, lengths, labels, config=cfg)
    f, w = _margins(params, x, lengths, labels, 1 - np.asarray(labels))
    per_coord = np.abs(f) / np.abs(w).sum(1)
    delta = np.asarray(r.adversarial, np.float64) - np.asarray(x)
    np.testing.assert_allclose(delta, 1.02 * per_coord[:, None] * np.sign(w), atol=1e-6)
    np.testing.assert_array_equal(np.asarray(r.steps), 1)


def test_deepfool_multiclass_nearest_and_authors_farthest():
    fn, params, x, lengths, labels = linear_problem(n=32, classes=5, batch=6, seed=4)
    c = 5
    dists = []
    for k in range(c):
        f, w = _margins(params, x, lengths, labels, np.full(6, k))
        dists.append((np.abs(f) + 0.0) / np.maximum(np.linalg.norm(w, axis=1), 1e-30))
    dists = np.stack(dists, 1)  # [B, C], inf-free; the label's own entry is 0/0 -> masked below
    y = np.asarray(labels)
    own = np.eye(c, dtype=bool)[y]
    nearest = np.where(own, np.inf, dists).min(1)
    r = A.deepfool(fn, params, x, lengths, labels, config=A.DeepFoolConfig(step_eps=0.0))
    d = np.linalg.norm(np.asarray(r.adversarial, np.float64) - np.asarray(x), axis=1)
    np.testing.assert_allclose(d, 1.02 * nearest, rtol=1e-5)
    # the authors: largest distance among classes 1..C-1 (class 0 never), +1e-5 in the numerator
    num = []
    for k in range(c):
        f, w = _margins(params, x, lengths, labels, np.full(6, k))
        num.append((np.abs(f) + 1e-5) / np.maximum(np.linalg.norm(w, axis=1), 1e-30))
    num = np.stack(num, 1)
    excluded = own | (np.arange(c)[None, :] == 0)
    farthest = np.where(excluded, -np.inf, num).max(1)
    cfg = dataclasses.replace(A.DeepFoolConfig.authors(), scores="log_probs")
    ra = A.deepfool(fn, params, x, lengths, labels, config=cfg)
    da = np.linalg.norm(np.asarray(ra.adversarial, np.float64) - np.asarray(x), axis=1)
    np.testing.assert_allclose(da, 1.02 * farthest, rtol=1e-5)
    assert bool(np.all(np.asarray(ra.success))) and np.all(np.asarray(ra.steps) == 1)


CW_GOLDEN = A.CWConfig(
    binary_search_steps=6, max_iterations=300, learning_rate=1e-3, initial_const=1e-1
)
CW_TOL = 0.01  # relative excess of the L2 distance over the minimal |f| / ||w||


@pytest.mark.parametrize("targeted", [False, True])
def test_cw_reaches_minimal_distance(targeted):
    fn, params, x, lengths, labels = linear_problem(n=32, classes=2, batch=4)
    other = 1 - labels
    r = A.carlini_wagner(
        fn, params, x, lengths, labels, targets=other if targeted else None, config=CW_GOLDEN
    )
    f, w = _margins(params, x, lengths, labels, np.asarray(other))
    dmin = np.abs(f) / np.linalg.norm(w, axis=1)
    d = np.linalg.norm(np.asarray(r.adversarial, np.float64) - np.asarray(x), axis=1)
    assert bool(np.all(np.asarray(r.success)))
    excess = d / dmin - 1
    assert np.all(excess > -1e-4), excess  # never inside the boundary
    assert np.all(excess < CW_TOL), excess
    # the reported distance is Carlini's: sum of squares to tanh(atanh(0.999999 x))
    x0 = 0.999999 * np.asarray(x, np.float64)
    valid = _valid(x, lengths)
    ss = np.sum(np.where(valid, (np.asarray(r.adversarial) - x0) ** 2, 0), 1)
    np.testing.assert_allclose(np.asarray(r.distance), ss, rtol=1e-4)


LBFGS_GOLDEN = A.LBFGSConfig(binary_search_steps=20, initial_const=1.0)
LBFGS_TOL = 1e-3  # relative excess over |f| / ||w||


@pytest.mark.parametrize("mode", ["jax", "scipy"])
def test_lbfgs_reaches_minimal_distance(mode):
    fn, params, x, lengths, labels = linear_problem(n=32, classes=2, batch=4)
    targets = 1 - labels
    cfg = dataclasses.replace(LBFGS_GOLDEN, mode=mode)
    r = A.lbfgs(fn, params, x, lengths, labels, targets=targets, config=cfg)
    f, w = _margins(params, x, lengths, labels, np.asarray(targets))
    dmin = np.abs(f) / np.linalg.norm(w, axis=1)
    d = np.linalg.norm(np.asarray(r.adversarial, np.float64) - np.asarray(x), axis=1)
    assert bool(np.all(np.asarray(r.success)))
    excess = d / dmin - 1
    assert np.all(excess > -1e-4) and np.all(excess < LBFGS_TOL), excess
    np.testing.assert_allclose(np.asarray(r.distance), d**2, rtol=1e-4)


def test_deepfool_authors_chunk_rule_first_step():
    """The authors' per-chunk rule on a 4-chunk linear model, one step, in closed form.

    Chunk q's scores are ``z_q = x_q @ W + b``, so ``d(z_qk - z_qo)/dx`` is ``W_k - W_o`` on chunk
    q's valid samples: ``pert_k = mean_q (|f_qk| + 1e-5) / ||w_qk||``, the direction is the chunk
    mean of the ``w_qk`` of the largest ``pert_k`` (classes 0 and o excluded), step
    ``pert * w / ||w||``, ``x' = clip(x + 1.02 * r)``.
    """
    fn, params, x, lengths, labels = chunked_problem()
    x, lengths, labels = x[:5], lengths[:5], labels[:5]
    cfg = dataclasses.replace(A.DeepFoolConfig.authors(), steps=1)
    res = A.deepfool(fn, params, x, lengths, labels, config=cfg)
    w_all, b_all = np.asarray(params["w"], np.float64), np.asarray(params["b"], np.float64)
    valid = _valid(x, lengths)
    x64 = np.where(valid, np.asarray(x, np.float64), 0.0)
    for i in range(5):
        o = int(labels[i])
        chunks = [q for q in range(4) if q * 16 < int(lengths[i])]
        best = (-np.inf, None)
        for k in range(1, 5):
            if k == o:
                continue
            pert, w = [], []
            for q in chunks:
                wq = np.zeros(64)
                wq[q * 16 : (q + 1) * 16] = w_all[:, k] - w_all[:, o]
                wq = np.where(valid[i], wq, 0.0)
                f = x64[i] @ wq + b_all[k] - b_all[o]
                pert.append((abs(f) + 1e-5) / np.linalg.norm(wq))
                w.append(wq)
            if np.mean(pert) > best[0]:
                best = (np.mean(pert), np.mean(w, axis=0))
        pert, w = best
        expect = np.where(valid[i], np.clip(x64[i] + 1.02 * pert * w / np.linalg.norm(w), -1, 1), 0)
        got = np.where(valid[i], np.asarray(res.adversarial[i]), 0.0)
        np.testing.assert_allclose(got, expect, atol=1e-5)


def test_deepfool_streamed_pullbacks_equal_stored():
    fn, params, x, lengths, labels = chunked_problem()
    cfg = dataclasses.replace(A.DeepFoolConfig.authors(), steps=10)
    stored = A.deepfool(fn, params, x, lengths, labels, config=cfg)
    streamed = A.deepfool(
        fn, params, x, lengths, labels, config=dataclasses.replace(cfg, vjp_batch=5)
    )
    np.testing.assert_allclose(
        np.asarray(streamed.adversarial), np.asarray(stored.adversarial), atol=1e-6
    )
    np.testing.assert_array_equal(np.asarray(streamed.steps), np.asarray(stored.steps))


@pytest.mark.parametrize("preset", ["authors", "foolbox3"])
def test_deepfool_mapped_pullbacks_equal_vmapped(preset):
    """``pullbacks="map"`` (one cotangent at a time) gives the ``"vmap"`` results."""
    fn, params, x, lengths, labels = chunked_problem()
    cfg = dataclasses.replace(getattr(A.DeepFoolConfig, preset)(), steps=10)
    out = {
        mode: A.deepfool(
            fn, params, x, lengths, labels, config=dataclasses.replace(cfg, pullbacks=mode)
        )
        for mode in ("vmap", "map", "auto")
    }
    for mode in ("map", "auto"):
        np.testing.assert_allclose(
            np.asarray(out[mode].adversarial), np.asarray(out["vmap"].adversarial), atol=1e-6
        )
        np.testing.assert_array_equal(np.asarray(out[mode].steps), np.asarray(out["vmap"].steps))


def test_const_search_rules():
    """Carlini's rule, the authors' C&W rule as coded, and Foolbox 1.x's L-BFGS search.

    The search objects of :mod:`jaxadv.attacks.search`, run with NumPy (as L-BFGS's scipy mode
    does) and with JAX (as the compiled attacks do).
    """
    from jaxadv.attacks import search

    def run(rule, outcomes, xp=np):
        st, seq, done = rule.init(xp, 1, np.float64 if xp is np else None), [], []
        for ok in outcomes:
            st, finished = rule.update(xp, st, xp.asarray([ok]))
            seq.append(float(st.const[0]))
            done.append(bool(finished[0]))
        return seq, done

    # failure x10 until a success, then bisection between the bounds
    for xp in (np, jnp):
        seq, _ = run(search.CarliniBisection(1e-3, 5), [False, False, True, True, False], xp)
        np.testing.assert_allclose(seq, [1e-2, 0.1, 0.055, 0.0325, 0.04375], rtol=1e-6)

    # the authors: a success halves const, a failure leaves it unchanged
    seq, _ = run(search.AuthorsHalving(1e-2, 5), [False, True, True, False, True], jnp)
    np.testing.assert_allclose(seq, [1e-2, 5e-3, 2.5e-3, 2.5e-3, 1.25e-3], rtol=1e-6)
    # Foolbox 1.x L-BFGS: doubling from 2e-5, then bisection on [0, c] until hi - lo < 1e-5
    cfg = A.LBFGSConfig.foolbox1()
    rule = search.Foolbox1Doubling(cfg.search_epsilon, cfg.max_doublings)
    seq, done = run(rule, [False, False, True, False, True, True, True])
    seq = [float(rule.init(np, 1, np.float64).const[0])] + seq
    np.testing.assert_allclose(seq, [2e-5, 4e-5, 8e-5, 4e-5, 6e-5, 5e-5, 4.5e-5, 4.25e-5])
    assert done == [False] * 6 + [True]  # [4e-5, 5e-5] is still searched (hi - lo >= 1e-5)
