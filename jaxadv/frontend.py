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
* :class:`StftFrontend` (``"stft"``): the linear-frequency log-power spectrogram (513 bins) of
  Iqbal's STFT, with Iqbal's dB reference and chunking; for models trained on it.
* :class:`CqtFrontend` (``"cqt"``): a constant-Q log-power spectrogram (librosa's CQT filters, 96
  bins from C1 at 12 per octave, hop 512), with the same frames, dB reference and chunking.

Everything here is differentiable (gradients match finite differences, see the tests) and finite
on an all-zero clip. The mel matrix and the CQT weights are computed in NumPy at trace time (no
librosa import), with the same formulas as ``librosa.filters.mel(norm="slaney", htk=False)`` and
``librosa.filters.wavelet``.
"""

from __future__ import annotations

import abc
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


CQT_FMIN = 32.70319566257483  # Hz, C1 (librosa.note_to_hz("C1"), librosa.cqt's default fmin)
CQT_N_BINS = 96  # 8 octaves at 12 bins per octave: C1 (32.7 Hz) to B8 (7.9 kHz)
CQT_BINS_PER_OCTAVE = 12
_HANN_BANDWIDTH = 1.50018310546875  # librosa.filters.window_bandwidth("hann"), in FFT bins


def cqt_frequencies(fmin: float, n_bins: int, bins_per_octave: int) -> np.ndarray:
    """Centre frequencies ``fmin * 2**(k / bins_per_octave)`` in Hz, ``[n_bins]`` float64."""
    return fmin * 2.0 ** (np.arange(n_bins) / bins_per_octave)


def cqt_lengths(
    sample_rate: int, fmin: float, n_bins: int, bins_per_octave: int, filter_scale: float = 1.0
) -> tuple[np.ndarray, float]:
    """Filter lengths ``Q * sr / f_k`` (fractional samples, ``[n_bins]``) and the highest frequency
    any filter's main lobe reaches (Hz), as ``librosa.filters.wavelet_lengths`` (``gamma=0``)."""
    freqs = cqt_frequencies(fmin, n_bins, bins_per_octave)
    # librosa's relative bandwidth of a geometric frequency grid, constant over the bins
    alpha = (2.0 ** (2.0 / bins_per_octave) - 1) / (2.0 ** (2.0 / bins_per_octave) + 1)
    q = filter_scale / alpha
    return q * sample_rate / freqs, float(np.max(freqs * (1 + 0.5 * _HANN_BANDWIDTH / q)))


class CqtOctave(NamedTuple):
    """The CQT weights of one octave of bins, for the frame ``y[t*hop - n_fft/2 :][:r*hop]``.

    Attributes:
      lo, hi: the bins ``[lo, hi)`` of the octave.
      n_fft: the octave's FFT size (power of two >= its longest filter), samples.
      weights: ``[r, hop, 2 * (hi - lo)]`` float64, real parts then imaginary parts; rows at and
        beyond ``n_fft`` (when ``r * hop > n_fft``) are zero.
    """

    lo: int
    hi: int
    n_fft: int
    weights: np.ndarray


