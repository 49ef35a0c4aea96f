"""Bad inputs and bad configs get clear errors (raised on the host, before any compilation)."""

from __future__ import annotations

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _attack_helpers import chunked_problem

from jaxadv import attacks as A
from jaxadv.attacks import common


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


def test_out_of_box_waveform():
    """Item 7: a float waveform at int16 scale is rejected (host and device arrays alike)."""
    fn, params, x, lengths, labels = _problem()
    loud = x.copy()
    loud[2] *= 32767.0 / np.abs(loud[2]).max()  # int16 scale
    loud[4, 10] = -3.0
    message = (
        r"carlini_wagner: x is outside the \[-1, 1\] waveform box \(examples \[2, 4\], peak "
        r"\|x\| 32767, 3; limit 2\): pass float waveforms in \[-1, 1\], e\.g\. divide int16 "
        r"samples by 32768 \(jaxadv\.audio\.load_audio returns \[-1, 1\]\)"
    )
    for xs in (loud, jnp.asarray(loud)):
        with pytest.raises(ValueError, match=message):
            A.carlini_wagner(fn, params, xs, lengths, labels)
    with pytest.raises(ValueError, match=r"white_noise: x is outside .*examples \[2, 4\]"):
        A.white_noise(fn, params, loud, lengths, labels, key=jax.random.key(0))


def test_box_tolerance_and_padding():
    """Resampling overshoot (|x| up to 2) passes; samples beyond lengths[b] are not checked."""
    fn, params, x, lengths, labels = _problem()
    x = x.copy()
    x[0, 5] = 1.8  # within the tolerance
    x[1, lengths[1] :] = 1000.0  # padding junk, not a valid sample
    for xs in (x, jnp.asarray(x)):
        xv, lv, yv, _ = common.validate("test", fn, params, xs, lengths, labels)
        assert isinstance(xv, jax.Array) and xv.dtype == jnp.float32
    x[1, lengths[1] - 1] = 2.5
    with pytest.raises(ValueError, match=r"test: x is outside .*examples \[1\], peak \|x\| 2\.5"):
        common.validate("test", fn, params, jnp.asarray(x), lengths, labels)


