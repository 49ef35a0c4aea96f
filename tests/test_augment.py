"""Training augmentation: each transform's effect on a known signal (gain in dB, the SNR and colour
of the added noise, the EQ's bound, the pitch shift's frequency ratio, the delay, the reverb's
level and tail), lengths and shapes kept, jit == eager, the config checks, and a training run with
augmentation that resumes exactly."""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxadv import config as C
from jaxadv.train import augment as G

N = 32768
SR = C.SAMPLE_RATE


def sine(f: float, n: int = N, amp: float = 0.3) -> jnp.ndarray:
    return jnp.asarray(amp * np.sin(2 * np.pi * f * np.arange(n) / SR), jnp.float32)


def energy(x, n):
    x = np.asarray(x, np.float64)[: int(n)]
    return float(np.sum(x * x))


def peak_hz(x, n):
    x = np.asarray(x, np.float64)[: int(n)]
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return np.fft.rfftfreq(len(x), 1 / SR)[np.argmax(spec)]


@pytest.mark.parametrize("seed", range(4))
def test_gain_is_within_its_range_in_db(seed):
    x = sine(440.0)
    y, n = G.gain(x, jnp.int32(N), jax.random.key(seed), 6.0)
    db = 10 * np.log10(energy(y, N) / energy(x, N))
    assert -6.0 - 1e-4 <= db <= 6.0 + 1e-4 and int(n) == N
    # the ratio is the same at every sample: a pure gain
    np.testing.assert_allclose(np.asarray(y)[1:100] / np.asarray(x)[1:100], 10 ** (db / 20), 1e-4)


@pytest.mark.parametrize("colour", ["white", "pink", "brown"])
def test_noise_is_added_at_the_drawn_snr_and_has_its_colour(colour):
    x = sine(1000.0)
    length = jnp.int32(N - 5000)
    x = jnp.where(jnp.arange(N) < length, x, 0.0)
    slopes = jnp.array([G.NOISE_COLOURS[colour]])
    for seed in range(3):
        y, n = G.add_noise(x, length, jax.random.key(seed), (15.0, 25.0), slopes)
        noise = np.asarray(y - x)
        snr = 10 * np.log10(energy(x, length) / energy(noise, length))
        assert 15.0 - 1e-3 <= snr <= 25.0 + 1e-3 and int(n) == int(length)
        assert np.all(noise[int(length) :] == 0.0)
    # the colour: the power spectrum's slope per octave (white 0, pink -3, brown -6 dB)
    z = np.asarray(G.coloured_noise(jax.random.key(9), 1 << 18, slopes[0]), np.float64)
    spec = np.abs(np.fft.rfft(z)) ** 2
    f = np.fft.rfftfreq(len(z), 1 / SR)
    bands = [np.mean(spec[(f >= lo) & (f < 2 * lo)]) for lo in (250, 500, 1000, 2000, 4000)]
    slope = np.polyfit(np.arange(5), 10 * np.log10(bands), 1)[0]
    assert slope == pytest.approx(-3.0 * G.NOISE_COLOURS[colour], abs=0.4)
    assert np.std(z) == pytest.approx(1.0, rel=1e-3)


def test_eq_gain_is_bounded_and_applied_as_drawn():
    key = jax.random.key(3)
    curve = np.asarray(G.eq_curve_db(key, N, 12.0))
    assert np.all(np.abs(curve) <= 12.0 + 1e-4) and np.ptp(curve) > 0.5
    # a sine at a bin frequency comes out scaled by the curve's gain at that bin
    k = 1024
    f = k * SR / N
    y, _ = G.random_eq(sine(f), jnp.int32(N), key, 12.0)
    got = 10 * np.log10(energy(y, N) / energy(sine(f), N))
    assert got == pytest.approx(curve[k], abs=0.05)


