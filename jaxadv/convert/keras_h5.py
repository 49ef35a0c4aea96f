"""Read a full Keras model .h5 (architecture + weights) without Keras.

Three layouts are understood (ORIGINALS.md §3.1):

* **Keras 2.2.x** (what Iqbal's training and Cochlear.ai saved): root attrs ``keras_version``,
  ``backend``, ``model_config`` (JSON, bytes); group ``model_weights`` with attr ``layer_names``;
  one group per layer with attr ``weight_names`` (``<layer>/<var>:0``, bytes), datasets at
  ``model_weights/<layer>/<weight name>``. Long attributes are split into ``name0``, ``name1``, ...
* **tf-keras 2.x** ``model.save("x.h5")``: the same, with str attributes and ``Functional`` models.
* **Keras 3** legacy .h5: the same tree with weight names without ``:0``
  (``<layer>/<var>``) and Keras 3's ``inbound_nodes`` format.

The layer order and the weight order are taken from the ``layer_names`` / ``weight_names``
attributes, never from layer numbering. The model graph comes from ``model_config``. Nothing in
the file is executed: the marshalled bytecode of ``Lambda`` layers is never decoded.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from jaxadv.cli import UserError

# Layers that are the identity at inference; they are removed from the graph (their consumers are
# re-linked to their input). ``Activation('linear')`` is handled the same way.
PASSTHROUGH = frozenset(
    {
        "Dropout",
        "SpatialDropout1D",
        "SpatialDropout2D",
        "GaussianNoise",
        "GaussianDropout",
        "AlphaDropout",
        "ActivityRegularization",
    }
)


class ConversionError(UserError, ValueError):
    """A Keras file that cannot be converted; the message names the file, layer or array (a
    :class:`~jaxadv.cli.UserError`: the converter's command prints it as one line)."""


# What reading a ``model_config`` of an unexpected shape raises (a missing key, a list where a
# dict was expected, a string where a number was expected, ...).
MALFORMED = (KeyError, TypeError, AttributeError, IndexError, ValueError)

RESAVE = "save the full model again with Keras' model.save (or use the original file)"


def malformed(path: str | Path, error: BaseException) -> ConversionError:
    """The :class:`ConversionError` for a ``model_config`` that does not have Keras' structure."""
    what = f"{type(error).__name__}: {error}"
    return ConversionError(
        f"{path}: malformed model_config attribute ({what}); the file was not written by Keras or "
        f"is damaged: {RESAVE}"
    )


@dataclasses.dataclass
class KerasLayer:
    """One layer of the file: its config, its inputs in the graph and its arrays."""

    name: str
    class_name: str
    config: dict[str, Any]
    inbound: list[str]  # names of the layers feeding it, in argument order
    weights: dict[str, np.ndarray]  # short weight name → array, in ``weight_names`` order
    paths: dict[str, str]  # short weight name → dataset path in the file (for messages)

    def describe(self) -> str:
        return f"layer {self.name!r} ({self.class_name})"


@dataclasses.dataclass
class KerasModel:
    """The parsed file: layers in ``model_config`` order, graph edges and metadata."""

    path: Path
    sha256: str
    keras_version: str
    backend: str
    layout: str  # "keras2" (2.2.x), "tf_keras" (2.x) or "keras3"
    layers: dict[str, KerasLayer]
    inputs: list[str]
    outputs: list[str]

    def consumers(self, name: str) -> list[KerasLayer]:
        """Layers that take ``name``'s output, in ``model_config`` order."""
        return [layer for layer in self.layers.values() if name in layer.inbound]

    def class_names(self) -> set[str]:
        return {layer.class_name for layer in self.layers.values()}


def sha256_of(path: str | Path) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _text(value: Any) -> str:
    if isinstance(value, bytes | np.bytes_):
        return bytes(value).decode("utf8")
    return str(value)


def _attr_list(group: h5py.Group, name: str) -> list[str] | None:
    """A string-list attribute, possibly split by Keras into ``name0``, ``name1``, ..."""
    if name in group.attrs:
        return [_text(v) for v in np.atleast_1d(group.attrs[name])]
    if f"{name}0" not in group.attrs:
        return None
    out: list[str] = []
    k = 0
    while f"{name}{k}" in group.attrs:
        out.extend(_text(v) for v in np.atleast_1d(group.attrs[f"{name}{k}"]))
        k += 1
    return out


def _short_name(weight_name: str) -> str:
    """``conv2d_1/kernel:0`` → ``kernel``; Bidirectional ``.../forward_gru_1/kernel:0`` →
    ``forward/kernel``."""
    parts = weight_name.split(":")[0].split("/")
    var = parts[-1]
    for p in parts[:-1]:
        if p.startswith("forward"):
            return f"forward/{var}"
        if p.startswith("backward"):
            return f"backward/{var}"
    return var


def _history(obj: Any, out: list[str]) -> None:
    """Collect ``keras_history`` layer names from a Keras 3 ``inbound_nodes`` entry, in order."""
    if isinstance(obj, dict):
        if obj.get("class_name") == "__keras_tensor__":
            out.append(obj["config"]["keras_history"][0])
            return
        for v in obj.values():
            _history(v, out)
    elif isinstance(obj, list | tuple):
        for v in obj:
            _history(v, out)


def _inbound(layer_cfg: dict[str, Any], path: Path) -> list[str]:
    nodes = layer_cfg.get("inbound_nodes", [])
    if not nodes:
        return []
    if len(nodes) > 1:
        raise ConversionError(
            f"{path}: layer {layer_cfg['name']!r} is called {len(nodes)} times; shared layers "
            "are not supported"
        )
    node = nodes[0]
    names: list[str] = []
    if isinstance(node, dict):  # Keras 3: {"args": [...], "kwargs": {...}}
        _history(node.get("args", []), names)
    else:  # Keras 2: [[name, node_index, tensor_index, kwargs], ...]
        names = [entry[0] for entry in node]
    return names


def _io_names(spec: Any) -> list[str]:
    """``input_layers`` / ``output_layers``: ``[[name, 0, 0], ...]`` or a single ``[name, 0, 0]``."""
    if not spec:
        return []
    if isinstance(spec[0], str):
        return [spec[0]]
    return [s[0] for s in spec]


def _parse_config(model_config: dict[str, Any], path: Path) -> tuple[list[dict], list, list]:
    """Layers (with ``inbound`` names), inputs and outputs of a Functional or Sequential model."""
    cls = model_config.get("class_name")
    cfg = model_config.get("config")
    if cls == "Sequential":
        layers = cfg["layers"] if isinstance(cfg, dict) else cfg
        out = []
        prev = None
        for raw in layers:
            name = raw["config"]["name"]
            out.append({**raw, "name": name, "inbound": [prev] if prev else []})
            prev = name
        return out, [out[0]["name"]], [prev]
    if cls not in ("Model", "Functional") or not isinstance(cfg, dict) or "layers" not in cfg:
        raise ConversionError(
            f"{path}: unsupported model class {cls!r} in model_config (expected a Functional, "
            f"Model or Sequential model with layers); {RESAVE}"
        )
    layers = [{**raw, "inbound": _inbound(raw, path)} for raw in cfg["layers"]]
    return layers, _io_names(cfg.get("input_layers")), _io_names(cfg.get("output_layers"))


def read_keras_h5(path: str | Path) -> KerasModel:
    """Parse a full-model Keras .h5 (any of the three layouts) into a :class:`KerasModel`.

    Raises:
      ConversionError: not a full-model file, or the weights and the config disagree.
    """
    path = Path(path)
    try:
        return _read_keras_h5(path)
    except ConversionError:
        raise
    except (*MALFORMED, OSError) as e:  # a damaged file that h5py opened
        raise ConversionError(
            f"{path}: cannot be read as a Keras model .h5 ({type(e).__name__}: {e}); {RESAVE}"
        ) from e


def _read_keras_h5(path: Path) -> KerasModel:
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "no such file"
        raise ConversionError(
            f"{path}: {what}; give the path of a Keras model .h5 (saved with model.save)"
        )
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise ConversionError(
            f"{path}: not an HDF5 file ({e}); give a Keras model .h5 (saved with model.save)"
        ) from None
    with f:
        if "model_config" not in f.attrs:
            raise ConversionError(
                f"{path}: no 'model_config' attribute; this is a weights-only file or not a "
                "Keras model. Save the full model (model.save) to convert it."
            )
        try:
            model_config = json.loads(_text(f.attrs["model_config"]))
        except (ValueError, TypeError) as e:  # JSONDecodeError, UnicodeDecodeError, non-text
            raise ConversionError(
                f"{path}: the 'model_config' attribute is not valid JSON ({e}); the file is "
                f"damaged or was not written by Keras: {RESAVE}"
            ) from None
        if not isinstance(model_config, dict):
            raise ConversionError(
                f"{path}: the 'model_config' attribute is a JSON {type(model_config).__name__}, "
                f"not an object with 'class_name' and 'config'; {RESAVE}"
            )
        keras_version = _text(f.attrs.get("keras_version", "unknown"))
        backend = _text(f.attrs.get("backend", "unknown"))
        if "model_weights" not in f:
            raise ConversionError(f"{path}: no 'model_weights' group")
        mw = f["model_weights"]
        layer_names = _attr_list(mw, "layer_names")
        if layer_names is None:
            raise ConversionError(f"{path}: 'model_weights' has no 'layer_names' attribute")
        try:
            raw_layers, inputs, outputs = _parse_config(model_config, path)
            names = [raw.get("name") or raw["config"]["name"] for raw in raw_layers]
            bad = [n for n in [*names, *inputs, *outputs] if not isinstance(n, str)]
            bad += [i for raw in raw_layers for i in raw["inbound"] if not isinstance(i, str)]
            if bad:
                raise TypeError(f"layer names must be strings, found {bad[0]!r}")
        except ConversionError:
            raise
        except MALFORMED as e:
            raise malformed(path, e) from e
        weights: dict[str, tuple[dict, dict]] = {}
        any_colon = False
        for lname in layer_names:
            if lname not in mw:
                raise ConversionError(f"{path}: layer {lname!r} is listed but has no group")
            g = mw[lname]
            wnames = _attr_list(g, "weight_names") or []
            arrays: dict[str, np.ndarray] = {}
            paths: dict[str, str] = {}
            for wn in wnames:
                any_colon |= wn.endswith(":0")
                short = _short_name(wn)
                if short in arrays:
                    raise ConversionError(
                        f"{path}: layer {lname!r} has two weights named {short!r}"
                    )
                if wn not in g:
                    raise ConversionError(
                        f"{path}: weight 'model_weights/{lname}/{wn}' is listed but missing"
                    )
                arrays[short] = np.asarray(g[wn])
                paths[short] = f"model_weights/{lname}/{wn}"
            weights[lname] = (arrays, paths)
    has_weights = any(a for a, _ in weights.values())
    if keras_version.startswith("3") or (has_weights and not any_colon):
        layout = "keras3"
    elif _version(keras_version) < (2, 3):
        layout = "keras2"
    else:
        layout = "tf_keras"
    layers: dict[str, KerasLayer] = {}
    for name, raw in zip(names, raw_layers, strict=True):
        arrays, paths = weights.pop(name, ({}, {}))
        cls, config = raw.get("class_name"), raw.get("config", {})
        if not isinstance(cls, str) or not isinstance(config, dict):
            raise malformed(path, TypeError(f"layer {name!r} has no class_name or config object"))
        layers[name] = KerasLayer(name, cls, config, raw["inbound"], arrays, paths)
    stray = [n for n, (a, _) in weights.items() if a]
    if stray:
        raise ConversionError(f"{path}: weights of layers {stray} that model_config does not have")
    _remove_passthrough(layers, outputs)
    for layer in layers.values():
        for src in layer.inbound:
            if src not in layers:
                raise ConversionError(
                    f"{path}: {layer.describe()} reads from unknown layer {src!r}"
                )
    return KerasModel(
        path, sha256_of(path), keras_version, backend, layout, layers, inputs, outputs
    )


def _version(text: str) -> tuple[int, ...]:
    """``"2.2.4"`` → ``(2, 2)``; unparseable → ``(99,)``."""
    try:
        return tuple(int(p) for p in text.split(".")[:2])
    except ValueError:
        return (99,)


def _is_passthrough(layer: KerasLayer) -> bool:
    if layer.class_name in PASSTHROUGH:
        return True
    return layer.class_name == "Activation" and layer.config.get("activation") == "linear"


def _remove_passthrough(layers: dict[str, KerasLayer], outputs: list[str]) -> None:
    """Drop identity-at-inference layers, re-linking their consumers to their input."""
    for name in [n for n, layer in layers.items() if _is_passthrough(layer)]:
        layer = layers.pop(name)
        if layer.weights or len(layer.inbound) != 1:
            raise ConversionError(f"{layer.describe()} cannot be skipped")
        src = layer.inbound[0]
        for other in layers.values():
            other.inbound = [src if i == name else i for i in other.inbound]
        outputs[:] = [src if o == name else o for o in outputs]
