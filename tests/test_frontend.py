"""Front-ends: parity with librosa and with NumPy transcriptions of the originals, gradients,
silence, variable lengths, jit == eager, batched == one-by-one."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import librosa
import numpy as np
import pytest
import scipy.signal
import scipy.stats

from jaxadv import config as C
from jaxadv import frontend as F

SR = C.SAMPLE_RATE


def make_signal(n: int, seed: int = 0) -> np.ndarray:
    """A decaying chirp over a low noise floor: a wide (>80 dB) dynamic range, like real audio."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SR
    x = 0.4 * np.sin(2 * np.pi * (180 * t + 900 * t**2)) * np.exp(-1.5 * t)
    x += 0.05 * np.sin(2 * np.pi * 3000 * t) * (t < t[-1] / 2)
    x += 1e-4 * rng.standard_normal(n)
    return x.astype(np.float32)


# --------------------------------------------------------------------------- NumPy references


def librosa_logmel(x: np.ndarray) -> np.ndarray:
    """tqbl/dcase2018_task2's LogmelExtractor, computed by librosa in float64 (the reference)."""
    d = librosa.stft(x.astype(np.float64), n_fft=1024, hop_length=512, pad_mode="reflect")
    s = np.dot(librosa.filters.mel(sr=SR, n_fft=1024, n_mels=64), np.abs(d) ** 2).T
    return librosa.power_to_db(s, ref=np.max, top_db=None)


def np_load_features(feat: np.ndarray, chunk_size: int = 128, r_threshold: int = 32) -> np.ndarray:
    """Transcription of tqbl/dcase2018_task2 task2/features.py:load_features for one clip."""
    q, r = len(feat) // chunk_size, len(feat) % chunk_size
    if not q:
        pad = np.full((chunk_size - len(feat), feat.shape[1]), np.min(feat))
        return np.concatenate([feat, pad])[None]
    off = r // 2 if r < r_threshold else 0
    split = np.split(feat[off : q * chunk_size + off], q)
    if r >= r_threshold:
        split.append(feat[-chunk_size:])
    return np.stack(split)


def np_authors_frontend(x: np.ndarray) -> np.ndarray:
    """ORIGINALS.md §2.3 in float64 NumPy: pad to 65536k, TF stft(pad_end), power, mel, log, chunks."""
    block = 128 * 512
    r = len(x) % block
    if r:
        x = np.pad(x, (0, block - r))
    x = np.pad(x.astype(np.float64), (0, 1024))  # pad_end zeros
    n_frames = (len(x) - 1024) // 512
    frames = np.stack([x[512 * t : 512 * t + 1024] for t in range(n_frames)])
    win = scipy.signal.get_window("hann", 1024, fftbins=True)
    power = np.abs(np.fft.rfft(frames * win, axis=-1)) ** 2
    mel = power @ librosa.filters.mel(sr=SR, n_fft=1024, n_mels=64).T
    db = 10 * (np.log(mel + 1e-6) - np.log(mel.max() + 1e-6)) / np.log(10)
    return db.reshape(-1, 128, 64)


