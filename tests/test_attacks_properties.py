"""Property tables: every attack x untargeted/targeted on a 4-chunk linear model (5 classes).

The batch mixes lengths (with junk in the padding), a silent all-zero clip and, for targeted
attacks, different targets per example. Checked per case: box, padding untouched, no NaN,
``success`` equals an independent check on a fresh forward pass of the returned adversarial,
targeted successes land on their target, steps within bounds.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _attack_helpers import chunked_problem, other_class

from jaxadv import attacks as A
from jaxadv.attacks import criteria

CW_SMALL = A.CWConfig(
    binary_search_steps=3, max_iterations=60, learning_rate=2e-2, initial_const=1.0
)
LB_SMALL = A.LBFGSConfig(binary_search_steps=3, max_iterations=30, initial_const=1.0)

# name -> (attack, config, clipped to the box, targeted modes, max steps per example)
CASES = {
    "noise": ("noise", A.NoiseConfig(snr_db=10.0, clip=True), True, (False,), 1),
    "fgsm_snr": ("fgsm", A.FGSMConfig(snr_db=10.0, clip=True), True, (False, True), 1),
    "fgsm_snr_logits": ("fgsm", A.FGSMConfig.authors(), False, (False, True), 1),
    "fgsm_search": ("fgsm", dataclasses.replace(A.FGSMConfig.foolbox1(), block=100), True,
                    (False, True), 1020),
    "deepfool_l2": ("deepfool", A.DeepFoolConfig(steps=30), True, (False,), 30),
    "deepfool_linf": ("deepfool", A.DeepFoolConfig(norm="linf", steps=30), True, (False,), 30),
    "deepfool_foolbox1": ("deepfool", A.DeepFoolConfig.foolbox1(), True, (False,), 100),
    "deepfool_authors": ("deepfool", dataclasses.replace(A.DeepFoolConfig.authors(), steps=40),
                         True, (False,), 40),
    "deepfool_streamed": ("deepfool", A.DeepFoolConfig(steps=30, scores="logits", vjp_batch=3),
                          True, (False,), 30),
    "cw": ("cw", CW_SMALL, True, (False, True), 3 * 60),
    "cw_authors": ("cw", dataclasses.replace(A.CWConfig.authors(), max_iterations=60,
                                             learning_rate=2e-2, initial_const=1.0,
                                             targeted_threshold=0.6), True,
                   (False, True), 2 * 60),
    "cw_foolbox1": ("cw", dataclasses.replace(A.CWConfig.foolbox1(), max_iterations=60,
                                              binary_search_steps=3), True, (False, True), 180),
    "lbfgs": ("lbfgs", LB_SMALL, True, (True,), None),
    "lbfgs_authors": ("lbfgs", dataclasses.replace(A.LBFGSConfig.authors(), max_iterations=30),
                      True, (True,), None),
    "lbfgs_foolbox1": ("lbfgs", dataclasses.replace(A.LBFGSConfig.foolbox1(), max_iterations=30),
                       True, (True,), None),
}  # fmt: skip

PARAMS = [
    pytest.param(name, targeted, id=f"{name}-{'targeted' if targeted else 'untargeted'}")
    for name, case in CASES.items()
    for targeted in case[3]
]


@functools.cache
def run_case(name: str, targeted: bool):
    attack, config, *_ = CASES[name]
    fn, params, x, lengths, labels = chunked_problem()
    targets = other_class(labels, 5) if targeted else None
    res = A.ATTACKS[attack](
        fn, params, x, lengths, labels, targets=targets, config=config, key=jax.random.key(3)
    )
    return jax.tree.map(np.asarray, res), targets


@pytest.mark.parametrize("name,targeted", PARAMS)
def test_box_padding_finite(name, targeted):
    res, _ = run_case(name, targeted)
    _, _, x, lengths, _ = chunked_problem()
    adv, x = res.adversarial, np.asarray(x)
    valid = np.arange(x.shape[1])[None, :] < np.asarray(lengths)[:, None]
    for field, value in res._asdict().items():
        assert np.all(np.isfinite(value)), field
    np.testing.assert_array_equal(adv[~valid], x[~valid])  # padding untouched (exactly)
    if CASES[name][2]:
        assert adv.min() >= -1.0 and adv.max() <= 1.0


@pytest.mark.parametrize("name,targeted", PARAMS)
def test_success_matches_fresh_forward(name, targeted):
    res, targets = run_case(name, targeted)
    attack, config, *_ = CASES[name]
    fn, params, x, lengths, labels = chunked_problem()
    out = fn(params, jnp.asarray(res.adversarial), lengths)
    pred = np.asarray(jnp.argmax(out.probs, -1))
    if attack == "deepfool":
        check = pred != np.asarray(res.original)
        np.testing.assert_array_equal(res.original, np.asarray(labels))  # labels = predictions
    elif attack == "cw" and config.success == "threshold":
        crit = criteria.ProbabilityThreshold(
            labels, targets, config.untargeted_threshold, config.targeted_threshold
        )
        check = np.asarray(crit.is_adversarial(out))
    else:
        check = np.asarray(criteria.decision(labels, targets).is_adversarial(out))
    np.testing.assert_array_equal(res.success, check)
    if targeted:
        assert np.all(pred[res.success] == np.asarray(targets)[res.success])
    assert res.success.sum() >= (1 if attack in ("noise", "fgsm") else 4), res.success


@pytest.mark.parametrize("name,targeted", PARAMS)
def test_steps_bounded(name, targeted):
    res, _ = run_case(name, targeted)
    limit = CASES[name][4]
    assert np.all(res.steps >= 0)
    if limit is not None:
        assert np.all(res.steps <= limit), res.steps
    else:  # L-BFGS: at most (max_linesearch + 1) evaluations per iteration
        cfg = CASES[name][1]
        assert np.all(res.steps <= res.solves * cfg.max_iterations * (cfg.max_linesearch + 1))
        assert np.all(res.iterations <= res.solves * cfg.max_iterations)


@pytest.mark.parametrize("attack,config", [("noise", A.NoiseConfig(snr_db=7.5)),
                                           ("fgsm", A.FGSMConfig(snr_db=7.5)),
                                           ("noise", A.NoiseConfig.authors()),
                                           ("fgsm", A.FGSMConfig.authors())])  # fmt: skip
def test_snr_is_exact(attack, config):
    fn, params, x, lengths, labels = chunked_problem()
    x, lengths, labels = x[:5], lengths[:5], labels[:5]  # SNR of a silent clip is undefined
    res = A.ATTACKS[attack](fn, params, x, lengths, labels, config=config, key=jax.random.key(0))
    snr = np.asarray(A.snr_db(x, res.adversarial, lengths))
    np.testing.assert_allclose(snr, config.snr_db, atol=1e-4)


def test_silent_clip_noise_and_fgsm_give_zero_perturbation():
    fn, params, x, lengths, labels = chunked_problem()
    for attack in ("noise", "fgsm"):
        res = A.ATTACKS[attack](fn, params, x, lengths, labels, key=jax.random.key(0))
        np.testing.assert_array_equal(np.asarray(res.adversarial[5]), 0.0)  # row 5 is silent
        assert np.isinf(np.asarray(A.snr_db(x, res.adversarial, lengths))[5])


def test_noise_depends_only_on_key_and_sample_index():
    fn, params, x, lengths, labels = chunked_problem()
    key = jax.random.key(7)
    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, jnp.arange(6))
    cfg = A.NoiseConfig(snr_db=10.0)
    full = A.white_noise(fn, params, x, lengths, labels, config=cfg, key=key)
    np.testing.assert_array_equal(  # one key == its per-example fold_in keys
        np.asarray(full.adversarial),
        np.asarray(A.white_noise(fn, params, x, lengths, labels, config=cfg, key=keys).adversarial),
    )
    # example 2 alone, at another position, and with a wider padded batch: the same noise
    idx = jnp.array([2, 0])
    wide = jnp.pad(x[idx], ((0, 0), (0, 4096)))
    alone = A.white_noise(fn, params, wide, lengths[idx], labels[idx], config=cfg, key=keys[idx])
    np.testing.assert_allclose(
        np.asarray(alone.adversarial)[:, :64], np.asarray(full.adversarial)[idx], atol=1e-7
    )
    other = A.white_noise(fn, params, x, lengths, labels, config=cfg, key=jax.random.key(8))
    assert not np.allclose(np.asarray(other.adversarial), np.asarray(full.adversarial))
