"""FSDKaggle2018 (DCASE 2018 Task 2) folder layouts, the paper's clip subsets, and host-side batching.

The layout (Fonseca et al., 2018; also the layout of ``jaxadv/demo/data``)::

    ROOT/train.csv                                   fname,label,manually_verified
    ROOT/test_post_competition_scoring_clips.csv     fname,label,usage,freesound_id,license
    ROOT/audio_train/<fname>                         (16-bit mono 44.1 kHz WAV in the real data)
    ROOT/audio_test/<fname>

Readers return lists of :class:`Clip` in CSV order; extra columns (such as the ``fold`` column of
Iqbal's ``metadata/training.csv``) are allowed. Subsets are pure functions over clip lists and cite
their source (ORIGINALS.md §5.7, §5.9). :func:`iter_batches` loads audio, groups clips by their
:func:`jaxadv.frontend.bucket_length` so that every batch has one padded length, and reports bad
files by name instead of stopping (``on_error="skip"``).
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import logging
import os
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from jaxadv import audio
from jaxadv import config as C
from jaxadv.cli import UserError
from jaxadv.frontend import bucket_length

PathLike = str | os.PathLike

log = logging.getLogger(__name__)

TRAIN_COLUMNS: tuple[str, ...] = ("fname", "label", "manually_verified")
TEST_COLUMNS: tuple[str, ...] = ("fname", "label", "usage", "freesound_id", "license")


class DatasetError(UserError, ValueError):
    """A dataset file or folder is missing or malformed; the message names the file (and row)."""


@dataclasses.dataclass(frozen=True)
class Clip:
    """One clip of an FSDKaggle2018-layout dataset.

    Attributes:
      fname: file name as in the CSV (e.g. ``"001ca53d.wav"``).
      label: one of ``config.LABELS``.
      label_index: its index in ``config.LABELS`` (the class index of every model).
      path: absolute path of the audio file.
      split: ``"train"`` or ``"test"``.
      manually_verified: train only: whether the label was checked by a human (else None).
      usage: test only: ``"Public"``/``"Private"`` (else None).
      freesound_id, license: test only (else None), as strings.
      fold: the optional ``fold`` column of Iqbal's ``training.csv`` (else None).
      row: 1-based line number in the CSV (the header is line 1), for messages.
    """

    fname: str
    label: str
    label_index: int
    path: Path
    split: str
    manually_verified: bool | None = None
    usage: str | None = None
    freesound_id: str | None = None
    license: str | None = None
    fold: int | None = None
    row: int = 0


# ---------------------------------------------------------------------------------------------
# Readers
# ---------------------------------------------------------------------------------------------


def _read_rows(csv_path: Path, required: Sequence[str]) -> list[tuple[int, dict[str, str]]]:
    if not csv_path.is_file():
        raise DatasetError(f"metadata file '{csv_path}' does not exist")
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames
        if not header:
            raise DatasetError(f"metadata file '{csv_path}' is empty (no header row)")
        missing = [c for c in required if c not in header]
        if missing:
            raise DatasetError(
                f"metadata file '{csv_path}' lacks column(s) {missing}; found {list(header)}, "
                f"expected {list(required)}"
            )
        rows = []
        for row in reader:
            # DictReader puts surplus cells under the key None and fills short rows with None.
            if None in row or any(row[c] is None for c in required):
                raise DatasetError(
                    f"metadata file '{csv_path}', line {reader.line_num}: expected "
                    f"{len(header)} cells, got a row of a different length"
                )
            rows.append((reader.line_num, row))
    return rows


def _check_audio_dir(audio_dir: Path, csv_path: Path) -> None:
    if not audio_dir.is_dir():
        raise DatasetError(f"audio folder '{audio_dir}' (for '{csv_path.name}') does not exist")


def _label_map(labels: Sequence[str] | None) -> dict[str, int]:
    return C.LABEL_INDEX if labels is None else {lab: i for i, lab in enumerate(labels)}


def _label_index(
    label: str, csv_path: Path, line: int, fname: str, index: dict[str, int] = C.LABEL_INDEX
) -> int:
    try:
        return index[label]
    except KeyError:
        which = (
            f"the {C.NUM_CLASSES} FSDKaggle2018 labels in config.LABELS"
            if index is C.LABEL_INDEX
            else f"the models' {len(index)} labels {sorted(index)}"
        )
        raise DatasetError(
            f"metadata file '{csv_path}', line {line} ({fname}): unknown label {label!r}; "
            f"expected one of {which}"
        ) from None


_UNKNOWN = ("raise", "skip")


def _skip_unknown(
    unknown_labels: str, err: DatasetError, clip: Clip, skipped: list[Failure]
) -> None:
    """``unknown_labels="skip"``: keep the row as a :class:`Failure` (else raise ``err``)."""
    if unknown_labels != "skip":
        raise err
    skipped.append(Failure(clip, str(err)))


def _report_skipped(skipped: list[Failure], failures: list[Failure] | None) -> None:
    for f in skipped:
        log.warning("skipping %s (%s): %s", f.clip.fname, f.clip.label, f.message)
    if failures is not None:
        failures.extend(skipped)


def _check_unknown_mode(unknown_labels: str) -> None:
    if unknown_labels not in _UNKNOWN:
        raise ValueError(f"unknown_labels must be one of {_UNKNOWN}, got {unknown_labels!r}")


def _check_names(clips: list[Clip], csv_path: Path, check_files: bool) -> None:
    seen: dict[str, int] = {}
    for c in clips:
        if not c.fname or Path(c.fname).name != c.fname:
            raise DatasetError(
                f"metadata file '{csv_path}', line {c.row}: bad file name {c.fname!r} "
                "(must be a plain, non-empty file name)"
            )
        if c.fname in seen:
            raise DatasetError(
                f"metadata file '{csv_path}', line {c.row}: duplicate file name {c.fname!r} "
                f"(first on line {seen[c.fname]})"
            )
        seen[c.fname] = c.row
    if check_files:
        absent = [c.fname for c in clips if not c.path.is_file()]
        if absent:
            more = f" and {len(absent) - 5} more" if len(absent) > 5 else ""
            raise DatasetError(
                f"{len(absent)} file(s) listed in '{csv_path}' are missing from "
                f"'{clips[0].path.parent}': {absent[:5]}{more}"
            )


def read_train(
    root: PathLike,
    *,
    csv_name: str = C.TRAIN_CSV,
    audio_dir: str = C.TRAIN_AUDIO_DIR,
    check_files: bool = False,
    unknown_labels: str = "raise",
    failures: list[Failure] | None = None,
    labels: Sequence[str] | None = None,
) -> list[Clip]:
    """Read ``root/train.csv`` (``fname,label,manually_verified``) into clips, in file order.

    Args:
      root: dataset folder.
      csv_name, audio_dir: override the file/folder names (e.g. ``csv_name="training.csv"`` for
        Iqbal's copy with a ``fold`` column).
      check_files: also check that every listed audio file exists (one ``stat`` per clip).
      unknown_labels: ``"raise"`` (a row whose label is not in ``config.LABELS`` is an error) or
        ``"skip"`` (the row is logged once by name, left out, and appended to ``failures`` as a
        ``Failure`` whose clip has ``label_index=-1``), as a bad audio file is skipped.
      failures: receives the skipped rows (with ``unknown_labels="skip"``).
      labels: the class names ``label_index`` counts in (default: ``config.LABELS``); a model
        with labels of its own (:func:`jaxadv.wrap`, a checkpoint's sidecar) reads its data so.

    Raises:
      DatasetError: missing CSV, columns or audio folder; unknown label (unless skipped);
        ``manually_verified`` not 0/1; duplicate or bad file names; missing files (with
        ``check_files``).
    """
    _check_unknown_mode(unknown_labels)
    lmap = _label_map(labels)
    root = Path(root)
    csv_path = root / csv_name
    rows = _read_rows(csv_path, TRAIN_COLUMNS)
    adir = root / audio_dir
    _check_audio_dir(adir, csv_path)
    clips: list[Clip] = []
    skipped: list[Failure] = []
    for line, row in rows:
        fname, label = row["fname"].strip(), row["label"].strip()
        mv = row["manually_verified"].strip()
        if mv not in ("0", "1"):
            raise DatasetError(
                f"metadata file '{csv_path}', line {line} ({fname}): manually_verified must be "
                f"0 or 1, got {mv!r}"
            )
        fold = row.get("fold")
        clip = Clip(
            fname=fname,
            label=label,
            label_index=-1,
            path=adir / fname,
            split="train",
            manually_verified=mv == "1",
            fold=int(fold) if fold not in (None, "") else None,
            row=line,
        )
        try:
            index = _label_index(label, csv_path, line, fname, lmap)
        except DatasetError as e:
            _skip_unknown(unknown_labels, e, clip, skipped)
            continue
        clips.append(dataclasses.replace(clip, label_index=index))
    _check_names(clips, csv_path, check_files)
    _report_skipped(skipped, failures)
    return clips


def read_test(
    root: PathLike,
    *,
    csv_name: str = C.TEST_CSV,
    audio_dir: str = C.TEST_AUDIO_DIR,
    usage: str | Iterable[str] | None = None,
    check_files: bool = False,
    unknown_labels: str = "raise",
    failures: list[Failure] | None = None,
    labels: Sequence[str] | None = None,
) -> list[Clip]:
    """Read ``root/test_post_competition_scoring_clips.csv`` into clips, in file order.

    Args:
      root: dataset folder.
      csv_name, audio_dir: override the file/folder names.
      usage: keep only rows with this ``usage`` value(s) (e.g. ``"Private"``); None keeps all.
      check_files: also check that every listed audio file exists.
      unknown_labels, failures, labels: as :func:`read_train`.

    Raises:
      DatasetError: as :func:`read_train`.
    """
    _check_unknown_mode(unknown_labels)
    lmap = _label_map(labels)
    root = Path(root)
    csv_path = root / csv_name
    rows = _read_rows(csv_path, TEST_COLUMNS)
    adir = root / audio_dir
    _check_audio_dir(adir, csv_path)
    keep = {usage} if isinstance(usage, str) else (set(usage) if usage is not None else None)
    clips: list[Clip] = []
    skipped: list[Failure] = []
    for line, row in rows:
        fname, label = row["fname"].strip(), row["label"].strip()
        clip = Clip(
            fname=fname,
            label=label,
            label_index=-1,
            path=adir / fname,
            split="test",
            usage=row["usage"].strip(),
            freesound_id=row["freesound_id"].strip(),
            license=row["license"].strip(),
            row=line,
        )
        try:
            index = _label_index(label, csv_path, line, fname, lmap)
        except DatasetError as e:
            _skip_unknown(unknown_labels, e, clip, skipped)
            continue
        clips.append(dataclasses.replace(clip, label_index=index))
    _check_names(clips, csv_path, check_files)
    if keep is not None:
        clips = [c for c in clips if c.usage in keep]
        skipped = [f for f in skipped if f.clip.usage in keep]
    _report_skipped(skipped, failures)
    return clips


# ---------------------------------------------------------------------------------------------
# Writers
# ---------------------------------------------------------------------------------------------


def write_train_csv(path: PathLike, clips: Iterable[Clip]) -> Path:
    """Write clips as an FSDKaggle2018 ``train.csv`` (``fname,label,manually_verified``)."""
    path = Path(path)
    rows = []
    for c in clips:
        if c.manually_verified is None:
            raise DatasetError(f"cannot write '{path}': clip {c.fname} has no manually_verified")
        rows.append((c.fname, c.label, int(c.manually_verified)))
    return _write(path, TRAIN_COLUMNS, rows)


def write_test_csv(path: PathLike, clips: Iterable[Clip]) -> Path:
    """Write clips as ``test_post_competition_scoring_clips.csv``; None fields become ``""``."""
    rows = [(c.fname, c.label, c.usage or "", c.freesound_id or "", c.license or "") for c in clips]
    return _write(Path(path), TEST_COLUMNS, rows)


def _write(path: Path, header: Sequence[str], rows: list[tuple]) -> Path:
    for r in rows:
        if r[1] not in C.LABEL_INDEX:
            raise DatasetError(f"cannot write '{path}': unknown label {r[1]!r} for {r[0]}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)
    return path


# ---------------------------------------------------------------------------------------------
# Subsets
# ---------------------------------------------------------------------------------------------


def authors_attack_list(
    train_clips: Sequence[Clip],
    per_class: int = C.ATTACK_LIST_PER_CLASS,
    *,
    drop_first: bool = False,
) -> list[Clip]:
    """The paper authors' attack list: the first ``per_class`` manually verified clips per class.

    ``VinodS7/audio-adversaries:metadata/attack_training.csv`` (ORIGINALS.md §5.9) is exactly the
    first 10 ``manually_verified == 1`` clips of each class in ``train.csv`` order (410 rows on the
    real data), kept in ``train.csv`` order.

    Args:
      train_clips: clips from :func:`read_train`, in file order.
      per_class: clips per class (10 in the paper; 9 in an earlier commit of the authors).
      drop_first: reproduce the authors' bug: their loader, ``pd.read_csv`` with header detection,
        swallowed the first row (001ca53d.wav, Saxophone, on the real data) as a header, so only
        409 clips were attacked. **Deviation option**; the default keeps all rows.
    """
    counts: dict[str, int] = {}
    out = []
    for c in train_clips:
        if c.manually_verified is None:
            raise DatasetError(f"{c.fname} is a {c.split} clip; the attack list needs train clips")
        if c.manually_verified and counts.get(c.label, 0) < per_class:
            counts[c.label] = counts.get(c.label, 0) + 1
            out.append(c)
    return out[1:] if drop_first else out


def untargeted_subset(
    clips: Sequence[Clip],
    per_class: int = C.UNTARGETED_PER_CLASS,
    *,
    seed: int | None = 0,
    allow_fewer: bool = False,
) -> list[Clip]:
    """``per_class`` clips per class for the untargeted experiment (246 = 41 x 6 in the paper).

    The paper says "6 randomly chosen examples per class"; which 246 files were used is not in the
    authors' repository (ORIGINALS.md §5.9; plausibly clips of the attack list that all five
    models classify correctly). The rule here is deterministic: for each class, ``seed=None``
    takes the first ``per_class`` clips in list order; an integer seed draws ``per_class`` clips
    without replacement with ``random.Random(f"{seed}:{label}")`` (one stream per class, so one
    class's draw does not depend on the others). The result keeps the input order.

    Raises:
      ValueError: a class in ``clips`` has fewer than ``per_class`` clips (unless
        ``allow_fewer``, which then takes them all).
    """
    by_label: dict[str, list[int]] = {}
    for i, c in enumerate(clips):
        by_label.setdefault(c.label, []).append(i)
    chosen: list[int] = []
    for label, idx in by_label.items():
        if len(idx) < per_class and not allow_fewer:
            raise ValueError(
                f"class {label!r} has only {len(idx)} clip(s), fewer than per_class={per_class} "
                "(pass allow_fewer=True to take them all)"
            )
        if seed is None or len(idx) <= per_class:
            chosen.extend(idx[:per_class])
        else:
            chosen.extend(random.Random(f"{seed}:{label}").sample(idx, per_class))
    return [clips[i] for i in sorted(chosen)]


def music_subset(clips: Iterable[Clip], classes: Sequence[str] = C.MUSIC_CLASSES) -> list[Clip]:
    """Clips of the six classes of the targeted experiment (paper §3.2, ORIGINALS.md §5.7)."""
    unknown = [c for c in classes if c not in C.LABEL_INDEX]
    if unknown:
        raise ValueError(f"unknown class name(s) {unknown}")
    keep = set(classes)
    return [c for c in clips if c.label in keep]


# ---------------------------------------------------------------------------------------------
# Batching
# ---------------------------------------------------------------------------------------------


class Batch(NamedTuple):
    """A padded batch of clips, all padded to one bucket length.

    Attributes:
      x: ``[B, N]`` float32 waveforms at 32 kHz, zero-padded at the end to ``N = bucket_length``.
      lengths: ``[B]`` int32 valid samples per clip.
      label_indices: ``[B]`` int32 class indices (``config.LABELS`` order).
      clips: the ``B`` clips, in the order of the rows.
    """

    x: np.ndarray
    lengths: np.ndarray
    label_indices: np.ndarray
    clips: tuple[Clip, ...]


class Failure(NamedTuple):
    """A clip that could not be loaded and the reason (the message names the file)."""

    clip: Clip
    message: str


Loader = Callable[[Path], np.ndarray]

_ON_ERROR = ("raise", "skip")


def _message(clip: Clip, err: Exception) -> str:
    if isinstance(err, audio.AudioError | DatasetError):
        return str(err)
    return f"audio file '{clip.path}': {type(err).__name__}: {err}"


def _fail(clip: Clip, err: Exception, on_error: str, failures: list[Failure] | None) -> None:
    if on_error == "raise":
        raise err
    msg = _message(clip, err)
    log.warning("skipping %s (%s): %s", clip.fname, clip.label, msg)
    if failures is not None:
        failures.append(Failure(clip, msg))


def _load_one(clip: Clip, loader: Loader) -> np.ndarray:
    x = np.asarray(loader(clip.path), dtype=np.float32)
    if x.ndim != 1 or x.shape[0] == 0:
        raise audio.AudioContentError(clip.path, f"loader returned shape {x.shape}, expected [n>0]")
    return x


def pad_batch(waves: Sequence[np.ndarray], clips: Sequence[Clip]) -> Batch:
    """Stack 1-D waveforms into a :class:`Batch`, zero-padded at the end to one bucket length."""
    lengths = np.array([w.shape[0] for w in waves], dtype=np.int32)
    n = bucket_length(int(lengths.max()))
    x = np.zeros((len(waves), n), dtype=np.float32)
    for i, w in enumerate(waves):
        x[i, : w.shape[0]] = w
    labels = np.array([c.label_index for c in clips], dtype=np.int32)
    return Batch(x, lengths, labels, tuple(clips))


def _default_loader(sample_rate: int, authors_path: bool) -> Loader:
    return functools.partial(audio.load_audio, sample_rate=sample_rate, authors_path=authors_path)


def balanced_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices of fixed, near-equal batches: rows grouped by bucket length, at most ``batch_size``.

    Buckets come in increasing length, rows in input order within a bucket. A bucket of ``n`` rows
    is cut into ``k = ceil(n / batch_size)`` batches whose sizes differ by at most one, so after
    padding the short ones to the longest, a bucket compiles one program instead of a second one
    for a small remainder. The plan depends only on ``lengths`` (samples per row), so a resumed
    sweep gets the same batches.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    buckets: dict[int, list[int]] = {}
    for i, n in enumerate(lengths):
        buckets.setdefault(bucket_length(int(n)), []).append(i)
    out: list[list[int]] = []
    for n in sorted(buckets):
        out += [list(b) for b in _balanced(buckets[n], batch_size)]
    return out


def _balanced(items: Sequence, batch_size: int) -> list[Sequence]:
    k = -(-len(items) // batch_size)
    cuts = [len(items) * i // k for i in range(k + 1)]
    return [items[cuts[i] : cuts[i + 1]] for i in range(k)]


def load_waves(
    clips: Sequence[Clip],
    *,
    loader: Loader | None = None,
    sample_rate: int = C.SAMPLE_RATE,
    authors_path: bool = False,
    on_error: str = "raise",
    failures: list[Failure] | None = None,
) -> dict[str, np.ndarray]:
    """Load each clip once: ``{fname: [n] float32}`` in clip order (arguments: :func:`load_batch`).

    With ``on_error="skip"`` a bad file is logged by name, appended to ``failures`` and left out.
    """
    if on_error not in _ON_ERROR:
        raise ValueError(f"on_error must be one of {_ON_ERROR}, got {on_error!r}")
    loader = loader or _default_loader(sample_rate, authors_path)
    out: dict[str, np.ndarray] = {}
    for c in clips:
        try:
            out[c.fname] = _load_one(c, loader)
        except (audio.AudioError, OSError, ValueError) as e:
            _fail(c, e, on_error, failures)
    return out


def load_batch(
    clips: Sequence[Clip],
    *,
    loader: Loader | None = None,
    sample_rate: int = C.SAMPLE_RATE,
    authors_path: bool = False,
    on_error: str = "raise",
    failures: list[Failure] | None = None,
) -> Batch | None:
    """Load exactly these clips into one :class:`Batch` (padded to the bucket of the longest).

    Args:
      clips: the clips.
      loader: ``path -> [n] float32`` at 32 kHz; default :func:`jaxadv.audio.load_audio` with
        ``sample_rate`` / ``authors_path``.
      on_error: ``"raise"`` (the first bad file raises its :class:`~jaxadv.audio.AudioError`) or
        ``"skip"`` (bad files are left out, logged, and appended to ``failures``).
      failures: a list to which ``Failure(clip, message)`` is appended for each skipped clip.

    Returns:
      The batch, or None if every clip failed.
    """
    if on_error not in _ON_ERROR:
        raise ValueError(f"on_error must be one of {_ON_ERROR}, got {on_error!r}")
    loader = loader or _default_loader(sample_rate, authors_path)
    waves, kept = [], []
    for c in clips:
        try:
            waves.append(_load_one(c, loader))
            kept.append(c)
        except (audio.AudioError, OSError, ValueError) as e:
            _fail(c, e, on_error, failures)
    return pad_batch(waves, kept) if kept else None


def iter_batches(
    clips: Sequence[Clip],
    batch_size: int,
    *,
    loader: Loader | None = None,
    length_fn: Callable[[Path], int] | None = None,
    sample_rate: int = C.SAMPLE_RATE,
    authors_path: bool = False,
    on_error: str = "raise",
    failures: list[Failure] | None = None,
    balanced: bool = False,
) -> Iterator[Batch]:
    """Yield batches of at most ``batch_size`` clips, each padded to a single bucket length.

    Clips are grouped by ``bucket_length(length)`` (the length read from the file header, see
    :func:`jaxadv.audio.num_samples`, or ``length_fn``), buckets in increasing length, clips in
    input order within a bucket; so a sweep compiles one program per (bucket, batch size). Audio is
    loaded lazily, one batch at a time. With ``on_error="skip"`` a clip that fails (header or
    decoding) is logged, appended to ``failures`` as ``Failure(clip, message)`` and replaced by the
    next clip of its bucket, so batches stay full. Only the last batch of a bucket may be smaller.
    With ``balanced=True`` each bucket is cut into near-equal batches instead (the plan of
    :func:`balanced_batches`, fixed before loading: a clip that fails leaves its batch one short).

    Args:
      clips: the clips.
      batch_size: maximum rows per batch.
      loader: ``path -> [n] float32``; default :func:`jaxadv.audio.load_audio`.
      length_fn: ``path -> samples`` used for grouping; default
        :func:`jaxadv.audio.num_samples` (header only). A batch's padded length is always the
        bucket of the longest clip actually loaded, so a loader that disagrees with the header
        still gives correct (if less evenly grouped) batches.
      sample_rate, authors_path: passed to the default loader and length function.
      on_error: ``"raise"`` or ``"skip"``.
      failures: receives the skipped clips with their messages.
      balanced: near-equal batches per bucket (see above) instead of full ones.

    Yields:
      :class:`Batch` ``(x [B, N], lengths [B], label_indices [B], clips)``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if on_error not in _ON_ERROR:
        raise ValueError(f"on_error must be one of {_ON_ERROR}, got {on_error!r}")
    loader = loader or _default_loader(sample_rate, authors_path)
    if length_fn is None:
        length_fn = functools.partial(
            audio.num_samples, sample_rate=sample_rate, authors_path=authors_path
        )
    buckets: dict[int, list[Clip]] = {}
    for c in clips:
        try:
            buckets.setdefault(bucket_length(int(length_fn(c.path))), []).append(c)
        except (audio.AudioError, OSError, ValueError) as e:
            _fail(c, e, on_error, failures)
    for n in sorted(buckets):
        if balanced:
            for part in _balanced(buckets[n], batch_size):
                batch = load_batch(part, loader=loader, on_error=on_error, failures=failures)
                if batch is not None:
                    yield batch
            continue
        waves: list[np.ndarray] = []
        kept: list[Clip] = []
        for c in buckets[n]:
            try:
                waves.append(_load_one(c, loader))
                kept.append(c)
            except (audio.AudioError, OSError, ValueError) as e:
                _fail(c, e, on_error, failures)
                continue
            if len(kept) == batch_size:
                yield pad_batch(waves, kept)
                waves, kept = [], []
        if kept:
            yield pad_batch(waves, kept)


def predict_batches(
    predict: Callable[[np.ndarray, np.ndarray], ArrayLike],
    clips: Sequence[Clip],
    batch_size: int,
    **batching: Any,
) -> Iterator[tuple[Batch, np.ndarray]]:
    """Clip-level predictions batch by batch: ``(batch, probs [B, C])`` for :func:`iter_batches`.

    ``predict(x [B, N], lengths [B]) -> probs [B, C]`` (e.g. ``Classifier.predict`` with its
    params); ``batching``: the keyword arguments of :func:`iter_batches` (loader, on_error, ...).
    """
    for batch in iter_batches(clips, batch_size, **batching):
        yield batch, np.asarray(predict(batch.x, batch.lengths))
