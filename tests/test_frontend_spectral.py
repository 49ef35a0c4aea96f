"""The ``stft`` and ``cqt`` front-ends: parity with librosa, chunking, batching, jit, gradients,
silence, the classifier built on them, and config errors."""

from __future__ import annotations

import functools
import json
import warnings

import jax
import jax.numpy as jnp
import librosa
import numpy as np
import pytest

from jaxadv import checkpoint, models
from jaxadv import config as C
from jaxadv import frontend as F
from jaxadv.classifier import Classifier
from tests.test_frontend import make_signal, np_load_features

SR = C.SAMPLE_RATE


def to_db(power: np.ndarray) -> np.ndarray:
    """``librosa.power_to_db(ref=np.max, amin=1e-10, top_db=None)``."""
    return librosa.power_to_db(power, ref=np.max, amin=1e-10, top_db=None)


@functools.partial(jax.jit, static_argnums=0)
def _frames(fe, x, lengths):
    return fe.frame_features(x, lengths)


def frames_of(fe, x, lengths):
    """Frame features and mask as NumPy, through one compiled program per front-end and shape
    (eager execution compiles every primitive on its own: minutes instead of seconds here)."""
    out = _frames(fe, jnp.asarray(x), jnp.asarray(lengths))
    return np.asarray(out.values), np.asarray(out.mask)


# --------------------------------------------------------------------------- stft


STFT_PARITY_DB = 1e-3  # all frames, cells within 80 dB of the clip maximum


