"""Audio formats as round-trip transforms: what saving a clip as 16-bit WAV, MP3, Vorbis or Opus
does to it (and to an adversarial perturbation in it).

Each :class:`Codec` is a frozen config (format, subtype, libsndfile's ``compression_level`` and
``bitrate_mode``, the rate it runs at); :data:`CODECS` names the ones the compression experiment
uses, from about 32 kbps to the highest each format offers. :func:`roundtrip` encodes a batch of
32 kHz clips in memory with the libsndfile bundled in the ``soundfile`` wheel (LAME and mpg123,
libvorbis, libopus; no ffmpeg) and decodes them again, clips in parallel threads (the codecs run
in C and release the GIL). Output clips have exactly the input's length and alignment: libsndfile
removes the encoders' delay and padding (checked by the tests with clicks at known samples), and
the result is trimmed or zero-padded to the input length regardless. Deterministic: the same
input gives the same output bit for bit.

Opus only runs at 8/12/16/24/48 kHz: its clips are resampled to 48 kHz and back with soxr (VHQ),
which is part of its round trip. MP3 at 32 kHz is MPEG-1 Layer III, constant bit-rate; Vorbis
and Opus are variable bit-rate (libsndfile refuses their constant mode), so their kbps depends on
the clip: :func:`measure_kbps` gives the real rate of a setting on given clips.

:func:`through` makes a classifier see its input after a codec, with the codec's gradient taken
as the identity (BPDA, Athalye et al. 2018) — so every attack can optimise through a host codec.
"""

from __future__ import annotations

import dataclasses
import functools
import io
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from jaxadv import config as C


class CodecError(ValueError):
    """A codec or setting the installed libsndfile cannot write."""


@dataclasses.dataclass(frozen=True)
class Codec:
    """One audio format and setting, as a round trip of 32 kHz float32 clips.

    Attributes:
      name: registry name (``"mp3-128"``, ``"opus-l0.6"``, ...).
      format: libsndfile major format (``"WAV"``, ``"MP3"``, ``"OGG"``).
      subtype: libsndfile subtype (``"PCM_16"``, ``"MPEG_LAYER_III"``, ``"VORBIS"``, ``"OPUS"``).
      compression_level: libsndfile's 0 (best quality, highest rate) .. 1 (smallest); None: none.
      bitrate_mode: ``"CONSTANT"`` (MP3), or None (the format's default: variable).
      sample_rate: the rate the codec runs at, Hz (Opus: 48 kHz; the clip is resampled to it).
      nominal_kbps: the format's nominal rate of this setting (None: variable or uncompressed).
    """

    name: str
    format: str
    subtype: str
    compression_level: float | None = None
    bitrate_mode: str | None = None
    sample_rate: int = C.SAMPLE_RATE
    nominal_kbps: float | None = None

    @property
    def lossy(self) -> bool:
        return self.format != "WAV"

    def encode(self, x: np.ndarray) -> bytes:
        """The file bytes of one clip ``[n]`` float32 at 32 kHz."""
        import soundfile as sf

        y = np.asarray(x, np.float32)
        if self.sample_rate != C.SAMPLE_RATE:
            import soxr

            y = soxr.resample(y, C.SAMPLE_RATE, self.sample_rate, quality="VHQ")
        kw: dict[str, Any] = {}
        if self.compression_level is not None:
            kw["compression_level"] = self.compression_level
        if self.bitrate_mode is not None:
            kw["bitrate_mode"] = self.bitrate_mode
        buf = io.BytesIO()
        try:
            sf.write(
                buf, np.clip(y, -1.0, 1.0), self.sample_rate, format=self.format,
                subtype=self.subtype, **kw,
            )  # fmt: skip
        except (sf.LibsndfileError, ValueError, TypeError, RuntimeError) as e:
            raise CodecError(
                f"codec {self.name!r}: the installed libsndfile ({sf.__libsndfile_version__}) "
                f"cannot write {self.format}/{self.subtype} with {kw or 'defaults'} ({e}); "
                "install soundfile >= 0.13 (its wheel bundles LAME, Vorbis and Opus) or choose "
                f"another codec from {sorted(CODECS)}"
            ) from e
        return buf.getvalue()

    def decode(self, data: bytes, n: int) -> np.ndarray:
        """``[n]`` float32 at 32 kHz from file bytes (trimmed or zero-padded to ``n``)."""
        import soundfile as sf

        y, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=False)
        if y.ndim > 1:
            y = y.mean(axis=1)
        if sr != C.SAMPLE_RATE:
            import soxr

            y = soxr.resample(y, sr, C.SAMPLE_RATE, quality="VHQ").astype(np.float32)
        out = np.zeros(n, np.float32)
        out[: min(n, len(y))] = y[:n]
        return out

    def roundtrip_clip(self, x: np.ndarray) -> np.ndarray:
        """One clip ``[n]`` through the codec and back: ``[n]`` float32."""
        return self.roundtrip_sized(x)[0]

    def roundtrip_sized(self, x: np.ndarray) -> tuple[np.ndarray, int]:
        """One clip ``[n]`` through the codec and back, and the size of its file in bytes."""
        x = np.asarray(x, np.float32)
        if len(x) == 0:
            return x.copy(), 0
        data = self.encode(x)
        return self.decode(data, len(x)), len(data)


