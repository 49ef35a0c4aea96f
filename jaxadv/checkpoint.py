"""Checkpoints: orbax arrays plus a JSON sidecar that says what they are.

A checkpoint directory holds::

    <dir>/jaxadv.json   # sidecar: model name and config, front-end, merge, standardisation,
                        # labels, provenance (source file SHA-256 or "trained"), jaxadv version
    <dir>/params/       # orbax StandardCheckpointer of the classifier params pytree

The same loader serves converted Keras checkpoints (``jaxadv-convert``), trained models and the
demo models. :func:`load_checkpoint` reads the sidecar first, rebuilds the
:class:`~jaxadv.classifier.Classifier`, compares the stored tree structure and shapes with the
model's abstract params (``jax.eval_shape`` of its init) and only then restores, so a checkpoint
of another architecture, width or label count fails with a message naming both sides.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxadv import config as C
from jaxadv import models
from jaxadv.classifier import Classifier
from jaxadv.cli import UserError
from jaxadv.frontend import get_frontend

SIDECAR = "jaxadv.json"
PARAMS_DIR = "params"
FORMAT = "jaxadv-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(UserError, ValueError):
    """A checkpoint that is missing, corrupt or does not match what the caller expects."""


REMAKE = "re-convert it from its .h5 file or re-train it"


def _flat_shapes(tree: Any) -> dict[str, tuple[tuple[int, ...], str]]:
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {
        "/".join(str(getattr(k, "key", k)) for k in path): (
            tuple(leaf.shape),
            str(np.dtype(leaf.dtype)),
        )
        for path, leaf in flat
    }


def _diff_trees(got: Any, want: Any, what_got: str, what_want: str) -> str | None:
    """A readable description of structure/shape differences, or None if they agree."""
    g, w = _flat_shapes(got), _flat_shapes(want)
    lines = []
    for k in sorted(set(g) - set(w))[:5]:
        lines.append(f"  {k}: only in {what_got} {g[k][0]}")
    for k in sorted(set(w) - set(g))[:5]:
        lines.append(f"  {k}: only in {what_want} {w[k][0]}")
    for k in sorted(set(g) & set(w)):
        if g[k] != w[k] and len(lines) < 15:
            lines.append(
                f"  {k}: {what_got} {g[k][0]} {g[k][1]} vs {what_want} {w[k][0]} {w[k][1]}"
            )
    n_bad = len(set(g) ^ set(w)) + sum(g[k] != w[k] for k in set(g) & set(w))
    if not n_bad:
        return None
    return f"{n_bad} differences:\n" + "\n".join(lines)


def _frontend_dict(fe: Any) -> dict[str, Any] | None:
    if fe is None:
        return None
    return {"name": fe.name, **dataclasses.asdict(fe)}


def describe(classifier: Classifier) -> dict[str, Any]:
    """The sidecar fields that define a classifier (model config, front-end, merge, logits)."""
    return {
        "model": classifier.model,
        "model_config": models.config_to_dict(classifier.model_config),
        "frontend": _frontend_dict(classifier.frontend),
        "merge": classifier.merge,
        "cochlear_logits": classifier.cochlear_logits,
    }


def classifier_from_meta(meta: dict[str, Any]) -> Classifier:
    """Rebuild the :class:`Classifier` a sidecar describes."""
    cfg = models.config_from_dict(meta["model_config"])
    fe = meta.get("frontend")
    frontend = None
    if fe is not None:
        fe = dict(fe)
        frontend = get_frontend(fe.pop("name"), **fe)
    return Classifier(
        cfg, frontend, meta.get("merge", "mean"), meta.get("cochlear_logits", "probs")
    )


def save_checkpoint(
    directory: str | Path,
    classifier: Classifier,
    params: Any,
    *,
    labels: tuple[str, ...] | list[str] = C.LABELS,
    source: str | dict[str, Any] = "trained",
    extra: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write ``params`` (orbax) and the sidecar ``jaxadv.json``; returns the sidecar dict.

    Args:
      directory: the checkpoint directory (created; must be empty unless ``overwrite``).
      classifier: what the params belong to (model config, front-end, merge, ...).
      params: the classifier params pytree (``{"model": {...}, "norm": {...}}``).
      labels: class names, one per output (default: the 41 FSDKaggle2018 labels).
      source: ``"trained"`` or a dict describing a converted file (``{"file", "sha256", ...}``).
      extra: further JSON-serialisable fields for the sidecar.
    """
    import orbax.checkpoint as ocp

    directory = Path(directory).absolute()
    labels = list(labels)
    if len(labels) != classifier.num_classes:
        raise CheckpointError(
            f"{len(labels)} labels for a model with {classifier.num_classes} classes"
        )
    diff = _diff_trees(params, classifier.abstract_params(), "params", f"model {classifier.model}")
    if diff:
        raise CheckpointError(f"params do not fit {classifier.model}: {diff}")
    if directory.exists() and any(directory.iterdir()):
        if not overwrite:
            raise CheckpointError(f"{directory} is not empty (pass overwrite=True to replace it)")
        import shutil

        shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)
    params = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float32), params)
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(directory / PARAMS_DIR, params)
        ckptr.wait_until_finished()
    norm = params.get("norm")
    from jaxadv import __version__

    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        **describe(classifier),
        "standardisation": None
        if norm is None
        else {"mean": float(norm["mean"]), "std": float(norm["std"])},
        "labels": labels,
        "sample_rate": C.SAMPLE_RATE,  # what the five models' front-ends take
        "num_classes": classifier.num_classes,
        "param_count": models.param_count(params["model"]),
        "source": source,
        "jaxadv_version": __version__,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        **(extra or {}),
    }
    (directory / SIDECAR).write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def read_meta(directory: str | Path) -> dict[str, Any]:
    """The sidecar of a checkpoint, validated (clear errors for missing or corrupt files)."""
    path = Path(directory) / SIDECAR
    if not path.is_file():
        raise CheckpointError(f"{path} not found: {directory} is not a jaxadv checkpoint")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a jaxadv checkpoint sidecar (no format={FORMAT!r})")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format_version {meta.get('format_version')!r}, this jaxadv reads "
            f"{FORMAT_VERSION}"
        )
    missing = [k for k in ("model", "model_config", "labels", "num_classes") if k not in meta]
    if missing:
        raise CheckpointError(f"{path} lacks the fields {missing}")
    counts = {
        "labels": len(meta["labels"]),
        "num_classes": meta["num_classes"],
        "model_config.num_classes": meta["model_config"].get("num_classes"),
    }
    if len(set(counts.values())) != 1:
        raise CheckpointError(f"{path}: inconsistent class counts {counts}")
    return meta