BAD_FIELDS = [
    # (config class, field, bad value, rule in the message)
    (A.NoiseConfig, "snr_db", float("nan"), "a finite number"),
    (A.NoiseConfig, "snr_db", float("inf"), "a finite number"),
    (A.NoiseConfig, "snr_db", "20", "a finite number"),
    (A.NoiseConfig, "clip", 1, "True or False"),
    (A.FGSMConfig, "mode", "pgd", r"one of \['search', 'snr'\]"),
    (A.FGSMConfig, "snr_db", float("nan"), "a finite number"),
    (A.FGSMConfig, "clip", None, "True or False"),
    (A.FGSMConfig, "scores", "probs", r"one of \['log_probs', 'logits'\]"),
    (A.FGSMConfig, "epsilons", 0, "an integer >= 1"),
    (A.FGSMConfig, "epsilons", 10.0, "an integer >= 1"),
    (A.FGSMConfig, "max_epsilon", 0.0, "a finite number > 0"),
    (A.FGSMConfig, "max_epsilon", float("inf"), "a finite number > 0"),
    (A.FGSMConfig, "refine_below", -1, "an integer >= 0"),
    (A.FGSMConfig, "refine_steps", 0, "an integer >= 1"),
    (A.FGSMConfig, "block", 0, "an integer >= 1"),
    (A.DeepFoolConfig, "norm", "l1", r"one of \['l2', 'linf'\]"),
    (A.DeepFoolConfig, "steps", -1, "an integer >= 1"),
    (A.DeepFoolConfig, "steps", True, "an integer >= 1"),
    (A.DeepFoolConfig, "candidates", 1, "None or an integer >= 2"),
    (A.DeepFoolConfig, "overshoot", -1.5, "a finite number >= -1"),
    (A.DeepFoolConfig, "overshoot", float("nan"), "a finite number >= -1"),
    (A.DeepFoolConfig, "overshoot_mode", "total", r"one of \['cumulative', 'per_step'\]"),
    (A.DeepFoolConfig, "select", "first", r"one of \['max', 'min'\]"),
    (A.DeepFoolConfig, "residual", "yes", "True or False"),
    (A.DeepFoolConfig, "exclude", [0], "a tuple of integers >= 0"),
    (A.DeepFoolConfig, "exclude", (0, -1), "a tuple of integers >= 0"),
    (A.DeepFoolConfig, "numerator_eps", -1e-5, "a finite number >= 0"),
    (A.DeepFoolConfig, "step_eps", float("inf"), "a finite number >= 0"),
    (A.DeepFoolConfig, "scores", "probs", r"one of \['log_probs', 'logits'\]"),
    (A.DeepFoolConfig, "pullbacks", "scan", r"one of \['auto', 'map', 'vmap'\]"),
    (A.DeepFoolConfig, "vjp_batch", 0, "None or an integer >= 1"),
    (A.DeepFoolConfig, "compact_levels", -1, "an integer >= 0"),
    (A.CWConfig, "binary_search_steps", 0, "an integer >= 1"),
    (A.CWConfig, "max_iterations", -3, "an integer >= 1"),
    (A.CWConfig, "learning_rate", 0.0, "a finite number > 0"),
    (A.CWConfig, "learning_rate", float("nan"), "a finite number > 0"),
    (A.CWConfig, "initial_const", -1.0, "a finite number > 0"),
    (A.CWConfig, "confidence", -0.5, "a finite number >= 0"),
    (A.CWConfig, "confidence", float("inf"), "a finite number >= 0"),
    (A.CWConfig, "abort_early", 0, "True or False"),
    (A.CWConfig, "abort_prev_init", float("nan"), r"a number \(not NaN; inf allowed\) > 0"),
    (A.CWConfig, "abort_prev_init", 0.0, r"a number \(not NaN; inf allowed\) > 0"),
    (A.CWConfig, "adam_eps", 0.0, "a finite number > 0"),
    (A.CWConfig, "distance", "l1", r"one of \['mean', 'range', 'sum'\]"),
    (A.CWConfig, "scores", "probs", r"one of \['log_probs', 'logits'\]"),
    (A.CWConfig, "success", "prob", r"one of \['margin', 'threshold'\]"),
    (A.CWConfig, "const_update", "foolbox", r"one of \['authors', 'carlini', 'geometric'\]"),
    (A.CWConfig, "lr_schedule", "step", r"one of \['constant', 'cosine', 'exponential'\]"),
    (A.CWConfig, "lr_final", 0.0, r"a finite number in \(0, 1\]"),
    (A.CWConfig, "lr_relative", "std", r"one of \['none', 'peak', 'rms'\]"),
    (A.CWConfig, "abort_period", 0, "None or an integer >= 1"),
    (A.CWConfig, "abort_min_iterations", -1, "an integer >= 0"),
    (A.CWConfig, "abort_on", "margin", r"one of \['distance', 'loss'\]"),
    (A.CWConfig, "abort_tolerance", 1.5, r"a finite number in \[0, 1\]"),
    (A.CWConfig, "restart", "last", r"one of \['best', 'zero'\]"),
    (A.CWConfig, "const_factor", 1.0, "a finite number > 1"),
    (A.CWConfig, "untargeted_threshold", 0.0, r"a finite number in \(0, 1\]"),
    (A.CWConfig, "targeted_threshold", 1.5, r"a finite number in \(0, 1\]"),
    (A.CWConfig, "compact_levels", 1.5, "an integer >= 0"),
    (A.LBFGSConfig, "mode", "numpy", r"one of \['jax', 'scipy'\]"),
    (A.LBFGSConfig, "search", "grid", r"one of \['bisect', 'foolbox1'\]"),
    (A.LBFGSConfig, "binary_search_steps", 0, "an integer >= 1"),
    (A.LBFGSConfig, "initial_const", 0.0, "a finite number > 0"),
    (A.LBFGSConfig, "max_iterations", -1, "an integer >= 1"),
    (A.LBFGSConfig, "memory", 0, "an integer >= 1"),
    (A.LBFGSConfig, "distance", "l1", r"one of \['normalised', 'sum'\]"),
    (A.LBFGSConfig, "loss_scale", 0.0, "a finite number > 0"),
    (A.LBFGSConfig, "scores", "probs", r"one of \['log_probs', 'logits'\]"),
    (A.LBFGSConfig, "pgtol", -1e-5, "a finite number >= 0"),
    (A.LBFGSConfig, "factr", float("nan"), "a finite number >= 0"),
    (A.LBFGSConfig, "max_linesearch", 0, "an integer >= 1"),
    (A.LBFGSConfig, "search_epsilon", 0.0, "a finite number > 0"),
    (A.LBFGSConfig, "max_doublings", -1, "an integer >= 0"),
    (A.LBFGSConfig, "best_over", "points", r"one of \['evaluations', 'solves'\]"),
    (A.LBFGSConfig, "compact_levels", True, "an integer >= 0"),
    (A.LBFGSConfig, "first_step", "cauchy", r"one of \['inverse_norm', 'scipy', 'unit'\]"),
]


