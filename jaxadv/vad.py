"""Silero VAD 6.2.3 (16 kHz) in JAX, as a jaxadv classifier function.

A port of the voice-activity detector shipped in the ``silero-vad`` wheel. The default weights
are read from the wheel's ``silero_vad/data/silero_vad.onnx`` (its 16 kHz branch: the model
``OnnxWrapper`` runs, with the same weights as the default JIT model and the op15/op18 exports).
The wheel's ``silero_vad_16k.safetensors`` (for its ``tinygrad_model.py``) has the same layout
but *other* weights, 0.35 apart in speech probability; :func:`load_params` reads it on request.
Nothing here imports ``silero_vad`` (its ``__init__`` imports torch): the wheel is only a place to
read files from.

The model runs on 16 kHz float32 samples in [-1, 1], window by window, as the wheel's
``OnnxWrapper`` streams it:

* the clip ``x [B, N]`` (zeros beyond each clip's length) is zero-padded to ``Q * 512`` samples,
  ``Q = ceil(N / 512)`` windows of ``WINDOW = 512`` samples (32 ms);
* each window is prefixed with the last ``CONTEXT = 64`` samples of the previous window (zeros
  for the first), giving ``[B, Q, 576]``;
* per window: reflect-pad 64 samples on the right (640), an STFT as a strided conv (258 filters of
  256 taps, hop 128: 4 frames of 129 real + 129 imaginary parts), magnitude ``[4, 129]``, four
  conv1d + ReLU layers (kernel 3, strides 1, 2, 2, 1) down to one 128-d feature;
* an LSTM cell (128 → 128) carries ``(h, c)`` across windows (``jax.lax.scan``), then ReLU, a 1x1
  conv and a sigmoid give the speech probability of each window.

:func:`window_logits` returns the pre-sigmoid speech logits ``[B, Q]``; :class:`SileroVAD` wraps
them in the classifier contract of :mod:`jaxadv.classifier` (two classes, ``LABELS``). Everything
is a pure function of ``(params, x, lengths)``, so attacks differentiate through the whole clip.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
from pathlib import Path
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxadv.classifier import ModelOutput, check_batch
from jaxadv.cli import UserError

Array = jax.Array

SAMPLE_RATE = 16000  # Hz; the only rate of the 16k model
WINDOW = 512  # samples per window (32 ms), the step of the streaming model
CONTEXT = 64  # samples of the previous window prefixed to each window
LABELS = ("no_speech", "speech")
DECISIONS = ("mean", "any")  # how window probabilities become the clip's (SileroVAD.decision)

_INSTALL_HINT = "pip install --no-deps silero-vad==6.2.3"  # no torch needed
_SAFETENSORS = "silero_vad_16k.safetensors"
_N_FFT, _HOP, _BINS = 256, 128, 129
_HIDDEN = 128
# the encoder convs (name, stride); all kernel 3, padding 1
_CONVS = (("conv1", 1), ("conv2", 2), ("conv3", 2), ("conv4", 1))
_SHAPES: dict[str, tuple[int, ...]] = {
    "stft_conv.weight": (2 * _BINS, 1, _N_FFT),
    "conv1.weight": (128, _BINS, 3),
    "conv1.bias": (128,),
    "conv2.weight": (64, 128, 3),
    "conv2.bias": (64,),
    "conv3.weight": (64, 64, 3),
    "conv3.bias": (64,),
    "conv4.weight": (128, 64, 3),
    "conv4.bias": (128,),
    "lstm_cell.weight_ih": (4 * _HIDDEN, _HIDDEN),
    "lstm_cell.weight_hh": (4 * _HIDDEN, _HIDDEN),
    "lstm_cell.bias_ih": (4 * _HIDDEN,),
    "lstm_cell.bias_hh": (4 * _HIDDEN,),
    "final_conv.weight": (1, _HIDDEN, 1),
    "final_conv.bias": (1,),
}
# the same tensors in the wheel's ONNX exports (the names of its torch model)
_ONNX_NAMES = {
    "stft_conv.weight": "stft.forward_basis_buffer",
    **{
        f"conv{i + 1}.{p}": f"encoder.{i}.reparam_conv.{p}"
        for i in range(4)
        for p in ("weight", "bias")
    },
    **{
        f"lstm_cell.{p}": f"decoder.rnn.{p}"
        for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    },
    **{f"final_conv.{p}": f"decoder.decoder.2.{p}" for p in ("weight", "bias")},
}
# Full float32 products: on GPUs the default precision may round matmul inputs to TF32/bf16,
# which would cost the parity with onnxruntime; the model is small enough not to care.
_PREC = lax.Precision.HIGHEST
# |STFT|^2 below this gives magnitude 0 with gradient 0 rather than NaN: sqrt's gradient is
# infinite at 0 (digital silence, padding), and re**2 + im**2 can underflow while re is not 0.
# So a window of exact zeros passes no gradient back to its samples (the magnitude has none at 0).
_TINY = 1e-20


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------


def _wheel_file(name: str) -> Path:
    """``silero_vad/data/NAME`` of the installed wheel, located without importing it."""
    try:
        dist = importlib.metadata.distribution("silero-vad")
    except importlib.metadata.PackageNotFoundError:
        raise UserError(
            f"the Silero VAD model needs the silero-vad wheel; install it with: {_INSTALL_HINT}"
        ) from None
    path = Path(str(dist.locate_file(f"silero_vad/data/{name}")))
    if not path.is_file():
        raise UserError(
            f"silero-vad {dist.version} has no silero_vad/data/{name} ({path}); "
            f"install the expected version with: {_INSTALL_HINT}"
        )
    return path


def silero_onnx_path(name: str = "silero_vad.onnx") -> Path:
    """The installed wheel's ONNX model ``silero_vad/data/NAME`` (what ``OnnxWrapper`` runs)."""
    return _wheel_file(name)


