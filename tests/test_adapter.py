"""jaxadv.wrap: a model that is not one of the five (its own labels, 16 kHz, chunked windows)
through the classifier contract, an attack, and the untargeted experiment command."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import soundfile as sf

import jaxadv
from jaxadv import attacks as A
from jaxadv.adapter import WrapError
from tests import _custom_model as M

SPEC = "tests._custom_model:build"


def _batch():
    x = np.zeros((2, 20000), np.float32)
    low, high = M.tone(300, 1.25), M.tone(5000, 0.6, seed=1)
    x[0], x[1, : len(high)] = low, high
    return jnp.asarray(x), jnp.array([20000, len(high)], jnp.int32)


def test_contract_shapes_mask_and_probabilities():
    clf, params = M.build()
    x, lens = _batch()
    out = clf(params, x, lens)
    # windows of 8000 every 4000 samples: 20000 samples -> 4 windows; 9600 -> 3 valid
    assert out.logits.shape == (2, 4, 2) and out.probs.shape == (2, 2)
    assert out.mask.tolist() == [[True] * 4, [True, True, True, False]]
    assert out.probs.argmax(-1).tolist() == [0, 1]  # "low", "high"
    np.testing.assert_allclose(out.probs.sum(-1), 1.0, rtol=1e-6)
    # the clip's probabilities are the mean of its valid windows' softmaxes
    p = jax.nn.softmax(out.logits[1, :3], axis=-1).mean(0)
    np.testing.assert_allclose(out.probs[1], p, rtol=1e-6)
    assert clf.labels == ("low", "high") and clf.sample_rate == 16_000


def test_padding_is_ignored_and_jit_equals_eager():
    clf, params = M.build()
    x, lens = _batch()
    alone = clf(params, x[1:, : int(lens[1])], lens[1:])
    padded = clf(params, x.at[1, int(lens[1]) :].set(0.3), lens)  # garbage past the length
    np.testing.assert_allclose(padded.probs[1], alone.probs[0], rtol=1e-5, atol=1e-6)
    jitted = jax.jit(clf)(params, x, lens)
    np.testing.assert_allclose(jitted.probs, clf(params, x, lens).probs, rtol=1e-5, atol=1e-6)


def test_outputs_modes_agree():
    clf, params = M.build()
    x, lens = _batch()
    ref = clf(params, x, lens).probs

    def probs_fn(p, x):
        return jax.nn.softmax(M.MODULE.apply(p, x), axis=-1)

    def log_probs_fn(p, x):
        return jax.nn.log_softmax(M.MODULE.apply(p, x), axis=-1)

    for fn, mode in ((probs_fn, "probs"), (log_probs_fn, "log_probs")):
        c2, p2 = jaxadv.wrap(fn, params, sample_rate=16000, labels=M.LABELS, outputs=mode,
                             chunking=(8000, 4000))  # fmt: skip
        np.testing.assert_allclose(c2(p2, x, lens).probs, ref, rtol=1e-5, atol=1e-6)


def test_deepfool_fools_the_wrapped_model_at_a_finite_snr():
    clf, params = M.build()
    x, lens = _batch()
    y = jnp.array([0, 1], jnp.int32)
    res = A.ATTACKS["deepfool"](clf, params, x, lens, y)
    met = A.evaluate(clf, params, x, lens, y, res)
    assert met.success.all(), met
    assert (np.asarray(met.snr_db) > 0).all() and np.isfinite(met.snr_db).all()
    # the clips' labels flipped: "low" -> "high" and back
    assert np.asarray(met.new_label).tolist() == [1, 0]


def test_a_second_call_does_not_recompile():
    clf, params = M.build()
    x, lens = _batch()
    clf.predict(params, x, lens)
    from jaxadv.adapter import _jit_call

    before = _jit_call._cache_size()
    clf2, params2 = M.build()  # the same objects: the same program
    clf2.predict(params2, x + 0.01, lens)
    assert _jit_call._cache_size() == before


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"labels": ("a",)}, "returns 2 scores per clip but 1 labels were given"),
        ({"labels": ("a", "a")}, "labels must be unique"),
        ({"sample_rate": 0}, "sample_rate must be a positive integer"),
        ({"outputs": "scores"}, "outputs must be one of"),
        ({"chunking": (0, 10)}, "chunking must be (window, hop)"),
    ],
)
def test_bad_arguments_name_the_fix(kwargs, message):
    clf, params = M.build()
    args = {"sample_rate": 16000, "labels": M.LABELS, **kwargs}
    with pytest.raises(WrapError) as e:
        jaxadv.wrap(M.MODULE.apply, params, **args)
    assert message in str(e.value)


def test_an_unhashable_function_is_refused():
    class Unhashable:
        __hash__ = None

        def __call__(self, p, x):
            return x[:, :2]

    with pytest.raises(WrapError, match="must be hashable"):
        jaxadv.wrap(Unhashable(), {}, sample_rate=16000, labels=("a", "b"))


# --- the untargeted command on the wrapped model ----------------------------------------------


def _data(root):
    """An FSDKaggle2018-layout test folder with the model's own labels, recorded at 44.1 kHz
    (so loading resamples to the model's 16 kHz)."""
    audio = root / "audio_test"
    audio.mkdir(parents=True)
    rows = ["fname,label,usage,freesound_id,license"]
    for i, (freq, label) in enumerate([(250, "low"), (400, "low"), (4000, "high"), (6000, "high")]):
        t = np.arange(int(0.8 * 44100)) / 44100
        sf.write(
            audio / f"c{i}.wav", (0.4 * np.sin(2 * np.pi * freq * t)).astype(np.float32), 44100
        )
        rows.append(f"c{i}.wav,{label},Private,{i},CC0")
    (root / "test_post_competition_scoring_clips.csv").write_text("\n".join(rows) + "\n")
    return root


def test_untargeted_command_on_a_wrapped_model(tmp_path, capfd):
    from jaxadv.experiments import untargeted
    from jaxadv.experiments.results import read_run_rows

    data, out = _data(tmp_path / "data"), tmp_path / "run"
    argv = ["--model-fn", f"band={SPEC}", "--data", str(data), "--out", str(out),
            "--per-class", "2", "--set", "cw.max_iterations=20", "--set", "cw.binary_search_steps=2",
            "--set", "fmn.steps=20", "--set", "ddn.steps=20"]  # fmt: skip
    untargeted.main(argv)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["models"]["band"]["sample_rate"] == 16000
    assert cfg["models"]["band"]["labels"] == ["low", "high"]
    assert cfg["models"]["band"]["source"] == {"model_fn": SPEC}
    clean = (out / "clean.csv").read_text().splitlines()
    assert len(clean) == 5 and all(line.endswith(",1") for line in clean[1:])  # all correct
    rows = read_run_rows(out)
    assert rows and {r["model"] for r in rows} == {"band"}
    assert {r["original"] for r in rows} <= {"low", "high"}
    flipped = [r for r in rows if r["attack"] == "deepfool"]
    assert len(flipped) == 4 and all(r["success"] for r in flipped)
    assert all(r["adversarial"] != r["original"] for r in flipped)
    wav = out / flipped[0]["adv_file"]
    assert sf.info(str(wav)).samplerate == 16000
    assert abs(sf.info(str(wav)).frames - int(0.8 * 16000)) <= 1
    # a resume runs nothing more and the tables name the model
    capfd.readouterr()
    untargeted.main(argv)
    assert len(read_run_rows(out)) == len(rows)
    assert (
        "band" in (out / "table2.md").read_text()
        or "band" in (out / "table3a_deepfool.md").read_text()
    )


def test_a_wrapped_model_and_a_demo_model_are_refused_together(tmp_path, capfd):
    from jaxadv.experiments import untargeted

    data = _data(tmp_path / "data")
    with pytest.raises(SystemExit) as e:
        untargeted.main(["--model-fn", f"band={SPEC}", "--models", "band,vgg13", "--data",
                         str(data), "--out", str(tmp_path / "run")])  # fmt: skip
    assert e.value.code == 2
    err = capfd.readouterr().err
    assert "models band and vgg13 have different label lists" in err
    assert "Traceback" not in err and not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("band=tests._custom_model", "expected NAME=MODULE:ATTR"),
        ("band=tests.nope_module:build", "cannot import 'tests.nope_module'"),
        ("band=tests._custom_model:nope", "has no attribute 'nope'"),
        ("band=tests._custom_model:SAMPLE_RATE", "expected a (classifier, params) pair"),
        ("band=tests._custom_model:LABELS", "its classifier has no labels or sample_rate"),
        ("band=tests._custom_model:tone", "calling tone() failed (TypeError"),
        ("band=tests._custom_model:MODULE", "calling MODULE() failed"),
        ("vgg13=tests._custom_model:build", "the name 'vgg13' is taken"),
    ],
)
def test_bad_model_fn_flags_are_one_line(tmp_path, capfd, spec, message):
    from jaxadv.experiments import untargeted

    with pytest.raises(SystemExit) as e:
        untargeted.main(["--model-fn", spec, "--data", str(_data(tmp_path / "d")), "--out",
                         str(tmp_path / "run")])  # fmt: skip
    assert e.value.code == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


