"""Waveform augmentation for training: random gain, additive white or coloured noise at a random
SNR, random EQ, small pitch and time shifts, and reverb from synthetic room impulse responses.

Every transform is a pure, jit-able function of one waveform ``[N]`` (float32, 32 kHz), its valid
length and a PRNG key, returning a waveform of the same shape (zero beyond the returned length),
so :func:`augment_batch` vmaps them over a batch inside the jitted training step. Each transform
of :class:`Augment` is applied to an example with probability ``Augment.prob`` (independently per
transform); a strength of 0 switches a transform off. The mixup of Iqbal's recipe mixes the
examples first; the augmentation then applies to the mixed waveform.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp

from jaxadv import config as C

Array = jax.Array

# power spectral slope of each noise colour, in powers of the frequency (PSD ∝ f^-slope):
# white 0 (flat), pink 1 (-3 dB per octave), brown 2 (-6 dB per octave)
NOISE_COLOURS = {"white": 0.0, "pink": 1.0, "brown": 2.0}
EQ_BANDS = 4  # cosine components of the random EQ curve over log frequency
EQ_LOW_HZ = 50.0  # the EQ curve's span: 50 Hz to the Nyquist frequency


@dataclasses.dataclass(frozen=True)
class Augment:
    """Augmentation settings (all off by default). Units: dB, semitones, seconds at 32 kHz.

    Attributes:
      prob: probability that each enabled transform is applied to an example.
      gain_db: random gain uniform in ``[-gain_db, +gain_db]`` dB.
      noise_snr_db: ``(lo, hi)``: additive noise at an SNR uniform in ``[lo, hi]`` dB over the
        example's valid samples; None: off.
      noise_colours: the colours drawn from, uniformly (``white``, ``pink``, ``brown``).
      eq_db: random EQ: a smooth gain curve over log frequency (50 Hz – Nyquist) of
        :data:`EQ_BANDS` cosines whose gains add up to at most ``eq_db`` dB in magnitude.
      pitch_semitones: resampling by ``2^(u/12)``, ``u`` uniform in ``±pitch_semitones``
        (pitch and speed change together; the array keeps its length).
      shift_s: delay by up to this many seconds (zeros first; the array keeps its length).
      reverb_rt60_s: ``(lo, hi)``: convolve with an exponentially decaying noise impulse response
        of RT60 uniform in ``[lo, hi]`` s, the level kept; None: off.
    """

    prob: float = 0.5
    gain_db: float = 0.0
    noise_snr_db: tuple[float, float] | None = None
    noise_colours: tuple[str, ...] = ("white", "pink", "brown")
    eq_db: float = 0.0
    pitch_semitones: float = 0.0
    shift_s: float = 0.0
    reverb_rt60_s: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        def bad(field: str, why: str) -> ValueError:
            return ValueError(f"augment {field} {why}, got {getattr(self, field)!r}")

        if not 0.0 <= self.prob <= 1.0:
            raise bad("prob", "must lie in [0, 1]")
        for f in ("gain_db", "eq_db", "pitch_semitones", "shift_s"):
            v = getattr(self, f)
            if not (math.isfinite(v) and v >= 0):
                raise bad(f, "must be a finite number >= 0")
        if self.pitch_semitones >= 12:
            raise bad("pitch_semitones", "must stay below an octave (12)")
        if self.noise_snr_db is not None:
            lo, hi = self.noise_snr_db
            if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
                raise bad("noise_snr_db", "must be finite (lo, hi) with lo <= hi")
        if not self.noise_colours or any(c not in NOISE_COLOURS for c in self.noise_colours):
            raise bad("noise_colours", f"must be among {sorted(NOISE_COLOURS)}")
        if self.reverb_rt60_s is not None:
            lo, hi = self.reverb_rt60_s
            if not (0 < lo <= hi <= 2.0):
                raise bad("reverb_rt60_s", "must be (lo, hi) with 0 < lo <= hi <= 2 s")

    @property
    def active(self) -> bool:
        """Some transform is on (and may be applied)."""
        return self.prob > 0 and (
            self.gain_db > 0
            or self.noise_snr_db is not None
            or self.eq_db > 0
            or self.pitch_semitones > 0
            or self.shift_s > 0
            or self.reverb_rt60_s is not None
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Augment:
        """From :func:`dataclasses.asdict` output read back from JSON (lists → tuples)."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def _valid(n: int, length: Array) -> Array:
    return jnp.arange(n) < length


def _energy(x: Array, valid: Array) -> Array:
    return jnp.sum(jnp.where(valid, x * x, 0.0))