def np_kapre(x: np.ndarray) -> np.ndarray:
    """kapre 0.1.3.1 Melspectrogram (TF 'SAME' conv STFT, ORIGINALS.md §2.4) in float64 NumPy."""
    n = len(x)
    n_frames = math.ceil(n / 128)
    total = max((n_frames - 1) * 128 + 1024 - n, 0)
    xp = np.pad(x.astype(np.float64), (total // 2, total - total // 2))
    win = scipy.signal.get_window("hann", 1024, fftbins=True)
    k = np.arange(513)[:, None] * np.arange(1024)[None, :]
    real = np.cos(2 * np.pi * k / 1024) * win
    imag = -np.sin(2 * np.pi * k / 1024) * win
    frames = np.stack([xp[128 * t : 128 * t + 1024] for t in range(n_frames)])
    power = (frames @ real.T) ** 2 + (frames @ imag.T) ** 2
    mel = np.sqrt(power @ librosa.filters.mel(sr=SR, n_fft=1024, n_mels=64).T)
    db = 10 * np.log10(np.maximum(mel, 1e-10))
    db = db - db.max()
    return np.maximum(db, -80.0)


# --------------------------------------------------------------------------- constants


def test_mel_filterbank_equals_librosa():
    ours = F.mel_filterbank(SR, 1024, 64)
    ref = librosa.filters.mel(sr=SR, n_fft=1024, n_mels=64, htk=False, norm="slaney").T
    assert ours.shape == (513, 64) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-9)


def test_window_is_periodic_hann():
    ref = scipy.signal.get_window("hann", 1024, fftbins=True)
    np.testing.assert_allclose(F.periodic_hann(1024), ref, rtol=0, atol=1e-15)


@pytest.mark.parametrize("n", [1, 2, 3, 7, 600, 1500])
def test_reflect_indices_match_numpy_pad(n):
    x = np.arange(n, dtype=np.float32) + 1
    pad = 512
    ref = np.pad(x, (pad, pad), mode="reflect") if n > 1 else np.full(n + 2 * pad, x[0])
    idx = F.reflect_indices(n + 2 * pad, pad, jnp.array([n]))
    np.testing.assert_array_equal(x[np.asarray(idx[0])], ref)


# --------------------------------------------------------------------------- iqbal


# The parity number quoted in the docs: max |ours - librosa(float64)| over bins within 100 dB of
# the clip maximum. float32 FFTs bound it; librosa itself in float32 differs by similar amounts.
IQBAL_PARITY_DB = 1e-4


@pytest.mark.parametrize("seconds", [0.7, 2.3, 5.01])
def test_iqbal_logmel_matches_librosa(seconds):
    x = make_signal(int(seconds * SR))
    ours = F.IqbalFrontend().logmel(x[None], jnp.array([len(x)]))
    ref = librosa_logmel(x)
    assert ours.values.shape[1] == ref.shape[0] == 1 + len(x) // 512
    assert ref.min() < -80  # the test signal spans the dynamic range that matters
    diff = np.abs(np.asarray(ours.values[0]) - ref)[ref > -100]
    assert diff.max() <= IQBAL_PARITY_DB, diff.max()


@pytest.mark.parametrize("n_frames", [40, 128, 150, 159, 160, 256, 257, 300, 383])
def test_iqbal_chunking_matches_load_features(n_frames):
    rng = np.random.default_rng(n_frames)
    t_max = 400
    feat = rng.normal(size=(t_max, 64)).astype(np.float32)
    mask = np.arange(t_max) < n_frames
    fe = F.IqbalFrontend()
    got = fe.chunk(
        F.FrameFeatures(
            jnp.asarray(np.where(mask[:, None], feat, 0))[None], jnp.asarray(mask)[None]
        )
    )
    ref = np_load_features(feat[:n_frames])
    n = int(got.mask[0].sum())
    assert n == len(ref)
    assert got.chunks.shape[1] == fe.max_chunks((t_max - 1) * 512)
    np.testing.assert_array_equal(np.asarray(got.chunks[0, :n]), ref)


def test_iqbal_chunk_slots_cover_every_shorter_clip():
    """The static slot count for a padded length bounds the chunk count of every shorter clip."""
    fe = F.IqbalFrontend()
    for n in range(1000, 2_000_000, 4999):
        slots = fe.max_chunks(n)
        t_max = fe.n_frames(n)
        worst = max(
            len(np_load_features(np.zeros((t, 1)))) for t in range(max(1, t_max - 300), t_max + 1)
        )
        assert worst <= slots
        assert len(np_load_features(np.zeros((t_max, 1)))) == slots


# --------------------------------------------------------------------------- iqbal_attack


@pytest.mark.parametrize("n", [20_000, 65536, 100_000])
def test_iqbal_attack_matches_numpy_transcription(n):
    x = make_signal(n, seed=1)
    got = F.IqbalAttackFrontend()(x[None], jnp.array([n]))
    ref = np_authors_frontend(x)
    assert got.chunks.shape[1:] == ref.shape and bool(got.mask.all())
    np.testing.assert_allclose(np.asarray(got.chunks[0]), ref, rtol=0, atol=1e-4)


# --------------------------------------------------------------------------- kapre


@pytest.mark.parametrize("n", [5000, 32000, 40_961])
def test_kapre_matches_numpy_transcription(n):
    x = make_signal(n, seed=2)
    got = F.KapreFrontend()(x[None], jnp.array([n]))
    ref = np_kapre(x)
    assert got.values.shape[1:] == ref.shape and bool(got.mask.all())
    # Above the -80 dB floor; the floor itself is exact.
    np.testing.assert_allclose(np.asarray(got.values[0]), ref, rtol=0, atol=1e-4)


# --------------------------------------------------------------------------- merging, buckets


def test_merge_chunks_mean_and_gmean():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(5), size=(2, 3)).astype(np.float32)
    mask = np.array([[True, True, False], [True, False, False]])
    mean = F.merge_chunks(jnp.asarray(p), jnp.asarray(mask), "mean")
    gmean = F.merge_chunks(jnp.asarray(p), jnp.asarray(mask), "gmean")
    for b in range(2):
        rows = p[b][mask[b]]
        np.testing.assert_allclose(mean[b], rows.mean(0), rtol=1e-6)
        np.testing.assert_allclose(gmean[b], scipy.stats.gmean(rows + 1e-8, axis=0), rtol=1e-5)
    with pytest.raises(ValueError, match="merge mode"):
        F.merge_chunks(jnp.asarray(p), jnp.asarray(mask), "median")


def test_bucket_length_ladder():
    seen = set()
    for n in [1, 1000, 65536, 65537, 200_000, 32000 * 30, 5_000_000]:
        b = F.bucket_length(n)
        assert b >= n and b % C.AUTHORS_BLOCK == 0
        if n > C.BUCKET_BASE:
            assert b <= 1.5 * n + C.BUCKET_BASE
        seen.add(b)
    # every FSDKaggle2018 length (0.3 s to 30 s) falls into a handful of programs
    lengths = {F.bucket_length(n) for n in range(int(0.3 * SR), 30 * SR, 997)}
    assert len(lengths) <= 10
    with pytest.raises(ValueError, match="at least one sample"):
        F.bucket_length(0)