def _pcm(name: str, subtype: str) -> Codec:
    return Codec(name, "WAV", subtype)


def _mp3(kbps: int, level: float) -> Codec:
    return Codec(f"mp3-{kbps}", "MP3", "MPEG_LAYER_III", level, "CONSTANT", nominal_kbps=kbps)


def _vbr(kind: str, level: float) -> Codec:
    sub, sr = {"vorbis": ("VORBIS", C.SAMPLE_RATE), "opus": ("OPUS", 48000)}[kind]
    return Codec(f"{kind}-l{level:g}", "OGG", sub, level, sample_rate=sr)


# The settings of the compression experiment: PCM, and each lossy format from its highest rate to
# about 32 kbps. libsndfile maps MP3's compression_level in steps onto LAME's constant bit-rates
# at 32 kHz (measured on 5 s of noise: 0 → 320, 0.15 → 256, 0.3 → 224, 0.45 → 192, 0.55 → 160,
# 0.65 → 128, 0.7 → 112, 0.8 → 96, 0.85 → 80, 0.875 → 64, 0.9 → 56, 0.95 → 48, 0.975 → 40 kbps;
# 1.0 is refused). A file also holds LAME's header frame: a 2 s clip's real rate is ~4 % higher.
CODECS: dict[str, Codec] = {
    c.name: c
    for c in (
        _pcm("pcm16", "PCM_16"),
        _pcm("pcm24", "PCM_24"),
        _mp3(320, 0.0),
        _mp3(192, 0.45),
        _mp3(128, 0.65),
        _mp3(96, 0.8),
        _mp3(64, 0.875),
        _mp3(40, 0.975),
        _vbr("vorbis", 0.0),
        _vbr("vorbis", 0.4),
        _vbr("vorbis", 0.7),
        _vbr("vorbis", 1.0),
        _vbr("opus", 0.0),
        _vbr("opus", 0.4),
        _vbr("opus", 0.6),
        _vbr("opus", 0.8),
        _vbr("opus", 0.9),
    )
}


def get(name: str) -> Codec:
    """The codec of :data:`CODECS` called ``name`` (a clear error for another name)."""
    if name not in CODECS:
        raise CodecError(f"unknown codec {name!r}; choose from {sorted(CODECS)}")
    return CODECS[name]


