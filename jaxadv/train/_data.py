"""Training data: chunk extraction, the validation split, class-balanced mixup plans, MAP@3.

Everything random is a pure function of ``(seed, epoch)``, so a run resumed at any step replays the
exact batches of an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from jaxadv import config as C
from jaxadv.datasets import Clip, Failure, iter_batches, predict_batches

log = logging.getLogger("jaxadv.train")

# A waveform segment of the Cochlear models covers as many samples as one 128-frame chunk.
SEGMENT = C.AUTHORS_BLOCK
SEGMENT_R_THRESHOLD = C.R_THRESHOLD * C.IQBAL_HOP


class Examples(NamedTuple):
    """Training examples of one model family, in memory or memory-mapped.

    Attributes:
      x: Iqbal: log-mel chunks ``[M, 128, 64]`` float32 (not standardised); Cochlear: waveform
        segments ``[M, 65536]`` float16 (zero-padded after ``lengths``).
      lengths: ``[M]`` valid samples of each segment (Cochlear), or all 128 (Iqbal).
      labels: ``[M]`` class indices.
      clip: ``[M]`` index of the clip each example comes from.
      weight: ``[M]`` sample weights (1 for verified clips).
    """

    x: np.ndarray
    lengths: np.ndarray
    labels: np.ndarray
    clip: np.ndarray
    weight: np.ndarray


def segment_starts(
    n: int, size: int = SEGMENT, r_threshold: int = SEGMENT_R_THRESHOLD
) -> list[int]:
    """Iqbal's ``load_features`` chunk rule applied to ``n`` samples (segments of ``size``).

    ``n < size``: one segment at 0 (zero-padded); remainder ``r < r_threshold``: ``n // size``
    segments after dropping ``r // 2`` samples at the start; else those from the start plus the
    last ``size`` samples.
    """
    q, r = divmod(n, size)
    if q == 0:
        return [0]
    if r < r_threshold:
        return [r // 2 + size * k for k in range(q)]
    return [size * k for k in range(q)] + [n - size]


def extract_examples(
    family: str,
    clips: Sequence[Clip],
    *,
    unverified_weight: float = 1.0,
    batch_size: int = 16,
    failures: list[Failure] | None = None,
    progress: bool = False,
    frontend: Any = None,
) -> Examples:
    """Compute the training examples of ``clips`` for a model family.

    ``family`` ``"iqbal"``: ``frontend``'s chunks (default the "iqbal" log-mel; any chunked
    front-end such as "stft" or "cqt"), jitted on bucketed batches, with Iqbal's chunking rule.
    Any other (``"cochlear"``, or ``"waveform"`` for adversarial training of an Iqbal model):
    65536-sample waveform segments by the same rule. Bad audio files are skipped and reported in
    ``failures`` (by name).
    """
    import jax
    from tqdm import tqdm

    from jaxadv.frontend import IqbalFrontend

    fe = IqbalFrontend() if frontend is None else frontend
    chunk_fn = jax.jit(lambda x, n: fe(x, n))
    index = {id(c): i for i, c in enumerate(clips)}
    xs: list[np.ndarray] = []
    lens: list[int] = []
    ys: list[int] = []
    owner: list[int] = []
    ws: list[float] = []
    bar = tqdm(total=len(clips), desc="features", unit="clip", disable=not progress)
    for batch in iter_batches(clips, batch_size, on_error="skip", failures=failures):
        if family == "iqbal":
            chunks, mask = (np.asarray(a) for a in chunk_fn(batch.x, batch.lengths))
        for b, clip in enumerate(batch.clips):
            w = 1.0 if clip.manually_verified in (None, True) else unverified_weight
            if family == "iqbal":
                rows = [chunks[b, k] for k in range(mask.shape[1]) if mask[b, k]]
                seg_lens = [C.CHUNK_FRAMES] * len(rows)
            else:
                n = int(batch.lengths[b])
                rows, seg_lens = [], []
                for s in segment_starts(n):
                    seg = np.zeros(SEGMENT, np.float16)
                    piece = batch.x[b, s : min(s + SEGMENT, n)]
                    seg[: len(piece)] = piece
                    rows.append(seg)
                    seg_lens.append(len(piece))
            xs += rows
            lens += seg_lens
            ys += [clip.label_index] * len(rows)
            owner += [index[id(clip)]] * len(rows)
            ws += [w] * len(rows)
        bar.update(len(batch.clips))
    bar.close()
    if not xs:
        raise ValueError("no training examples: every audio file failed to load")
    return Examples(
        np.stack(xs),
        np.asarray(lens, np.int32),
        np.asarray(ys, np.int32),
        np.asarray(owner, np.int32),
        np.asarray(ws, np.float32),
    )


def feature_moments(frontend: Any, ex: Examples, batch_size: int = 64) -> tuple[float, float]:
    """Mean and population std of ``frontend``'s chunk of every waveform segment of ``ex`` (the
    standardisation of an Iqbal model trained on waveform segments; float64 sums)."""
    import jax

    fn = jax.jit(lambda x, n: frontend(x, n).chunks[:, 0])
    total, total2, count = 0.0, 0.0, 0
    for i in range(0, len(ex.labels), batch_size):
        x = np.asarray(ex.x[i : i + batch_size], np.float32)
        n = np.asarray(ex.lengths[i : i + batch_size])
        if len(x) < batch_size:  # one compiled shape: pad the last batch, count only the real rows
            pad = batch_size - len(x)
            x = np.pad(x, ((0, pad), (0, 0)))
            n = np.pad(n, (0, pad), constant_values=SEGMENT)
        c = np.asarray(fn(x, n), np.float64)[: min(batch_size, len(ex.labels) - i)]
        total += float(c.sum())
        total2 += float(np.square(c).sum())
        count += c.size
    mean = total / count
    return mean, float(np.sqrt(max(total2 / count - mean * mean, 0.0)))


def save_examples(path: Path, ex: Examples) -> None:
    """Cache examples as ``.npy`` files in folder ``path`` (written then renamed: kill-safe)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    for name, arr in ex._asdict().items():
        np.save(tmp / f"{name}.npy", arr)
    if path.exists():
        import shutil

        shutil.rmtree(path)
    tmp.rename(path)


