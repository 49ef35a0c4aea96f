"""Recognise one of the five architectures in a parsed Keras model and plan its weight mapping.

Each extractor walks the ``model_config`` graph from the input to the output, checks every layer's
type and config (padding, strides, activations, BN epsilon, GRU gates, kapre settings, ...),
derives the jaxadv model config from the layers it finds (filters, kernel and pool sizes, heads,
...) and returns an ordered list of :class:`Assign` — which Keras layer's arrays go to which Flax
module. The generic mapper (``jaxadv.convert.mapping``) then moves the arrays with shape checks. A layer
type outside :data:`SUPPORTED`, a setting the Flax port does not implement, or a layer that is not
part of the recognised structure fails with a :class:`ConversionError` naming it.

``Lambda`` layers (CRNN's mean over the mel axis) are recognised by their place in the graph only;
their marshalled bytecode is never decoded or executed.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from jaxadv import config as C
from jaxadv import models
from jaxadv.convert.keras_h5 import ConversionError, KerasLayer, KerasModel
from jaxadv.frontend import mel_filterbank, periodic_hann

SUPPORTED = frozenset(
    {
        "InputLayer",
        "Conv1D",
        "Conv2D",
        "GatedConv",
        "BatchNormalization",
        "Activation",
        "MaxPooling1D",
        "MaxPooling2D",
        "GlobalAveragePooling1D",
        "GlobalAveragePooling2D",
        "Dense",
        "Lambda",
        "Bidirectional",
        "Reshape",
        "Permute",
        "Concatenate",
        "Multiply",
        "Average",
        "Melspectrogram",
    }
)

# Tolerance for kapre's fixed DFT kernels and mel matrix against ours (float32 values <= 1).
KAPRE_ATOL = 1e-5


@dataclasses.dataclass(frozen=True)
class Assign:
    """Move the arrays of Keras layer ``layer`` (of kind ``kind``) to Flax module ``path``."""

    layer: KerasLayer
    kind: str  # "conv" | "dense" | "bn" | "bigru"
    path: tuple[str, ...]


@dataclasses.dataclass
class Plan:
    """What an extractor found: the model config, the weight moves, and notes for the sidecar."""

    config: Any
    assigns: list[Assign]
    verified: list[str]  # layers whose fixed arrays were checked and are not stored
    notes: dict[str, Any]


def detect(km: KerasModel) -> str:
    """The jaxadv model name of a parsed Keras model (from its layer types)."""
    check_supported(km)
    cls = km.class_names()
    if "Melspectrogram" in cls:
        return "dense_mel"
    if "GatedConv" in cls and "Bidirectional" in cls:
        raise ConversionError(
            f"{km.path}: a GCRNN (gated conv + GRU) is not one of the five models"
        )
    if "GatedConv" in cls:
        return "gcnn"
    if "Bidirectional" in cls:
        return "crnn"
    if "Conv1D" in cls:
        return "dense_wav"
    if "Conv2D" in cls:
        return "vgg13"
    raise ConversionError(f"{km.path}: no convolution layers; not one of {sorted(models.MODELS)}")


def check_supported(km: KerasModel) -> None:
    for layer in km.layers.values():
        if layer.class_name not in SUPPORTED:
            raise ConversionError(
                f"{km.path}: {layer.describe()} has a type the converter does not support, so "
                f"this is not one of the five attacked models ({', '.join(sorted(models.MODELS))}):"
                f" convert one of their .h5 files (supported layer types: "
                f"{', '.join(sorted(SUPPORTED))})"
            )


def extract(km: KerasModel, name: str) -> Plan:
    """Recognise architecture ``name`` in ``km`` and plan the mapping."""
    check_supported(km)
    if name in ("vgg13", "crnn", "gcnn"):
        return _extract_iqbal(km, name)
    if name in ("dense_mel", "dense_wav"):
        return _extract_cochlear(km, name)
    raise ConversionError(f"unknown model {name!r}; choose one of {sorted(models.MODELS)}")


# ---------------------------------------------------------------------------------------------
# Graph walking and config checks
# ---------------------------------------------------------------------------------------------


class _Walker:
    """Follows the graph, remembering every layer it has matched."""

    def __init__(self, km: KerasModel, arch: str):
        self.km = km
        self.arch = arch
        self.seen: set[str] = set()

    def fail(self, msg: str) -> ConversionError:
        return ConversionError(f"{self.km.path} (as {self.arch}): {msg}")

    def take(self, layer: KerasLayer) -> KerasLayer:
        self.seen.add(layer.name)
        return layer

    def input(self, shape: tuple) -> KerasLayer:
        if len(self.km.inputs) != 1:
            raise self.fail(f"expected one input, found {self.km.inputs}")
        layer = self.km.layers[self.km.inputs[0]]
        c = layer.config
        got = c.get("batch_input_shape", c.get("batch_shape"))
        if got is not None and tuple(got) != shape:
            raise self.fail(f"input {layer.name!r} has shape {tuple(got)}, expected {shape}")
        return self.take(layer)

    def consumers(self, cur: KerasLayer) -> list[KerasLayer]:
        return self.km.consumers(cur.name)

    def next(self, cur: KerasLayer, cls: str, *, among: bool = False) -> KerasLayer:
        """The consumer of ``cur`` of type ``cls`` (the only consumer unless ``among``)."""
        cons = self.consumers(cur)
        hits = [c for c in cons if c.class_name == cls]
        if len(hits) != 1 or (not among and len(cons) != 1):
            found = ", ".join(c.describe() for c in cons) or "nothing"
            raise self.fail(f"after {cur.describe()} expected a {cls}, found {found}")
        return self.take(hits[0])

    def finish(self, output: KerasLayer) -> None:
        if self.km.outputs != [output.name]:
            raise self.fail(
                f"expected {output.describe()} to be the only output, found {self.km.outputs}"
            )
        rest = sorted(set(self.km.layers) - self.seen)
        if rest:
            desc = ", ".join(self.km.layers[n].describe() for n in rest)
            raise self.fail(f"layers not part of the architecture: {desc}")


def _fail(layer: KerasLayer, key: str, got: Any, want: Any) -> ConversionError:
    return ConversionError(f"{layer.describe()}: {key} is {got!r}, expected {want!r}")


def _tuple(v: Any, n: int) -> tuple:
    return tuple(v) if isinstance(v, list | tuple) else (v,) * n


def _expect(layer: KerasLayer, key: str, want: Any, default: Any = None) -> None:
    got = layer.config.get(key, default)
    if isinstance(got, list):
        got = tuple(got)
    if got != want:
        raise _fail(layer, key, got, want)


def _check_conv(layer: KerasLayer, ndim: int, activation: str) -> tuple[int, tuple[int, ...]]:
    """Stride-1 'same' channels-last convolution with bias; returns (filters, kernel size)."""
    c = layer.config
    _expect(layer, "padding", "same")
    _expect(layer, "activation", activation)
    _expect(layer, "use_bias", True)
    if _tuple(c.get("strides", 1), ndim) != (1,) * ndim:
        raise _fail(layer, "strides", c.get("strides"), (1,) * ndim)
    if _tuple(c.get("dilation_rate", 1), ndim) != (1,) * ndim:
        raise _fail(layer, "dilation_rate", c.get("dilation_rate"), (1,) * ndim)
    if c.get("data_format", "channels_last") not in (None, "channels_last"):
        raise _fail(layer, "data_format", c.get("data_format"), "channels_last")
    if c.get("groups", 1) != 1:
        raise _fail(layer, "groups", c.get("groups"), 1)
    filters = c["n_filters"] if layer.class_name == "GatedConv" else c["filters"]
    return int(filters), _tuple(c["kernel_size"], ndim)


def _check_bn(layer: KerasLayer, rank: int) -> None:
    """BatchNormalization over the last axis with Keras' defaults the port hard-codes."""
    c = layer.config
    axis = c.get("axis", -1)
    axis = axis[0] if isinstance(axis, list | tuple) and len(axis) == 1 else axis
    if axis not in (-1, rank - 1):
        raise _fail(layer, "axis", c.get("axis"), -1)
    eps = float(c.get("epsilon", C.KERAS_BN_EPSILON))
    if abs(eps - C.KERAS_BN_EPSILON) > 1e-12:
        raise _fail(layer, "epsilon", eps, C.KERAS_BN_EPSILON)
    _expect(layer, "center", True, True)
    _expect(layer, "scale", True, True)