def roundtrip(
    x: np.ndarray,
    lengths: np.ndarray | Sequence[int] | None,
    codec: Codec | str,
    *,
    workers: int | None = None,
) -> np.ndarray:
    """A batch ``x [B, N]`` (float32, 32 kHz) through ``codec`` and back, clip by clip.

    Only each clip's valid samples (``lengths [B]``; None: all ``N``) go through the codec; the
    padding stays zero. Returns ``[B, N]`` float32 with each clip's length and alignment kept.
    ``workers``: threads (default: one per CPU, at most ``B``).
    """

    c = get(codec) if isinstance(codec, str) else codec
    x = np.asarray(x, np.float32)
    if x.ndim != 2:
        raise ValueError(f"roundtrip takes a batch [B, N], got shape {x.shape}")
    b, n = x.shape
    lens = np.full(b, n) if lengths is None else np.asarray(lengths, int)
    if lens.shape != (b,) or (lens < 0).any() or (lens > n).any():
        raise ValueError(f"lengths must be [B] = [{b}] in 0..{n}, got {lens}")
    out = np.zeros_like(x)
    ys, _ = roundtrip_clips([x[i, : lens[i]] for i in range(b)], c, workers=workers)
    for i, y in enumerate(ys):
        out[i, : lens[i]] = y
    return out


def roundtrip_clips(
    clips: Sequence[np.ndarray], codec: Codec | str, *, workers: int | None = None
) -> tuple[list[np.ndarray], list[int]]:
    """Clips ``[n_i]`` (float32, 32 kHz) through ``codec`` and back in parallel threads: the
    decoded clips (same lengths) and each clip's file size in bytes."""
    import os

    c = get(codec) if isinstance(codec, str) else codec
    c.encode(np.zeros(16, np.float32))  # an unsupported setting fails here, once, by name
    workers = max(1, min(len(clips), workers or os.cpu_count() or 1))
    if workers == 1:
        res = [c.roundtrip_sized(x) for x in clips]
    else:
        with ThreadPoolExecutor(workers, "jaxadv-codec") as pool:
            res = list(pool.map(c.roundtrip_sized, clips))
    return [y for y, _ in res], [n for _, n in res]


def kbps(nbytes: int, samples: int) -> float:
    """The bit-rate (kbit/s) of a file of ``nbytes`` holding ``samples`` samples at 32 kHz."""
    return 8.0 * nbytes / (samples / C.SAMPLE_RATE) / 1000.0 if samples else float("nan")


def quantize_pcm(x: np.ndarray, bits: int = 16) -> np.ndarray:
    """What a ``bits``-bit PCM file written by libsndfile holds, read back as float32.

    libsndfile 1.2.2 converts float samples to 32-bit integers first (``lrint(x * 2^31)``,
    clipped) and keeps their top ``bits`` bits (an arithmetic shift: a floor), so a sample is
    ``floor(rint(x * 2^31) / 2^(32 - bits)) / 2^(bits - 1)``: a truncation, except that a value
    within 2^-32 of a grid point rounds onto it. Measured: equal bit for bit to the file round
    trip (tests). For 16 bits one step is 3.05e-5; a perturbation smaller than that mostly
    vanishes (non-negative parts) or becomes one step down (negative parts).
    """
    r = np.clip(np.rint(np.asarray(x, np.float64) * 2.0**31), -(2.0**31), 2.0**31 - 1)
    return (np.floor(r / 2.0 ** (32 - bits)) / 2.0 ** (bits - 1)).astype(np.float32)


def quantize_pcm16(x: np.ndarray) -> np.ndarray:
    """:func:`quantize_pcm` with 16 bits (what a 16-bit WAV of ``x`` holds)."""
    return quantize_pcm(x, 16)


def measure_kbps(codec: Codec | str, clips: Sequence[np.ndarray]) -> float:
    """The real bit-rate (kbit/s, file bytes over duration, container included) of ``codec`` on
    ``clips`` (32 kHz), over all of them together."""
    c = get(codec) if isinstance(codec, str) else codec
    return kbps(sum(len(c.encode(x)) for x in clips), sum(len(x) for x in clips))


