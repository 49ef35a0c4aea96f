"""FMN (L2, Linf) and DDN: closed-form goldens, scale-freeness, Foolbox 3.3.4 agreement, engine.

* goldens: on a 2-class linear model the minimal perturbation to the boundary is
  ``|f| / ||w||`` (L2) and ``|f| / ||w||_1`` (Linf) over the valid samples
  (``test_attacks_goldens.py``); every default reaches it within ``GOLDEN_TOL``, untargeted and
  targeted, and never inside it.
* audio scale: the same problem scaled by 1/100 (a clip's minimal perturbation is ~1e-3 of its
  norm): the defaults reach the same relative excess; Foolbox 3's stock DDN does not.
* Foolbox 3.3.4 agreement: the ``foolbox3()`` presets and Foolbox's ``L2FMNAttack``,
  ``LInfFMNAttack``, ``DDNAttack`` on a small random MLP (``foolbox.JAXModel`` of its log
  probabilities), same steps: success equal, median distance within ``FOOLBOX_RTOL`` and most
  rows' distances within 1e-3.
* engine: jit == eager, the sweep equals each job alone, one compiled program per shape.
* configs: every field's rule with its message.
"""

from __future__ import annotations

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _attack_helpers import chunked_problem, linear_problem, other_class
from test_attacks_compile import _assert_close
from test_attacks_goldens import _margins, _valid

from jaxadv import attacks as A
from jaxadv.classifier import ModelOutput

GOLDEN_TOL = 0.01  # relative excess of the distance over the minimal one (measured <= 0.2 %)

DEFAULTS = {
    "fmn_l2": ("fmn", A.FMNConfig(), "l2"),
    "fmn_linf": ("fmn", A.FMNConfig(norm="linf"), "linf"),
    "ddn": ("ddn", A.DDNConfig(), "l2"),
    "fmn_linf_foolbox3": ("fmn", A.FMNConfig.foolbox3("linf"), "linf"),
    "ddn_foolbox3": ("ddn", A.DDNConfig.foolbox3(), "l2"),
}


def _dmin(params, x, lengths, labels, other, norm):
    f, w = _margins(params, x, lengths, labels, np.asarray(other))
    dual = np.abs(w).sum(1) if norm == "linf" else np.linalg.norm(w, axis=1)
    return np.abs(f) / dual


def _dist(adv, x, norm):
    d = np.asarray(adv, np.float64) - np.asarray(x, np.float64)
    return np.abs(d).max(1) if norm == "linf" else np.linalg.norm(d, axis=1)


@pytest.mark.parametrize("targeted", [False, True])
@pytest.mark.parametrize("name", list(DEFAULTS))
def test_reaches_minimal_distance(name, targeted):
    key, config, norm = DEFAULTS[name]
    fn, params, x, lengths, labels = linear_problem(n=32, classes=2, batch=4)
    other = 1 - labels
    r = A.ATTACKS[key](
        fn, params, x, lengths, labels, targets=other if targeted else None, config=config
    )
    dmin = _dmin(params, x, lengths, labels, other, norm)
    d = _dist(r.adversarial, x, norm)
    assert bool(np.all(np.asarray(r.success)))
    excess = d / dmin - 1
    assert np.all(excess > -1e-4), excess  # never inside the boundary
    assert np.all(excess < GOLDEN_TOL), excess
    np.testing.assert_allclose(np.asarray(r.distance), d, rtol=1e-5)
    steps = np.asarray(r.steps)  # the budget plus the uncounted search before the first success
    assert np.all(steps >= config.steps) and np.all(steps <= config.steps + config.search_steps)
    valid = _valid(x, lengths)
    np.testing.assert_array_equal(np.asarray(r.adversarial)[~valid], np.asarray(x)[~valid])
    m = A.evaluate(fn, params, x, lengths, labels, r, targets=other if targeted else None)
    np.testing.assert_array_equal(np.asarray(m.fooled), True)  # a fresh forward agrees


def test_foolbox3_l2_fmn_never_projects():
    """Foolbox 3.3.4's L2 FMN projection is ``min(1, norms / norms) = 1``: far beyond the minimum."""
    fn, params, x, lengths, labels = linear_problem(n=32, classes=2, batch=4)
    r = A.fmn(fn, params, x, lengths, labels, config=A.FMNConfig.foolbox3())
    dmin = _dmin(params, x, lengths, labels, 1 - labels, "l2")
    assert bool(np.all(np.asarray(r.success)))
    assert np.all(_dist(r.adversarial, x, "l2") > 2 * dmin)
    fixed = dataclasses.replace(A.FMNConfig.foolbox3(), project=True, overshoot=0.02)
    r = A.fmn(fn, params, x, lengths, labels, config=fixed)
    assert np.all(_dist(r.adversarial, x, "l2") < (1 + GOLDEN_TOL) * dmin)