@pytest.mark.parametrize("seconds", [0.7, 2.3])
def test_stft_matches_librosa(seconds):
    x = make_signal(int(seconds * SR))
    d = librosa.stft(
        x.astype(np.float64), n_fft=1024, hop_length=512, window="hann", pad_mode="reflect"
    )
    ref = librosa.amplitude_to_db(np.abs(d), ref=np.max, top_db=None).T  # [T, 513]
    np.testing.assert_allclose(ref, to_db(np.abs(d) ** 2).T, atol=1e-9)  # the same dB values
    ours, mask = frames_of(F.StftFrontend(), x[None], jnp.array([len(x)]))
    assert ours.shape == (1, 1 + len(x) // 512, 513) and mask.all()
    assert ref.min() < -100  # the test signal spans the dynamic range that matters
    diff = np.abs(ours[0] - ref)
    assert diff[ref > -80].max() <= STFT_PARITY_DB, diff[ref > -80].max()
    # librosa computes its two edge frames separately, with ~1e-8 of the maximum of noise of its
    # own; inside, the bound is float32 rounding
    assert diff[2:-2][ref[2:-2] > -100].max() <= 1e-4
    # drop_nyquist: 512 rows, the maximum over the kept ones
    ours512, _ = frames_of(F.StftFrontend(drop_nyquist=True), x[None], jnp.array([len(x)]))
    ref512 = to_db(np.abs(d[:-1]) ** 2).T
    assert ours512.shape[-1] == 512
    assert np.abs(ours512[0] - ref512)[ref512 > -80].max() <= STFT_PARITY_DB
    np.testing.assert_allclose(
        F.StftFrontend().frequencies(), librosa.fft_frequencies(sr=SR, n_fft=1024)
    )


# --------------------------------------------------------------------------- cqt


def librosa_cqt_full_rate(y: np.ndarray, fe: F.CqtFrontend, pad_mode: str) -> np.ndarray:
    """librosa.vqt's per-octave response (``filters.wavelet`` basis, non-negative half of its FFT
    times a ``window="ones"`` centred STFT, ``scale=True``) at 32 kHz for every octave, in float64:
    ``librosa.cqt`` without its recursive 2x downsampling. ``[n_bins, T]`` complex."""
    freqs = librosa.cqt_frequencies(n_bins=fe.n_bins, fmin=fe.fmin, bins_per_octave=12)
    out = np.zeros((fe.n_bins, 1 + len(y) // 512), np.complex128)
    hi = fe.n_bins
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "n_fft too large for input signal": padded, as wanted
        while hi > 0:
            lo = max(0, hi - 12)
            basis, lengths = librosa.filters.wavelet(
                freqs=freqs[lo:hi], sr=SR, pad_fft=True, dtype=np.complex128
            )
            n_fft = basis.shape[1]
            fft_basis = np.fft.fft(basis * (lengths[:, None] / n_fft), axis=1)[:, : n_fft // 2 + 1]
            d = librosa.stft(y, n_fft=n_fft, hop_length=512, window="ones", pad_mode=pad_mode)
            out[lo:hi] = fft_basis @ d / np.sqrt(lengths)[:, None]
            hi = lo
    return out


CQT_PARITY_DB = 1e-4  # vs the full-rate librosa formula, cells within 80 dB of the maximum


def test_cqt_frequencies_and_lengths_are_librosas():
    fe = F.CqtFrontend()
    freqs = librosa.cqt_frequencies(n_bins=96, fmin=librosa.note_to_hz("C1"), bins_per_octave=12)
    np.testing.assert_allclose(fe.frequencies(), freqs, rtol=1e-12)
    lengths, cutoff = librosa.filters.wavelet_lengths(freqs=freqs, sr=SR)
    ours, our_cut = F.cqt_lengths(SR, fe.fmin, 96, 12)
    np.testing.assert_allclose(ours, lengths, rtol=1e-12)
    assert our_cut == pytest.approx(cutoff, rel=1e-12)
    octaves = fe.kernels()
    assert [o.n_fft for o in octaves] == [256, 512, 1024, 2048, 4096, 8192, 16384, 32768]
    assert all(o.weights.shape[1] == 512 for o in octaves)


@pytest.mark.parametrize(
    "seconds, n_bins, pad_mode",
    [(0.3, 96, "constant"), (2.3, 96, "constant"), (1.1, 84, "reflect")],
)
def test_cqt_matches_librosa_formula_at_full_rate(seconds, n_bins, pad_mode):
    x = make_signal(int(seconds * SR), seed=4)
    fe = F.CqtFrontend(n_bins=n_bins, pad_mode=pad_mode)
    ref = to_db(np.abs(librosa_cqt_full_rate(x.astype(np.float64), fe, pad_mode)) ** 2).T
    ours, mask = frames_of(fe, x[None], jnp.array([len(x)]))
    assert ours.shape == (1, 1 + len(x) // 512, n_bins) and mask.all()
    diff = np.abs(ours[0] - ref)[ref > -80]
    assert diff.max() <= CQT_PARITY_DB, diff.max()


def test_cqt_is_close_to_librosa_cqt():
    """librosa.cqt downsamples by 2 per octave and samples the filters at the lower rates: the
    same response at each bin's own centre frequency (< 1e-5 dB), ~0.03 dB half a bin off, and a
    few dB in cells near deep nulls. For this signal (librosa 0.11, sparsity=0, cells within 60 dB
    of the maximum): median 0.15 dB, 99th percentile 1.5 dB, max 2.6 dB. librosa's default
    sparsity=0.01 adds up to ~30 dB in quiet cells."""
    x = make_signal(int(2.3 * SR)).astype(np.float64)
    fe = F.CqtFrontend()
    ref = librosa.cqt(
        x, sr=SR, hop_length=512, fmin=fe.fmin, n_bins=96, bins_per_octave=12, sparsity=0
    )
    ref = to_db(np.abs(ref) ** 2).T
    ours, _ = frames_of(fe, x[None].astype(np.float32), jnp.array([len(x)]))
    assert ours.shape[1:] == ref.shape
    diff = np.abs(ours[0] - ref)[ref > -60]
    assert np.median(diff) <= 0.2 and np.quantile(diff, 0.99) <= 2.0 and diff.max() <= 3.5


# --------------------------------------------------------------------------- shared properties

SPECTRAL = [F.StftFrontend(), F.CqtFrontend(), F.CqtFrontend(pad_mode="reflect", n_bins=84)]
IDS = ["stft", "cqt", "cqt_reflect84"]


@pytest.mark.parametrize("fe", SPECTRAL[:2], ids=IDS[:2])
def test_chunking_is_iqbals_rule(fe):
    n = 300 * 512  # 301 frames: two chunks plus a remainder chunk
    x = make_signal(n, seed=5)
    vals, _ = frames_of(fe, x[None], jnp.array([n]))
    got = jax.jit(fe)(x[None], jnp.array([n]))
    ref = np_load_features(vals[0])
    assert got.chunks.shape == (1, fe.max_chunks(n), 128, vals.shape[-1])
    assert int(got.mask.sum()) == len(ref) == 3
    np.testing.assert_array_equal(np.asarray(got.chunks[0, : len(ref)]), ref)


@pytest.mark.parametrize("fe", SPECTRAL, ids=IDS)
def test_padded_batch_equals_each_clip_alone_jit_equals_eager(fe):
    lens = [9000, 40_001, 23_000]
    n = max(lens) + 3000
    clips = [make_signal(k, seed=i) for i, k in enumerate(lens)]
    batch = np.stack([np.pad(c, (0, n - len(c))) for c in clips])
    batch[0, lens[0] :] = 0.9  # garbage in the padding must not leak into the features
    lengths = jnp.array(lens)
    batched, mask = frames_of(fe, batch, lengths)
    assert mask.sum(1).tolist() == [1 + k // 512 for k in lens]
    assert not np.where(mask[:, :, None], 0, batched).any()  # frames past a clip are zero
    # each clip on its own: under vmap (one clip per call), and the first one, whose padding
    # holds garbage, at its exact length, eagerly
    vmap = jax.jit(jax.vmap(lambda a, b: fe.frame_features(a[None], b[None]).values[0]))
    np.testing.assert_allclose(vmap(batch, lengths), batched, rtol=0, atol=1e-4)
    k = int(mask[0].sum())
    eager = fe.frame_features(clips[0][None], jnp.array([lens[0]])).values[0]
    np.testing.assert_allclose(eager, batched[0, :k], rtol=0, atol=1e-4)


@pytest.mark.parametrize("fe", SPECTRAL[:2], ids=IDS[:2])
def test_gradients_match_finite_differences(fe):
    """Directional derivatives in float64 against central differences."""
    with jax.enable_x64(True):
        n = 6000
        rng = np.random.default_rng(3)
        x = make_signal(n, seed=3).astype(np.float64) + 0.01 * rng.standard_normal(n)
        x = jnp.asarray(x)[None]
        lens = jnp.array([n])
        w = jnp.asarray(rng.standard_normal(frames_of(fe, x, lens)[0].shape))

        @jax.jit
        def loss(a):
            return jnp.sum(w * fe.frame_features(a, lens).values)

        g = jax.jit(jax.grad(loss))(x)
        for _ in range(3):
            d = jnp.asarray(rng.standard_normal(x.shape))
            # single bins reach ~110 dB below the maximum here (spectral nulls), where dB is very
            # curved: a small step keeps the O(h^2) error of the difference below 1e-6
            h = 3e-8
            fd = (loss(x + h * d) - loss(x - h * d)) / (2 * h)
            an = jnp.sum(g * d)
            assert abs(float(fd - an)) <= 1e-4 * max(1.0, abs(float(an))), (float(fd), float(an))


@pytest.mark.parametrize("fe", SPECTRAL[:2], ids=IDS[:2])
def test_float32_gradient_agrees_with_float64(fe):
    """The float32 program (float64 forward, float32 custom backward) against float64 autodiff."""
    n = 6000
    x = make_signal(n, seed=6)
    lens = jnp.array([n])
    w = np.random.default_rng(6).standard_normal(frames_of(fe, x[None], lens)[0].shape)

    def loss(a):
        return jnp.sum(jnp.asarray(w, a.dtype) * fe.frame_features(a, lens).values)

    g32 = np.asarray(jax.jit(jax.grad(loss))(jnp.asarray(x)[None]))
    with jax.enable_x64(True):
        g64 = np.asarray(jax.jit(jax.grad(loss))(jnp.asarray(x, jnp.float64)[None]))
    assert g32.dtype == np.float32
    assert np.linalg.norm(g32 - g64) <= 1e-4 * np.linalg.norm(g64)


@pytest.mark.parametrize("fe", SPECTRAL[:2], ids=IDS[:2])
def test_silence_has_finite_features_and_gradients(fe):
    x = jnp.zeros((2, 20_000))
    lens = jnp.array([20_000, 12_000])
    vals = jax.jit(fe)(x, lens).chunks
    assert bool(jnp.all(jnp.isfinite(vals)))
    g = jax.jit(jax.grad(lambda a: jnp.sum(fe(a, lens).chunks)))(x)
    assert bool(jnp.all(jnp.isfinite(g)))


# --------------------------------------------------------------------------- registry, classifier


def test_registry_and_sidecar_round_trip():
    assert isinstance(F.get_frontend("stft"), F.StftFrontend)
    assert F.get_frontend("cqt", n_bins=84).n_bins == 84
    assert F.feature_bins(F.get_frontend("stft", drop_nyquist=True)) == 512
    assert F.feature_bins(F.IqbalFrontend()) == 64
    for name in ("stft", "cqt"):
        clf = Classifier.build("vgg13", width=0.125, frontend=name)
        meta = json.loads(json.dumps(checkpoint.describe(clf)))
        assert checkpoint.classifier_from_meta(meta) == clf


@pytest.mark.parametrize("name, rows", [("stft", 513), ("cqt", 96)])
def test_vgg13_on_the_new_front_ends(name, rows):
    clf = Classifier.build("vgg13", width=0.125, frontend=name)
    params = clf.init_params(jax.random.key(0, impl="rbg"))
    # The Iqbal models are convolutional with global pooling: their params do not depend on the
    # number of frequency rows, so the 64-row initialisation serves every front-end.
    shapes = jax.eval_shape(
        lambda k: clf.module().init(k, jnp.zeros((1, 128, rows, 1))), jax.random.key(0)
    )
    assert jax.tree.map(lambda a: a.shape, shapes) == jax.tree.map(jnp.shape, params["model"])
    assert F.feature_bins(clf.frontend) == rows
    n = 100_000  # 196 frames: two chunks; the 30000-sample clip has one
    lens = jnp.array([n, 30_000])
    x = jnp.asarray(np.stack([make_signal(n, 7), np.pad(make_signal(30_000, 8), (0, n - 30_000))]))
    out = jax.jit(clf)(params, x, lens)
    assert out.logits.shape == (2, 2, 41) and out.mask.tolist() == [[True, True], [True, False]]
    assert out.probs.shape == (2, 41) and bool(jnp.all(jnp.isfinite(out.probs)))
    g = jax.jit(jax.grad(lambda a: jnp.sum(clf(params, a, lens).logits[:, 0])))(x)
    assert bool(jnp.all(jnp.isfinite(g))) and float(jnp.abs(g).max()) > 0
    assert not bool(jnp.any(g[1, 30_000:]))  # the padding has no influence


def test_bad_configs_raise_clear_errors():
    bad = [
        (F.StftFrontend, {"n_fft": 1000}, "multiple of hop"),
        (F.StftFrontend, {"hop": 0}, "hop must be a positive"),
        (F.StftFrontend, {"amin": 0.0}, "amin must be positive"),
        (F.StftFrontend, {"r_threshold": 200}, "r_threshold must lie in"),
        (F.StftFrontend, {"fft_precision": "float16"}, "fft_precision must be one of"),
        (F.CqtFrontend, {"n_bins": 0}, "must be positive"),
        (F.CqtFrontend, {"fmin": -1.0}, "must be positive"),
        (F.CqtFrontend, {"n_bins": 110}, "above the Nyquist frequency"),
        (F.CqtFrontend, {"pad_mode": "edge"}, "pad_mode must be"),
        (F.CqtFrontend, {"precision": "half"}, "precision must be one of"),
        (F.CqtFrontend, {"chunk_frames": 0}, "chunk_frames must be positive"),
    ]
    for cls, kw, msg in bad:
        with pytest.raises(ValueError, match=msg):
            cls(**kw)
    with pytest.raises(ValueError, match="needs a chunking front-end"):
        Classifier(models.get_config("vgg13"), F.KapreFrontend())
    with pytest.raises(ValueError, match="at least 32 frequency rows"):
        Classifier(models.get_config("vgg13"), F.CqtFrontend(n_bins=24))
