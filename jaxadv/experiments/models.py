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
from jaxadv.datasets import Clip
from jaxadv.experiments.configs import family
from jaxadv.experiments.devices import replicate, shard

log = logging.getLogger("jaxadv.experiments")


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    """A restored model: its registry name, classifier function, params and sidecar."""

    name: str
    classifier: Any
    params: Any
    meta: dict[str, Any]
    checkpoint: Path
    digest: str = ""  # jaxadv.checkpoint.digest of the arrays and sidecar


def load_models(
    names: Sequence[str], checkpoints: dict[str, Path], preset: str
) -> list[LoadedModel]:
    """Restore each model; with ``preset="paper"`` the Iqbal models use the authors' front-end.

    A checkpoint whose sidecar lists other labels than ``config.LABELS`` (the class order every
    row, table and target of a run assumes) is refused by name.
    """
    from jaxadv.checkpoint import check_labels, digest, load_checkpoint
    from jaxadv.frontend import IqbalAttackFrontend

    out = []
    for name in names:
        clf, params, meta = load_checkpoint(checkpoints[name], expect=name)
        check_labels(meta, checkpoints[name])
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


def write_clean(path: Path, model: str, clips: Sequence[Clip], preds: dict) -> None:
    """Append the clean predictions of one model to ``clean.csv`` (model, fname, label, pred, gt)."""
    new = not path.exists()
    with open(path, "a") as f:
        if new:
            f.write("model,fname,label,prediction,gt_conf,correct\n")
        for c in clips:
            if c.fname in preds:
                p, g = preds[c.fname]
                f.write(
                    f"{model},{c.fname},{c.label},{C.LABELS[p]},{g:.6f},{int(p == c.label_index)}\n"
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
    """Clip probabilities ``[n, C]`` of the model on waveforms ``[len_i]`` (32 kHz), in the fixed
    bucket batches of :func:`jaxadv.datasets.balanced_batches` (each batch padded to
    ``batch_size`` rows, so a bucket compiles once), sharded over the local devices."""
    import jax

    from jaxadv.datasets import balanced_batches, bucket_length

    fn = jax.jit(model.classifier)
    params = replicate(model.params)
    out = np.zeros((len(waves), C.NUM_CLASSES), np.float32)
    for idx in balanced_batches([len(w) for w in waves], batch_size):
        n = bucket_length(max(len(waves[i]) for i in idx))
        x = np.zeros((len(idx), n), np.float32)
        for r, i in enumerate(idx):
            x[r, : len(waves[i])] = waves[i]
        lens = np.array([len(waves[i]) for i in idx], np.int32)
        (xd, ld), k = shard([x, lens], len(idx), batch_size)
        out[idx] = np.asarray(fn(params, xd, ld).probs)[:k]
    return out