@pytest.mark.parametrize("seed", range(3))
def test_pitch_shift_scales_the_frequency_and_the_length(seed):
    half = N // 2  # room in the array for a longer (lower) result
    x = jnp.where(jnp.arange(N) < half, sine(500.0), 0.0)
    y, n = G.pitch_shift(x, jnp.int32(half), jax.random.key(seed), 2.0)
    r = half / int(n)  # the drawn resampling ratio, from the new length
    assert 2 ** (-2 / 12) - 1e-3 <= r <= 2 ** (2 / 12) + 1e-3
    assert y.shape == (N,) and np.all(np.asarray(y)[int(n) :] == 0.0)
    assert peak_hz(y, int(n)) == pytest.approx(500.0 * r, rel=0.01)


def test_time_shift_delays_the_signal():
    x = sine(300.0)
    length = jnp.int32(20000)
    x = jnp.where(jnp.arange(N) < length, x, 0.0)
    y, n = G.time_shift(x, length, jax.random.key(1), 4000)
    s = int(n) - int(length)
    assert 0 <= s <= 4000 and y.shape == (N,)
    np.testing.assert_array_equal(np.asarray(y)[s : s + 20000], np.asarray(x)[:20000])
    assert np.all(np.asarray(y)[:s] == 0.0)


def test_reverb_keeps_the_level_and_adds_a_tail():
    length = jnp.int32(8000)
    x = jnp.where(jnp.arange(N) < length, sine(700.0), 0.0)
    y, n = G.reverb(x, length, jax.random.key(2), (0.2, 0.4))
    assert int(n) == min(8000 + int(round(0.4 * SR)), N) and y.shape == (N,)
    assert energy(y, n) == pytest.approx(energy(x, length), rel=1e-4)
    tail = np.asarray(y)[8000 : 8000 + 3200]  # 100 ms after the end: the room still rings
    assert energy(tail, len(tail)) > 1e-4 * energy(x, length)
    h = np.asarray(G.room_impulse_response(jax.random.key(0), 16000, 0.3))
    assert h[0] == 1.0 and np.sum(h[1:] ** 2) == pytest.approx(1.0, rel=1e-5)
    # decays by 60 dB over RT60: the energy 0.3 s in is ~1e-6 of the start's (per sample)
    early = np.mean(h[1:321] ** 2)
    late = np.mean(h[9600 - 160 : 9600 + 160] ** 2)
    assert 10 * np.log10(late / early) == pytest.approx(-60.0, abs=6.0)


def test_augment_batch_keeps_shapes_is_deterministic_and_jit_equals_eager():
    cfg = G.Augment(prob=1.0, gain_db=6, noise_snr_db=(20, 30), eq_db=6, pitch_semitones=1,
                    shift_s=0.05, reverb_rt60_s=(0.1, 0.3))  # fmt: skip
    # hashable (a static jit argument) and back from its JSON form unchanged
    assert (
        cfg.active and G.Augment.from_dict(json.loads(json.dumps(dataclasses.asdict(cfg)))) == cfg
    )
    x = jnp.stack([sine(220.0), sine(440.0), sine(880.0)])
    lengths = jnp.array([N, 20000, 30000], jnp.int32)
    x = jnp.where(jnp.arange(N)[None] < lengths[:, None], x, 0.0)
    keys = jax.random.split(jax.random.key(5), 3)
    y1, n1 = G.augment_batch(x, lengths, keys, cfg)
    y2, n2 = jax.jit(G.augment_batch, static_argnums=3)(x, lengths, keys, cfg)
    assert y1.shape == x.shape and np.all(np.isfinite(np.asarray(y1)))
    np.testing.assert_allclose(np.asarray(y1), np.asarray(y2), atol=1e-5)
    np.testing.assert_array_equal(np.asarray(n1), np.asarray(n2))
    for b in range(3):
        assert np.all(np.asarray(y1)[b, int(n1[b]) :] == 0.0) and int(n1[b]) <= N
    # prob 0 (or nothing enabled) changes nothing
    off, _ = G.augment_batch(x, lengths, keys, G.Augment(prob=0.0, gain_db=6))
    np.testing.assert_array_equal(np.asarray(off), np.asarray(x))
    assert not G.Augment().active