def _check_dense(layer: KerasLayer, activation: str) -> int:
    _expect(layer, "activation", activation)
    _expect(layer, "use_bias", True, True)
    return int(layer.config["units"])


def _check_pool(layer: KerasLayer, ndim: int, padding: str) -> tuple[int, ...]:
    c = layer.config
    pool = _tuple(c.get("pool_size", 2), ndim)
    _expect(layer, "padding", padding)
    strides = c.get("strides")
    if strides is not None and _tuple(strides, ndim) != pool:
        raise _fail(layer, "strides", strides, pool)
    if c.get("data_format", "channels_last") not in (None, "channels_last"):
        raise _fail(layer, "data_format", c.get("data_format"), "channels_last")
    return pool


def _check_activation(layer: KerasLayer, activation: str) -> None:
    _expect(layer, "activation", activation)


# ---------------------------------------------------------------------------------------------
# Iqbal et al.: vgg13, crnn, gcnn
# ---------------------------------------------------------------------------------------------


def _check_gru(bi: KerasLayer, keras_version: str) -> int:
    """Bidirectional(GRU) with Keras 2.2.4's settings; returns the units per direction."""
    _expect(bi, "merge_mode", "concat")
    inner = bi.config.get("layer", {})
    if inner.get("class_name") != "GRU":
        raise _fail(bi, "wrapped layer", inner.get("class_name"), "GRU")
    g = KerasLayer(
        f"{bi.name}/{inner['config'].get('name', 'gru')}", "GRU", inner["config"], [], {}, {}
    )
    _expect(g, "activation", "relu")
    _expect(g, "recurrent_activation", "hard_sigmoid")
    if keras_version.startswith("3"):
        raise ConversionError(
            f"{bi.describe()}: saved by Keras {keras_version}, whose hard_sigmoid is "
            "clip(x/6 + 0.5, 0, 1); the port implements Keras 2.2.4's clip(0.2x + 0.5, 0, 1)"
        )
    _expect(g, "use_bias", True, True)
    # Keras 2.2.4 stored reset_after (default False); older files lack the key.
    _expect(g, "reset_after", False, False)
    _expect(g, "return_sequences", True)
    _expect(g, "go_backwards", False, False)
    _expect(g, "stateful", False, False)
    return int(g.config["units"])