def silero_safetensors_path() -> Path:
    """The installed wheel's ``silero_vad_16k.safetensors`` (the weights of its tinygrad model).

    Not the default: in 6.2.3 these are *other* weights than those of the ONNX and JIT models
    (only the STFT basis is shared; 0.35 apart in speech probability), so they match no model
    the wheel runs.
    """
    return _wheel_file(_SAFETENSORS)


def silero_weights(path: str | Path | None = None) -> Path:
    """The weights file to load: ``path`` (``.onnx`` or ``.safetensors``) if given, else the
    installed wheel's ``silero_vad.onnx``, the 6.2.3 model (the same weights as its default JIT
    model and its other ONNX exports).

    Raises :class:`jaxadv.cli.UserError` (naming the ``pip install`` fix) when it is missing.
    """
    if path is None:
        return silero_onnx_path()
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"Silero VAD weights not found: {path} (the silero-vad wheel ships them; install it "
            f"with: {_INSTALL_HINT})"
        )
    if path.suffix not in (".onnx", ".safetensors"):
        raise UserError(f"Silero VAD weights must be a .onnx or .safetensors file, got {path}")
    return path


def _onnx_tensors(path: Path) -> dict[str, np.ndarray]:
    """The 16 kHz model's tensors of a wheel ONNX export, by the safetensors key names.

    The exports name them differently (``If_0_then_branch__Inline_0__encoder.0.reparam_conv.
    weight`` in ``silero_vad.onnx``, ``model.encoder.0...`` in the op15/op18 files) and hold an
    8 kHz twin of each (``else_branch`` / ``model_8k``), told apart by name only: the deeper
    layers have the same shapes at both rates.
    """
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise UserError(
            f"reading the Silero VAD weights from {path} needs the onnx package: pip install onnx"
        ) from None
    try:
        model = onnx.load(str(path))
    except Exception as err:  # a truncated or foreign file: protobuf raises its own types
        raise UserError(f"cannot read Silero VAD weights {path}: {err}") from None
    found: dict[str, list[np.ndarray]] = {}

    def walk(graph: Any) -> None:
        tensors = [(t.name, t) for t in graph.initializer]
        for node in graph.node:
            for attr in node.attribute:
                if node.op_type == "Constant" and attr.name == "value":
                    tensors.append((node.output[0], attr.t))
                if attr.type == onnx.AttributeProto.GRAPH:
                    walk(attr.g)
        for name, tensor in tensors:
            if "8k" in name or "else_branch" in name:
                continue
            for key, onnx_name in _ONNX_NAMES.items():
                if name == onnx_name or name.endswith(("." + onnx_name, "__" + onnx_name)):
                    found.setdefault(key, []).append(numpy_helper.to_array(tensor))

    walk(model.graph)
    out = {}
    for key, values in found.items():
        if len(values) > 1:
            raise UserError(f"Silero VAD weights {path}: {len(values)} candidates for {key!r}")
        out[key] = values[0]
    return out