@pytest.mark.parametrize("search_steps", [0, 400])
def test_search_steps_are_not_counted_in_the_budget(search_steps):
    """From a radius 100 times too small, DDN's search (x 1.05 per step) needs ~95 steps: inside
    a 50-step budget it never finds the boundary; outside it (``search_steps``) the whole budget
    refines, and ``steps`` reports the search on top of the budget."""
    fn, params, x, lengths, labels = linear_problem(n=32, classes=2, batch=4)
    dmin = _dmin(params, x, lengths, labels, 1 - labels, "l2")
    config = A.DDNConfig(steps=50, init_norm="absolute", init_epsilon=float(dmin.min()) / 100,
                         search_steps=search_steps)  # fmt: skip
    r = A.ddn(fn, params, x, lengths, labels, config=config)
    steps = np.asarray(r.steps)
    if search_steps == 0:
        assert not np.any(np.asarray(r.success))
        np.testing.assert_array_equal(steps, 50)
        return
    assert bool(np.all(np.asarray(r.success)))
    searched = steps - 50
    need = np.log(dmin / config.init_epsilon) / np.log(1.05)  # growth steps to the boundary
    assert np.all(searched >= np.floor(need)) and np.all(searched <= np.ceil(need) + 2), (
        searched,
        need,
    )
    excess = _dist(r.adversarial, x, "l2") / dmin - 1
    assert np.all(excess > -1e-4) and np.all(excess < 0.05), excess


def test_a_search_that_never_succeeds_ends_after_budget_plus_search_steps():
    fn, params, x, lengths, labels = linear_problem(n=32, classes=2, batch=4)
    dmin = _dmin(params, x, lengths, labels, 1 - labels, "l2")
    config = A.DDNConfig(steps=5, init_norm="absolute", init_epsilon=float(dmin.min()) / 1e4,
                         search_steps=10)  # fmt: skip
    r = A.ddn(fn, params, x, lengths, labels, config=config)
    assert not np.any(np.asarray(r.success))
    np.testing.assert_array_equal(np.asarray(r.steps), 15)


@pytest.mark.parametrize("name", ["fmn_l2", "ddn"])
def test_search_steps_zero_is_the_counted_search(name):
    """``search_steps=0`` gives exactly the old behaviour: every row runs ``steps`` iterations."""
    key, config, _ = DEFAULTS[name]
    fn, params, x, lengths, labels = linear_problem(n=32, classes=2, batch=4)
    r = A.ATTACKS[key](fn, params, x, lengths, labels,
                       config=dataclasses.replace(config, search_steps=0))  # fmt: skip
    np.testing.assert_array_equal(np.asarray(r.steps), config.steps)


@pytest.mark.parametrize("targeted", [False, True])
def test_ddn_margin_and_ce_losses_agree_for_two_classes(targeted):
    """With two classes grad CE = -(1 - p_y) grad m: the same unit direction, so the same
    trajectory; with more classes both reach the linear model's minimal distance."""
    fn, params, x, lengths, labels = linear_problem(n=32, classes=2, batch=4)
    t = 1 - labels if targeted else None
    runs = {
        loss: A.ddn(
            fn, params, x, lengths, labels, targets=t, config=A.DDNConfig(loss=loss)
        )  # fmt: skip
        for loss in ("ce", "margin")
    }
    np.testing.assert_allclose(
        np.asarray(runs["ce"].distance), np.asarray(runs["margin"].distance), rtol=1e-4
    )
    fn, params, x, lengths, labels = linear_problem(n=32, classes=5, batch=6)
    for loss in ("ce", "margin"):
        r = A.ddn(fn, params, x, lengths, labels, config=A.DDNConfig(loss=loss))
        m = A.evaluate(fn, params, x, lengths, labels, r)
        assert bool(np.all(np.asarray(m.fooled))), loss


SCALE = 0.01


@pytest.mark.parametrize("name", ["fmn_l2", "fmn_linf", "ddn"])
def test_defaults_are_scale_free(name):
    """Clip and bias times 1/100 (every margin, hence the minimal distance, times 1/100)."""
    key, config, norm = DEFAULTS[name]
    fn, params, x, lengths, labels = linear_problem(n=32, classes=2, batch=4)
    small = {"w": params["w"], "b": params["b"] * SCALE}
    xs = x * SCALE
    dmin = _dmin(small, xs, lengths, labels, 1 - labels, norm)
    np.testing.assert_allclose(dmin, SCALE * _dmin(params, x, lengths, labels, 1 - labels, norm))
    r = A.ATTACKS[key](fn, small, xs, lengths, labels, config=config)
    excess = _dist(r.adversarial, xs, norm) / dmin - 1
    assert bool(np.all(np.asarray(r.success)))
    assert np.all(excess > -1e-3) and np.all(excess < GOLDEN_TOL), excess