def _extract_iqbal(km: KerasModel, arch: str) -> Plan:
    w = _Walker(km, arch)
    x = w.input((None, C.CHUNK_FRAMES, C.N_MELS, 1))
    conv_cls = "GatedConv" if arch == "gcnn" else "Conv2D"
    act = "linear" if arch == "gcnn" else "relu"
    assigns: list[Assign] = []
    filters: list[int] = []
    while [c.class_name for c in w.consumers(x)] == [conv_cls]:
        b = len(filters)
        fs = []
        for j in range(2):
            conv = w.next(x, conv_cls)
            f, k = _check_conv(conv, 2, act)
            if k != (3, 3):
                raise _fail(conv, "kernel_size", k, (3, 3))
            bn = w.next(conv, "BatchNormalization")
            _check_bn(bn, 4)
            assigns += [Assign(conv, "conv", (f"block_{b}", f"conv_{j}"))]
            assigns += [Assign(bn, "bn", (f"block_{b}", f"bn_{j}"))]
            fs.append(f)
            x = bn
        if fs[0] != fs[1]:
            raise w.fail(f"block {b} has convolutions with {fs[0]} and {fs[1]} filters")
        x = w.next(x, "MaxPooling2D")
        if _check_pool(x, 2, "valid") != (2, 2):
            raise _fail(x, "pool_size", x.config.get("pool_size"), (2, 2))
        filters.append(fs[0])
    if not filters:
        raise w.fail(f"expected {conv_cls} blocks after the input")
    extra: dict[str, Any] = {}
    if arch == "crnn":
        lam = w.next(x, "Lambda")  # mean over the mel axis; identified by its place only
        bi = w.next(lam, "Bidirectional")
        extra["gru_units"] = _check_gru(bi, km.keras_version)
        assigns.append(Assign(bi, "bigru", ("bigru",)))
        x = w.next(bi, "GlobalAveragePooling1D")
    else:
        x = w.next(x, "GlobalAveragePooling2D")
    dense = w.next(x, "Dense")
    num_classes = _check_dense(dense, "softmax")
    assigns.append(Assign(dense, "dense", ("dense",)))
    w.finish(dense)
    cfg = models.MODELS[arch](width=1.0, num_classes=num_classes, filters=tuple(filters), **extra)
    notes = {"lambda": "identified by position (mean over mel)"} if arch == "crnn" else {}
    return Plan(cfg, assigns, [], notes)


