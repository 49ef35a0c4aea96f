"""Parity of the converted models with the original framework (tf-keras / Keras 3).

Each architecture is built in tf-keras exactly as its source builds it, given random weights that
keep every layer unsaturated (He-normal kernels, BN statistics calibrated on data and then
perturbed), saved as a real .h5, converted with ``jaxadv.convert``, restored from the
written checkpoint, and compared on random inputs:

* probabilities: max abs difference <= 1e-5;
* logits (Iqbal) or each head's pre-softmax output (Cochlear): <= 1e-4 x their largest magnitude.

Iqbal models are compared on identical standardised chunks (their Keras input); the Cochlear
models on whole waveforms, each clip alone in Keras (kapre 0.1.3.1 takes its dB maximum over the
batch) and all clips in one padded batch in JAX. Measured differences are printed (``-s``) and
recorded in jaxadv/convert/README.md.
"""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest

tf_keras = pytest.importorskip("tf_keras")
KR = pytest.importorskip("keras_reference")

import jax  # noqa: E402

from jaxadv import config as C  # noqa: E402
from jaxadv import models  # noqa: E402
from jaxadv.checkpoint import load_checkpoint  # noqa: E402
from jaxadv.convert.__main__ import main as convert_main  # noqa: E402
from jaxadv.convert.core import convert_file, load_keras  # noqa: E402
from jaxadv.convert.keras_h5 import ConversionError, _text, read_keras_h5  # noqa: E402
from jaxadv.convert.standardisation import (  # noqa: E402
    fit_standardisation,
    keras_featurewise_stats,
    load_folder,
    training_chunks,
)
from jaxadv.models import _layers  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:You are saving your model as an HDF5 file")

PROB_ATOL = 1e-5
LOGIT_RTOL = 1e-4
COCHLEAR_WIDTH = 0.25  # full-size dense-mel/-wav forward passes are slow in TF on 2 cores
COCHLEAR_LENGTHS = (24000, 17777, 9001)  # samples at 32 kHz (0.75 s, 0.56 s, 0.28 s)


def _report(name: str, probs_diff: float, logit_rel: float) -> None:
    print(
        f"\n[parity] {name}: max|dprob| = {probs_diff:.2e}, max|dlogit|/max|logit| = {logit_rel:.2e}"
    )


# ---------------------------------------------------------------------------------------------
# Fixtures: one Keras model per architecture, built, saved, converted and run once
# ---------------------------------------------------------------------------------------------


