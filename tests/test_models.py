"""The five Flax models and the classifier: sizes, shapes, transforms, masking, goldens."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from model_helpers import calibrated_params, make_audio

from jaxadv import classifier as clf_mod
from jaxadv import models
from jaxadv.classifier import Classifier, ModelOutput
from jaxadv.frontend import IqbalAttackFrontend
from jaxadv.models import _layers

WIDTH = 0.125  # compact models: same code path as width 1.0
NAMES = ["vgg13", "crnn", "gcnn", "dense_mel", "dense_wav"]


@pytest.fixture(scope="module")
def cases():
    """One calibrated compact classifier per model, built once."""
    out = {}
    for name in NAMES:
        clf = Classifier.build(name, width=WIDTH)
        out[name] = (clf, calibrated_params(clf, seed=1))
    return out


def _batch(lengths, seed=10):
    x = np.zeros((len(lengths), max(lengths)), np.float32)
    for i, n in enumerate(lengths):
        x[i, :n] = make_audio(n, seed + i)
    return x, np.asarray(lengths, np.int32)


# --- sizes and shapes --------------------------------------------------------------------------

# ORIGINALS.md §3.2, including BN moving statistics. dense-mel: §3.2's 12,191,082 less kapre's
# fixed arrays (2 x 1024 x 513 DFT kernels + the 513 x 64 mel matrix), which the port computes.
FULL_SIZE = {
    "vgg13": 9_436_649,
    "gcnn": 18_840_489,
    "crnn": 12_606_441,
    "dense_mel": 12_191_082 - (2 * 1024 * 513 + 513 * 64),
    "dense_wav": 5_864_912,  # the reconstruction
}


@pytest.mark.parametrize("name", NAMES)
def test_param_count_at_width_one(name):
    cfg = models.get_config(name)
    shapes = jax.eval_shape(lambda k: models.init_variables(cfg, k), jax.random.key(0))
    assert models.param_count(shapes) == FULL_SIZE[name]


def test_vgg13_weight_table_matches_originals():
    """The Flax tree holds exactly ORIGINALS.md §3.2's 62 arrays with their shapes."""
    cfg = models.get_config("vgg13")
    v = jax.eval_shape(lambda k: models.init_variables(cfg, k), jax.random.key(0))
    assert len(jax.tree_util.tree_leaves(v)) == 62
    assert v["params"]["block_0"]["conv_0"]["kernel"].shape == (3, 3, 1, 64)
    assert v["params"]["block_4"]["conv_1"]["kernel"].shape == (3, 3, 512, 512)
    assert v["batch_stats"]["block_4"]["bn_1"]["var"].shape == (512,)
    assert v["params"]["dense"]["kernel"].shape == (512, 41)


def test_registry_and_config_round_trip():
    assert sorted(models.MODELS) == sorted(NAMES)
    for name in NAMES:
        cfg = models.get_config(name, width=0.5, num_classes=7)
        assert models.config_from_dict(models.config_to_dict(cfg)) == cfg
        assert hash(cfg) == hash(models.get_config(name, width=0.5, num_classes=7))
    with pytest.raises(ValueError, match="unknown model 'resnet'"):
        models.get_config("resnet")
    with pytest.raises(ValueError, match=r"unknown fields \['depth'\]"):
        models.config_from_dict({"name": "vgg13", "depth": 3})


VAR_LENGTHS = {"iqbal": [100000, 70000, 30000], "cochlear": [24000, 17777, 9001]}


def _run(clf, params, x, lengths):
    """The classifier through the library's jit cache (one compile per classifier and shape)."""
    return clf_mod._jit_call(clf, params, x, lengths)


