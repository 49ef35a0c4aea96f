"""The models of a run: restored checkpoints and their predictions on the clean clips.

Only clips a model classifies correctly are attacked (the authors', ORIGINALS.md §5.9):
:func:`clean_predictions` gives every model's prediction, :func:`correct_clips` the clips it gets
right, :func:`write_clean` the ``clean.csv`` rows.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxadv import config as C
from jaxadv.cli import UserError
from jaxadv.datasets import Clip
from jaxadv.experiments.configs import ALL_MODELS, architecture, family
from jaxadv.experiments.devices import replicate, shard

log = logging.getLogger("jaxadv.experiments")


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    """A restored model: its registry name, classifier function, params and sidecar."""

    name: str
    classifier: Any
    params: Any
    meta: dict[str, Any]
    checkpoint: Path  # its folder; for a --model-fn model, Path("MODULE:ATTR")
    digest: str = ""  # jaxadv.checkpoint.digest of the arrays and sidecar

    @property
    def labels(self) -> tuple[str, ...]:
        """Its class names, in output order (the sidecar's; default ``config.LABELS``)."""
        return tuple(self.meta.get("labels", C.LABELS))

    @property
    def sample_rate(self) -> int:
        """The rate its input waveforms are at, in Hz (the sidecar's; default 32 kHz)."""
        return int(self.meta.get("sample_rate", C.SAMPLE_RATE))


def load_models(
    names: Sequence[str],
    checkpoints: dict[str, Path],
    preset: str,
    model_fns: dict[str, str] | None = None,
) -> list[LoadedModel]:
    """Restore each model; with ``preset="paper"`` the Iqbal models use the authors' front-end.

    ``model_fns``: ``{name: "MODULE:ATTR"}`` of models given as Python objects
    (:func:`load_model_fn`) instead of checkpoints. Every model's labels and sample rate come
    with it (sidecar or :func:`jaxadv.wrap`); :func:`run_labels` checks that a run's agree.
    """
    from jaxadv.checkpoint import (
        ONNX_MODEL,
        digest,
        load_checkpoint,
        load_onnx_checkpoint,
        read_meta,
    )
    from jaxadv.frontend import IqbalAttackFrontend

    out = []
    for name in names:
        if model_fns and name in model_fns:
            out.append(load_model_fn(name, model_fns[name]))
            continue
        if read_meta(checkpoints[name]).get("model") == ONNX_MODEL:  # the user's own model
            clf, params, meta = load_onnx_checkpoint(checkpoints[name], name)
            path = Path(checkpoints[name])
            out.append(LoadedModel(name, clf, params, meta, path, digest(meta, params)))
            continue
        # a demo variant (vgg13_stft) is its architecture's checkpoint; a user's name is
        # whatever its checkpoint holds
        arch = architecture(name)
        clf, params, meta = load_checkpoint(
            checkpoints[name], expect=arch if arch in ALL_MODELS else None
        )
        if preset == "paper" and family(name) == "iqbal":
            # The authors' attack graph: zero-pad to 65536k, uncentred frames, offset log.
            new = dataclasses.replace(clf, frontend=IqbalAttackFrontend(), merge="mean")
            log.info(
                "--preset paper: %s runs with the authors' front-end (%s, merge 'mean') instead "
                "of its checkpoint's (%s, merge %r)",
                name, new.frontend.name, getattr(clf.frontend, "name", None), clf.merge,
            )  # fmt: skip
            clf = new
        path = Path(checkpoints[name])
        out.append(LoadedModel(name, clf, params, meta, path, digest(meta, params)))
    return out


def load_model_fn(name: str, spec: str) -> LoadedModel:
    """A model given as ``MODULE:ATTR`` (``--model-fn NAME=MODULE:ATTR``): the attribute is a
    ``(classifier, params)`` pair such as :func:`jaxadv.wrap` returns, or a function of no
    arguments returning one. The classifier must carry ``labels`` and ``sample_rate``."""
    import importlib

    from jaxadv.checkpoint import digest

    flag = f"--model-fn {name}={spec}"
    module, _, attr = spec.partition(":")
    if not module or not attr:
        raise UserError(f"{flag}: expected NAME=MODULE:ATTR, e.g. mine=mypackage.models:build")
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        raise UserError(
            f"{flag}: cannot import {module!r} ({e}); run from its folder or put it on PYTHONPATH"
        ) from None
    if not hasattr(mod, attr):
        raise UserError(f"{flag}: module {module!r} has no attribute {attr!r}")
    obj = getattr(mod, attr)
    if callable(obj) and not isinstance(obj, tuple) and not hasattr(obj, "labels"):
        try:
            obj = obj()
        except Exception as e:  # the user's code: one line here, the traceback with --debug
            first = (str(e).splitlines() or [""])[0]
            raise UserError(
                f"{flag}: calling {attr}() failed ({type(e).__name__}: {first}); {attr} must "
                "take no arguments and return (classifier, params), e.g. from jaxadv.wrap"
            ) from e
    if not (isinstance(obj, tuple) and len(obj) == 2):
        raise UserError(
            f"{flag}: expected a (classifier, params) pair or a function returning one, such "
            f"as jaxadv.wrap(...) gives; got {type(obj).__name__}"
        )
    clf, params = obj
    missing = [a for a in ("labels", "sample_rate") if getattr(clf, a, None) is None]
    if missing:
        raise UserError(
            f"{flag}: its classifier has no {' or '.join(missing)}; build it with jaxadv.wrap"
        )
    describe = getattr(clf, "describe", None)
    meta = {
        "model": name,
        "labels": list(clf.labels),
        "sample_rate": int(clf.sample_rate),
        "source": {"model_fn": spec},
        "classifier": describe() if describe else type(clf).__name__,
    }
    return LoadedModel(name, clf, params, meta, Path(spec), digest(meta, params))


def run_labels(models: Sequence[LoadedModel]) -> tuple[str, ...]:
    """The label list of a run: every model's must be the same (one class order for every row,
    table and target); a mismatch is a :class:`UserError` naming both models."""
    first = models[0]
    for m in models[1:]:
        if m.labels != first.labels:
            diff = next(
                (
                    f"label {i} is {a!r} vs {b!r}"
                    for i, (a, b) in enumerate(zip(first.labels, m.labels, strict=False))
                    if a != b
                ),
                f"{len(first.labels)} vs {len(m.labels)} labels",
            )
            raise UserError(
                f"models {first.name} and {m.name} have different label lists ({diff}): their "
                "outputs are different classes; attack them in separate runs"
            )
    return first.labels


def run_sample_rate(models: Sequence[LoadedModel]) -> int:
    """The sample rate of a run's clips: every model's must be the same (one set of waveforms
    and adversarial examples); a mismatch is a :class:`UserError` naming both models."""
    first = models[0]
    for m in models[1:]:
        if m.sample_rate != first.sample_rate:
            raise UserError(
                f"models {first.name} ({first.sample_rate} Hz) and {m.name} ({m.sample_rate} Hz) "
                "take different sample rates; attack them in separate runs"
            )
    return first.sample_rate


def clean_predictions(
    model: LoadedModel, clips: Sequence[Clip], waves: dict[str, np.ndarray], batch_size: int
) -> dict[str, tuple[int, float]]:
    """``{fname: (predicted index, ground-truth probability)}`` on the clean clips.

    The clips go through :func:`jaxadv.datasets.predict_batches` (balanced bucket batches of the
    loaded ``waves``), sharded over the local devices.

    Raises:
      CheckpointError: the model's outputs on a clip are not finite (NaN/Inf arrays), naming the
        checkpoint and the clip.
    """
    import jax

    from jaxadv import datasets as D
    from jaxadv.checkpoint import REMAKE, CheckpointError

    fn = jax.jit(model.classifier)
    params = replicate(model.params)

    def predict(x: np.ndarray, lens: np.ndarray) -> np.ndarray:
        (xd, ld), n = shard([x, lens], len(x))
        return np.asarray(fn(params, xd, ld).probs)[:n]

    mine = [c for c in clips if c.fname in waves]
    by_path = {c.path: waves[c.fname] for c in mine}
    out: dict[str, tuple[int, float]] = {}
    for batch, probs in D.predict_batches(
        predict, mine, batch_size, loader=by_path.__getitem__,
        length_fn=lambda p: len(by_path[p]), balanced=True,
    ):  # fmt: skip
        bad = [c.fname for c, p in zip(batch.clips, probs, strict=True) if not np.isfinite(p).all()]
        if bad:
            raise CheckpointError(
                f"{model.checkpoint}: model {model.name} gives non-finite outputs (NaN or Inf) "
                f"on the clean clip {bad[0]}"
                + (f" and {len(bad) - 1} more" if len(bad) > 1 else "")
                + f"; its arrays are damaged or diverged: {REMAKE}"
            )
        for c, p in zip(batch.clips, probs, strict=True):
            out[c.fname] = (int(p.argmax()), float(p[c.label_index]))
    return out


def correct_clips(clips: Sequence[Clip], preds: dict[str, tuple[int, float]]) -> list[Clip]:
    """Clips the model classifies correctly (the authors attack only those, ORIGINALS.md §5.9)."""
    return [c for c in clips if c.fname in preds and preds[c.fname][0] == c.label_index]


def write_clean(
    path: Path,
    model: str,
    clips: Sequence[Clip],
    preds: dict,
    labels: Sequence[str] = C.LABELS,
) -> None:
    """Append the clean predictions of one model to ``clean.csv`` (model, fname, label, pred, gt);
    ``labels``: the model's class names."""
    new = not path.exists()
    with open(path, "a") as f:
        if new:
            f.write("model,fname,label,prediction,gt_conf,correct\n")
        for c in clips:
            if c.fname in preds:
                p, g = preds[c.fname]
                f.write(
                    f"{model},{c.fname},{c.label},{labels[p]},{g:.6f},{int(p == c.label_index)}\n"
                )


def read_clean(path: Path) -> list[dict[str, Any]]:
    """The rows of a ``clean.csv`` (:func:`write_clean`), typed: ``gt_conf`` float, ``correct``
    int."""
    import csv

    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["gt_conf"], r["correct"] = float(r["gt_conf"]), int(r["correct"])
    return rows


def clean_table(rows: Sequence[dict[str, Any]]) -> Any:
    """Clean accuracy and mean ground-truth confidence per model, from :func:`read_clean` rows."""
    from jaxadv.experiments.tables import Table

    by: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by.setdefault(r["model"], []).append(r)
    out = []
    for model, mine in by.items():
        n, ok = len(mine), sum(r["correct"] for r in mine)
        gt = float(np.mean([r["gt_conf"] for r in mine]))
        out.append((model, n, 100.0 * ok / n, gt))
    return Table(
        "Clean accuracy on the selected clips (only correctly classified clips are attacked)",
        ("Model", "Clips", "Accuracy %", "Mean GT confidence"),
        tuple(out),
    )


def predict_waves(model: LoadedModel, waves: Sequence[np.ndarray], batch_size: int) -> np.ndarray:
    """Clip probabilities ``[n, C]`` of the model on waveforms ``[len_i]`` (at its rate), in the fixed
    bucket batches of :func:`jaxadv.datasets.balanced_batches` (each batch padded to
    ``batch_size`` rows, so a bucket compiles once), sharded over the local devices."""
    import jax

    from jaxadv.datasets import balanced_batches, bucket_length

    fn = jax.jit(model.classifier)
    params = replicate(model.params)
    out = np.zeros((len(waves), len(model.labels)), np.float32)
    for idx in balanced_batches([len(w) for w in waves], batch_size):
        n = bucket_length(max(len(waves[i]) for i in idx))
        x = np.zeros((len(idx), n), np.float32)
        for r, i in enumerate(idx):
            x[r, : len(waves[i])] = waves[i]
        lens = np.array([len(waves[i]) for i in idx], np.int32)
        (xd, ld), k = shard([x, lens], len(idx), batch_size)
        out[idx] = np.asarray(fn(params, xd, ld).probs)[:k]
    return out