def _iqbal_case(arch, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(arch)
    rng = np.random.default_rng(0)
    km = KR.iqbal_model(arch, width=1.0)
    KR.randomise(km, rng.standard_normal((4, 128, 64, 1)).astype(np.float32), seed=1)
    km.save(tmp / f"{arch}.h5")
    clf, _, meta = convert_file(tmp / f"{arch}.h5", tmp / "ckpt", mean=-40.0, std=15.0)
    clf, params, meta = load_checkpoint(tmp / "ckpt", expect=arch)
    x = rng.standard_normal((3, 128, 64, 1)).astype(np.float32)
    probs_k = km(x).numpy()
    dense = km.layers[-1]
    dense.activation = tf_keras.activations.linear  # the pre-softmax logits, from Keras itself
    logits_k = km(x).numpy()
    dense.activation = tf_keras.activations.softmax
    logits_f = np.asarray(jax.jit(clf.module().apply)(params["model"], x))
    return dict(
        arch=arch,
        clf=clf,
        params=params,
        meta=meta,
        x=x,
        probs_k=probs_k,
        logits_k=logits_k,
        logits_f=logits_f,
        h5=tmp / f"{arch}.h5",
    )


@pytest.fixture(scope="module")
def vgg13_case(tmp_path_factory):
    return _iqbal_case("vgg13", tmp_path_factory)


@pytest.fixture(scope="module")
def crnn_case(tmp_path_factory):
    return _iqbal_case("crnn", tmp_path_factory)


@pytest.fixture(scope="module")
def gcnn_case(tmp_path_factory):
    return _iqbal_case("gcnn", tmp_path_factory)


def _padded(xs):
    out = np.zeros((len(xs), max(len(x) for x in xs)), np.float32)
    for i, x in enumerate(xs):
        out[i, : len(x)] = x
    return out, np.array([len(x) for x in xs], np.int32)


def _cochlear_case(arch, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(arch)
    rng = np.random.default_rng(0)
    km = KR.cochlear_model(arch, width=COCHLEAR_WIDTH)
    calibration = (0.1 * rng.standard_normal((12, 32000))).astype(np.float32)
    KR.randomise(km, calibration, seed=1, head_scale=0.25)
    km.save(tmp / f"{arch}.h5")
    convert_file(tmp / f"{arch}.h5", tmp / "ckpt")
    clf, params, meta = load_checkpoint(tmp / "ckpt")
    xs = [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in COCHLEAR_LENGTHS]
    gaps = [layer.output for layer in km.layers if "global_average" in layer.name][-8:]
    sub = tf_keras.Model(km.inputs, [*gaps, km.output])
    outs = [sub(x[None]) for x in xs]  # one clip at a time, as the attacks ran it
    heads_k = np.stack([np.concatenate([o.numpy() for o in out[:8]]) for out in outs])
    probs_k = np.concatenate([out[8].numpy() for out in outs])
    x, lengths = _padded(xs)
    heads_f = np.asarray(jax.jit(clf.heads)(params, x, lengths))
    probs_f = np.asarray(jax.jit(clf)(params, x, lengths).probs)
    return dict(
        arch=arch,
        clf=clf,
        params=params,
        meta=meta,
        heads_k=heads_k,
        probs_k=probs_k,
        heads_f=heads_f,
        probs_f=probs_f,
        h5=tmp / f"{arch}.h5",
    )


@pytest.fixture(scope="module")
def dense_mel_case(tmp_path_factory):
    return _cochlear_case("dense_mel", tmp_path_factory)


@pytest.fixture(scope="module")
def dense_wav_case(tmp_path_factory):
    return _cochlear_case("dense_wav", tmp_path_factory)


# ---------------------------------------------------------------------------------------------
# Parity
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["vgg13", "crnn", "gcnn"])
def test_iqbal_parity(arch, request):
    iqbal = request.getfixturevalue(f"{arch}_case")
    lk, lf, pk = iqbal["logits_k"], iqbal["logits_f"], iqbal["probs_k"]
    pf = np.asarray(jax.nn.softmax(lf, axis=-1))
    dp = float(np.abs(pk - pf).max())
    dl = float(np.abs(lk - lf).max() / np.abs(lk).max())
    _report(iqbal["arch"], dp, dl)
    # The test can fail: outputs are unsaturated and depend on the input.
    assert pk.max() < 0.9
    assert np.abs(lk[0] - lk[1]).max() > 0.3
    assert dp <= PROB_ATOL
    assert dl <= LOGIT_RTOL
    assert iqbal["meta"]["param_count"] == models.param_count(iqbal["params"]["model"])


@pytest.mark.parametrize("arch", ["dense_mel", "dense_wav"])
def test_cochlear_parity(arch, request):
    cochlear = request.getfixturevalue(f"{arch}_case")
    hk, hf = cochlear["heads_k"], cochlear["heads_f"]
    pk, pf = cochlear["probs_k"], cochlear["probs_f"]
    dp = float(np.abs(pk - pf).max())
    dl = float(np.abs(hk - hf).max() / np.abs(hk).max())
    _report(f"{cochlear['arch']} (width {COCHLEAR_WIDTH})", dp, dl)
    head_probs = np.asarray(jax.nn.softmax(hk, axis=-1))
    assert head_probs.max() < 0.9  # no head saturated
    assert np.abs(hk[0] - hk[1]).max() > 0.3
    assert dp <= PROB_ATOL
    assert dl <= LOGIT_RTOL
    # the classifier's contract: logits = averaged probabilities (the authors' "logits")
    out = cochlear["clf"](cochlear["params"], *_padded([np.zeros(3000, np.float32)]))
    np.testing.assert_allclose(out.logits[:, 0], out.probs)


def test_crnn_gate_and_epsilon_are_detected(crnn_case, monkeypatch):
    """Negative controls: a sigmoid gate or Flax's BN epsilon would fail the parity test."""
    iqbal = crnn_case
    lk = iqbal["logits_k"]

    def rel():
        lf = np.asarray(iqbal["clf"].module().apply(iqbal["params"]["model"], iqbal["x"]))
        return float(np.abs(lk - lf).max() / np.abs(lk).max())

    with monkeypatch.context() as m:
        m.setattr(_layers, "hard_sigmoid", jax.nn.sigmoid)
        assert rel() > 100 * LOGIT_RTOL
    with monkeypatch.context() as m:
        m.setattr(C, "KERAS_BN_EPSILON", 1e-5)
        assert rel() > 100 * LOGIT_RTOL


def test_tf_keras_hard_sigmoid_is_keras_224():
    """tf-keras keeps Keras 2.2.4's hard_sigmoid = clip(0.2x + 0.5, 0, 1); Keras 3 changed it."""
    keras = pytest.importorskip("keras")

    x = np.linspace(-4, 4, 801).astype(np.float32)
    want = np.clip(0.2 * x + 0.5, 0, 1)
    got = tf_keras.activations.get("hard_sigmoid")(tf_keras.backend.constant(x)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-7)
    np.testing.assert_allclose(np.asarray(_layers.hard_sigmoid(x)), want, atol=1e-7)
    k3 = np.asarray(keras.activations.hard_sigmoid(x))
    np.testing.assert_allclose(k3, np.clip(x / 6 + 0.5, 0, 1), atol=1e-6)
    assert np.abs(k3 - want).max() > 0.05


def test_keras3_legacy_h5(tmp_path):
    """A Keras 3 ``model.save('x.h5')`` file: weight names without ':0', Keras 3 graph format."""
    keras = pytest.importorskip("keras")
    rng = np.random.default_rng(3)
    km = KR.keras3_vgg13(width=0.25)
    KR.randomise(km, rng.standard_normal((4, 128, 64, 1)).astype(np.float32), seed=4)
    km.save(tmp_path / "k3.h5")
    with h5py.File(tmp_path / "k3.h5") as f:
        names = [_text(n) for n in f["model_weights"]["dense"].attrs["weight_names"]]
    assert names == ["dense/kernel", "dense/bias"]
    parsed = read_keras_h5(tmp_path / "k3.h5")
    assert parsed.layout == "keras3" and parsed.keras_version.startswith("3")
    cfg, variables, _, _ = load_keras(tmp_path / "k3.h5")
    x = rng.standard_normal((3, 128, 64, 1)).astype(np.float32)
    probs_k = np.asarray(km(x))
    km.layers[-1].activation = keras.activations.linear
    logits_k = np.asarray(km(x))
    logits_f = np.asarray(cfg.module().apply(variables, x))
    dp = float(np.abs(probs_k - np.asarray(jax.nn.softmax(logits_f))).max())
    dl = float(np.abs(logits_k - logits_f).max() / np.abs(logits_k).max())
    _report("vgg13 (width 0.25, Keras 3 file)", dp, dl)
    assert probs_k.max() < 0.9
    assert dp <= PROB_ATOL and dl <= LOGIT_RTOL


# ---------------------------------------------------------------------------------------------
# Layouts and full-size mapping
# ---------------------------------------------------------------------------------------------


def _to_keras224(src, dst):
    """Rewrite a tf-keras .h5 the way Keras 2.2.4 + h5py 2.8 wrote it: bytes attributes,
    'Model' class, keras_version 2.2.4, a training config and optimizer weights, and the
    ``layer_names`` attribute split into ``layer_names0/1`` (Keras' long-attribute chunking)."""
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        cfg = json.loads(f.attrs["model_config"])
        cfg["class_name"] = "Model"
        f.attrs["model_config"] = json.dumps(cfg).encode("utf8")
        f.attrs["keras_version"] = b"2.2.4"
        f.attrs["backend"] = b"tensorflow"
        f.attrs["training_config"] = b'{"loss": "categorical_crossentropy"}'
        f.create_group("optimizer_weights")
        mw = f["model_weights"]
        names = [_text(n) for n in mw.attrs["layer_names"]]
        del mw.attrs["layer_names"]
        mw.attrs["layer_names0"] = np.array([n.encode() for n in names[:5]])
        mw.attrs["layer_names1"] = np.array([n.encode() for n in names[5:]])
        for n in names:
            wn = [_text(w) for w in mw[n].attrs["weight_names"]]
            mw[n].attrs["weight_names"] = np.array([w.encode() for w in wn]) if wn else np.array([])


@pytest.fixture(scope="module")
def small_vgg(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("small")
    km = KR.iqbal_model("vgg13", width=0.125)
    KR.randomise(
        km, np.random.default_rng(5).standard_normal((4, 128, 64, 1)).astype(np.float32), 6
    )
    km.save(tmp / "vgg.h5")
    return tmp / "vgg.h5"


def test_keras224_layout_reads_identically(small_vgg, tmp_path):
    _to_keras224(small_vgg, tmp_path / "k224.h5")
    parsed = read_keras_h5(tmp_path / "k224.h5")
    assert parsed.layout == "keras2"
    cfg_a, var_a, _, _ = load_keras(small_vgg)
    cfg_b, var_b, _, _ = load_keras(tmp_path / "k224.h5")
    assert cfg_a == cfg_b
    jax.tree_util.tree_map(np.testing.assert_array_equal, var_a, var_b)


@pytest.mark.parametrize("arch", ["dense_mel", "dense_wav"])
def test_full_size_cochlear_mapping(arch, tmp_path):
    """Width 1.0: every array maps with the right shape; counts match the builders."""
    km = KR.cochlear_model(arch, width=1.0)
    km.save(tmp_path / "full.h5")
    cfg, variables, parsed, plan = load_keras(tmp_path / "full.h5")
    assert cfg == models.get_config(arch)  # recognised as exactly the width-1.0 model
    n_keras = sum(int(np.prod(w.shape)) for w in km.weights)
    fixed = 2 * 1024 * 513 + 513 * 64 if arch == "dense_mel" else 0  # kapre kernels + mel matrix
    assert models.param_count(variables) == n_keras - fixed
    assert plan.verified == (["trainable_stft"] if arch == "dense_mel" else [])


# ---------------------------------------------------------------------------------------------
# Bad files: every failure names what is wrong
# ---------------------------------------------------------------------------------------------


def _edit_config(src, dst, fn):
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        cfg = json.loads(f.attrs["model_config"])
        fn(cfg["config"]["layers"])
        f.attrs["model_config"] = json.dumps(cfg)


def _layer(layers, name):
    return next(layer for layer in layers if layer["config"]["name"] == name)


def test_unsupported_layer_type(small_vgg, tmp_path):
    bad = tmp_path / "bad.h5"
    name = list(read_keras_h5(small_vgg).layers)[3]
    _edit_config(small_vgg, bad, lambda ls: _layer(ls, name).update(class_name="SeparableConv2D"))
    with pytest.raises(ConversionError, match=rf"'{name}' \(SeparableConv2D\).*not support"):
        load_keras(bad)


def test_wrong_bn_epsilon(small_vgg, tmp_path):
    bad = tmp_path / "bad.h5"
    name = [n for n in read_keras_h5(small_vgg).layers if n.startswith("batch_norm")][2]
    _edit_config(small_vgg, bad, lambda ls: _layer(ls, name)["config"].update(epsilon=1e-5))
    with pytest.raises(ConversionError, match=rf"'{name}'.*epsilon is 1e-05, expected 0.001"):
        load_keras(bad)


def test_misshaped_missing_and_extra_arrays(small_vgg, tmp_path):
    names = list(read_keras_h5(small_vgg).layers)
    conv, bn = names[3], names[2]  # the second conv and the first BN
    bad = tmp_path / "shape.h5"
    shutil.copy(small_vgg, bad)
    with h5py.File(bad, "r+") as f:
        g = f["model_weights"][conv][conv]
        k = g["kernel:0"][...]
        del g["kernel:0"]
        g["kernel:0"] = k[..., :-1]
    with pytest.raises(
        ConversionError,
        match=rf"model_weights/{conv}/{conv}/kernel:0 has shape"
        r" \(3, 3, 8, 7\).*block_0/conv_1/kernel.*expects \(3, 3, 8, 8\)",
    ):
        load_keras(bad)
    bad = tmp_path / "missing.h5"
    shutil.copy(small_vgg, bad)
    with h5py.File(bad, "r+") as f:
        g = f["model_weights"][bn]
        g.attrs["weight_names"] = [
            _text(w) for w in g.attrs["weight_names"] if "beta" not in _text(w)
        ]
    with pytest.raises(
        ConversionError, match=rf"'{bn}' \(BatchNormalization\) has no 'beta' array"
    ):
        load_keras(bad)
    bad = tmp_path / "extra.h5"
    shutil.copy(small_vgg, bad)
    with h5py.File(bad, "r+") as f:
        g = f["model_weights"][conv]
        g[f"{conv}/extra:0"] = np.zeros(3, np.float32)
        g.attrs["weight_names"] = [*map(_text, g.attrs["weight_names"]), f"{conv}/extra:0"]
    with pytest.raises(ConversionError, match=rf"unexpected arrays.*{conv}/extra:0"):
        load_keras(bad)


def test_gru_reset_after_is_refused(crnn_case, tmp_path):
    bad = tmp_path / "bad.h5"

    def edit(layers):
        bi = next(layer for layer in layers if layer["class_name"] == "Bidirectional")
        bi["config"]["layer"]["config"]["reset_after"] = True

    _edit_config(crnn_case["h5"], bad, edit)
    with pytest.raises(ConversionError, match="reset_after is True, expected False"):
        load_keras(bad)
    k3 = tmp_path / "k3.h5"
    shutil.copy(crnn_case["h5"], k3)
    with h5py.File(k3, "r+") as f:
        f.attrs["keras_version"] = "3.15.1"
    with pytest.raises(ConversionError, match=r"Keras 3.15.1, whose hard_sigmoid is clip\(x/6"):
        load_keras(k3)


def test_kapre_weights_are_verified(dense_mel_case, tmp_path):
    cochlear = dense_mel_case
    bad = tmp_path / "bad.h5"
    shutil.copy(cochlear["h5"], bad)
    with h5py.File(bad, "r+") as f:
        d = f["model_weights/trainable_stft/trainable_stft/real_kernels:0"]
        d[0, 0, 0, 5] += 0.01
    with pytest.raises(ConversionError, match="real_kernels:0: differs from the DFT"):
        load_keras(bad)
    bad2 = tmp_path / "bad2.h5"
    _edit_config(
        cochlear["h5"],
        bad2,
        lambda ls: _layer(ls, "trainable_stft")["config"].update(power_melgram=2.0),
    )
    with pytest.raises(ConversionError, match="power_melgram is 2.0, expected 1.0"):
        load_keras(bad2)


def test_weights_only_and_non_h5(small_vgg, tmp_path):
    km = KR.iqbal_model("vgg13", width=0.125)
    km.save_weights(tmp_path / "w.h5")
    with pytest.raises(ConversionError, match="no 'model_config'.*weights-only"):
        read_keras_h5(tmp_path / "w.h5")
    (tmp_path / "x.h5").write_text("not hdf5")
    with pytest.raises(ConversionError, match="not an HDF5 file"):
        read_keras_h5(tmp_path / "x.h5")


# ---------------------------------------------------------------------------------------------
# Command line and standardisation
# ---------------------------------------------------------------------------------------------


def test_cli(small_vgg, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        convert_main(["--help"])
    assert e.value.code == 0
    assert "--fit-audio" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        convert_main([str(small_vgg), str(tmp_path / "a")])
    assert e.value.code == 2
    assert capsys.readouterr().err == (
        f"jaxadv-convert: error: {small_vgg}: vgg13 needs the standardisation mean and std of its "
        "training features (not stored in the .h5): pass --mean/--std or --fit-audio\n"
    )
    assert convert_main([str(small_vgg), str(tmp_path / "a"), "--mean", "-3", "--std", "2"]) == 0
    with pytest.raises(SystemExit) as e:
        convert_main([str(small_vgg), str(tmp_path / "a"), "--mean", "-1", "--std", "2"])
    assert e.value.code == 2
    assert "is not empty: pass --overwrite to replace it" in capsys.readouterr().err
    argv = [str(small_vgg), str(tmp_path / "a"), "--mean", "-3", "--std", "2", "--overwrite"]
    assert convert_main(argv) == 0
    clf, params, meta = load_checkpoint(tmp_path / "a", expect="vgg13")
    assert meta["standardisation"] == {"mean": -3.0, "std": 2.0}
    assert float(params["norm"]["mean"]) == -3.0
    assert len(meta["source"]["sha256"]) == 64 and meta["source"]["layout"] == "tf_keras"
    assert meta["labels"] == list(C.LABELS)


def test_standardisation_matches_keras_image_data_generator():
    rng = np.random.default_rng(7)
    waves = [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in (100000, 30000)]
    chunks = training_chunks(waves)
    assert chunks.shape == (3, 128, 64)  # 196 frames -> 2 chunks (r = 68 >= 32); 59 -> 1 padded
    gen = tf_keras.preprocessing.image.ImageDataGenerator(
        featurewise_center=True, featurewise_std_normalization=True
    )
    gen.fit(chunks[..., None])
    mean, std = fit_standardisation(waves)
    assert (mean, std) == keras_featurewise_stats(chunks[..., None])
    assert mean == float(gen.mean.squeeze()) and std == float(gen.std.squeeze())


def test_fit_audio_folder(small_vgg, tmp_path, capsys):
    """--fit-audio: every audio file of a folder, read at its own rate and resampled to 32 kHz."""
    import soundfile as sf

    rng = np.random.default_rng(8)
    audio = tmp_path / "audio"
    audio.mkdir()
    sf.write(audio / "a.wav", 0.1 * rng.standard_normal(40000), 16000)  # 2.5 s at 16 kHz
    sf.write(audio / "b.flac", 0.1 * rng.standard_normal((30000, 2)), 32000)  # stereo
    (audio / "notes.txt").write_text("ignored")
    waves = list(load_folder(audio))
    assert [w.shape for w in waves] == [(80000,), (30000,)] and waves[0].dtype == np.float32
    assert convert_main([str(small_vgg), str(tmp_path / "c"), "--fit-audio", str(audio)]) == 0
    meta = json.loads((tmp_path / "c" / "jaxadv.json").read_text())
    mean, std = fit_standardisation(load_folder(audio))
    assert meta["standardisation"] == {"mean": mean, "std": std}
    assert -100 < mean < 0 < std