def test_foolbox3_ddn_is_not_scale_free():
    """From eps_0 = 1 and absolute steps, 100 steps do not shrink to a 1/100 problem's boundary."""
    fn, params, x, lengths, labels = linear_problem(n=32, classes=2, batch=4)
    small = {"w": params["w"], "b": params["b"] * SCALE}
    xs = x * SCALE
    dmin = _dmin(small, xs, lengths, labels, 1 - labels, "l2")
    r = A.ddn(fn, small, xs, lengths, labels, config=A.DDNConfig.foolbox3())
    assert np.all(np.asarray(r.distance) > 2 * dmin)
    relative = dataclasses.replace(A.DDNConfig.foolbox3(), init_norm="relative", init_epsilon=0.1)
    r = A.ddn(fn, small, xs, lengths, labels, config=relative)  # eps_0 = ||x|| / 10
    assert np.all(np.asarray(r.epsilon) < 10 * dmin)


# --- Foolbox 3.3.4 ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _MLP:
    """A small random MLP on the raw waveform (one chunk), nonlinear: ``tanh`` hidden layer."""

    def __call__(self, params, x, lengths):
        valid = jnp.arange(x.shape[1])[None, :] < lengths[:, None]
        h = jnp.tanh(jnp.where(valid, x, 0.0) @ params["w1"] + params["b1"])
        logits = h @ params["w2"] + params["b2"]
        return ModelOutput(
            logits[:, None, :], jnp.ones((x.shape[0], 1), bool), jax.nn.softmax(logits, -1)
        )


def _mlp_problem(n=128, hidden=32, classes=4, batch=8):
    rng = np.random.default_rng(7)
    f32 = np.float32
    params = {
        "w1": jnp.asarray(rng.normal(size=(n, hidden)).astype(f32) / np.sqrt(n) * 3),
        "b1": jnp.asarray(rng.normal(size=(hidden,)).astype(f32) * 0.1),
        "w2": jnp.asarray(rng.normal(size=(hidden, classes)).astype(f32) / np.sqrt(hidden) * 3),
        "b2": jnp.zeros((classes,), jnp.float32),
    }
    x = jnp.asarray(rng.uniform(-0.5, 0.5, size=(batch, n)).astype(f32))
    lengths = jnp.full((batch,), n, jnp.int32)
    fn = _MLP()
    labels = jnp.argmax(fn(params, x, lengths).probs, -1).astype(jnp.int32)
    return fn, params, x, lengths, labels


# median distance; measured: every row's distance agrees to < 1e-5 (a trajectory may still
# diverge through float rounding at a boundary decision, e.g. on a CNN: a few rows by 10 %)
FOOLBOX_RTOL = 0.01
FOOLBOX_STEPS = 40  # both sides (Foolbox runs op by op)


@pytest.mark.parametrize(
    "key,norm,targeted",
    [
        ("fmn", "l2", False),
        ("fmn", "linf", False),
        ("fmn", "l2", True),
        ("ddn", "l2", False),
        ("ddn", "l2", True),
    ],
)
def test_foolbox3_preset_agrees_with_foolbox(key, norm, targeted):
    fb = pytest.importorskip("foolbox")
    fn, params, x, lengths, labels = _mlp_problem()
    targets = other_class(labels, 4) if targeted else None
    config = A.FMNConfig.foolbox3(norm) if key == "fmn" else A.DDNConfig.foolbox3()
    config = dataclasses.replace(config, steps=FOOLBOX_STEPS)
    ours = A.ATTACKS[key](fn, params, x, lengths, labels, targets=targets, config=config)

    scores = jax.jit(lambda xx: jnp.log(fn(params, xx, lengths).probs))
    model = fb.JAXModel(scores, bounds=(-1, 1))
    if key == "ddn":
        attack = fb.attacks.DDNAttack(steps=FOOLBOX_STEPS)
    else:
        fmn = fb.attacks.L2FMNAttack if norm == "l2" else fb.attacks.LInfFMNAttack
        attack = fmn(steps=FOOLBOX_STEPS)
    crit = (
        fb.criteria.TargetedMisclassification(targets)
        if targeted
        else fb.criteria.Misclassification(labels)
    )
    theirs = jnp.asarray(attack.run(model, x, crit))
    pred = jnp.argmax(scores(theirs), -1)
    fb_ok = np.asarray(pred == targets if targeted else pred != labels)
    np.testing.assert_array_equal(np.asarray(ours.success), fb_ok)
    assert fb_ok.sum() >= 6  # the comparison says something
    d_ours = _dist(ours.adversarial, x, norm)[fb_ok]
    d_fb = _dist(theirs, x, norm)[fb_ok]
    np.testing.assert_allclose(np.median(d_ours), np.median(d_fb), rtol=FOOLBOX_RTOL)
    assert np.mean(np.abs(d_ours / d_fb - 1) < 1e-3) >= 0.75  # the same algorithm, row by row


