"""Differentiable log-mel front-ends of the attacked systems, as pure JAX functions.

Three front-ends, each described by one frozen (hashable) config, each a pure function of a
waveform batch ``x: [B, N]`` (float32 samples at 32 kHz, nominally in [-1, 1]) and per-clip valid
lengths ``lengths: [B]`` (int, samples). Samples at or beyond a clip's length are padding: they are
ignored (treated as absent, not as zeros that could shift frames or maxima), so a clip gives the
same features alone or inside a padded batch.

* :class:`IqbalFrontend` (``"iqbal"``): tqbl/dcase2018_task2's training/inference features (librosa
  centred STFT with reflect padding, Slaney mel, ``power_to_db(ref=max)``), chunked into 128-frame
  chunks with Iqbal's ``r_threshold`` rule. ORIGINALS.md §2.1-2.2.
* :class:`IqbalAttackFrontend` (``"iqbal_attack"``): the paper authors' TF graph (clip zero-padded
  to a multiple of 65536 samples, uncentred frames, ``10*log10((M + 1e-6)/(max M + 1e-6))``,
  reshaped into non-overlapping 128-frame chunks). ORIGINALS.md §2.3.
* :class:`KapreFrontend` (``"kapre"``): kapre 0.1.3.1's ``Melspectrogram`` as used by Cochlear's
  dense-mel model (hop 128 with TF 'SAME' padding, magnitude mel, dB minus the maximum, floored at
  -80 dB). ORIGINALS.md §2.4. The batch norms around it belong to the model.

Everything here is differentiable (gradients match finite differences, see the tests) and finite
on an all-zero clip. The mel matrix is computed in NumPy at trace time (no librosa import), with the
same formula as ``librosa.filters.mel(norm="slaney", htk=False)``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxadv import config as C

Array = jax.Array

# ---------------------------------------------------------------------------------------------
# NumPy constants: mel filterbank (Slaney) and periodic Hann window
# ---------------------------------------------------------------------------------------------

_F_SP = 200.0 / 3  # Slaney mel scale: linear part, Hz per mel
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = np.log(6.4) / 27.0


def hz_to_mel(freqs: np.ndarray) -> np.ndarray:
    """Slaney mel scale (librosa ``htk=False``): linear below 1 kHz, logarithmic above."""
    freqs = np.asanyarray(freqs, dtype=np.float64)
    mels = freqs / _F_SP
    log_t = freqs >= _MIN_LOG_HZ
    return np.where(
        log_t, _MIN_LOG_MEL + np.log(np.maximum(freqs, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP, mels
    )


def mel_to_hz(mels: np.ndarray) -> np.ndarray:
    """Inverse of :func:`hz_to_mel`."""
    mels = np.asanyarray(mels, dtype=np.float64)
    freqs = _F_SP * mels
    log_t = mels >= _MIN_LOG_MEL
    return np.where(log_t, _MIN_LOG_HZ * np.exp(_LOGSTEP * (mels - _MIN_LOG_MEL)), freqs)


@functools.lru_cache(maxsize=16)
def mel_filterbank(
    sample_rate: int = C.SAMPLE_RATE,
    n_fft: int = C.IQBAL_N_FFT,
    n_mels: int = C.N_MELS,
    fmin: float = 0.0,
    fmax: float | None = None,
) -> np.ndarray:
    """Slaney-normalised triangular mel filterbank, ``[n_fft // 2 + 1, n_mels]`` float32.

    The transpose of ``librosa.filters.mel(sr, n_fft, n_mels, fmin, fmax, htk=False,
    norm="slaney")`` (librosa 0.6.2's ``norm=1`` is the same normalisation); tests check equality.
    """
    if fmax is None:
        fmax = sample_rate / 2.0
    fftfreqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sample_rate)
    mel_f = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    weights = np.zeros((n_mels, len(fftfreqs)), dtype=np.float32)
    for i in range(n_mels):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    # Slaney normalisation: each filter has unit area in Hz (librosa multiplies in float32 in place).
    weights *= (2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels]))[:, None]
    weights.setflags(write=False)
    return weights.T


@functools.lru_cache(maxsize=8)
def periodic_hann(n: int) -> np.ndarray:
    """Periodic ("fftbins=True") Hann window of length ``n``, float64 like scipy/librosa."""
    w = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)
    w.setflags(write=False)
    return w


# ---------------------------------------------------------------------------------------------
# JAX building blocks
# ---------------------------------------------------------------------------------------------


def as_float(x: Array) -> Array:
    """``x`` as a float array: float64 stays float64 (for gradient checks), anything else is float32."""
    x = jnp.asarray(x)
    return x if x.dtype == jnp.float64 else x.astype(jnp.float32)


def valid_mask(n: int, lengths: Array) -> Array:
    """``[B, n]`` bool, True where ``index < lengths[b]``."""
    return jnp.arange(n)[None, :] < jnp.asarray(lengths)[:, None]


def frame_signal(x: Array, n_fft: int, hop: int, n_frames: int) -> Array:
    """Overlapping frames ``[..., n_frames, n_fft]`` of ``x: [..., M]``, frame t = x[t*hop : t*hop+n_fft].

    Built from shifted block views (``n_fft`` must be a multiple of ``hop``) instead of a gather, so
    the backward pass is a sum of slices, not a scatter. ``x`` is zero-extended if too short.
    """
    if n_fft % hop:
        raise ValueError(f"n_fft={n_fft} must be a multiple of hop={hop}")
    r = n_fft // hop
    n_blocks = n_frames + r - 1
    need = n_blocks * hop
    m = x.shape[-1]
    if m < need:
        x = jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, need - m)])
    blocks = x[..., :need].reshape(*x.shape[:-1], n_blocks, hop)
    return jnp.concatenate([blocks[..., i : i + n_frames, :] for i in range(r)], axis=-1)


def _power_plain(frames: Array) -> Array:
    spec = jnp.fft.rfft(frames, axis=-1)
    return jnp.real(spec) ** 2 + jnp.imag(spec) ** 2


@jax.custom_vjp
def _power_f64(frames: Array, window: Array) -> Array:
    """``|rfft(frames)|**2`` of float32 frames, with the FFT itself run in float64.

    A float32 FFT has an absolute error of a few 1e-7 of the frame's norm in every bin, i.e. up to
    ~5e-3 dB in bins 95 dB below a loud frame's peak; librosa runs its FFT in float64. Running only the
    FFT in float64 (inside the otherwise float32 program) brings the features to float32 rounding.
    The backward pass stays in float32: gradients only need accuracy relative to their own norm.
    """
    return _power_f64_fwd(frames, window)[0]


def _power_f64_fwd(frames: Array, window: Array) -> tuple[Array, tuple[Array, Array]]:
    with jax.enable_x64(True):
        # window (float64) multiplied in float64 too, as librosa does
        spec = jnp.fft.rfft(frames.astype(jnp.float64) * window, axis=-1)
        power = jnp.real(spec) ** 2 + jnp.imag(spec) ** 2
        power = power.astype(frames.dtype)
        spec = spec.astype(jnp.complex64)
    return power, (spec, window.astype(jnp.float32))


def _power_f64_bwd(res: tuple[Array, Array], g: Array) -> tuple[Array, None]:
    # d/dx_n sum_k g_k |X_k|^2 = 2 w_n Re( FFT(g * conj(X))_n ), half spectrum zero-extended.
    spec, window = res
    n = 2 * (spec.shape[-1] - 1)
    y = g.astype(spec.dtype) * jnp.conj(spec)
    y = jnp.pad(y, [(0, 0)] * (y.ndim - 1) + [(0, n - y.shape[-1])])
    return 2.0 * jnp.real(jnp.fft.fft(y, axis=-1)) * window, None


_power_f64.defvjp(_power_f64_fwd, _power_f64_bwd)


def fft_in_float64(precision: str) -> bool:
    """Whether a front-end with ``fft_precision=precision`` runs its FFT in float64.

    ``"auto"`` means float64 everywhere but on TPUs (which have no float64 FFT).
    """
    if precision == "auto":
        return jax.default_backend() != "tpu"
    if precision in ("float64", "float32"):
        return precision == "float64"
    raise ValueError(f"fft_precision must be 'auto', 'float64' or 'float32', got {precision!r}")


def power_spectrum(frames: Array, window: np.ndarray, precision: str = "auto") -> Array:
    """``|rfft(frames * window)|**2``, ``[..., T, n_fft // 2 + 1]``, in the dtype of ``frames``.

    ``precision`` chooses the FFT's arithmetic for float32 frames (see :func:`fft_in_float64`);
    float64 frames always use a plain float64 FFT.
    """
    if frames.dtype == jnp.float32 and fft_in_float64(precision):
        with jax.enable_x64(True):
            w64 = jnp.asarray(window, dtype=jnp.float64)
        return _power_f64(frames, w64)
    return _power_plain(frames * jnp.asarray(window, dtype=frames.dtype))


def masked_max(values: Array, mask: Array) -> Array:
    """Per-example maximum of ``values [B, ...]`` over positions where ``mask`` (broadcastable) holds."""
    neg = jnp.where(mask, values, -jnp.inf)
    out = jnp.max(neg.reshape(neg.shape[0], -1), axis=1)
    # An example with no valid position gets 0 rather than -inf (keeps everything finite).
    return jnp.where(jnp.isfinite(out), out, 0.0)


def reflect_indices(n_out: int, offset: int, lengths: Array) -> Array:
    """Indices ``[B, n_out]`` into each clip for ``np.pad(..., mode="reflect")`` semantics.

    Output position j reads clip sample ``reflect(j - offset)`` where reflection is about the first
    and the last *valid* sample (index ``lengths[b] - 1``), repeated periodically for very short clips
    exactly as NumPy's reflect padding does.
    """
    lengths = jnp.asarray(lengths, jnp.int32)[:, None]
    i = jnp.arange(n_out, dtype=jnp.int32)[None, :] - offset
    period = jnp.maximum(2 * (lengths - 1), 1)
    m = jnp.mod(i, period)
    idx = jnp.where(m < lengths, m, period - m)
    return jnp.where(lengths > 1, idx, 0)


def standardise(x: Array, mean: Array, std: Array) -> Array:
    """Keras ``ImageDataGenerator`` feature-wise standardisation: ``(x - mean) / (std + 1e-6)``."""
    return (x - mean) / (std + C.STANDARDISE_EPS)


class ChunkedFeatures(NamedTuple):
    """Model-ready chunks of a batch of clips.

    Attributes:
      chunks: ``[B, Q, 128, 64]`` log-mel chunks (time, mel), not yet standardised.
      mask: ``[B, Q]`` bool, True for the chunks that belong to the clip.
    """

    chunks: Array
    mask: Array


class FrameFeatures(NamedTuple):
    """Frame-level features of a batch of clips.

    Attributes:
      values: ``[B, T, n_mels]`` log-mel in dB (time, mel).
      mask: ``[B, T]`` bool, True for frames that belong to the clip.
    """

    values: Array
    mask: Array


# ---------------------------------------------------------------------------------------------
# Iqbal et al. (training / inference)
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class IqbalFrontend:
    """tqbl/dcase2018_task2's log-mel (librosa 0.6.2 semantics), ORIGINALS.md §2.1-2.2.

    ``librosa.stft(center=True, pad_mode="reflect", n_fft=1024, hop=512, window="hann")`` →
    ``|D|**2`` → Slaney mel (64 bands, 0-16 kHz) → ``power_to_db(ref=np.max, amin=1e-10,
    top_db=None)`` with the maximum over the whole clip → 128-frame chunks by ``load_features``'
    ``r_threshold`` rule. ``1 + L // 512`` frames per clip of ``L`` samples.
    """

    name = "iqbal"
    sample_rate: int = C.SAMPLE_RATE
    n_fft: int = C.IQBAL_N_FFT
    hop: int = C.IQBAL_HOP
    n_mels: int = C.N_MELS
    fft_precision: str = "auto"  # "auto" (float64 FFT except on TPU), "float64" or "float32"
    amin: float = C.IQBAL_AMIN
    chunk_frames: int = C.CHUNK_FRAMES
    r_threshold: int = C.R_THRESHOLD

    def n_frames(self, n_samples: Array | int) -> Array | int:
        """Frames of a clip of ``n_samples`` samples: ``1 + n // hop``."""
        return 1 + n_samples // self.hop

    def logmel(self, x: Array, lengths: Array) -> FrameFeatures:
        """Log-mel in dB relative to each clip's maximum, ``[B, 1 + N // 512, 64]``."""
        x = as_float(x)
        b, n = x.shape
        lengths = jnp.asarray(lengths, jnp.int32)
        t_max = self.n_frames(n)
        half = self.n_fft // 2
        n_pad = (t_max - 1) * self.hop + self.n_fft
        idx = reflect_indices(n_pad, half, lengths)
        padded = jnp.take_along_axis(x, idx, axis=1)
        frames = frame_signal(padded, self.n_fft, self.hop, t_max)
        power = power_spectrum(frames, periodic_hann(self.n_fft), self.fft_precision)
        mel = power @ jnp.asarray(
            mel_filterbank(self.sample_rate, self.n_fft, self.n_mels), x.dtype
        )
        fmask = valid_mask(t_max, self.n_frames(lengths))
        ref = masked_max(mel, fmask[:, :, None])
        db = 10.0 * jnp.log10(jnp.maximum(self.amin, mel))
        db = db - 10.0 * jnp.log10(jnp.maximum(self.amin, ref))[:, None, None]
        return FrameFeatures(jnp.where(fmask[:, :, None], db, 0.0), fmask)

    def max_chunks(self, n_samples: int) -> int:
        """Static number of chunk slots for a padded length of ``n_samples``."""
        return max(
            1,
            (self.n_frames(n_samples) + self.chunk_frames - self.r_threshold) // self.chunk_frames,
        )

    def chunk(self, feats: FrameFeatures) -> ChunkedFeatures:
        """Iqbal's ``load_features`` chunking rule, per clip, on padded frame features.

        With ``T`` valid frames, ``q = T // 128`` and ``r = T % 128``: ``T < 128`` → one chunk padded
        with the clip's minimum; ``r < r_threshold`` → ``q`` chunks after dropping ``r // 2`` frames
        at the start; otherwise ``q`` chunks from the start plus the last 128 frames.
        """
        values, fmask = feats
        b, t_max, n_mels = values.shape
        cf = self.chunk_frames
        t_valid = jnp.sum(fmask, axis=1).astype(jnp.int32)
        q_slots = max(1, (t_max + cf - self.r_threshold) // cf)
        # Pad with each clip's minimum (Iqbal pads short clips with np.min(feat)); only clips shorter
        # than one chunk ever read these frames.
        vmin = -masked_max(-values, fmask[:, :, None])
        total = max(t_max, cf)
        padded = jnp.where(
            jnp.pad(fmask, ((0, 0), (0, total - t_max)))[:, :, None],
            jnp.pad(values, ((0, 0), (0, total - t_max), (0, 0))),
            vmin[:, None, None],
        )
        q = t_valid // cf
        r = t_valid % cf
        k = jnp.arange(q_slots)[None, :]
        short = t_valid < cf
        drop = r < self.r_threshold
        starts = jnp.where(drop[:, None], r[:, None] // 2 + cf * k, cf * k)
        starts = jnp.where((~drop[:, None]) & (k == q[:, None]), t_valid[:, None] - cf, starts)
        starts = jnp.where(short[:, None], 0, starts)
        n_chunks = jnp.where(short, 1, q + (~drop).astype(jnp.int32))
        cmask = k < n_chunks[:, None]
        starts = jnp.clip(jnp.where(cmask, starts, 0), 0, total - cf)

        def take(clip: Array, start: Array) -> Array:
            return jax.lax.dynamic_slice_in_dim(clip, start, cf, axis=0)

        chunks = jax.vmap(lambda clip, st: jax.vmap(lambda s: take(clip, s))(st))(padded, starts)
        return ChunkedFeatures(chunks, cmask)

    def __call__(self, x: Array, lengths: Array) -> ChunkedFeatures:
        """Waveform ``[B, N]`` → chunks ``[B, Q, 128, 64]`` and chunk mask ``[B, Q]``."""
        return self.chunk(self.logmel(x, lengths))


# ---------------------------------------------------------------------------------------------
# The paper authors' attack front-end
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class IqbalAttackFrontend:
    """The paper authors' TF graph front-end (VinodS7/audio-adversaries), ORIGINALS.md §2.3.

    The clip (valid length ``L``) is zero-padded to ``ceil(L / 65536) * 65536`` samples;
    ``tf.contrib.signal.stft(frame_length=1024, frame_step=512, pad_end=True)`` (uncentred frames,
    zeros after the end) → power → Slaney mel → ``10*log10((M + 1e-6) / (max(M) + 1e-6))`` with the
    maximum over the whole clip → non-overlapping 128-frame chunks.
    """

    name = "iqbal_attack"
    sample_rate: int = C.SAMPLE_RATE
    n_fft: int = C.IQBAL_N_FFT
    hop: int = C.IQBAL_HOP
    n_mels: int = C.N_MELS
    fft_precision: str = "auto"  # "auto" (float64 FFT except on TPU), "float64" or "float32"
    offset: float = C.AUTHORS_LOG_OFFSET
    chunk_frames: int = C.CHUNK_FRAMES

    @property
    def block(self) -> int:
        """Samples per chunk: 128 * 512 = 65536."""
        return self.chunk_frames * self.hop

    def max_chunks(self, n_samples: int) -> int:
        """Static number of chunk slots for a padded length of ``n_samples``."""
        return max(1, -(-n_samples // self.block))

    def __call__(self, x: Array, lengths: Array) -> ChunkedFeatures:
        """Waveform ``[B, N]`` → chunks ``[B, ceil(N / 65536), 128, 64]`` and chunk mask."""
        x = as_float(x)
        b, n = x.shape
        lengths = jnp.asarray(lengths, jnp.int32)
        q_slots = self.max_chunks(n)
        n_pad = q_slots * self.block
        x = jnp.where(valid_mask(n, lengths), x, 0.0)
        x = jnp.pad(x, ((0, 0), (0, n_pad - n + self.n_fft)))
        t = q_slots * self.chunk_frames
        frames = frame_signal(x, self.n_fft, self.hop, t)
        power = power_spectrum(frames, periodic_hann(self.n_fft), self.fft_precision)
        mel = power @ jnp.asarray(
            mel_filterbank(self.sample_rate, self.n_fft, self.n_mels), x.dtype
        )
        n_chunks = jnp.maximum(1, -(-lengths // self.block))
        fmask = valid_mask(t, n_chunks * self.chunk_frames)
        ref = masked_max(mel, fmask[:, :, None])
        db = 10.0 * (jnp.log10(mel + self.offset) - jnp.log10(ref + self.offset)[:, None, None])
        db = jnp.where(fmask[:, :, None], db, 0.0)
        chunks = db.reshape(b, q_slots, self.chunk_frames, self.n_mels)
        return ChunkedFeatures(chunks, jnp.arange(q_slots)[None, :] < n_chunks[:, None])


# ---------------------------------------------------------------------------------------------
# kapre 0.1.3.1 Melspectrogram (Cochlear dense-mel)
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class KapreFrontend:
    """kapre 0.1.3.1 ``Melspectrogram`` as configured by Cochlear.ai, ORIGINALS.md §2.4.

    STFT by convolution with fixed DFT kernels (periodic Hann, n_dft 1024, hop 128, TF 'SAME'
    padding: ``ceil(L / 128)`` frames, ``max((T - 1) * 128 + 1024 - L, 0)`` zeros split floor/ceil
    front/back) → power → Slaney mel → ``sqrt`` (``power_melgram=1``) → ``10*log10(max(x, 1e-10))``
    minus the clip's maximum → floored at -80 dB.

    The dB value is computed as ``5*log10(max(P, 1e-20))`` on the mel power ``P``, which equals
    ``10*log10(max(sqrt(P), 1e-10))`` exactly but has a finite gradient at ``P = 0`` (silence).
    kapre 0.1.3.1 takes the maximum over the whole batch tensor; here it is per clip, which is what
    the original gives for batch size 1 (as the attacks ran it).
    """

    name = "kapre"
    sample_rate: int = C.SAMPLE_RATE
    n_fft: int = C.KAPRE_N_FFT
    hop: int = C.KAPRE_HOP
    n_mels: int = C.N_MELS
    fft_precision: str = "auto"  # "auto" (float64 FFT except on TPU), "float64" or "float32"
    amin: float = C.KAPRE_AMIN
    dynamic_range: float = C.KAPRE_DYNAMIC_RANGE

    def n_frames(self, n_samples: Array | int) -> Array | int:
        """Frames of a clip of ``n_samples`` samples: ``ceil(n / hop)`` (TF 'SAME')."""
        return -(-n_samples // self.hop)

    def pad_front(self, n_samples: Array) -> Array:
        """Zeros TF 'SAME' padding puts before a clip of ``n_samples`` samples."""
        total = (self.n_frames(n_samples) - 1) * self.hop + self.n_fft - n_samples
        return jnp.maximum(total, 0) // 2

    def __call__(self, x: Array, lengths: Array) -> FrameFeatures:
        """Waveform ``[B, N]`` → dB mel ``[B, ceil(N / 128), 64]`` (time, mel) and frame mask."""
        x = as_float(x)
        b, n = x.shape
        lengths = jnp.asarray(lengths, jnp.int32)
        t_max = self.n_frames(n)
        x = jnp.where(valid_mask(n, lengths), x, 0.0)
        lead = self.n_fft  # > any 'SAME' front pad
        m = (t_max - 1) * self.hop + self.n_fft
        xp = jnp.pad(x, ((0, 0), (lead, m)))
        starts = lead - self.pad_front(lengths)
        shifted = jax.vmap(lambda row, s: jax.lax.dynamic_slice_in_dim(row, s, m))(xp, starts)
        frames = frame_signal(shifted, self.n_fft, self.hop, t_max)
        power = power_spectrum(frames, periodic_hann(self.n_fft), self.fft_precision)
        mel = power @ jnp.asarray(
            mel_filterbank(self.sample_rate, self.n_fft, self.n_mels), x.dtype
        )
        fmask = valid_mask(t_max, self.n_frames(lengths))
        db = 5.0 * jnp.log10(jnp.maximum(mel, self.amin**2))
        db = db - masked_max(db, fmask[:, :, None])[:, None, None]
        db = jnp.maximum(db, -self.dynamic_range)
        return FrameFeatures(jnp.where(fmask[:, :, None], db, 0.0), fmask)


FRONTENDS: dict[str, type] = {
    IqbalFrontend.name: IqbalFrontend,
    IqbalAttackFrontend.name: IqbalAttackFrontend,
    KapreFrontend.name: KapreFrontend,
}


def get_frontend(name: str, **overrides) -> IqbalFrontend | IqbalAttackFrontend | KapreFrontend:
    """Build a front-end config by name (``"iqbal"``, ``"iqbal_attack"``, ``"kapre"``)."""
    try:
        cls = FRONTENDS[name]
    except KeyError:
        raise ValueError(f"unknown front-end {name!r}; choose one of {sorted(FRONTENDS)}") from None
    return cls(**overrides)


# ---------------------------------------------------------------------------------------------
# Clip-level merging and length bucketing
# ---------------------------------------------------------------------------------------------


def merge_chunks(probs: Array, mask: Array, mode: str = "mean") -> Array:
    """Merge per-chunk probabilities ``[B, Q, C]`` into clip-level ``[B, C]`` over valid chunks.

    ``mode="mean"``: arithmetic mean of the chunk softmaxes, as every attack script of the paper
    decides (ORIGINALS.md §2.3). ``mode="gmean"``: Iqbal's inference merge,
    ``scipy.stats.gmean(p + 1e-8)`` (not renormalised).
    """
    w = mask.astype(probs.dtype)[:, :, None]
    count = jnp.maximum(jnp.sum(w, axis=1), 1.0)
    if mode == "mean":
        return jnp.sum(probs * w, axis=1) / count
    if mode == "gmean":
        return jnp.exp(jnp.sum(jnp.log(probs + C.GMEAN_EPS) * w, axis=1) / count)
    raise ValueError(f"unknown merge mode {mode!r}; use 'mean' or 'gmean'")


def bucket_length(n_samples: int) -> int:
    """Smallest length of the bucket ladder (multiples of 65536 samples) that holds ``n_samples``.

    Padding every clip to one of these lengths means a sweep over thousands of clips of any length
    compiles about a dozen programs, with at most 50 % padding beyond the first rung.
    """
    if n_samples <= 0:
        raise ValueError(f"a clip must have at least one sample, got {n_samples}")
    for f in C.BUCKET_FACTORS:
        if n_samples <= f * C.BUCKET_BASE:
            return f * C.BUCKET_BASE
    return -(-n_samples // C.BUCKET_BASE) * C.BUCKET_BASE