def test_get_frontend_registry():
    assert isinstance(F.get_frontend("kapre"), F.KapreFrontend)
    assert F.get_frontend("iqbal", r_threshold=16).r_threshold == 16
    with pytest.raises(ValueError, match="unknown front-end 'mfcc'"):
        F.get_frontend("mfcc")


# --------------------------------------------------------------------------- shared properties

FRONTENDS = [F.IqbalFrontend(), F.IqbalAttackFrontend(), F.KapreFrontend()]


def features(fe, x, lengths):
    out = fe(x, lengths)
    return out[0], out[1]


@pytest.mark.parametrize("fe", FRONTENDS, ids=lambda f: f.name)
def test_variable_length_batch_equals_each_clip_alone(fe):
    lens = [9000, 70_001, 41_000]
    n = max(lens) + 3000
    clips = [make_signal(k, seed=i) for i, k in enumerate(lens)]
    batch = np.stack([np.pad(c, (0, n - len(c))) for c in clips])
    # garbage in the padding must not leak into the features
    batch[0, lens[0] :] = 0.9
    vals, mask = features(fe, batch, jnp.array(lens))
    for i, c in enumerate(clips):
        v1, m1 = features(fe, c[None], jnp.array([len(c)]))
        k = int(m1[0].sum())
        assert int(mask[i].sum()) == k
        np.testing.assert_allclose(vals[i, :k], v1[0, :k], rtol=0, atol=1e-4)


@pytest.mark.parametrize("fe", FRONTENDS, ids=lambda f: f.name)
def test_jit_equals_eager_and_batch_equals_loop(fe):
    x = np.stack([make_signal(30_000, seed=s) for s in range(3)])
    lens = jnp.array([30_000, 25_000, 30_000])
    eager, _ = features(fe, x, lens)
    jitted, _ = jax.jit(lambda a, b: features(fe, a, b))(x, lens)
    np.testing.assert_allclose(eager, jitted, rtol=0, atol=1e-4)
    for i in range(3):
        one, _ = features(fe, x[i : i + 1], lens[i : i + 1])
        np.testing.assert_allclose(eager[i], one[0], rtol=0, atol=1e-4)


@pytest.mark.parametrize("fe", FRONTENDS, ids=lambda f: f.name)
def test_silent_clip_has_finite_features_and_gradients(fe):
    x = jnp.zeros((2, 20_000))
    lens = jnp.array([20_000, 12_000])
    vals, _ = features(fe, x, lens)
    assert bool(jnp.all(jnp.isfinite(vals)))
    g = jax.grad(lambda a: jnp.sum(features(fe, a, lens)[0]))(x)
    assert bool(jnp.all(jnp.isfinite(g)))


@pytest.mark.parametrize("fe", FRONTENDS, ids=lambda f: f.name)
def test_gradients_match_finite_differences(fe):
    """Directional derivatives in float64 against central differences (the log is smooth here)."""
    with jax.enable_x64(True):
        n = 6000
        rng = np.random.default_rng(3)
        x = jnp.asarray(make_signal(n, seed=3).astype(np.float64) + 0.01 * rng.standard_normal(n))[
            None
        ]
        lens = jnp.array([n])
        w = jnp.asarray(rng.standard_normal(features(fe, x, lens)[0].shape))

        def loss(a):
            v, _ = features(fe, a, lens)
            # avoid the kinks of the -80 dB floor and of the max reference
            return jnp.sum(w * v)

        g = jax.grad(loss)(x)
        for _ in range(3):
            d = jnp.asarray(rng.standard_normal(x.shape))
            h = 1e-6
            fd = (loss(x + h * d) - loss(x - h * d)) / (2 * h)
            an = jnp.sum(g * d)
            assert abs(float(fd - an)) <= 1e-4 * max(1.0, abs(float(an))), (float(fd), float(an))


def test_iqbal_logmel_matches_librosa_on_the_real_demo_clips():
    """Parity on real recorded audio: all 156 demo clips in one padded batch (one compilation)."""
    from jaxadv import audio, demo

    clips = demo.eval_clips()
    waves = [audio.load_audio(c.path) for c in clips]
    n = max(len(w) for w in waves)
    batch = np.stack([np.pad(w, (0, n - len(w))) for w in waves])
    lens = np.array([len(w) for w in waves])
    ours = np.asarray(F.IqbalFrontend().logmel(batch, jnp.asarray(lens)).values)
    worst = 0.0
    for i, w in enumerate(waves):
        ref = librosa_logmel(w)
        diff = np.abs(ours[i, : len(ref)] - ref)[ref > -100]
        worst = max(worst, float(diff.max()))
    assert worst <= IQBAL_PARITY_DB, worst
