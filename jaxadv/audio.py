"""Host-side audio I/O: load any clip as mono float32 at 32 kHz, write WAV/FLAC (NumPy, no JAX).

Loading (:func:`load_audio`) reads everything libsndfile 1.2 reads (WAV, FLAC, OGG/Vorbis, MP3, AIFF,
...) through ``soundfile``, downmixes to mono (mean of the channels, as ``librosa.to_mono``) and
resamples with soxr in its high-quality mode (``soxr.resample(quality="HQ")``), which is exactly
``librosa.resample(res_type="soxr_hq")``, librosa >= 0.10's default. The output has
``ceil(n * sample_rate / native_rate)`` samples, the length rule of ``librosa.resample(fix=True)``
(in 0.6.2 as in 0.11), so :func:`num_samples` can predict it from the header alone.

Two loading recipes (ORIGINALS.md §2.1, §2.3):

* default: native rate → ``sample_rate`` in one soxr HQ step, as Iqbal's feature extraction does
  (``librosa.load(sr=None)`` then ``librosa.resample(x, sr, 32000)``).
* ``authors_path=True``: the paper authors' attack code, ``librosa.load(path)`` with its default
  ``sr=22050`` (which band-limits the clip to 11.025 kHz) and then ``librosa.resample(x, 22050,
  32000)``. Two resampling steps, as the original.

**Documented deviation.** librosa 0.6.2, which the originals pinned, resampled with resampy's
``kaiser_best`` filter (a windowed-sinc filter, Kaiser window, roll-off 0.9475937, ~-100 dB
stop-band). This module uses soxr HQ (a linear-phase FFT polyphase filter, ~-100 dB stop-band
too) because resampy is not a dependency of current librosa; both are band-limited, so the
difference is confined to the last few percent of the band below Nyquist and to sub-LSB ripple.

Every problem with a file raises :class:`AudioError` (a ``ValueError``) whose message names the
file and the problem: missing, empty, truncated, unreadable/unsupported, no samples, NaN/Inf.
"""

from __future__ import annotations

import math
import os
import struct
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from jaxadv import config as C

PathLike = str | os.PathLike

__all__ = [
    "AudioError",
    "AudioMissingError",
    "AudioFormatError",
    "AudioContentError",
    "load_audio",
    "num_samples",
    "resample",
    "write_audio",
    "resampled_length",
]

# MP3 frame counts come from the Xing/LAME header or an estimate; the decoder may deliver up to the
# encoder delay + padding (about two MPEG-1 layer III frames) fewer samples than announced.
_MP3_FRAME_SLACK = 2 * 1152


class AudioError(ValueError):
    """A clip could not be loaded or written. ``path`` names the file, ``problem`` says why."""

    def __init__(self, path: PathLike, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"audio file '{self.path}': {problem}")


class AudioMissingError(AudioError, FileNotFoundError):
    """The file does not exist (or is not a regular file)."""


class AudioFormatError(AudioError):
    """The file is empty, truncated, corrupt or in a format libsndfile cannot read."""


class AudioContentError(AudioError):
    """The file decodes but its samples are unusable (none, NaN/Inf) or cannot be written."""


# ---------------------------------------------------------------------------------------------
# Resampling
# ---------------------------------------------------------------------------------------------


def resampled_length(n: int, orig_sr: int, target_sr: int) -> int:
    """Samples after resampling ``n`` samples: ``ceil(n * target_sr / orig_sr)`` (librosa's rule)."""
    if orig_sr == target_sr:
        return int(n)
    return int(math.ceil(n * float(target_sr) / orig_sr))