@functools.lru_cache(maxsize=8)
def cqt_kernels(
    sample_rate: int = C.SAMPLE_RATE,
    hop: int = C.IQBAL_HOP,
    fmin: float = CQT_FMIN,
    n_bins: int = CQT_N_BINS,
    bins_per_octave: int = CQT_BINS_PER_OCTAVE,
    filter_scale: float = 1.0,
) -> tuple[CqtOctave, ...]:
    """Time-domain weights of librosa's CQT (``librosa.vqt`` with ``gamma=0``) at the full rate.

    librosa groups the bins by octave (from the top, ``bins_per_octave`` at a time) and, per
    octave, builds ``filters.wavelet`` (periodic-Hann-windowed complex exponentials of length
    ``Q sr / f_k``, L1-normalised, centred in ``n_fft`` = the next power of two), scales them by
    ``L_k / n_fft``, keeps the non-negative half of their FFT and multiplies it with the
    ``window="ones"`` STFT of the signal; ``scale=True`` then divides by ``sqrt(L_k)``. That linear
    map of each centred ``n_fft``-sample frame is written here as one complex weight vector per
    bin, ``H_k[j] = sum_{f <= n_fft/2} B_k[f] exp(-2 pi i f j / n_fft) / sqrt(L_k)``, computed in
    float64. Unlike librosa, every octave runs at the full sample rate: librosa's recursive 2x
    downsampling (of the signal, and the filters sampled at the lower rates) is all that
    separates the two (see :class:`CqtFrontend` and the tests for the numbers).
    """
    lengths, _ = cqt_lengths(sample_rate, fmin, n_bins, bins_per_octave, filter_scale)
    freqs = cqt_frequencies(fmin, n_bins, bins_per_octave)
    octaves = []
    hi = n_bins
    while hi > 0:
        lo = max(0, hi - bins_per_octave)
        n_fft = int(2.0 ** np.ceil(np.log2(lengths[lo:hi].max())))
        r = -(-n_fft // hop)
        h = np.zeros((r * hop, hi - lo), np.complex128)
        for c, k in enumerate(range(lo, hi)):
            ilen = lengths[k]
            n = np.arange(-ilen // 2, ilen // 2, dtype=np.float64)  # ceil(L) taps, as librosa
            sig = np.exp(2j * np.pi * freqs[k] / sample_rate * n) * periodic_hann(len(n))
            sig /= np.sum(np.abs(sig))
            basis = np.zeros(n_fft, np.complex128)
            start = (n_fft - len(n)) // 2  # librosa.util.pad_center
            basis[start : start + len(n)] = sig * (ilen / n_fft)
            half = np.zeros(n_fft, np.complex128)
            half[: n_fft // 2 + 1] = np.fft.fft(basis)[: n_fft // 2 + 1]
            h[:n_fft, c] = np.fft.fft(half) / np.sqrt(ilen)
        w = np.concatenate([h.real, h.imag], axis=1).reshape(r, hop, 2 * (hi - lo))
        w.setflags(write=False)
        octaves.append(CqtOctave(lo, hi, n_fft, w))
        hi = lo
    return tuple(octaves)


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


_HIGHEST = jax.lax.Precision.HIGHEST  # no TF32/bf16 passes on GPUs/TPUs for these dots


def _correlate_plain(blocks: Array, weights: Array, n_frames: int) -> Array:
    """``out[b, t] = sum_i blocks[b, t + i] @ weights[i]``, ``[B, n_frames, c]``.

    A strided correlation as one matmul (a 1-D conv is far slower in float64 on CPUs) plus a
    diagonal sum done by reshapes, not ``r`` shifted slices (fewer ops, faster to compile).
    """
    b, n, _ = blocks.shape
    r, _, c = weights.shape
    if r == 1:
        return jnp.einsum("bnh,hc->bnc", blocks, weights[0], precision=_HIGHEST)
    y = jnp.einsum("bnh,rhc->bcrn", blocks, weights, precision=_HIGHEST)  # blocks[m] @ weights[i]
    # Entry (i, t + i) of the row-major [r, n] sits at i * (n + 1) + t: re-read with rows of
    # n + 1, every diagonal lands in column t (t + i < n holds for t < n_frames = n - r + 1).
    y = jnp.pad(y.reshape(b, c, r * n), ((0, 0), (0, 0), (0, r)))
    return jnp.sum(y.reshape(b, c, r, n + 1)[..., :n_frames], axis=2).transpose(0, 2, 1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _correlate_f64(blocks: Array, weights: Array, n_frames: int) -> Array:
    """:func:`_correlate_plain` of float32 ``blocks`` with the products and sums in float64.

    A CQT bin sums up to ~32k products; in float32 that costs ~3e-3 dB in cells 80 dB below the
    clip maximum. As for :func:`_power_f64`, the backward pass (a linear map) stays in float32.
    """
    return _correlate_in_f64(blocks, weights, n_frames)


def _correlate_in_f64(blocks: Array, weights: Array, n_frames: int) -> Array:
    with jax.enable_x64(True):
        out = _correlate_plain(blocks.astype(jnp.float64), weights, n_frames)
        return out.astype(blocks.dtype)


def _correlate_f64_fwd(blocks: Array, weights: Array, n_frames: int) -> tuple[Array, Array]:
    return _correlate_in_f64(blocks, weights, n_frames), weights.astype(blocks.dtype)


def _correlate_f64_bwd(n_frames: int, w32: Array, g: Array) -> tuple[Array, None]:
    n_blocks = n_frames + w32.shape[0] - 1
    shape = jax.ShapeDtypeStruct((g.shape[0], n_blocks, w32.shape[1]), g.dtype)
    (ct,) = jax.linear_transpose(lambda b: _correlate_plain(b, w32, n_frames), shape)(g)
    return ct, None


_correlate_f64.defvjp(_correlate_f64_fwd, _correlate_f64_bwd)


def strided_correlate(
    x: Array, weights: np.ndarray, n_frames: int, precision: str = "auto"
) -> Array:
    """``out[b, t] = x[b, t*hop : t*hop + r*hop] @ weights.reshape(r*hop, c)``, ``[B, T, c]``.

    ``x: [B, M]`` with ``M >= (n_frames + r - 1) * hop``, ``weights: [r, hop, c]`` (NumPy). Framed
    as ``hop``-sample blocks, so no ``[B, T, r*hop]`` frame tensor is materialised. ``precision``
    as ``fft_precision`` (:func:`fft_in_float64`); float64 ``x`` always runs in float64.
    """
    r, hop, _ = weights.shape
    n_blocks = n_frames + r - 1
    blocks = x[:, : n_blocks * hop].reshape(x.shape[0], n_blocks, hop)
    if x.dtype == jnp.float32 and fft_in_float64(precision):
        with jax.enable_x64(True):
            w64 = jnp.asarray(weights, dtype=jnp.float64)
        return _correlate_f64(blocks, w64, n_frames)
    return _correlate_plain(blocks, jnp.asarray(weights, x.dtype), n_frames)


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
      chunks: ``[B, Q, 128, F]`` dB chunks (time, frequency; ``F = 64`` mel bands for the Iqbal
        front-ends), not yet standardised.
      mask: ``[B, Q]`` bool, True for the chunks that belong to the clip.
    """

    chunks: Array
    mask: Array


class FrameFeatures(NamedTuple):
    """Frame-level features of a batch of clips.

    Attributes:
      values: ``[B, T, F]`` features in dB (time, frequency: mel bands, STFT or CQT bins).
      mask: ``[B, T]`` bool, True for frames that belong to the clip.
    """

    values: Array
    mask: Array


# ---------------------------------------------------------------------------------------------
# Iqbal et al. (training / inference)
# ---------------------------------------------------------------------------------------------


class _CentredChunking(abc.ABC):
    """Shared by the front-ends whose frame ``t`` is centred on sample ``t * hop``.

    ``1 + L // hop`` frames per clip of ``L`` samples (librosa's ``center=True``), dB relative to
    the clip's maximum over its valid frames, and Iqbal's 128-frame chunking rule. Subclasses are
    frozen dataclasses with the fields ``hop``, ``amin``, ``chunk_frames`` and ``r_threshold`` and
    a :meth:`frame_features` method.
    """

    def n_frames(self, n_samples: Array | int) -> Array | int:
        """Frames of a clip of ``n_samples`` samples: ``1 + n // hop``."""
        return 1 + n_samples // self.hop

    def _to_db(self, power: Array, lengths: Array) -> FrameFeatures:
        """``power [B, T, F]`` → ``10*log10(max(amin, P) / max(amin, max P))`` in dB, with the
        maximum over each clip's valid frames; invalid frames are 0."""
        t_max = power.shape[1]
        fmask = valid_mask(t_max, self.n_frames(lengths))
        ref = masked_max(power, fmask[:, :, None])
        db = 10.0 * jnp.log10(jnp.maximum(self.amin, power))
        db = db - 10.0 * jnp.log10(jnp.maximum(self.amin, ref))[:, None, None]
        return FrameFeatures(jnp.where(fmask[:, :, None], db, 0.0), fmask)

    def _check_chunking(self) -> None:
        """ValueError for framing/dB/chunking fields no front-end can work with."""
        if self.hop < 1:
            raise ValueError(f"hop must be a positive number of samples, got {self.hop}")
        if not self.amin > 0:
            raise ValueError(f"amin must be positive (it floors the power), got {self.amin}")
        if self.chunk_frames < 1:
            raise ValueError(f"chunk_frames must be positive, got {self.chunk_frames}")
        if not 0 <= self.r_threshold <= self.chunk_frames:
            raise ValueError(
                f"r_threshold must lie in [0, chunk_frames={self.chunk_frames}], "
                f"got {self.r_threshold}"
            )

    @abc.abstractmethod
    def frame_features(self, x: Array, lengths: Array) -> FrameFeatures:
        """Waveform ``[B, N]`` → dB features ``[B, 1 + N // hop, F]`` and frame mask (each
        front-end's own: log-mel, STFT or CQT)."""

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
        """Waveform ``[B, N]`` → chunks ``[B, Q, 128, F]`` and chunk mask ``[B, Q]``."""
        return self.chunk(self.frame_features(x, lengths))


class _CentredStft(_CentredChunking):
    """A centred STFT power spectrum with per-clip reflect padding (``hop``, ``n_fft`` and
    ``fft_precision`` fields), shared by :class:`IqbalFrontend` and :class:`StftFrontend`."""

    def _stft_power(self, x: Array, lengths: Array) -> Array:
        """``|STFT|**2`` ``[B, 1 + N // hop, n_fft // 2 + 1]`` of float ``x [B, N]``, as
        ``librosa.stft(center=True, pad_mode="reflect", window="hann")`` of each valid clip."""
        n = x.shape[1]
        t_max = self.n_frames(n)
        half = self.n_fft // 2
        n_pad = (t_max - 1) * self.hop + self.n_fft
        # Reflect about each clip's own last valid sample, so batch padding never enters a frame.
        idx = reflect_indices(n_pad, half, lengths)
        padded = jnp.take_along_axis(x, idx, axis=1)
        frames = frame_signal(padded, self.n_fft, self.hop, t_max)
        return power_spectrum(frames, periodic_hann(self.n_fft), self.fft_precision)


@dataclasses.dataclass(frozen=True)
class IqbalFrontend(_CentredStft):
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

    def logmel(self, x: Array, lengths: Array) -> FrameFeatures:
        """Log-mel in dB relative to each clip's maximum, ``[B, 1 + N // 512, 64]``."""
        x = as_float(x)
        lengths = jnp.asarray(lengths, jnp.int32)
        power = self._stft_power(x, lengths)
        mel = power @ jnp.asarray(
            mel_filterbank(self.sample_rate, self.n_fft, self.n_mels), x.dtype
        )
        return self._to_db(mel, lengths)

    def frame_features(self, x: Array, lengths: Array) -> FrameFeatures:
        """Same as :meth:`logmel`."""
        return self.logmel(x, lengths)

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


# ---------------------------------------------------------------------------------------------
# Linear-frequency and constant-Q spectrograms (same framing and chunking as IqbalFrontend)
# ---------------------------------------------------------------------------------------------

_PRECISIONS = ("auto", "float64", "float32")


@dataclasses.dataclass(frozen=True)
class StftFrontend(_CentredStft):
    """Log-power linear-frequency spectrogram with :class:`IqbalFrontend`'s framing and chunking.

    ``librosa.power_to_db(np.abs(librosa.stft(y, n_fft=1024, hop_length=512, window="hann",
    center=True, pad_mode="reflect"))**2, ref=np.max, amin=1e-10, top_db=None)`` of each clip,
    ``[B, 1 + L // 512, 513]`` (time, frequency bin ``k`` at ``k * sr / n_fft`` Hz), chunked into
    ``[B, Q, 128, 513]``. In dB this is the same number as ``amplitude_to_db(np.abs(D), ref=np.max,
    amin=1e-5, top_db=None)``: it is computed from the power so that no square root (with its
    infinite slope at 0) enters the gradient on silence. ``drop_nyquist=True`` keeps bins
    ``0 .. n_fft/2 - 1`` (512 rows, which halve evenly through the models' pooling); the
    reference maximum is then over the kept bins.
    """

    name = "stft"
    sample_rate: int = C.SAMPLE_RATE
    n_fft: int = C.IQBAL_N_FFT
    hop: int = C.IQBAL_HOP
    drop_nyquist: bool = False
    fft_precision: str = "auto"  # "auto" (float64 FFT except on TPU), "float64" or "float32"
    amin: float = C.IQBAL_AMIN
    chunk_frames: int = C.CHUNK_FRAMES
    r_threshold: int = C.R_THRESHOLD

    def __post_init__(self) -> None:
        self._check_chunking()
        if self.n_fft < 2 or self.n_fft % self.hop:
            raise ValueError(
                f"n_fft={self.n_fft} must be at least 2 and a multiple of hop={self.hop}"
            )
        if self.fft_precision not in _PRECISIONS:
            raise ValueError(
                f"fft_precision must be one of {_PRECISIONS}, got {self.fft_precision!r}"
            )

    @property
    def n_bins(self) -> int:
        """Frequency rows: ``n_fft // 2 + 1`` (513), or ``n_fft // 2`` with ``drop_nyquist``."""
        return self.n_fft // 2 + (0 if self.drop_nyquist else 1)

    def frequencies(self) -> np.ndarray:
        """Centre frequency of each row in Hz, ``[n_bins]``."""
        return np.fft.rfftfreq(self.n_fft, 1.0 / self.sample_rate)[: self.n_bins]

    def frame_features(self, x: Array, lengths: Array) -> FrameFeatures:
        """Log-power spectrogram in dB re each clip's maximum, ``[B, 1 + N // 512, n_bins]``."""
        x = as_float(x)
        lengths = jnp.asarray(lengths, jnp.int32)
        power = self._stft_power(x, lengths)[..., : self.n_bins]
        return self._to_db(power, lengths)


@dataclasses.dataclass(frozen=True)
class CqtFrontend(_CentredChunking):
    """Log-power constant-Q spectrogram, with :class:`IqbalFrontend`'s frames and chunking.

    ``|librosa.cqt(y, sr=32000, hop_length=512, fmin=32.70, n_bins=96, bins_per_octave=12,
    pad_mode="constant", sparsity=0)|**2`` in dB relative to each clip's maximum (``amin=1e-10``,
    no ``top_db``), like :class:`StftFrontend`: ``[B, 1 + L // 512, 96]`` (time, bin ``k`` at
    ``fmin * 2**(k/12)`` Hz: C1 32.7 Hz to B8 7.9 kHz, so the 4-8 kHz octave that librosa's
    default 84 bins leave out is kept), chunked into ``[B, Q, 128, 96]``. Frame ``t`` is centred on
    sample ``t * 512``, as in the STFT front-ends.

    Every octave is computed at the full sample rate with the weights of :func:`cqt_kernels`
    (librosa's wavelet filters and normalisation, equal to librosa's per-octave formula to float32
    rounding): one strided correlation of the padded clip with ``[n_fft, 24]`` real weights per
    octave (``n_fft`` = 256 to 32768 samples), no FFT, no resampling. ``librosa.cqt`` instead
    downsamples the signal by 2 per octave and samples the filters at the lower rates; responses
    at a bin's own centre frequency agree (< 1e-5 dB), half a bin off by ~0.03 dB, and cells near
    deep spectral/temporal nulls can differ by several dB. librosa's default ``sparsity=0.01``
    (dropping the smallest 1 % of each filter's FFT) is not reproduced.

    ``pad_mode``: ``"constant"`` (zeros outside the clip, librosa.cqt's default) or ``"reflect"``
    (about each clip's first and last valid sample). ``precision`` as ``fft_precision``: the
    correlations run in float64 except on TPUs (float32 costs ~3e-3 dB 80 dB below the maximum).
    """

    name = "cqt"
    sample_rate: int = C.SAMPLE_RATE
    hop: int = C.IQBAL_HOP
    fmin: float = CQT_FMIN
    n_bins: int = CQT_N_BINS
    bins_per_octave: int = CQT_BINS_PER_OCTAVE
    filter_scale: float = 1.0
    pad_mode: str = "constant"
    precision: str = "auto"  # "auto" (float64 sums except on TPU), "float64" or "float32"
    amin: float = C.IQBAL_AMIN
    chunk_frames: int = C.CHUNK_FRAMES
    r_threshold: int = C.R_THRESHOLD

    def __post_init__(self) -> None:
        self._check_chunking()
        if self.n_bins < 1 or self.bins_per_octave < 1:
            raise ValueError(
                f"n_bins ({self.n_bins}) and bins_per_octave ({self.bins_per_octave}) must be "
                "positive"
            )
        if not (self.fmin > 0 and self.filter_scale > 0):
            raise ValueError(
                f"fmin ({self.fmin} Hz) and filter_scale ({self.filter_scale}) must be positive"
            )
        _, cutoff = cqt_lengths(
            self.sample_rate, self.fmin, self.n_bins, self.bins_per_octave, self.filter_scale
        )
        if cutoff > self.sample_rate / 2:
            raise ValueError(
                f"the top CQT filter reaches {cutoff:.0f} Hz, above the Nyquist frequency "
                f"{self.sample_rate / 2:.0f} Hz: use fewer bins or a lower fmin"
            )
        if self.pad_mode not in ("constant", "reflect"):
            raise ValueError(f"pad_mode must be 'constant' or 'reflect', got {self.pad_mode!r}")
        if self.precision not in _PRECISIONS:
            raise ValueError(f"precision must be one of {_PRECISIONS}, got {self.precision!r}")

    def frequencies(self) -> np.ndarray:
        """Centre frequency of each bin in Hz, ``[n_bins]``."""
        return cqt_frequencies(self.fmin, self.n_bins, self.bins_per_octave)

    def kernels(self) -> tuple[CqtOctave, ...]:
        """The per-octave weights (cached NumPy constants)."""
        return cqt_kernels(
            self.sample_rate,
            self.hop,
            float(self.fmin),
            self.n_bins,
            self.bins_per_octave,
            float(self.filter_scale),
        )

    def frame_features(self, x: Array, lengths: Array) -> FrameFeatures:
        """Log-power CQT in dB re each clip's maximum, ``[B, 1 + N // 512, n_bins]``."""
        x = as_float(x)
        n = x.shape[1]
        lengths = jnp.asarray(lengths, jnp.int32)
        t_max = self.n_frames(n)
        octaves = self.kernels()
        # One padded copy serves every octave: octave g reads frame t from sample
        # t*hop - n_fft_g/2 of the clip, i.e. from index lead - n_fft_g/2 + t*hop of ``padded``.
        lead = max(o.n_fft for o in octaves) // 2
        total = max(
            lead - o.n_fft // 2 + (t_max + o.weights.shape[0] - 1) * self.hop for o in octaves
        )
        if self.pad_mode == "reflect":
            padded = jnp.take_along_axis(x, reflect_indices(total, lead, lengths), axis=1)
        else:
            x = jnp.where(valid_mask(n, lengths), x, 0.0)  # batch padding counts as absent
            padded = jnp.pad(x, ((0, 0), (lead, max(0, total - lead - n))))[:, :total]
        power = []
        for o in reversed(octaves):  # librosa's order is from the top octave down
            k = o.hi - o.lo
            start = lead - o.n_fft // 2
            resp = strided_correlate(padded[:, start:], o.weights, t_max, self.precision)
            power.append(resp[..., :k] ** 2 + resp[..., k:] ** 2)
        power = jnp.concatenate(power, axis=-1)
        return self._to_db(power, lengths)


FRONTENDS: dict[str, type] = {
    IqbalFrontend.name: IqbalFrontend,
    IqbalAttackFrontend.name: IqbalAttackFrontend,
    KapreFrontend.name: KapreFrontend,
    StftFrontend.name: StftFrontend,
    CqtFrontend.name: CqtFrontend,
}

# The front-ends whose output is ``ChunkedFeatures`` ``[B, Q, 128, F]`` (the Iqbal models' input).
CHUNKED_FRONTENDS = (IqbalFrontend, IqbalAttackFrontend, StftFrontend, CqtFrontend)


def feature_bins(fe: IqbalFrontend | IqbalAttackFrontend | StftFrontend | CqtFrontend) -> int:
    """Frequency rows ``F`` of a chunking front-end's chunks ``[B, Q, 128, F]``."""
    if isinstance(fe, IqbalFrontend | IqbalAttackFrontend):
        return fe.n_mels
    return fe.n_bins


def get_frontend(
    name: str, **overrides
) -> IqbalFrontend | IqbalAttackFrontend | KapreFrontend | StftFrontend | CqtFrontend:
    """Build a front-end config by name (``"iqbal"``, ``"iqbal_attack"``, ``"kapre"``,
    ``"stft"``, ``"cqt"``)."""
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