@pytest.mark.parametrize("cls,field,value,rule", BAD_FIELDS)
def test_bad_config_field(cls, field, value, rule):
    """Item 8: every field is range-checked when the config is made, and by dataclasses.replace."""
    message = rf"{cls.__name__}: {field} must be {rule}, got {re.escape(repr(value))}$"
    with pytest.raises(ValueError, match=message):
        cls(**{field: value})
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(cls(), **{field: value})  # what --set does


def test_every_config_field_has_a_bad_value():
    from test_attacks_fmn_ddn import BAD_FIELDS_FMN_DDN  # FMN's and DDN's, tested there
    from test_attacks_pgd import BAD_FIELDS_PGD  # PGD's, tested there

    tested = {(cls, field) for cls, field, *_ in BAD_FIELDS + BAD_FIELDS_FMN_DDN + BAD_FIELDS_PGD}
    for spec in A.ATTACKS.values():
        for f in dataclasses.fields(spec.config):
            assert (spec.config, f.name) in tested, (spec.config.__name__, f.name)


def test_good_config_values():
    """Edge values that stay valid: inf abort_prev_init, None candidates, numpy scalars, etc."""
    A.CWConfig(abort_prev_init=float("inf"), confidence=0.0, targeted_threshold=1.0)
    A.CWConfig(max_iterations=np.int64(5), learning_rate=np.float32(1e-3), initial_const=1)
    A.DeepFoolConfig(candidates=None, overshoot=-1.0, exclude=(0, 3), vjp_batch=2)
    A.NoiseConfig(snr_db=-10.0, clip=np.bool_(True))
    A.FGSMConfig(refine_below=0)
    A.LBFGSConfig(max_doublings=0, pgtol=0.0)


def test_check_fields_needs_a_rule_per_field():
    @dataclasses.dataclass(frozen=True)
    class Cfg:
        a: int = 1
        b: int = 2

        def __post_init__(self):
            common.check_fields(self, {"a": common.integer(0)})

    with pytest.raises(TypeError, match=r"Cfg: rules for fields \['b'\] missing"):
        Cfg()


def test_wrong_config_type():
    fn, params, x, lengths, labels = _problem()
    with pytest.raises(TypeError, match="deepfool: config must be a DeepFoolConfig, got CWConfig"):
        A.deepfool(fn, params, x, lengths, labels, config=A.CWConfig())


def test_configs_are_hashable_presets():
    for spec in A.ATTACKS.values():
        for name, make in spec.presets.items():
            cfg = make()
            assert isinstance(cfg, spec.config), name
            assert hash(cfg) == hash(dataclasses.replace(cfg))  # static jit argument
    assert A.NoiseConfig.authors().snr_db == pytest.approx(20 * np.log10(6))
    assert A.CWConfig.authors_cochlear_targeted().max_iterations == 2000
    assert jnp.isfinite(A.CWConfig().abort_prev_init) == False  # noqa: E712 (Carlini: +inf)