def gain(x: Array, length: Array, key: Array, max_db: float) -> tuple[Array, Array]:
    """``x · 10^(g/20)``, ``g`` uniform in ``[-max_db, max_db]`` dB."""
    g = jax.random.uniform(key, (), minval=-max_db, maxval=max_db)
    return x * 10.0 ** (g / 20.0), length


def coloured_noise(key: Array, n: int, slope: Array) -> Array:
    """``[n]`` Gaussian noise whose power spectrum falls as ``f^-slope`` (0 white, 1 pink, 2
    brown), shaped in the frequency domain (the DC bin removed), unit variance."""
    z = jax.random.normal(key, (n,))
    spec = jnp.fft.rfft(z)
    f = jnp.fft.rfftfreq(n)
    shape = jnp.where(f > 0, jnp.maximum(f, 1.0 / n) ** (-slope / 2.0), 0.0)
    y = jnp.fft.irfft(spec * shape, n)
    return y / jnp.maximum(jnp.std(y), 1e-12)


def add_noise(
    x: Array, length: Array, key: Array, snr_db: tuple[float, float], slopes: Array
) -> tuple[Array, Array]:
    """``x`` plus noise of a colour drawn from ``slopes`` at an SNR uniform in ``snr_db`` over the
    valid samples: ``‖x‖² / ‖noise‖² = 10^(SNR/10)`` exactly (zero beyond the valid samples)."""
    k1, k2, k3 = jax.random.split(key, 3)
    n = x.shape[0]
    valid = _valid(n, length)
    slope = slopes[jax.random.randint(k1, (), 0, slopes.shape[0])]
    noise = jnp.where(valid, coloured_noise(k2, n, slope), 0.0)
    snr = jax.random.uniform(k3, (), minval=snr_db[0], maxval=snr_db[1])
    scale = jnp.sqrt(_energy(x, valid) / jnp.maximum(_energy(noise, valid), 1e-30))
    return x + noise * scale * 10.0 ** (-snr / 20.0), length


def eq_curve_db(key: Array, n: int, max_db: float) -> Array:
    """``[n // 2 + 1]`` the random EQ's gain in dB at each rFFT bin: ``Σ_k a_k cos(π k u)`` over
    ``u ∈ [0, 1]`` spanning log frequency from :data:`EQ_LOW_HZ` to Nyquist (constant below), with
    ``Σ |a_k| ≤ max_db``."""
    a = jax.random.uniform(key, (EQ_BANDS,), minval=-1.0, maxval=1.0)
    a = a * max_db / EQ_BANDS
    f = jnp.fft.rfftfreq(n, 1.0 / C.SAMPLE_RATE)
    lo, hi = math.log(EQ_LOW_HZ), math.log(C.SAMPLE_RATE / 2)
    u = jnp.clip((jnp.log(jnp.maximum(f, EQ_LOW_HZ)) - lo) / (hi - lo), 0.0, 1.0)
    k = jnp.arange(1, EQ_BANDS + 1)
    return jnp.sum(a[:, None] * jnp.cos(jnp.pi * k[:, None] * u[None, :]), axis=0)


def random_eq(x: Array, length: Array, key: Array, max_db: float) -> tuple[Array, Array]:
    """``x`` filtered by a random smooth EQ curve (:func:`eq_curve_db`), zero-phase, applied in
    the frequency domain."""
    n = x.shape[0]
    g = 10.0 ** (eq_curve_db(key, n, max_db) / 20.0)
    y = jnp.fft.irfft(jnp.fft.rfft(x) * g, n)
    return jnp.where(_valid(n, length), y, 0.0), length


def pitch_shift(x: Array, length: Array, key: Array, max_semitones: float) -> tuple[Array, Array]:
    """Resample by ``r = 2^(u/12)`` (linear interpolation): every frequency times ``r``, the
    duration divided by ``r``; the new length is ``floor(length / r)`` (at most the array's)."""
    n = x.shape[0]
    u = jax.random.uniform(key, (), minval=-max_semitones, maxval=max_semitones)
    r = 2.0 ** (u / 12.0)
    new_len = jnp.minimum(jnp.floor(length / r).astype(jnp.int32), n)
    pos = jnp.arange(n) * r
    i0 = jnp.floor(pos).astype(jnp.int32)
    w = pos - i0
    get = lambda i: jnp.where(i < length, x[jnp.clip(i, 0, n - 1)], 0.0)  # noqa: E731
    y = (1.0 - w) * get(i0) + w * get(i0 + 1)
    return jnp.where(_valid(n, new_len), y, 0.0), new_len