# --- an ONNX model through the importer and the adapter ---------------------------------------


def test_an_onnx_model_wrapped_matches_onnxruntime_and_is_attacked(tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")

    path = M.tiny_onnx(tmp_path / "tiny.onnx")
    clf, params = jaxadv.wrap(*jaxadv.from_onnx(path), sample_rate=8000,
                              labels=("a", "b", "c"), chunking=(4000, 4000))  # fmt: skip
    rng = np.random.default_rng(0)
    x = rng.normal(0, 0.3, (2, 8000)).astype(np.float32)
    lens = np.array([8000, 8000], np.int32)
    out = clf(params, x, lens)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ref = sess.run(None, {"x": x.reshape(4, 4000)})[0].reshape(2, 2, 3)
    np.testing.assert_allclose(out.logits, ref, atol=1e-5)
    y = np.asarray(out.probs.argmax(-1))
    res = A.ATTACKS["deepfool"](clf, params, x, lens, y)
    assert np.asarray(A.evaluate(clf, params, x, lens, y, res).success).all()


def test_an_onnx_checkpoint_through_convert_and_the_untargeted_command(tmp_path, capfd):
    pytest.importorskip("onnx")
    from jaxadv.convert.__main__ import main as convert
    from jaxadv.experiments import untargeted
    from jaxadv.experiments.results import read_run_rows

    path = M.tiny_onnx(tmp_path / "tiny.onnx")
    (tmp_path / "labels.txt").write_text("a\nb\nc\n")
    ckpt = tmp_path / "ckpt"
    convert([str(path), str(ckpt), "--labels", str(tmp_path / "labels.txt"), "--sample-rate",
             "8000", "--chunking", "4000,4000"])  # fmt: skip
    printed = capfd.readouterr().out
    assert "parity with onnxruntime" in printed and "Conv x1" in printed
    meta = json.loads((ckpt / "jaxadv.json").read_text())
    assert meta["model"] == "onnx" and meta["sample_rate"] == 8000 and meta["labels"] == list("abc")
    # data labelled by the model's own clean predictions, at 44.1 kHz (resampled to 8 kHz)
    from jaxadv.checkpoint import load_checkpoint

    clf, params, _ = load_checkpoint(ckpt)
    audio = tmp_path / "data" / "audio_test"
    audio.mkdir(parents=True)
    rows = ["fname,label,usage,freesound_id,license"]
    rng = np.random.default_rng(3)
    for i in range(3):
        w = (0.3 * rng.standard_normal(44100)).astype(np.float32)
        sf.write(audio / f"c{i}.wav", w, 44100)
        w8 = clf.load(audio / f"c{i}.wav")
        pred = int(np.asarray(clf(params, w8[None], np.array([len(w8)])).probs).argmax())
        rows.append(f"c{i}.wav,{'abc'[pred]},Private,{i},CC0")
    (tmp_path / "data" / "test_post_competition_scoring_clips.csv").write_text(
        "\n".join(rows) + "\n"
    )
    out = tmp_path / "run"
    untargeted.main(["--models", "tiny", "--checkpoint", f"tiny={ckpt}", "--data",
                     str(tmp_path / "data"), "--out", str(out), "--per-class", "3",
                     "--set", "cw.max_iterations=10", "--set", "cw.binary_search_steps=1",
                     "--set", "fmn.steps=10", "--set", "ddn.steps=10"])  # fmt: skip
    got = read_run_rows(out)
    assert len(got) == 3 * 6 and {r["model"] for r in got} == {"tiny"}
    assert all(r["success"] for r in got if r["attack"] == "deepfool")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["models"]["tiny"]["sample_rate"] == 8000
    # a damaged copy is named
    (ckpt / "model.onnx").write_bytes((ckpt / "model.onnx").read_bytes()[:-10])
    from jaxadv.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="damaged ONNX checkpoint"):
        load_checkpoint(ckpt)