# --- targeted, multi-class, multi-chunk; engine invariants -------------------------------------


TINY = {  # (attack, config, targeted in the jit == eager test)
    "fmn_l2": ("fmn", A.FMNConfig(steps=5), False),
    "fmn_linf": ("fmn", A.FMNConfig(norm="linf", steps=5), True),
    "fmn_foolbox3": ("fmn", dataclasses.replace(A.FMNConfig.foolbox3(), steps=5), True),
    "ddn": ("ddn", A.DDNConfig(steps=5, scores="logits"), True),
    "ddn_foolbox3": ("ddn", dataclasses.replace(A.DDNConfig.foolbox3(), steps=5), False),
}


@pytest.mark.parametrize("key,norm", [("fmn", "l2"), ("fmn", "linf"), ("ddn", "l2")])
def test_targeted_multiclass_chunked(key, norm):
    fn, params, x, lengths, labels = chunked_problem()  # 5 classes, 4 chunks, padding junk
    targets = other_class(labels, 5)
    config = A.FMNConfig(norm=norm, steps=100) if key == "fmn" else A.DDNConfig(steps=100)
    r = A.ATTACKS[key](fn, params, x, lengths, labels, targets=targets, config=config)
    m = A.evaluate(fn, params, x, lengths, labels, r, targets=targets)
    np.testing.assert_array_equal(np.asarray(r.success), True)
    np.testing.assert_array_equal(np.asarray(m.new_label), np.asarray(targets))
    valid = _valid(x, lengths)
    np.testing.assert_array_equal(np.asarray(r.adversarial)[~valid], np.asarray(x)[~valid])
    assert np.all(np.abs(np.asarray(r.adversarial)[valid]) <= 1.0)


@pytest.mark.parametrize("name", list(TINY))
def test_jit_equals_eager(name):
    key, config, targeted = TINY[name]
    fn, params, x, lengths, labels = chunked_problem()
    x, lengths, labels = x[:3], lengths[:3], labels[:3]
    t = other_class(labels, 5) if targeted else None
    jitted = A.ATTACKS[key](fn, params, x, lengths, labels, targets=t, config=config)
    with jax.disable_jit():
        eager = A.ATTACKS[key](fn, params, x, lengths, labels, targets=t, config=config)
    _assert_close(jax.tree.map(np.asarray, jitted), jax.tree.map(np.asarray, eager))


@pytest.mark.parametrize("name", ["fmn_l2", "fmn_linf", "ddn"])
def test_sweep_equals_each_job_alone(name):
    key, config, _ = TINY[name]
    fn, params, x, lengths, labels = chunked_problem()
    x, lengths, labels = (jnp.concatenate([a, a]) for a in (x, lengths, labels))  # 12 jobs
    targets = other_class(labels, 5)
    results, stats = A.sweep(
        key, fn, params, x, lengths, labels, targets=targets, config=config, slots=4, chunk=4
    )
    # every job's evaluations are useful: its budget plus its uncounted search
    assert stats.jobs == 12 and stats.useful == sum(int(r.steps) for r in results)
    assert all(int(r.steps) >= config.steps for r in results)
    for j in (0, 5, 7, 11):
        one = slice(j, j + 1)
        alone = A.ATTACKS[key](
            fn, params, x[one], lengths[one], labels[one], targets=targets[one], config=config
        )
        alone = jax.tree.map(lambda a: np.asarray(a)[0], alone)
        _assert_close(results[j], alone)