# ---------------------------------------------------------------------------------------------
# Cochlear.ai: dense_mel, dense_wav
# ---------------------------------------------------------------------------------------------


def _check_kapre(layer: KerasLayer) -> dict[str, int]:
    """kapre 0.1.3.1 Melspectrogram settings KapreFrontend implements, and its fixed arrays."""
    c = layer.config
    _expect(layer, "padding", "same")
    _expect(layer, "return_decibel_melgram", True)
    _expect(layer, "return_decibel_spectrogram", False, False)
    _expect(layer, "htk", False, False)
    _expect(layer, "image_data_format", "channels_last", "channels_last")
    for key, want in (("power_melgram", 1.0), ("power_spectrogram", 2.0)):
        if float(c.get(key, want)) != want:
            raise _fail(layer, key, c.get(key), want)
    if c.get("norm", 1) not in (1, 1.0, "slaney"):
        raise _fail(layer, "norm", c.get("norm"), 1)
    sr, n_dft, n_mels = int(c["sr"]), int(c["n_dft"]), int(c["n_mels"])
    n_hop = int(c.get("n_hop") or n_dft // 2)
    if n_dft % n_hop:
        raise _fail(layer, "n_hop", n_hop, f"a divisor of n_dft={n_dft}")
    if float(c.get("fmin", 0.0)) != 0.0:
        raise _fail(layer, "fmin", c.get("fmin"), 0.0)
    fmax = c.get("fmax")
    if fmax is not None and float(fmax) != sr / 2:
        raise _fail(layer, "fmax", fmax, sr / 2)
    _verify_kapre_arrays(layer, n_dft, sr, n_mels)
    return {"sample_rate": sr, "n_dft": n_dft, "n_hop": n_hop, "n_mels": n_mels}


def _verify_kapre_arrays(layer: KerasLayer, n_dft: int, sr: int, n_mels: int) -> None:
    """The DFT kernels and mel matrix stored in the file must be the ones the port computes."""
    n_freq = n_dft // 2 + 1
    t = np.arange(n_dft)[:, None]
    k = np.arange(n_freq)[None, :]
    win = periodic_hann(n_dft)[:, None]
    want = {
        "real_kernels": (np.cos(2 * np.pi * k * t / n_dft) * win)[:, None, None, :],
        "imag_kernels": (-np.sin(2 * np.pi * k * t / n_dft) * win)[:, None, None, :],
    }
    arrays = dict(layer.weights)
    for name, ref in want.items():
        if name not in arrays:
            raise ConversionError(f"{layer.describe()}: no '{name}' array (has {sorted(arrays)})")
        _compare_fixed(layer, name, arrays.pop(name), ref)
    mels = [n for n, a in arrays.items() if a.shape == (n_freq, n_mels)]
    if len(mels) != 1 or len(arrays) != 1:
        raise ConversionError(
            f"{layer.describe()}: expected one mel matrix of shape {(n_freq, n_mels)} besides the "
            f"DFT kernels, found {[(n, a.shape) for n, a in arrays.items()]}"
        )
    _compare_fixed(layer, mels[0], arrays[mels[0]], mel_filterbank(sr, n_dft, n_mels))


def _compare_fixed(layer: KerasLayer, name: str, got: np.ndarray, want: np.ndarray) -> None:
    path = layer.paths.get(name, name)
    if got.shape != want.shape:
        raise ConversionError(f"{path}: shape {got.shape}, expected {want.shape}")
    err = float(np.max(np.abs(got.astype(np.float64) - want)))
    if err > KAPRE_ATOL:
        raise ConversionError(
            f"{path}: differs from the DFT/window/mel the port computes by {err:.3g} "
            f"(> {KAPRE_ATOL}); trained or non-standard kapre weights are not supported"
        )


def _extract_cochlear(km: KerasModel, arch: str) -> Plan:
    w = _Walker(km, arch)
    ndim = 2 if arch == "dense_mel" else 1
    conv_cls, pool_cls = f"Conv{ndim}D", f"MaxPooling{ndim}D"
    gap_cls = f"GlobalAveragePooling{ndim}D"
    x = w.input((None, None))
    r = w.next(x, "Reshape")
    _expect(r, "target_shape", (-1, 1))
    wave_bn = w.next(r, "BatchNormalization")
    _check_bn(wave_bn, 3)
    assigns = [Assign(wave_bn, "bn", ("wave_bn",))]
    verified: list[str] = []
    extra: dict[str, Any] = {}
    x = wave_bn
    if arch == "dense_mel":
        r2 = w.next(x, "Reshape")
        _expect(r2, "target_shape", (1, -1))
        mel = w.next(r2, "Melspectrogram")
        extra.update(_check_kapre(mel))
        verified.append(mel.name)
        p1 = w.next(mel, "Permute")
        _expect(p1, "dims", (3, 2, 1))
        mel_bn = w.next(p1, "BatchNormalization")
        _check_bn(mel_bn, 4)
        p2 = w.next(mel_bn, "Permute")
        _expect(p2, "dims", (3, 2, 1))
        assigns.append(Assign(mel_bn, "bn", ("mel_bn",)))
        x = p2
    # stem: Conv(k) concatenated after its input
    stem = w.next(x, conv_cls, among=True)
    n_stem, kernel = _check_conv(stem, ndim, "linear")
    cat = w.next(stem, "Concatenate")
    if cat.inbound != [x.name, stem.name]:
        raise _fail(cat, "inputs", cat.inbound, [x.name, stem.name])
    _expect(cat, "axis", -1)
    assigns.append(Assign(stem, "conv", ("trunk", "stem")))
    x = cat
    filters: list[int] = []
    pools: set[tuple[int, ...]] = set()
    ses: set[int] = set()
    while len(w.consumers(x)) == 2:  # a block: [BN ..., Concatenate]
        b = len(filters)
        base = ("trunk", f"block_{b}")
        bn0 = w.next(x, "BatchNormalization", among=True)
        _check_bn(bn0, ndim + 2)
        a0 = w.next(bn0, "Activation")
        _check_activation(a0, "relu")
        c0 = w.next(a0, conv_cls)
        f, k0 = _check_conv(c0, ndim, "linear")
        if k0 != (1,) * ndim:
            raise _fail(c0, "kernel_size", k0, (1,) * ndim)
        bn1 = w.next(c0, "BatchNormalization")
        _check_bn(bn1, ndim + 2)
        a1 = w.next(bn1, "Activation")
        _check_activation(a1, "relu")
        c1 = w.next(a1, conv_cls)
        f1, k1 = _check_conv(c1, ndim, "linear")
        if (f1, k1) != (f, kernel):
            raise _fail(c1, "(filters, kernel_size)", (f1, k1), (f, kernel))
        assigns += [
            Assign(bn0, "bn", (*base, "bn_0")),
            Assign(c0, "conv", (*base, "conv_0")),
            Assign(bn1, "bn", (*base, "bn_1")),
            Assign(c1, "conv", (*base, "conv_1")),
        ]
        y = c1
        if len(w.consumers(c1)) == 2:  # squeeze-excitation
            gap = w.next(c1, gap_cls, among=True)
            rs = w.next(gap, "Reshape")
            d0 = w.next(rs, "Dense")
            units = _check_dense(d0, "relu")
            d1 = w.next(d0, "Dense")
            if _check_dense(d1, "sigmoid") != f:
                raise _fail(d1, "units", d1.config["units"], f)
            mul = w.next(d1, "Multiply")
            if sorted(mul.inbound) != sorted([c1.name, d1.name]):
                raise _fail(mul, "inputs", mul.inbound, [c1.name, d1.name])
            r_se = max(1, f // units)
            if max(1, f // r_se) != units:
                raise _fail(d0, "units", units, f"{f} // r for an integer r")
            ses.add(r_se)
            assigns += [Assign(d0, "dense", (*base, "se_0")), Assign(d1, "dense", (*base, "se_1"))]
            y = mul
        else:
            ses.add(0)
        cat = w.next(y, "Concatenate", among=True)
        if cat.inbound != [y.name, x.name]:
            raise _fail(cat, "inputs", cat.inbound, [y.name, x.name])
        _expect(cat, "axis", -1)
        x = w.next(cat, pool_cls)
        pools.add(_check_pool(x, ndim, "same"))
        filters.append(f)
    if not filters:
        raise w.fail("expected dense blocks after the stem")
    if len(pools) != 1 or len(ses) != 1:
        raise w.fail(
            f"blocks differ in pool size {sorted(pools)} or squeeze-excitation {sorted(ses)}; "
            "the port supports one setting for all blocks"
        )
    bn_out = w.next(x, "BatchNormalization")
    _check_bn(bn_out, ndim + 2)
    act = w.next(bn_out, "Activation")
    _check_activation(act, "relu")
    assigns.append(Assign(bn_out, "bn", ("trunk", "bn_out")))
    heads = w.consumers(act)
    if not heads or any(h.class_name != "Dense" for h in heads):
        raise w.fail(
            f"after {act.describe()} expected Dense heads, found {[h.describe() for h in heads]}"
        )
    softmaxes = {}
    for h in heads:
        w.take(h)
        _check_dense(h, "linear")
        gap = w.next(h, gap_cls)
        sm = w.next(gap, "Activation")
        _check_activation(sm, "softmax")
        softmaxes[sm.name] = h
    if len(heads) == 1:
        out = next(iter(km.layers[n] for n in softmaxes))
        order = [heads[0]]
    else:
        first = km.layers[next(iter(softmaxes))]
        out = w.next(first, "Average")
        if sorted(out.inbound) != sorted(softmaxes):
            raise _fail(out, "inputs", out.inbound, sorted(softmaxes))
        order = [softmaxes[n] for n in out.inbound]  # the Average's input order
    assigns += [Assign(h, "dense", ("trunk", f"head_{i}")) for i, h in enumerate(order)]
    w.finish(out)
    num_classes = int(order[0].config["units"])
    cfg = models.MODELS[arch](
        width=1.0,
        num_classes=num_classes,
        stem=n_stem,
        filters=tuple(filters),
        kernel=_square(stem, kernel),
        pool=next(iter(pools)),
        se_reduction=next(iter(ses)),
        n_heads=len(order),
        **extra,
    )
    return Plan(cfg, assigns, verified, {})


def _square(layer: KerasLayer, kernel: tuple[int, ...]) -> int:
    if len(set(kernel)) != 1:
        raise _fail(layer, "kernel_size", kernel, "a square kernel")
    return kernel[0]