def resample(x: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample a mono float32 signal ``[n]`` with soxr HQ, to exactly ``resampled_length`` samples.

    Identical to ``librosa.resample(x, orig_sr=orig_sr, target_sr=target_sr, res_type="soxr_hq")``
    (librosa 0.10/0.11): soxr's output is zero-padded or cut to ``ceil(n * target_sr / orig_sr)``.
    """
    if orig_sr <= 0 or target_sr <= 0:
        raise ValueError(f"sample rates must be positive, got {orig_sr} -> {target_sr}")
    x = np.asarray(x, dtype=np.float32)
    if orig_sr == target_sr:
        return x
    y = soxr.resample(x, orig_sr, target_sr, quality="HQ")
    n_out = resampled_length(x.shape[0], orig_sr, target_sr)
    if y.shape[0] < n_out:
        y = np.pad(y, (0, n_out - y.shape[0]))
    return np.ascontiguousarray(y[:n_out], dtype=np.float32)


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def _check_file(path: Path) -> None:
    if not path.exists():
        raise AudioMissingError(path, "no such file")
    if not path.is_file():
        raise AudioMissingError(path, "not a regular file")
    if path.stat().st_size == 0:
        raise AudioFormatError(path, "empty file (0 bytes)")


def _riff_data_shortfall(path: Path) -> tuple[int, int] | None:
    """For a RIFF/WAVE file: ``(declared, present)`` data-chunk bytes if the chunk is cut short.

    libsndfile silently shortens a WAV whose ``data`` chunk runs past the end of the file (a
    truncated download), so this walks the chunk list itself. Returns None when the file is not a
    RIFF/WAVE file, is complete, or declares an unknown length (0 or 0xFFFFFFFF, written by
    streaming encoders).
    """
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            chunk_id, chunk_size = struct.unpack("<4sI", f.read(8))
            if chunk_id == b"data":
                if chunk_size in (0, 0xFFFFFFFF):
                    return None
                present = size - (pos + 8)
                return (chunk_size, present) if present < chunk_size else None
            pos += 8 + chunk_size + (chunk_size & 1)  # chunks are word-aligned
    return None


def _read_native(path: PathLike) -> tuple[np.ndarray, int]:
    """Decode a file to ``([frames, channels] float32, native_rate)``, checking it is complete."""
    path = Path(path)
    _check_file(path)
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as e:
        raise AudioFormatError(path, f"unreadable or unsupported audio format ({e})") from None
    shortfall = _riff_data_shortfall(path)
    if shortfall is not None:
        raise AudioFormatError(
            path,
            f"truncated WAV: the data chunk declares {shortfall[0]} bytes but only "
            f"{shortfall[1]} are present",
        )
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise AudioFormatError(path, f"corrupt or truncated {info.format} data ({e})") from None
    got, expected = data.shape[0], info.frames
    slack = _MP3_FRAME_SLACK if info.format == "MP3" else 0
    if 0 < expected and got < expected - slack:
        raise AudioFormatError(
            path,
            f"truncated {info.format} file: header announces {expected} frames, only {got} decoded",
        )
    if got == 0:
        raise AudioContentError(path, "contains no samples (0 frames)")
    if not np.all(np.isfinite(data)):
        bad = int(np.sum(~np.isfinite(data)))
        raise AudioContentError(path, f"contains {bad} NaN/Inf sample value(s)")
    return data, int(sr)


def load_audio(
    path: PathLike, sample_rate: int = C.SAMPLE_RATE, *, authors_path: bool = False
) -> np.ndarray:
    """Load a clip as mono float32 ``[n]`` at ``sample_rate`` Hz (default 32 kHz).

    Args:
      path: any file libsndfile reads (WAV, FLAC, OGG, MP3, AIFF, ...).
      sample_rate: output rate in Hz.
      authors_path: reproduce the paper authors' loader (ORIGINALS.md §2.3): resample to 22 050 Hz
        first (``librosa.load`` default, band-limits to 11.025 kHz), then to ``sample_rate``.

    Returns:
      ``[resampled_length(frames, native, sample_rate)]`` float32, nominally in [-1, 1], channels
      averaged. Resampler: soxr HQ (= ``librosa.resample(res_type="soxr_hq")``), not librosa
      0.6.2's resampy ``kaiser_best`` (see the module docstring).

    Raises:
      AudioMissingError, AudioFormatError, AudioContentError (all :class:`AudioError`).
    """
    data, sr = _read_native(path)
    x = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
    if authors_path:
        x = resample(x, sr, C.AUTHORS_LOAD_RATE)
        sr = C.AUTHORS_LOAD_RATE
    return resample(x, sr, sample_rate)


def num_samples(
    path: PathLike, sample_rate: int = C.SAMPLE_RATE, *, authors_path: bool = False
) -> int:
    """Length :func:`load_audio` returns for ``path``, from the header only (no decoding).

    Raises :class:`AudioError` for a missing, empty or unreadable file (a truncated file is only
    detected by :func:`load_audio`).
    """
    path = Path(path)
    _check_file(path)
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as e:
        raise AudioFormatError(path, f"unreadable or unsupported audio format ({e})") from None
    n, sr = int(info.frames), int(info.samplerate)
    if n <= 0:
        raise AudioContentError(path, "contains no samples (0 frames)")
    if authors_path:
        n, sr = resampled_length(n, sr, C.AUTHORS_LOAD_RATE), C.AUTHORS_LOAD_RATE
    return resampled_length(n, sr, sample_rate)


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------

# extension -> (libsndfile format, default subtype, allowed subtypes)
_WRITE_FORMATS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    ".wav": ("WAV", "PCM_16", ("PCM_16", "PCM_24", "FLOAT")),
    ".flac": ("FLAC", "PCM_16", ("PCM_16", "PCM_24")),
}
_PCM_BITS: dict[str, int] = {"PCM_16": 16, "PCM_24": 24}


def write_audio(
    path: PathLike,
    x: np.ndarray,
    sample_rate: int = C.SAMPLE_RATE,
    *,
    subtype: str | None = None,
) -> Path:
    """Write a clip ``x`` (``[n]`` mono or ``[n, channels]``) as WAV or FLAC, format by extension.

    Defaults: 16-bit PCM for both (``subtype="PCM_16"``, for listening and for the demo data);
    ``subtype="FLOAT"`` writes a 32-bit float WAV that round-trips float32 exactly (use it for
    adversarial examples whose perturbation is below one 16-bit step); ``"PCM_24"`` is also allowed.

    PCM samples are rounded to the nearest step of ``2**-(bits-1)`` (a round trip through
    :func:`load_audio` is within half a step).
    NaN/Inf samples raise :class:`AudioContentError`. For PCM subtypes, samples with ``|x| > 1``
    are **clipped** to [-1, 1] and a ``UserWarning`` names the file, the number of clipped samples
    and the peak (float WAV is written unclipped). Returns the path written.
    """
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in _WRITE_FORMATS:
        raise AudioError(
            path, f"cannot write extension {ext!r}; use one of {sorted(_WRITE_FORMATS)}"
        )
    fmt, default_subtype, allowed = _WRITE_FORMATS[ext]
    subtype = default_subtype if subtype is None else subtype.upper()
    if subtype not in allowed:
        raise AudioError(path, f"subtype {subtype!r} not supported for {fmt}; use one of {allowed}")
    if not (isinstance(sample_rate, int | np.integer) and sample_rate > 0):
        raise AudioError(path, f"sample_rate must be a positive integer, got {sample_rate!r}")
    x = np.asarray(x)
    if x.ndim not in (1, 2) or x.shape[0] == 0 or not np.issubdtype(x.dtype, np.number):
        raise AudioContentError(
            path, f"expected a non-empty numeric [n] or [n, channels] array, got {x.dtype}{x.shape}"
        )
    x = x.astype(np.float32 if subtype == "FLOAT" else np.float64)
    if not np.all(np.isfinite(x)):
        bad = int(np.sum(~np.isfinite(x)))
        raise AudioContentError(path, f"refusing to write {bad} NaN/Inf sample value(s)")
    if subtype != "FLOAT":
        over = np.abs(x) > 1.0
        if np.any(over):
            warnings.warn(
                f"audio file '{path}': clipped {int(over.sum())} sample(s) with |x| > 1 "
                f"(peak {float(np.max(np.abs(x))):.4g}) to [-1, 1] for {subtype}",
                UserWarning,
                stacklevel=2,
            )
            x = np.clip(x, -1.0, 1.0)
    if subtype in _PCM_BITS:
        # Quantise here, by rounding to nearest (max error 1/2 step; libsndfile's own float -> PCM
        # conversion differs between WAV and FLAC and can be off by a full step). Full scale is
        # 2**(bits-1), the scale soundfile reads back with, so a value survives a round trip.
        bits = _PCM_BITS[subtype]
        q = np.clip(np.rint(x * 2.0 ** (bits - 1)), -(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
        x = q.astype(np.int16) if bits == 16 else (q.astype(np.int32) << (32 - bits))
    path.parent.mkdir(parents=True, exist_ok=True)
    # FLAC at its strongest compression (level 8): lossless either way, ~2 % smaller files.
    extra = {"compression_level": 1.0} if fmt == "FLAC" else {}
    sf.write(str(path), x, int(sample_rate), format=fmt, subtype=subtype, **extra)
    return path