def _expected_config(expect: Any) -> tuple[str, Any]:
    if isinstance(expect, Classifier):
        return expect.model, expect.model_config
    if isinstance(expect, str):
        return expect, None
    return expect.name, expect


def load_checkpoint(
    directory: str | Path, *, expect: Classifier | models.ModelConfig | str | None = None
) -> tuple[Classifier, Any, dict[str, Any]]:
    """Restore a checkpoint: ``(classifier, params, sidecar)`` (an ONNX checkpoint:
    :func:`load_onnx_checkpoint`).

    Args:
      directory: a directory written by :func:`save_checkpoint` (or ``jaxadv-convert``).
      expect: optional model name, model config or classifier the checkpoint must match (model,
        width, class count and every other architecture field); a mismatch raises a
        :class:`CheckpointError` naming both sides before any array is read.
    """
    import orbax.checkpoint as ocp

    directory = Path(directory).absolute()
    meta = read_meta(directory)
    if meta.get("model") == ONNX_MODEL:
        if expect is not None:
            name, _ = _expected_config(expect)
            raise CheckpointError(f"{directory} holds an ONNX model, expected {name!r}")
        return load_onnx_checkpoint(directory)
    try:
        clf = classifier_from_meta(meta)
    except (TypeError, ValueError, KeyError) as e:
        raise CheckpointError(f"{directory / SIDECAR}: invalid model description: {e}") from None
    if expect is not None:
        name, cfg = _expected_config(expect)
        if name != clf.model:
            raise CheckpointError(f"{directory} holds a {clf.model!r} model, expected {name!r}")
        if cfg is not None and cfg != clf.model_config:
            got, want = models.config_to_dict(clf.model_config), models.config_to_dict(cfg)
            diffs = {k: (got.get(k), want.get(k)) for k in got if got.get(k) != want.get(k)}
            desc = ", ".join(
                f"{k}: checkpoint {a!r} vs expected {b!r}" for k, (a, b) in diffs.items()
            )
            raise CheckpointError(f"{directory} holds a different {clf.model}: {desc}")
    abstract = clf.abstract_params()
    pdir = directory / PARAMS_DIR
    if not pdir.is_dir():
        raise CheckpointError(f"{pdir} not found: the checkpoint has no arrays")
    with ocp.StandardCheckpointer() as ckptr:
        try:
            stored = ckptr.metadata(pdir).item_metadata.tree
        except Exception as e:  # orbax raises various types for damaged directories
            raise CheckpointError(
                f"{directory}: damaged checkpoint, unreadable orbax metadata in {pdir} "
                f"({_first_line(e)}); {REMAKE}"
            ) from e
        diff = _diff_trees(stored, abstract, "stored arrays", f"{clf.model} per {SIDECAR}")
        if diff:
            raise CheckpointError(
                f"{directory}: the arrays do not match the sidecar's model: {diff}"
            )
        # Read every array once without orbax first: orbax's asynchronous restore of a damaged
        # file fails with a raw tensorstore error and leaves reads behind that print "Event loop
        # is closed" tracebacks from other threads.
        _verify_arrays(directory, pdir)
        try:
            params = ckptr.restore(pdir, abstract)
        except Exception as e:
            raise CheckpointError(
                f"{directory}: damaged checkpoint, cannot restore its arrays "
                f"({_first_line(e)}); {REMAKE}"
            ) from e
    return clf, params, meta


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"