@pytest.mark.parametrize(
    "kw, msg",
    [
        ({"prob": 1.5}, "prob must lie in"),
        ({"gain_db": -1}, "gain_db must be a finite number"),
        ({"noise_snr_db": (30, 10)}, "noise_snr_db must be finite"),
        ({"noise_colours": ("blue",)}, "noise_colours must be among"),
        ({"pitch_semitones": 12}, "below an octave"),
        ({"reverb_rt60_s": (0.0, 1.0)}, "reverb_rt60_s must be"),
    ],
)
def test_bad_augment_settings_name_the_field(kw, msg):
    with pytest.raises(ValueError, match=msg):
        G.Augment(**kw)


def test_training_with_augmentation_resumes_exactly_and_old_configs_still_match(tmp_path):
    from jaxadv import datasets as D
    from jaxadv.checkpoint import load_checkpoint
    from jaxadv.train import TrainConfig, fit, split_train_val

    root = _make_tiny(tmp_path / "fsd")
    clips = D.read_train(root)
    aug = G.Augment(prob=0.5, gain_db=6, noise_snr_db=(10, 30), reverb_rt60_s=(0.1, 0.3))
    cfg = TrainConfig("vgg13", width=1 / 32, epochs=2, batch_size=4, save_every=2,
                      val_fraction=0.0, seed=5, augment=aug)  # fmt: skip
    train, _ = split_train_val(clips, val_fold=None, val_fraction=0.0, seed=5)
    fit(cfg, train, tmp_path / "straight", progress=False)
    x = np.load(tmp_path / "straight" / "examples" / "x.npy", mmap_mode="r")
    assert x.shape[1] == C.AUTHORS_BLOCK  # waveform segments: the step computes the features
    spe = json.loads((tmp_path / "straight" / "train.json").read_text())["steps_per_epoch"]
    fit(cfg, train, tmp_path / "killed", stop_after=spe + 1, progress=False)
    fit(cfg, train, tmp_path / "killed", progress=False)  # resumes: the config's tuples match
    _, a, meta = load_checkpoint(tmp_path / "straight" / "model")
    _, b, _ = load_checkpoint(tmp_path / "killed" / "model")
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))
    assert TrainConfig.from_dict(meta["training"]) == cfg


def _make_tiny(root):
    import soundfile as sf

    (root / C.TRAIN_AUDIO_DIR).mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for k, label in enumerate(("Cello", "Oboe", "Snare_drum")):
        for i in range(4):
            n = int(44100 * (0.6 + 0.2 * i))
            t = np.arange(n) / 44100
            x = 0.3 * np.sin(2 * np.pi * 220 * (k + 1) * t) + 0.02 * rng.standard_normal(n)
            name = f"{k}{i:07d}.wav"
            sf.write(root / C.TRAIN_AUDIO_DIR / name, x.astype(np.float32), 44100, "PCM_16")
            rows.append(f"{name},{label},1")
    (root / C.TRAIN_CSV).write_text("fname,label,manually_verified\n" + "\n".join(rows) + "\n")
    return root


@pytest.mark.parametrize(
    "flags, message",
    [
        (
            ["--aug-noise-snr", "30,10"],
            "augment noise_snr_db must be finite (lo, hi) with lo <= hi",
        ),
        (["--aug-noise-snr", "loud"], "expected two numbers LO,HI"),
        (["--aug-noise-colours", "white,blue"], "augment noise_colours must be among"),
    ],
)
def test_train_command_rejects_bad_augmentation_flags_in_one_line(tmp_path, capsys, flags, message):
    from jaxadv.train.__main__ import main

    root = _make_tiny(tmp_path / "fsd")
    with pytest.raises(SystemExit) as e:
        main(["--model", "vgg13", "--data", str(root), "--out", str(tmp_path / "r"), *flags])
    assert e.value.code == 2
    text = capsys.readouterr().err
    err = text.strip().splitlines()
    # a bad value is one error line (argparse's own errors follow its usage lines), no traceback
    assert message in err[-1] and "Traceback" not in text, err
    assert not (tmp_path / "r").exists()
