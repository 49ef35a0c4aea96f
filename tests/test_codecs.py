"""Codec round trips (length, alignment, PCM quantisation, determinism, clear errors), the BPDA
gradient through a host codec, and the compression experiment's rows, tables and figure."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxadv import codecs as K
from jaxadv.classifier import LinearClassifier
from jaxadv.experiments import compression, results
from tests.test_experiments import FAST, snapshot


def noisy_clicks(n: int, clicks: list[int], seed: int = 0) -> np.ndarray:
    x = 0.003 * np.random.default_rng(seed).standard_normal(n).astype(np.float32)
    x[clicks] = 0.8
    return x


@pytest.mark.parametrize("name", list(K.CODECS))
def test_a_round_trip_keeps_length_and_alignment(name):
    # odd and bucket lengths; clicks near both ends and in the middle stay at their samples
    for n in (20011, 48000):
        clicks = [2500, n // 2, n - 2500]
        x = noisy_clicks(n, clicks)
        y = K.roundtrip(x[None], None, name)[0]
        assert y.shape == x.shape and y.dtype == np.float32
        # the stated tolerance: exact for PCM; ±2 samples (62 µs) for the band-limited lossy
        # codecs, whose low-pass smears a click over a few samples
        tol = 2 if K.get(name).lossy else 0
        for k in clicks:
            window = np.abs(y[k - 400 : k + 400])
            assert abs(int(window.argmax()) - 400) <= tol, (name, n, k)
            assert window.max() > 0.2  # the click is still there, not smeared away
        xc = np.correlate(y, x, "full")  # the whole clip is not delayed either
        assert abs(int(xc.argmax()) - (n - 1)) <= tol
        np.testing.assert_array_equal(K.roundtrip(x[None], None, name)[0], y)  # deterministic


def edge_values(bits: int) -> np.ndarray:
    """Values around grid points (within 2^-32 and beyond), halves, the box edges."""
    step = 2.0 ** -(bits - 1)
    k = np.array([-32768, -1001, -5, -1, 0, 1, 5, 1000, 32767]) * (2.0 ** (16 - bits))
    off = np.array([-0.75, -0.5, -1e-4, -2**-32 * 1.01 / step, -2**-32 * 0.99 / step, 0.0,
                    2**-32 * 0.99 / step, 1e-4, 0.5, 0.75])  # fmt: skip
    v = ((k[:, None] + off[None, :]) * step).ravel()
    return np.concatenate([v, [-1.5, -1.0, 1.0, 1.5, 2**-33, -(2**-33)]]).astype(np.float32)


@pytest.mark.parametrize(("name", "bits"), [("pcm16", 16), ("pcm24", 24)])
def test_pcm_is_numpy_quantisation(name, bits):
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.uniform(-1.2, 1.2, 12000), rng.normal(0, 1e-5, 4000),
                        edge_values(bits)]).astype(np.float32)[None]  # fmt: skip
    np.testing.assert_array_equal(K.roundtrip(x, None, name), K.quantize_pcm(x, bits))
    inside = np.clip(x, -1, 1 - 2.0**-23)
    assert np.abs(K.quantize_pcm(inside, bits) - inside).max() <= 2.0 ** -(bits - 1)


def test_only_valid_samples_go_through_and_padding_stays_zero():
    x = np.random.default_rng(2).standard_normal((3, 6000)).astype(np.float32) * 0.1
    lens = np.array([6000, 3000, 0])
    y = K.roundtrip(x, lens, "mp3-128")
    assert (y[1, 3000:] == 0).all() and (y[2] == 0).all()
    np.testing.assert_array_equal(y[1, :3000], K.get("mp3-128").roundtrip_clip(x[1, :3000]))


def test_bad_codecs_are_named():
    with pytest.raises(K.CodecError, match="unknown codec 'mp4'.*choose from"):
        K.get("mp4")
    bad = K.Codec("mp3-too-small", "MP3", "MPEG_LAYER_III", 1.0, "CONSTANT")
    with pytest.raises(K.CodecError, match="mp3-too-small.*cannot write MP3/MPEG_LAYER_III"):
        K.roundtrip(np.zeros((1, 100), np.float32), None, bad)


def test_measured_bit_rates_follow_the_settings():
    x = [np.random.default_rng(3).standard_normal(64000).astype(np.float32) * 0.1]
    rates = {c: K.measure_kbps(c, x) for c in ("mp3-320", "mp3-128", "mp3-40", "pcm16")}
    assert rates["pcm16"] == pytest.approx(512, rel=0.01)  # 16 bits × 32 kHz + header
    assert rates["mp3-320"] > rates["mp3-128"] > rates["mp3-40"]
    # constant bit-rate plus LAME's header frame (a few % on a 2 s clip)
    assert 128 < rates["mp3-128"] < 140 and 40 < rates["mp3-40"] < 46


def test_bpda_is_the_codec_forward_and_the_identity_backward():
    x = np.random.default_rng(4).standard_normal((2, 8000)).astype(np.float32) * 0.1
    lens = jnp.array([8000, 5000])
    w = jnp.asarray(np.random.default_rng(5).standard_normal((2, 8000)), jnp.float32)
    fwd = jax.jit(lambda v: K.bpda(v, lens, "mp3-96"))(jnp.asarray(x))
    np.testing.assert_array_equal(np.asarray(fwd), K.roundtrip(x, np.asarray(lens), "mp3-96"))
    g = jax.grad(lambda v: jnp.sum(w * K.bpda(v, lens, "mp3-96")))(jnp.asarray(x))
    np.testing.assert_array_equal(np.asarray(g), np.asarray(w))  # the identity's gradient


@pytest.mark.parametrize("name", ["pcm16", "pcm24"])
def test_pcm_in_jax_equals_the_file_round_trip_and_passes_gradients_straight(name):
    rng = np.random.default_rng(7)
    bits = 16 if name == "pcm16" else 24
    x = np.concatenate([rng.uniform(-1.1, 1.1, 5000), rng.normal(0, 1e-5, 2000),
                        edge_values(bits)]).astype(np.float32)  # fmt: skip
    x = np.stack([x, x[::-1]])
    lens = jnp.array([x.shape[1]] * 2)
    got = jax.jit(lambda v: K.bpda(v, lens, name))(jnp.asarray(x))
    np.testing.assert_array_equal(np.asarray(got), K.roundtrip(x, None, name))
    g = jax.grad(lambda v: jnp.sum(3.0 * K.bpda(v, lens, name)))(jnp.asarray(x))
    assert float(jnp.abs(g - 3.0).max()) == 0.0


def test_a_classifier_through_codecs_is_eot_with_bpda_gradients():
    n, c = 4000, 3
    rng = np.random.default_rng(6)
    params = {"w": jnp.asarray(rng.standard_normal((n, c)) * 0.01, jnp.float32),
              "b": jnp.zeros(c)}  # fmt: skip
    clf = LinearClassifier()
    x = jnp.asarray(rng.standard_normal((2, n)) * 0.1, jnp.float32)
    lens = jnp.array([n, n])
    eot = K.through(clf, "pcm16", "mp3-128")
    assert hash(eot) == hash(K.through(clf, "pcm16", "mp3-128"))  # a static jit argument
    out = jax.jit(eot)(params, x, lens)
    outs = [clf(params, jnp.asarray(K.roundtrip(np.asarray(x), None, c)), lens)
            for c in ("pcm16", "mp3-128")]  # fmt: skip
    np.testing.assert_allclose(out.logits, (outs[0].logits + outs[1].logits) / 2, atol=1e-5)
    np.testing.assert_allclose(out.probs, (outs[0].probs + outs[1].probs) / 2, atol=1e-6)
    # linear model: the BPDA gradient of a logit is its weight column, whatever the codec does
    g = jax.grad(lambda v: jnp.sum(eot(params, v, lens).logits[:, 0, 1]))(x)
    np.testing.assert_allclose(np.asarray(g), np.broadcast_to(params["w"][:, 1], (2, n)),
                               rtol=1e-5)  # fmt: skip


def test_the_compression_experiment_rows_tables_figure_and_resume(tmp_path, untargeted_run):
    src = untargeted_run.out
    before = snapshot(src)
    out = tmp_path / "c"
    codecs = "pcm16,pcm24,mp3-128"
    argv = ["--out", str(out), *FAST, "--data", untargeted_run.data, "--models",
            ",".join(untargeted_run.models), "--from-untargeted", str(src), "--codecs", codecs,
            "--no-progress"]  # fmt: skip
    compression.run(compression.build_parser().parse_args(argv))
    assert snapshot(src) == before  # the source run is only read
    rows = results.read_rows(out / compression.FILE, compression.SCHEMA)
    src_rows = results.read_rows(src / "results.csv")
    ok = [r for r in src_rows if r["success"]]
    clean = [r for r in rows if r["attack"] == compression.CLEAN]
    assert len(rows) - len(clean) == 3 * len(ok) > 0  # every successful example × codec
    n_correct = sum(1 for line in (src / "clean.csv").read_text().splitlines()[1:]
                    if line.endswith(",1"))  # fmt: skip
    assert len(clean) == 3 * n_correct
    for r in rows:  # lossless 24-bit keeps the clean clip correct; the SNR columns add up
        if r["codec"] == "pcm24":
            assert r["clean_correct"] == 1 and r["snr_db_codec"] > 120
        if r["codec"] == "pcm16":
            assert math.isinf(r["snr_db_codec"])  # the demo clips are 16-bit files
    # the table (and the figure, which plots survival()) recomputed from the rows
    surv = {
        (m, a, c): (n, s) for m, a, c, _, n, s, *_ in compression.survival(rows, codecs.split(","))
    }
    table = (out / "compression_survival.csv").read_text().splitlines()[1:]
    assert len(table) == len(surv)
    for m, a, c in surv:
        g = [r for r in rows if (r["model"], r["attack"], r["codec"]) == (m, a, c)]
        assert surv[(m, a, c)] == (len(g), pytest.approx(100 * np.mean([r["survived"] for r in g])))
    for r in rows:
        if r["attack"] != compression.CLEAN and r["target"] == "":
            assert r["survived"] == int(r["prediction"] != r["label"])
    assert (out / "figure_compression.png").stat().st_size > 10000
    assert 'data-stem="compression_summary"' in (out / "report.html").read_text()
    # resume: nothing is recomputed or written twice
    text = (out / compression.FILE).read_text()
    compression.run(compression.build_parser().parse_args(argv))
    assert (out / compression.FILE).read_text() == text


def test_compression_flags_are_checked(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        compression.main(["--out", str(tmp_path / "c"), "--codecs", "mp3-128,flac"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--codecs: unknown ['flac']" in err[0]
    with pytest.raises(SystemExit):
        compression.main(["--out", str(tmp_path / "c"), "--from-untargeted", "a",
                          "--from-targeted", "b"])  # fmt: skip
    assert "not both" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()