def _verify_arrays(directory: Path, pdir: Path) -> None:
    """Read and decode every array of an OCDBT orbax checkpoint synchronously (tensorstore).

    Raises :class:`CheckpointError` naming the checkpoint and the first damaged array (a
    truncated file: tensorstore ``OUT_OF_RANGE``; flipped bytes: a ZSTD decoding error). A layout
    this check does not know (not OCDBT) is left to orbax.
    """
    if not (pdir / "manifest.ocdbt").is_file():
        return
    import tensorstore as ts

    base = {"driver": "ocdbt", "base": {"driver": "file", "path": str(pdir) + "/"}}
    name = "the array index"
    try:
        keys = [k.decode() for k in ts.KvStore.open(base).result().list().result()]
        arrays = []
        for k in sorted(keys):
            for meta_file, driver in ((".zarray", "zarr"), ("zarr.json", "zarr3")):
                if k.endswith("/" + meta_file):
                    arrays.append((k[: -len(meta_file)], driver))
        for name, driver in arrays:
            spec = {"driver": driver, "kvstore": {**base, "path": name}}
            ts.open(spec, open=True).result().read().result()
    except Exception as e:  # tensorstore raises ValueError with a status code in the message
        raise CheckpointError(
            f"{directory}: damaged checkpoint, cannot read {name.rstrip('/')} in {pdir} "
            f"({_first_line(e)}); {REMAKE}"
        ) from e


def check_labels(
    meta: dict[str, Any], directory: str | Path, labels: Sequence[str] = C.LABELS
) -> None:
    """Raise :class:`CheckpointError` if the sidecar's label list is not ``labels``.

    The message names the checkpoint and the first label that differs (position, both names).
    """
    got = list(meta.get("labels", []))
    want = list(labels)
    if got == want:
        return
    path = Path(directory) / SIDECAR
    for i, (a, b) in enumerate(zip(got, want, strict=False)):
        if a != b:
            raise CheckpointError(
                f"{path}: label {i} is {a!r}, but this run assumes {b!r} (config.LABELS); the "
                "model's outputs would be read as the wrong classes: fix the sidecar's labels "
                "or use a checkpoint trained on the FSDKaggle2018 label list"
            )
    raise CheckpointError(
        f"{path}: {len(got)} labels, but this run assumes the {len(want)} of config.LABELS"
    )


def digest(meta: dict[str, Any], params: Any) -> str:
    """SHA-256 (hex) of a restored checkpoint's content: every array (path, dtype, shape, bytes)
    and the sidecar (less its ``created`` time stamp). Two checkpoints with the same digest give
    the same outputs, wherever they are stored."""
    h = hashlib.sha256()
    side = {k: v for k, v in meta.items() if k != "created"}
    h.update(json.dumps(side, sort_keys=True).encode())
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        a = np.ascontiguousarray(np.asarray(leaf))
        h.update("/".join(str(getattr(k, "key", k)) for k in path).encode())
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# ONNX checkpoints: a model of the user's, imported into JAX when loaded
# ---------------------------------------------------------------------------------------------