def time_shift(x: Array, length: Array, key: Array, max_samples: int) -> tuple[Array, Array]:
    """Delay by ``s`` samples, ``s`` uniform in ``[0, max_samples]``: zeros first, the end cut at
    the array's length."""
    n = x.shape[0]
    s = jax.random.randint(key, (), 0, max_samples + 1)
    idx = jnp.arange(n) - s
    y = jnp.where(idx >= 0, x[jnp.clip(idx, 0, n - 1)], 0.0)
    return y, jnp.minimum(length + s, n).astype(jnp.int32)


def room_impulse_response(key: Array, n: int, rt60_s: Array) -> Array:
    """``[n]`` a synthetic RIR: a unit direct path, then Gaussian noise decaying by 60 dB over
    ``rt60_s`` (``exp(-6.91 t / rt60)``), the tail's energy equal to the direct path's."""
    t = jnp.arange(n) / C.SAMPLE_RATE
    tail = jax.random.normal(key, (n,)) * jnp.exp(-math.log(1000.0) * t / rt60_s)
    tail = tail.at[0].set(0.0)
    tail = tail / jnp.sqrt(jnp.maximum(jnp.sum(tail * tail), 1e-30))
    return tail.at[0].set(1.0)


def reverb(x: Array, length: Array, key: Array, rt60_s: tuple[float, float]) -> tuple[Array, Array]:
    """``x`` convolved with :func:`room_impulse_response` (linear convolution by FFT, the tail cut
    at the array's length), rescaled to the valid samples' original energy; the reverb tail
    extends the valid length up to the array's."""
    n = x.shape[0]
    k1, k2 = jax.random.split(key)
    rt = jax.random.uniform(k1, (), minval=rt60_s[0], maxval=rt60_s[1])
    h_len = min(n, int(round(rt60_s[1] * C.SAMPLE_RATE)))
    h = room_impulse_response(k2, h_len, rt)
    size = 1 << (n + h_len - 1).bit_length()
    y = jnp.fft.irfft(jnp.fft.rfft(x, size) * jnp.fft.rfft(h, size), size)[:n]
    new_len = jnp.minimum(length + h_len, n).astype(jnp.int32)
    valid_old, valid_new = _valid(n, length), _valid(n, new_len)
    y = jnp.where(valid_new, y, 0.0)
    scale = jnp.sqrt(_energy(x, valid_old) / jnp.maximum(_energy(y, valid_new), 1e-30))
    return y * scale, new_len


def augment_example(x: Array, length: Array, key: Array, cfg: Augment) -> tuple[Array, Array]:
    """One example ``[N]`` through every enabled transform of ``cfg`` (each with probability
    ``cfg.prob``), in the order time shift, pitch, EQ, reverb, gain, noise (noise last, so its
    SNR is relative to what the model hears)."""
    slopes = jnp.array([NOISE_COLOURS[c] for c in cfg.noise_colours], jnp.float32)
    steps = []
    if cfg.shift_s > 0:
        steps.append(lambda x, n, k: time_shift(x, n, k, int(round(cfg.shift_s * C.SAMPLE_RATE))))
    if cfg.pitch_semitones > 0:
        steps.append(lambda x, n, k: pitch_shift(x, n, k, cfg.pitch_semitones))
    if cfg.eq_db > 0:
        steps.append(lambda x, n, k: random_eq(x, n, k, cfg.eq_db))
    if cfg.reverb_rt60_s is not None:
        steps.append(lambda x, n, k: reverb(x, n, k, cfg.reverb_rt60_s))
    if cfg.gain_db > 0:
        steps.append(lambda x, n, k: gain(x, n, k, cfg.gain_db))
    if cfg.noise_snr_db is not None:
        steps.append(lambda x, n, k: add_noise(x, n, k, cfg.noise_snr_db, slopes))
    keys = jax.random.split(key, 2 * max(len(steps), 1))
    for i, step in enumerate(steps):
        y, m = step(x, length, keys[2 * i])
        on = jax.random.uniform(keys[2 * i + 1]) < cfg.prob
        x, length = jnp.where(on, y, x), jnp.where(on, m, length)
    return x, length


def augment_batch(x: Array, lengths: Array, keys: Array, cfg: Augment) -> tuple[Array, Array]:
    """``[B, N]`` waveforms and ``[B]`` lengths through :func:`augment_example`, one key each."""
    return jax.vmap(lambda a, n, k: augment_example(a, n, k, cfg))(
        x.astype(jnp.float32), lengths.astype(jnp.int32), keys
    )
