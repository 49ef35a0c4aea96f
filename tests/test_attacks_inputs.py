"""Bad inputs and bad configs get clear errors (raised on the host, before any compilation)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _attack_helpers import chunked_problem

from jaxadv import attacks as A


def _problem():
    fn, params, x, lengths, labels = chunked_problem()
    return fn, params, np.asarray(x), np.asarray(lengths), np.asarray(labels)


def test_bad_arrays():
    fn, params, x, lengths, labels = _problem()
    cw = A.carlini_wagner
    with pytest.raises(ValueError, match=r"carlini_wagner: x must be a \[B, N\] waveform batch"):
        cw(fn, params, x[0], lengths, labels)
    bad = x.copy()
    bad[1, 3] = np.nan
    bad[4, 0] = np.inf
    with pytest.raises(ValueError, match=r"x contains NaN or Inf \(examples \[1, 4\]\)"):
        cw(fn, params, bad, lengths, labels)
    with pytest.raises(ValueError, match=r"lengths\[2\] = 0 is outside \[1, 64\]"):
        cw(fn, params, x, lengths * np.array([1, 1, 0, 1, 1, 1]), labels)
    with pytest.raises(ValueError, match=r"lengths\[0\] = 65 is outside \[1, 64\]"):
        cw(fn, params, x, lengths + 1, labels)
    with pytest.raises(ValueError, match=r"lengths must have shape \(6,\), got \(5,\)"):
        cw(fn, params, x, lengths[:5], labels)
    with pytest.raises(ValueError, match=r"labels must be integers"):
        cw(fn, params, x, lengths, labels.astype(np.float32))
    with pytest.raises(ValueError, match=r"labels\[3\] = 5 is outside \[0, 5\)"):
        cw(fn, params, x, lengths, np.array([0, 1, 2, 5, 0, 1]))
    with pytest.raises(ValueError, match=r"targets\[0\] = -1 is outside \[0, 5\)"):
        cw(fn, params, x, lengths, labels, targets=np.array([-1, 0, 0, 0, 0, 0]))
    same = (labels + 1) % 5
    same[2] = labels[2]
    with pytest.raises(ValueError, match=r"targets\[2\] == labels\[2\] == \d; a targeted attack"):
        cw(fn, params, x, lengths, labels, targets=same)


def test_targets_required_or_forbidden():
    fn, params, x, lengths, labels = _problem()
    t = (labels + 1) % 5
    with pytest.raises(ValueError, match="lbfgs is a targeted attack: pass targets"):
        A.lbfgs(fn, params, x, lengths, labels)
    with pytest.raises(ValueError, match="deepfool is untargeted only"):
        A.deepfool(fn, params, x, lengths, labels, targets=t)
    with pytest.raises(ValueError, match="white_noise is untargeted only"):
        A.white_noise(fn, params, x, lengths, labels, targets=t, key=jax.random.key(0))
    with pytest.raises(ValueError, match="needs a random key"):
        A.white_noise(fn, params, x, lengths, labels)
    with pytest.raises(ValueError, match=r"key must be one key or 6 keys"):
        A.white_noise(fn, params, x, lengths, labels, key=jax.random.split(jax.random.key(0), 3))


@pytest.mark.parametrize(
    "attack,config,message",
    [
        ("cw", A.CWConfig(scores="probs"), r"unknown scores 'probs'"),
        ("cw", A.CWConfig(distance="l1"), r"carlini_wagner: distance='l1' is not one of"),
        ("cw", A.CWConfig(success="prob"), r"success='prob' is not one of"),
        ("deepfool", A.DeepFoolConfig(norm="l1"), r"deepfool: norm='l1' is not one of"),
        ("deepfool", A.DeepFoolConfig(candidates=1), r"candidates must be >= 2 or None"),
        ("fgsm", A.FGSMConfig(mode="pgd"), r"fgsm: mode='pgd' is not one of"),
        ("lbfgs", A.LBFGSConfig(search="grid"), r"lbfgs: search='grid' is not one of"),
    ],
)
def test_bad_config(attack, config, message):
    fn, params, x, lengths, labels = _problem()
    targets = (labels + 1) % 5 if attack == "lbfgs" else None
    with pytest.raises(ValueError, match=message):
        A.ATTACKS[attack](fn, params, x, lengths, labels, targets=targets, config=config)


def test_configs_are_hashable_presets():
    for spec in A.ATTACKS.values():
        for name, make in spec.presets.items():
            cfg = make()
            assert isinstance(cfg, spec.config), name
            assert hash(cfg) == hash(dataclasses.replace(cfg))  # static jit argument
    assert A.NoiseConfig.authors().snr_db == pytest.approx(20 * np.log10(6))
    assert A.CWConfig.authors_cochlear_targeted().max_iterations == 2000
    assert jnp.isfinite(A.CWConfig().abort_prev_init) == False  # noqa: E712 (Carlini: +inf)