def test_convert_onnx_needs_labels_and_rate(tmp_path, capfd):
    pytest.importorskip("onnx")
    from jaxadv.convert.__main__ import main as convert

    path = M.tiny_onnx(tmp_path / "tiny.onnx")
    with pytest.raises(SystemExit) as e:
        convert([str(path), str(tmp_path / "ckpt")])
    assert e.value.code == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs OUT, --labels and --sample-rate" in err[0], err
    assert not (tmp_path / "ckpt").exists()


def test_the_report_of_a_wrapped_model_run_regenerates(tmp_path):
    from jaxadv import report
    from jaxadv.experiments import untargeted

    data, out = _data(tmp_path / "data"), tmp_path / "run"
    untargeted.main(["--model-fn", f"band={SPEC}", "--data", str(data), "--out", str(out),
                     "--per-class", "1", "--set", "cw.max_iterations=10", "--set",
                     "cw.binary_search_steps=1", "--set", "fmn.steps=10", "--set", "ddn.steps=10",
                     "--no-audio"])  # fmt: skip
    (out / "report.html").unlink()
    report.regenerate(out, progress=False)
    page = (out / "report.html").read_text()
    assert "band" in page
    clean = next((out / "report_files" / "clean").glob("*.flac"))
    assert sf.info(str(clean)).samplerate == 16000  # the players play the model's rate