@pytest.mark.parametrize("name", [*NAMES, "vgg13+iqbal_attack"])
def test_batch_of_different_lengths_equals_each_clip_alone(name, cases):
    """Output contract, and padding never changes a clip's output: 3 clips of different lengths
    in one padded batch vs each clip alone, unpadded (this is also batch == per-example loop)."""
    model = name.split("+")[0]
    clf, params = cases[model]
    if name.endswith("iqbal_attack"):
        clf = Classifier(clf.model_config, IqbalAttackFrontend())
    x, lengths = _batch(VAR_LENGTHS[clf.family], seed=30)
    batch = _run(clf, params, x, lengths)
    assert isinstance(batch, ModelOutput)
    q = clf.frontend.max_chunks(x.shape[1]) if clf.family == "iqbal" else 1
    assert batch.logits.shape == (3, q, 41) and batch.mask.shape == (3, q)
    assert batch.probs.shape == (3, 41) and batch.mask.dtype == bool
    p = np.asarray(batch.probs)
    np.testing.assert_allclose(p.sum(1), 1.0, rtol=1e-5)
    # informative outputs, so that the comparison below can fail
    assert 1.5 / 41 < p.max() < 0.95 and np.abs(p[0] - p[1]).max() > 1e-3
    for i, n in enumerate(lengths):
        alone = _run(clf, params, x[i : i + 1, :n], lengths[i : i + 1])
        k = int(alone.mask.sum())
        assert int(batch.mask[i].sum()) == k
        np.testing.assert_allclose(alone.probs[0], batch.probs[i], atol=1e-5)
        scale = float(jnp.abs(alone.logits).max())
        np.testing.assert_allclose(alone.logits[0][:k], batch.logits[i][:k], atol=1e-5 * scale)


@pytest.mark.parametrize("name", ["crnn", "dense_wav"])
def test_jit_equals_eager(name, cases):
    clf, params = cases[name]
    x, lengths = _batch(VAR_LENGTHS[clf.family], seed=30)
    x, lengths = x[2:, : lengths[2]], lengths[2:]  # the shortest clip alone (compiled above)
    jitted = _run(clf, params, x, lengths)
    eager = clf(params, x, lengths)
    np.testing.assert_allclose(eager.probs, jitted.probs, atol=1e-6)
    np.testing.assert_allclose(eager.logits, jitted.logits, atol=1e-5, rtol=1e-5)


def test_predict_compiles_once_per_shape(cases):
    clf, params = cases["vgg13"]
    x, lengths = _batch(VAR_LENGTHS["iqbal"], seed=30)
    p1 = clf.predict(params, x, lengths)
    size = clf_mod._jit_call._cache_size()
    other = {**params, "norm": {"mean": params["norm"]["mean"] + 1.0, "std": params["norm"]["std"]}}
    p2 = clf.predict(other, x, lengths)
    p3 = Classifier.build("vgg13", width=WIDTH).predict(params, x, lengths)  # equal, hashable
    assert clf_mod._jit_call._cache_size() == size
    np.testing.assert_array_equal(p1, p3)
    assert np.abs(p1 - p2).max() > 0  # the standardisation is a live parameter


# --- classifier options and errors -------------------------------------------------------------


def test_cochlear_logits_modes_and_iqbal_merge(cases):
    clf, params = cases["dense_wav"]
    x, lengths = _batch(VAR_LENGTHS["cochlear"], seed=30)
    probs = _run(clf, params, x, lengths)
    logp = _run(Classifier(clf.model_config, None, cochlear_logits="log_probs"), params, x, lengths)
    np.testing.assert_allclose(probs.logits[:, 0], probs.probs)
    np.testing.assert_allclose(np.exp(logp.logits[:, 0]), probs.probs, rtol=1e-5)
    assert probs.mask.shape == (3, 1) and bool(probs.mask.all())
    vclf, vparams = cases["vgg13"]
    xb, lb = _batch(VAR_LENGTHS["iqbal"], seed=30)
    out = _run(vclf, vparams, xb, lb)
    g = _run(Classifier(vclf.model_config, vclf.frontend, merge="gmean"), vparams, xb, lb)
    sm = jax.nn.softmax(out.logits[0][out.mask[0]])
    assert sm.shape[0] == 2  # 196 frames: two chunks
    np.testing.assert_allclose(out.probs[0], sm.mean(0), atol=1e-7)
    np.testing.assert_allclose(g.probs[0], jnp.exp(jnp.log(sm + 1e-8).mean(0)), rtol=1e-5)


def test_classifier_errors():
    with pytest.raises(ValueError, match="takes no front-end"):
        Classifier.build("dense_mel", frontend="iqbal")
    with pytest.raises(ValueError, match="frontend must be None"):
        Classifier(models.get_config("dense_wav"), IqbalAttackFrontend())
    with pytest.raises(ValueError, match="merge must be one of"):
        Classifier.build("vgg13", merge="max")
    with pytest.raises(ValueError, match="unknown front-end 'kapre2'"):
        Classifier.build("vgg13", frontend="kapre2")
    clf = Classifier.build("vgg13", width=WIDTH)
    with pytest.raises(ValueError, match=r"x \[B, N\] and lengths \[B\], got x \(5,\)"):
        clf(None, np.zeros(5), np.array([5]))
    with pytest.raises(ValueError, match="heads is for the Cochlear models"):
        clf.heads(None, np.zeros((1, 5)), np.array([5]))