ONNX_FILE = "model.onnx"
ONNX_MODEL = "onnx"  # the sidecar's "model" of an ONNX checkpoint


def save_onnx_checkpoint(
    directory: str | Path,
    onnx_file: str | Path,
    *,
    labels: Sequence[str],
    sample_rate: int,
    outputs: str = "logits",
    chunking: tuple[int, int] | None = None,
    merge: str = "mean",
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write a checkpoint of an ONNX classifier: a copy of the file plus the sidecar.

    The model is imported (:func:`jaxadv.onnx_import.from_onnx`) and wrapped
    (:func:`jaxadv.wrap`, which runs it once on a batch of ``[2, window or sample_rate]``
    samples and checks one output per label) before anything is written. Its one input is a
    waveform batch ``[B, n]`` at ``sample_rate`` Hz, its output ``[B, len(labels)]`` scores
    (``outputs``). Returns the sidecar dict.
    """
    import shutil

    from jaxadv.adapter import wrap
    from jaxadv.onnx_import import from_onnx

    directory, onnx_file = Path(directory).absolute(), Path(onnx_file)
    fn, params = from_onnx(onnx_file)
    if len(fn.input_names) != 1:
        raise CheckpointError(
            f"{onnx_file}: the model takes {len(fn.input_names)} inputs {list(fn.input_names)}; "
            "a classifier checkpoint needs one, the waveform batch [B, n] (bind the others with "
            "jaxadv.from_onnx(..., static_inputs=...) and jaxadv.wrap in Python)"
        )
    clf, _ = wrap(fn, params, sample_rate=sample_rate, labels=labels, outputs=outputs,
                  chunking=chunking, merge=merge, name=onnx_file.stem)  # fmt: skip
    if directory.exists() and any(directory.iterdir()):
        if not overwrite:
            raise CheckpointError(f"{directory} is not empty (pass overwrite=True to replace it)")
        shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)
    data = onnx_file.read_bytes()
    (directory / ONNX_FILE).write_bytes(data)
    from jaxadv import __version__

    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": ONNX_MODEL,
        "model_config": {"name": ONNX_MODEL, "num_classes": len(clf.labels)},
        "onnx": {
            "file": ONNX_FILE,
            "sha256": hashlib.sha256(data).hexdigest(),
            "ops": fn.ops,
            "opset": fn.opset,
            "input": fn.input_names[0],
        },
        "wrap": {
            "outputs": outputs,
            "chunking": None if chunking is None else list(chunking),
            "merge": merge,
        },  # fmt: skip
        "labels": list(clf.labels),
        "sample_rate": int(sample_rate),
        "num_classes": len(clf.labels),
        "param_count": models.param_count(params),
        "source": {"file": onnx_file.name, "sha256": hashlib.sha256(data).hexdigest()},
        "jaxadv_version": __version__,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    (directory / SIDECAR).write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def load_onnx_checkpoint(directory: str | Path, name: str | None = None) -> tuple[Any, Any, dict]:
    """Restore an ONNX checkpoint (:func:`save_onnx_checkpoint`): ``(classifier, params,
    sidecar)``, the classifier a :class:`jaxadv.adapter.Wrapped` named ``name`` (default the
    file's). The copy's SHA-256 must match the sidecar's (a damaged file is named)."""
    from jaxadv.adapter import wrap
    from jaxadv.onnx_import import from_onnx

    directory = Path(directory).absolute()
    meta = read_meta(directory)
    if meta.get("model") != ONNX_MODEL:
        raise CheckpointError(f"{directory} holds a {meta.get('model')!r} model, not an ONNX one")
    path = directory / meta["onnx"]["file"]
    if not path.is_file():
        raise CheckpointError(f"{path} not found: the ONNX checkpoint has no model file")
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != meta["onnx"]["sha256"]:
        raise CheckpointError(
            f"{path}: damaged ONNX checkpoint (its SHA-256 is not the sidecar's); {REMAKE}"
        )
    fn, params = from_onnx(path)
    w = meta.get("wrap") or {}
    chunking = w.get("chunking")
    clf, params = wrap(
        fn, params, sample_rate=int(meta["sample_rate"]), labels=meta["labels"],
        outputs=w.get("outputs", "logits"), chunking=None if chunking is None else tuple(chunking),
        merge=w.get("merge", "mean"), name=name or meta["source"]["file"], check=False,
    )  # fmt: skip
    return clf, params, meta