def load_examples(path: Path) -> Examples:
    """Memory-map examples cached by :func:`save_examples`."""
    return Examples(
        *(np.load(path / f"{f}.npy", mmap_mode="r" if f == "x" else None) for f in Examples._fields)
    )


# ---------------------------------------------------------------------------------------------
# Validation split
# ---------------------------------------------------------------------------------------------


def split_train_val(
    clips: Sequence[Clip], *, val_fold: int | None, val_fraction: float, seed: int
) -> tuple[list[Clip], list[Clip]]:
    """Iqbal's split: the validation fold's clips are all left out of training, and only its
    manually verified clips are validated on (``main.py:train``).

    ``val_fold``: use the ``fold`` column (Iqbal's ``training.csv``); otherwise a seeded
    ``val_fraction`` of the clips (per class) forms the fold. ``val_fraction=0`` trains on all
    (Iqbal's 'all').
    """
    if val_fold is not None:
        if any(c.fold is None for c in clips):
            raise ValueError("--val-fold needs a 'fold' column in the training CSV")
        fold = [c.fold == val_fold for c in clips]
    elif val_fraction <= 0:
        fold = [False] * len(clips)
    else:
        rng = np.random.default_rng([seed, 7])
        fold = [False] * len(clips)
        by_class: dict[int, list[int]] = {}
        for i, c in enumerate(clips):
            by_class.setdefault(c.label_index, []).append(i)
        for idx in by_class.values():
            k = int(round(val_fraction * len(idx)))
            for i in rng.permutation(idx)[:k]:
                fold[int(i)] = True
    train = [c for c, f in zip(clips, fold, strict=True) if not f]
    val = [c for c, f in zip(clips, fold, strict=True) if f and c.manually_verified is not False]
    return train, val


# ---------------------------------------------------------------------------------------------
# Class-balanced mixup (tqbl/dcase2018_task2 task2/mixup.py)
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class EpochPlan:
    """The batches of one epoch: example pairs and mixing weights.

    Attributes:
      first, second: ``[steps, batch]`` example indices mixed as ``lam*first + (1-lam)*second``.
      lam: ``[steps, batch]`` mixing weights ~ Beta(alpha, alpha).
    """

    first: np.ndarray
    second: np.ndarray
    lam: np.ndarray


def epoch_plan(
    labels: np.ndarray, steps: int, batch_size: int, alpha: float, seed: int, epoch: int
) -> EpochPlan:
    """Iqbal's class-balanced mixup sampling for one epoch, from ``(seed, epoch)`` alone.

    As ``MixupGenerator``: each of the ``2 * batch_size`` slots of a batch draws a class uniformly,
    then takes the next example of that class from a per-class queue, reshuffled when exhausted;
    one ``lam ~ Beta(alpha, alpha)`` per mixed pair. Differences, for exact resumption: the queues
    are reshuffled at the start of every epoch (Iqbal's persist across epochs, initially in file
    order), and classes are drawn among those with examples (Iqbal draws among all 41, which the
    full dataset always has).
    """
    rng = np.random.default_rng([seed, epoch])
    classes = np.unique(labels)
    queues = {int(c): rng.permutation(np.flatnonzero(labels == c)) for c in classes}
    offsets = dict.fromkeys(queues, 0)
    drawn = rng.choice(classes, size=(steps, 2 * batch_size))
    idx = np.empty((steps, 2 * batch_size), np.int64)
    for s in range(steps):
        for i, c in enumerate(drawn[s]):
            c = int(c)
            q = queues[c]
            idx[s, i] = q[offsets[c]]
            offsets[c] += 1
            if offsets[c] >= len(q):
                queues[c] = rng.permutation(q)
                offsets[c] = 0
    lam = rng.beta(alpha, alpha, size=(steps, batch_size)).astype(np.float32)
    return EpochPlan(idx[:, :batch_size], idx[:, batch_size:], lam)


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------


def map_at_k(labels: np.ndarray, probs: np.ndarray, k: int = 3) -> float:
    """Mean average precision at k for single-label clips (DCASE 2018 Task 2's MAP@3).

    Each clip scores ``1 / rank`` of its true label among the top ``k`` predictions, else 0.
    """
    labels = np.asarray(labels)
    top = np.argsort(-np.asarray(probs), axis=1, kind="stable")[:, :k]
    hit = top == labels[:, None]
    rank = np.argmax(hit, axis=1) + 1
    return (
        float(np.mean(np.where(hit.any(axis=1), 1.0 / rank, 0.0))) if len(labels) else float("nan")
    )


def clip_predictions(
    classifier: Any, params: Any, clips: Sequence[Clip], batch_size: int = 16
) -> tuple[np.ndarray, np.ndarray]:
    """Clip-level probabilities ``[n, C]`` and labels ``[n]`` of ``clips`` (bad files skipped)."""
    probs, labels = [], []
    # Classifier.predict: one module-level compiled program per (classifier, shape)
    for batch, p in predict_batches(
        lambda x, n: classifier.predict(params, x, n), clips, batch_size, on_error="skip"
    ):
        probs.append(p)
        labels.append(batch.label_indices)
    if not probs:
        return np.zeros((0, classifier.num_classes)), np.zeros(0, int)
    return np.concatenate(probs), np.concatenate(labels)