def load_params(path: str | Path | None = None) -> dict[str, Any]:
    """The params pytree (float32 jnp arrays) of the weights :func:`silero_weights` names.

    The layout follows the safetensors keys: ``{"stft_conv": {"weight"}, "conv1".."conv4":
    {"weight", "bias"}, "lstm_cell": {"weight_ih", "weight_hh", "bias_ih", "bias_hh"},
    "final_conv": {"weight", "bias"}}``, torch layouts (conv ``[out, in, kernel]``, LSTM
    ``[4H, in]``, gates i, f, g, o). Raises :class:`jaxadv.cli.UserError` if a tensor is missing
    or mis-shaped.
    """
    path = silero_weights(path)
    if path.suffix == ".onnx":
        tensors = _onnx_tensors(path)
    else:
        from safetensors.numpy import load_file

        try:
            tensors = load_file(str(path))
        except Exception as err:  # a truncated or foreign file: safetensors raises its own types
            raise UserError(f"cannot read Silero VAD weights {path}: {err}") from None
    params: dict[str, Any] = {}
    for key, shape in _SHAPES.items():
        if key not in tensors:
            raise UserError(f"Silero VAD weights {path} lack tensor {key!r} (expected {shape})")
        value = tensors[key]
        if tuple(value.shape) != shape:
            raise UserError(
                f"Silero VAD weights {path}: tensor {key!r} has shape {tuple(value.shape)}, "
                f"expected {shape}"
            )
        layer, name = key.split(".")
        params.setdefault(layer, {})[name] = jnp.asarray(np.asarray(value, np.float32))
    return params


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------