@pytest.mark.parametrize("key", ["fmn", "ddn"])
def test_registry_and_one_program_per_shape(key):
    spec = A.ATTACKS[key]
    assert spec.targeted == "optional" and not spec.keyed
    for make in spec.presets.values():
        cfg = make()
        assert isinstance(cfg, spec.config) and hash(cfg) == hash(dataclasses.replace(cfg))
    assert spec.presets["default"]().step_scale == "epsilon"
    assert spec.presets["foolbox3"]().step_scale == "absolute"
    fn, params, x, lengths, labels = chunked_problem()
    config = spec.config(steps=3)
    spec(fn, params, x, lengths, labels, config=config)
    size = spec.core._cache_size()
    spec(fn, params, x * 0.5, lengths - 2, labels, config=config)
    assert spec.core._cache_size() == size


# --- configs and inputs --------------------------------------------------------------------------

BAD_FIELDS_FMN_DDN = [
    (A.FMNConfig, "norm", "l1", r"one of \['l2', 'linf'\]"),
    (A.FMNConfig, "steps", 0, "an integer >= 1"),
    (A.FMNConfig, "steps", 2.0, "an integer >= 1"),
    (A.FMNConfig, "alpha_init", 0.0, "a finite number > 0"),
    (A.FMNConfig, "alpha_final", -0.1, "a finite number >= 0"),
    (A.FMNConfig, "gamma_init", 0.0, r"a finite number in \(0, 1\)"),
    (A.FMNConfig, "gamma_init", 1.0, r"a finite number in \(0, 1\)"),
    (A.FMNConfig, "gamma_final", 1.0, r"a finite number in \[0, 1\)"),
    (A.FMNConfig, "gamma_final", float("nan"), r"a finite number in \[0, 1\)"),
    (A.FMNConfig, "step_scale", "relative", r"one of \['absolute', 'epsilon'\]"),
    (A.FMNConfig, "project", 1, "True or False"),
    (A.FMNConfig, "overshoot", -0.01, "a finite number >= 0"),
    (A.FMNConfig, "search_steps", -1, "an integer >= 0"),
    (A.FMNConfig, "scores", "probs", r"one of \['log_probs', 'logits'\]"),
    (A.FMNConfig, "compact_levels", -1, "an integer >= 0"),
    (A.DDNConfig, "steps", -5, "an integer >= 1"),
    (A.DDNConfig, "init_norm", "zero", r"one of \['absolute', 'deepfool', 'relative'\]"),
    (A.DDNConfig, "init_epsilon", 0.0, "a finite number > 0"),
    (A.DDNConfig, "init_epsilon", float("inf"), "a finite number > 0"),
    (A.DDNConfig, "alpha_init", -1.0, "a finite number > 0"),
    (A.DDNConfig, "alpha_final", float("nan"), "a finite number >= 0"),
    (A.DDNConfig, "gamma", 1.5, r"a finite number in \(0, 1\)"),
    (A.DDNConfig, "step_scale", None, r"one of \['absolute', 'epsilon'\]"),
    (A.DDNConfig, "gamma_final", 1.0, r"None or a finite number in \[0, 1\)"),
    (A.DDNConfig, "search_steps", 2.5, "an integer >= 0"),
    (A.DDNConfig, "loss", "hinge", r"one of \['ce', 'margin'\]"),
    (A.DDNConfig, "scores", "probs", r"one of \['log_probs', 'logits'\]"),
    (A.DDNConfig, "compact_levels", 0.5, "an integer >= 0"),
]


@pytest.mark.parametrize("cls,field,value,rule", BAD_FIELDS_FMN_DDN)
def test_bad_config_field(cls, field, value, rule):
    message = rf"{cls.__name__}: {field} must be {rule}, got {re.escape(repr(value))}$"
    with pytest.raises(ValueError, match=message):
        cls(**{field: value})
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(cls(), **{field: value})  # what --set does


def test_every_field_has_a_bad_value():
    tested = {(cls, field) for cls, field, *_ in BAD_FIELDS_FMN_DDN}
    for cls in (A.FMNConfig, A.DDNConfig):
        for f in dataclasses.fields(cls):
            assert (cls, f.name) in tested, (cls.__name__, f.name)


def test_bad_inputs():
    fn, params, x, lengths, labels = linear_problem(n=32, classes=2, batch=4)
    with pytest.raises(TypeError, match="fmn: config must be a FMNConfig, got DDNConfig"):
        A.fmn(fn, params, x, lengths, labels, config=A.DDNConfig())
    with pytest.raises(TypeError, match="ddn: config must be a DDNConfig, got FMNConfig"):
        A.ddn(fn, params, x, lengths, labels, config=A.FMNConfig())
    with pytest.raises(ValueError, match=r"ddn: targets\[0\] == labels\[0\]"):
        A.ddn(fn, params, x, lengths, labels, targets=labels)
    with pytest.raises(ValueError, match="fmn: x is outside the"):
        A.fmn(fn, params, x * 32768, lengths, labels)