# --- layer goldens -----------------------------------------------------------------------------


def test_keras_gru_matches_numpy_equations():
    """Keras 2.2.4 GRU (reset_after=False, hard_sigmoid, z|r|h columns), written out in NumPy."""
    rng = np.random.default_rng(0)
    b, t, d, u = 2, 5, 3, 4
    x = rng.standard_normal((b, t, d)).astype(np.float32)
    w = {
        "kernel": rng.standard_normal((d, 3 * u)).astype(np.float32),
        "recurrent_kernel": rng.standard_normal((u, 3 * u)).astype(np.float32) * 0.5,
        "bias": rng.standard_normal(3 * u).astype(np.float32) * 0.3,
    }

    def hs(v):
        return np.clip(0.2 * v + 0.5, 0, 1)

    def reference(xs):
        h = np.zeros((b, u))
        out = []
        for step in range(xs.shape[1]):
            xt = xs[:, step] @ w["kernel"] + w["bias"]
            uz, ur, uh = np.split(w["recurrent_kernel"], 3, axis=1)
            z = hs(xt[:, :u] + h @ uz)
            r = hs(xt[:, u : 2 * u] + h @ ur)
            hh = np.maximum(xt[:, 2 * u :] + (r * h) @ uh, 0)
            h = z * h + (1 - z) * hh
            out.append(h)
        return np.stack(out, 1)

    fwd = _layers.KerasGRU(u).apply({"params": w}, x)
    bwd = _layers.KerasGRU(u, reverse=True).apply({"params": w}, x)
    np.testing.assert_allclose(fwd, reference(x), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(bwd, reference(x[:, ::-1])[:, ::-1], rtol=1e-5, atol=1e-5)


def _tf_same_pool_reference(row: np.ndarray, p: int) -> np.ndarray:
    """TF 'SAME' max pooling, stride = pool, of a 1-D signal (padding ignored)."""
    n = len(row)
    out = -(-n // p)
    front = (out * p - n) // 2
    padded = np.full(out * p, -np.inf)
    padded[front : front + n] = row
    return padded.reshape(out, p).max(1)


@pytest.mark.parametrize("pool", [2, 3, 4])
def test_masked_same_pooling_is_each_clip_alone(pool):
    rng = np.random.default_rng(pool)
    lengths = np.array([11, 7, 4, 1])
    x = rng.standard_normal((4, 11, 3)).astype(np.float32)
    mask = np.arange(11)[None, :] < lengths[:, None]
    y, m = _layers.masked_max_pool_same(jnp.asarray(x), jnp.asarray(mask), (pool,))
    for i, n in enumerate(lengths):
        want = np.stack([_tf_same_pool_reference(x[i, :n, c], pool) for c in range(3)], 1)
        k = len(want)
        assert int(m[i].sum()) == k
        np.testing.assert_allclose(y[i, :k], want)
        assert np.all(np.asarray(y[i, k:]) == 0)


def test_masked_pooling_gradient_is_finite():
    x = jnp.ones((2, 9, 2))
    mask = jnp.arange(9)[None, :] < jnp.array([[9], [4]])
    g = jax.grad(lambda v: _layers.masked_max_pool_same(v, mask, (3,))[0].sum())(x)
    assert np.all(np.isfinite(g)) and float(g[1, 4:].sum()) == 0.0


def test_train_mode_statistics_ignore_padding(cases):
    """BN batch statistics in training mode count only each clip's valid positions."""
    clf, params = cases["dense_wav"]
    module = clf.module()
    x, lengths = _batch([9000, 5000], seed=60)
    junk = np.where(np.arange(x.shape[1])[None] < lengths[:, None], x, 0.7).astype(np.float32)

    @jax.jit
    def stats(xb):
        return module.apply(params["model"], xb, lengths, train=True, mutable=["batch_stats"])[1]

    jax.tree_util.tree_map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), stats(x), stats(junk)
    )