# --- BPDA: a classifier that hears its input through a codec ------------------------------------


@functools.cache
def _bpda(codec: Codec) -> Any:
    import jax
    import jax.numpy as jnp

    def host(x: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        return roundtrip(np.asarray(x), np.asarray(lengths), codec)

    @jax.custom_vjp
    def f(x: Any, lengths: Any) -> Any:
        shape = jax.ShapeDtypeStruct(x.shape, jnp.float32)
        return jax.pure_callback(host, shape, x, lengths, vmap_method="broadcast_all")

    def fwd(x: Any, lengths: Any) -> tuple[Any, Any]:
        return f(x, lengths), lengths

    def bwd(lengths: Any, g: Any) -> tuple[Any, None]:
        return g, None  # BPDA: the codec's gradient is taken as the identity

    f.defvjp(fwd, bwd)
    return f


_PCM_BITS = {"PCM_16": 16, "PCM_24": 24}


def _pcm_jax(x: Any, bits: int) -> Any:
    """:func:`quantize_pcm` in JAX (float32 is exact here: every scale is a power of two), with a
    straight-through gradient: no host callback, so it runs on the device at full speed."""
    import jax
    import jax.numpy as jnp

    r = jnp.clip(jnp.rint(x * 2.0**31), -(2.0**31), 2.0**31)  # 2^31 - 1 is not a float32
    q = jnp.floor(r / 2.0 ** (32 - bits))
    q = jnp.clip(q, -(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1) / 2.0 ** (bits - 1)
    return x + jax.lax.stop_gradient(q - x)


def bpda(x: Any, lengths: Any, codec: Codec | str) -> Any:
    """``x [B, N]`` through ``codec`` inside a JAX program, differentiable with the identity as
    the codec's gradient (Athalye et al. 2018's BPDA). PCM codecs are quantised in JAX (equal
    to :func:`roundtrip` bit for bit); the lossy ones run on the host (``jax.pure_callback``)."""
    c = get(codec) if isinstance(codec, str) else codec
    if c.format == "WAV" and c.subtype in _PCM_BITS:
        return _pcm_jax(x, _PCM_BITS[c.subtype])
    return _bpda(c)(x, lengths)


@dataclasses.dataclass(frozen=True)
class Through:
    """A classifier that hears its input after one or several codecs: ``fn(params, x, lengths)``
    is the mean of ``classifier``'s outputs on ``x`` through each codec (expectation over the
    transformations, EOT; one codec: just that codec), each codec's gradient the identity
    (BPDA). Hashable like the classifiers, so every attack and metric accepts it."""

    classifier: Any
    codecs: tuple[Codec, ...]

    def __call__(self, params: Any, x: Any, lengths: Any) -> Any:
        import jax.numpy as jnp

        outs = [self.classifier(params, bpda(x, lengths, c), lengths) for c in self.codecs]
        if len(outs) == 1:
            return outs[0]
        # EOT: the mean chunk logits (what the attacks differentiate) and the mean clip
        # probabilities (what decides the label); the chunk mask is the same for every codec
        mean = functools.partial(jnp.mean, axis=0)
        first = outs[0]
        return first._replace(
            logits=mean(jnp.stack([o.logits for o in outs])),
            probs=mean(jnp.stack([o.probs for o in outs])),
        )

    def __getattr__(self, name: str) -> Any:
        # frontend, merge, model_config, ... of the wrapped classifier (never the fields
        # themselves, which a half-built copy may not have yet)
        if name in ("classifier", "codecs") or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.classifier, name)


def through(classifier: Any, *codecs: Codec | str) -> Through:
    """``classifier`` hearing its input through ``codecs`` (see :class:`Through`)."""
    if not codecs:
        raise ValueError("through() needs at least one codec")
    return Through(classifier, tuple(get(c) if isinstance(c, str) else c for c in codecs))
