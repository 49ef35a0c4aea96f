"""Convert a Keras .h5 into a jaxadv checkpoint (the library behind ``jaxadv-convert``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from jaxadv import config as C
from jaxadv.checkpoint import save_checkpoint
from jaxadv.classifier import Classifier
from jaxadv.convert.architectures import Plan, detect, extract
from jaxadv.convert.keras_h5 import (
    MALFORMED,
    ConversionError,
    KerasModel,
    malformed,
    read_keras_h5,
)
from jaxadv.convert.mapping import map_weights
from jaxadv.frontend import get_frontend


def load_keras(path: str | Path, model: str | None = None) -> tuple[Any, dict, KerasModel, Plan]:
    """Parse, recognise and map a Keras .h5: ``(model config, Flax variables, parsed file, plan)``.

    ``model`` forces an architecture; by default it is detected from the layer types.
    """
    km = read_keras_h5(path)
    try:
        plan = extract(km, model or detect(km))
        variables = map_weights(km, plan)
    except ConversionError as e:
        if str(km.path) in str(e):
            raise
        raise ConversionError(f"{km.path}: {e}") from e  # name the file in every message
    except MALFORMED as e:  # e.g. a layer config without 'filters', or a string kernel size
        raise malformed(km.path, e) from e
    return plan.config, variables, km, plan


def convert_file(
    path: str | Path,
    out_dir: str | Path,
    *,
    model: str | None = None,
    mean: float | None = None,
    std: float | None = None,
    labels: list[str] | None = None,
    frontend: str = "iqbal",
    merge: str = "mean",
    cochlear_logits: str = "probs",
    overwrite: bool = False,
    extra: dict[str, Any] | None = None,
) -> tuple[Classifier, dict[str, Any], dict[str, Any]]:
    """Convert ``path`` and write a checkpoint to ``out_dir``; returns ``(classifier, params,
    sidecar)``. Iqbal models need the standardisation ``mean`` and ``std``."""
    cfg, variables, km, plan = load_keras(path, model)
    params: dict[str, Any] = {"model": variables}
    if cfg.family == "iqbal":
        if mean is None or std is None:
            raise ConversionError(
                f"{km.path}: {cfg.name} needs the standardisation mean and std of its training "
                "features (not stored in the .h5): pass --mean/--std or --fit-audio"
            )
        if not std > 0:
            raise ConversionError(f"standardisation std must be positive, got {std}")
        params["norm"] = {"mean": float(mean), "std": float(std)}
        clf = Classifier(cfg, get_frontend(frontend), merge, cochlear_logits)
    else:
        if mean is not None or std is not None:
            raise ConversionError(f"{cfg.name} normalises inside the model; drop --mean/--std")
        clf = Classifier(cfg, None, merge, cochlear_logits)
    if labels is None:
        if cfg.num_classes != C.NUM_CLASSES:
            raise ConversionError(
                f"{km.path}: {cfg.num_classes} classes; pass --labels (one name per line)"
            )
        labels = list(C.LABELS)
    elif len(labels) != cfg.num_classes:
        raise ConversionError(
            f"{km.path}: {len(labels)} labels for a model with {cfg.num_classes} classes; "
            "give one class name per output (--labels FILE, one per line)"
        )
    params = {k: _as_f32(v) for k, v in params.items()}
    source = {
        "file": km.path.name,
        "sha256": km.sha256,
        "keras_version": km.keras_version,
        "backend": km.backend,
        "layout": km.layout,
    }
    notes = {"verified_fixed_layers": plan.verified, **plan.notes, **(extra or {})}
    meta = save_checkpoint(
        out_dir,
        clf,
        params,
        labels=labels,
        source=source,
        extra={"conversion": notes},
        overwrite=overwrite,
    )
    return clf, params, meta


def _as_f32(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {k: _as_f32(v) for k, v in tree.items()}
    return np.asarray(tree, np.float32)
