"""Attacks on a small trained convolutional audio classifier (SmallCNN on the kapre front-end).

The model is trained for a few seconds on four classes of synthetic sounds (``jaxadv.toy``);
DeepFool and C&W must succeed on >= 99 % of the correctly classified clips, and the two L-BFGS
solvers (compiled JAX, host scipy) must agree on success and, closely, on the SNR reached.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _attack_helpers import other_class, trained_cnn

from jaxadv import attacks as A
from jaxadv import toy

N = 2048  # samples per clip (64 ms at 32 kHz)


@functools.cache
def cnn_batch():
    """The trained model and its correctly classified clips among 48 synthetic ones."""
    model, params = trained_cnn(N)
    x, lengths, labels = toy.synthetic_batch(jax.random.key(11), 48, N)
    correct = np.asarray(jnp.argmax(model(params, x, lengths).probs, -1) == labels)
    assert correct.mean() >= 0.9, correct.mean()  # the fixture model learned the task
    idx = jnp.asarray(np.nonzero(correct)[0])
    assert idx.size >= 32 and len(set(np.asarray(labels[idx]).tolist())) == 4
    return model, params, x[idx], lengths[idx], labels[idx]


@pytest.mark.parametrize(
    "attack,config",
    [
        ("deepfool", A.DeepFoolConfig()),
        ("cw", A.CWConfig(binary_search_steps=3, max_iterations=80, initial_const=0.1)),
    ],
)
def test_minimal_attacks_succeed_on_cnn(attack, config):
    model, params, x, lengths, labels = cnn_batch()
    res = A.ATTACKS[attack](model, params, x, lengths, labels, config=config)
    m = A.evaluate(model, params, x, lengths, labels, res)
    success = np.asarray(res.success)
    assert success.mean() >= 0.99, success.mean()
    np.testing.assert_array_equal(np.asarray(m.fooled), success)  # fresh forward agrees
    snr = np.asarray(m.snr_db)
    assert np.all(np.isfinite(snr)) and np.median(snr) > 10.0, snr  # small perturbations
    valid = np.arange(N)[None, :] < np.asarray(lengths)[:, None]
    np.testing.assert_array_equal(np.asarray(res.adversarial)[~valid], np.asarray(x)[~valid])


LBFGS_CNN = A.LBFGSConfig(binary_search_steps=3, max_iterations=60, initial_const=0.1)


def test_lbfgs_jax_agrees_with_scipy_on_cnn():
    model, params, x, lengths, labels = cnn_batch()
    x, lengths, labels = x[:6], lengths[:6], labels[:6]
    targets = other_class(labels, 4)
    snr, success = {}, {}
    for mode in ("jax", "scipy"):
        cfg = dataclasses.replace(LBFGS_CNN, mode=mode)
        res = A.lbfgs(model, params, x, lengths, labels, targets=targets, config=cfg)
        m = A.evaluate(model, params, x, lengths, labels, res, targets=targets)
        snr[mode], success[mode] = np.asarray(m.snr_db), np.asarray(res.success)
        np.testing.assert_array_equal(np.asarray(m.fooled), success[mode])
    both = success["jax"] & success["scipy"]
    diff = snr["jax"] - snr["scipy"]
    print(f"L-BFGS jax vs scipy: success {success['jax'].sum()}/{success['scipy'].sum()} of 6; "
          f"SNR jax {np.round(snr['jax'], 2)} scipy {np.round(snr['scipy'], 2)}")  # fmt: skip
    assert abs(int(success["jax"].sum()) - int(success["scipy"].sum())) <= 1
    assert both.sum() >= 5
    assert abs(diff[both].mean()) <= 1.0 and np.abs(diff[both]).max() <= 3.0, diff