def num_windows(n: int) -> int:
    """Windows ``Q = ceil(n / WINDOW)`` of an ``n``-sample clip (the tail is zero-padded)."""
    return -(-n // WINDOW)


def _windows(x: Array, lengths: Array) -> Array:
    """``x [B, N]`` → the model inputs ``[B, Q, CONTEXT + WINDOW]``, zeros beyond ``lengths``."""
    b, n = x.shape
    q = num_windows(n)
    x = jnp.where(jnp.arange(n)[None, :] < lengths[:, None], x, 0.0)
    chunks = jnp.pad(x, ((0, 0), (0, q * WINDOW - n))).reshape(b, q, WINDOW)
    # OnnxWrapper's context is the last 64 samples of the previous window's *input*, i.e. of the
    # previous 512-sample chunk; zeros before the first one. Slicing (not gathering) keeps the
    # backward pass cheap.
    prev = jnp.pad(chunks[:, :-1, -CONTEXT:], ((0, 0), (1, 0), (0, 0)))
    return jnp.concatenate([prev, chunks], axis=-1)


def _conv1d(h: Array, weight: Array, bias: Array, stride: int) -> Array:
    """Torch Conv1d (padding 1) on channel-last ``h [M, T, C_in]`` → ``[M, T', C_out]``."""
    out = lax.conv_general_dilated(
        h,
        weight,
        window_strides=(stride,),
        padding=((1, 1),),
        dimension_numbers=("NWC", "OIW", "NWC"),
        precision=_PREC,
    )
    return out + bias


def _encode(params: Any, w: Array) -> Array:
    """Model inputs ``[M, 576]`` → the LSTM inputs ``[M, 128]`` (STFT magnitude and 4 convs)."""
    # torch "reflect" mirrors without repeating the edge sample, as jnp's "reflect" does
    w = jnp.pad(w, ((0, 0), (0, CONTEXT)), mode="reflect")  # [M, 640]
    n_frames = (w.shape[-1] - _N_FFT) // _HOP + 1  # 4
    frames = jnp.stack([w[:, i * _HOP : i * _HOP + _N_FFT] for i in range(n_frames)], axis=1)
    spec = jnp.einsum("mtk,ck->mtc", frames, params["stft_conv"]["weight"][:, 0], precision=_PREC)
    power = spec[..., :_BINS] ** 2 + spec[..., _BINS:] ** 2
    big = power > _TINY
    h = jnp.where(big, jnp.sqrt(jnp.where(big, power, 1.0)), 0.0)  # [M, 4, 129]
    for name, stride in _CONVS:
        h = jax.nn.relu(_conv1d(h, params[name]["weight"], params[name]["bias"], stride))
    return h[:, 0, :]  # the time axis is down to one step: [M, 128]


def window_logits(params: Any, x: Array, lengths: Array) -> Array:
    """Pre-sigmoid speech logits ``[B, Q]`` of each 512-sample window of ``x [B, N]`` (16 kHz).

    ``Q = ceil(N / 512)``; samples at or beyond ``lengths [B]`` count as zeros, so a clip's valid
    windows do not depend on the padding of its batch. The LSTM state starts at zeros and is
    carried across the windows, as in the wheel's streaming ``OnnxWrapper``.
    """
    x = jnp.asarray(x, jnp.float32)
    lengths = jnp.asarray(lengths, jnp.int32)
    b, n = x.shape
    q = num_windows(n)
    feats = _encode(params, _windows(x, lengths).reshape(b * q, -1)).reshape(b, q, _HIDDEN)
    lstm = params["lstm_cell"]
    # the input half of the gates needs no state: one matmul for all windows, outside the scan
    gates_x = (
        jnp.einsum("bqi,gi->qbg", feats, lstm["weight_ih"], precision=_PREC)
        + lstm["bias_ih"]
        + lstm["bias_hh"]
    )

    def step(carry: tuple[Array, Array], gx: Array) -> tuple[tuple[Array, Array], Array]:
        h, c = carry
        gates = gx + jnp.dot(h, lstm["weight_hh"].T, precision=_PREC)
        i, f, g, o = jnp.split(gates, 4, axis=-1)  # torch's gate order
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return (h, c), h

    zeros = jnp.zeros((b, _HIDDEN), jnp.float32)
    _, hs = lax.scan(step, (zeros, zeros), gates_x)  # [Q, B, 128]
    final = params["final_conv"]
    # the wheel's mean over time is over a single step: the 1x1 conv output is the logit
    logits = jnp.dot(jax.nn.relu(hs), final["weight"][0, :, 0], precision=_PREC)
    return (logits + final["bias"][0]).T


def window_mask(n: int, lengths: Array) -> Array:
    """``[B, Q]``: the windows of an ``n``-sample batch that start within each clip's length."""
    starts = jnp.arange(num_windows(n)) * WINDOW
    return starts[None, :] < jnp.asarray(lengths, jnp.int32)[:, None]


@dataclasses.dataclass(frozen=True)
class SileroVAD:
    """Silero VAD as a classifier function (hashable, so attacks can take it as a static arg).

    ``vad(params, x [B, N], lengths [B]) -> ModelOutput`` with ``params = load_params()`` and
    ``x`` at 16 kHz:

    * ``logits [B, Q, 2]`` = ``[-l/2, +l/2]`` for each window's speech logit ``l``, so the
      softmax's speech probability is ``sigmoid(l)``, the model's own;
    * ``mask [B, Q]``: the windows that start within the clip;
    * ``probs [B, 2]`` = ``[1 - m, m]``, ``m`` the mean speech probability over valid windows.

    ``threshold``: the per-window speech decision of :meth:`is_speech` (the wheel's default).

    ``decision``: what the clip's ``probs`` mean, so what an attack must change:

    * ``"mean"``: ``m`` = the mean speech probability (a clip is speech when most of it is);
    * ``"any"``: ``m`` = the largest window speech probability (a clip is speech when the VAD
      fires anywhere, as a speech pipeline gating on it would see it): making speech undetected
      then needs *every* window below 0.5, making noise count as speech only one above.
    """

    threshold: float = 0.5
    decision: str = "mean"
    sample_rate: ClassVar[int] = SAMPLE_RATE
    labels: ClassVar[tuple[str, ...]] = LABELS

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold!r}")
        if self.decision not in DECISIONS:
            raise ValueError(f"decision must be one of {DECISIONS}, got {self.decision!r}")

    def speech_probs(self, params: Any, x: Array, lengths: Array) -> Array:
        """Speech probability ``[B, Q]`` of each window (also of the padding windows)."""
        return jax.nn.sigmoid(window_logits(params, x, lengths))

    def is_speech(self, params: Any, x: Array, lengths: Array) -> Array:
        """``[B, Q]`` bool: valid windows whose speech probability reaches ``threshold``."""
        probs = self.speech_probs(params, x, lengths)
        return (probs >= self.threshold) & window_mask(jnp.shape(x)[1], lengths)

    def __call__(self, params: Any, x: Array, lengths: Array) -> ModelOutput:
        """Waveform batch ``[B, N]`` (16 kHz) and lengths ``[B]`` → :class:`ModelOutput`."""
        x, lengths = check_batch(x, lengths)
        lg = window_logits(params, x, lengths)
        mask = window_mask(x.shape[1], lengths)
        logits = jnp.stack([-0.5 * lg, 0.5 * lg], axis=-1)
        p = jax.nn.sigmoid(lg)
        if self.decision == "any":
            m = jnp.max(jnp.where(mask, p, 0.0), axis=1)
        else:
            # an empty clip (length 0) has no valid window: m = 0 rather than 0 / 0
            m = jnp.sum(jnp.where(mask, p, 0.0), axis=1) / jnp.maximum(jnp.sum(mask, axis=1), 1)
        return ModelOutput(logits, mask, jnp.stack([1.0 - m, m], axis=-1))
