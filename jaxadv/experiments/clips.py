"""The clips of a run: which ones (:func:`select_clips`), how they are loaded
(:func:`clip_loader`, :func:`load_waves`), and the digest a resume compares (:func:`clip_digest`).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxadv import config as C
from jaxadv.cli import UserError
from jaxadv.datasets import Clip, Failure


def select_clips(
    data: str | None,
    split: str,
    per_class: int,
    seed: int,
    classes: Sequence[str] | None = None,
    failures: list[Failure] | None = None,
    labels: Sequence[str] | None = None,
) -> list[Clip]:
    """The clips of a run: ``per_class`` clips of each class (of ``classes``, if given).

    Real data with ``train.csv``: the authors' attack list (first 10 verified clips per class,
    ORIGINALS.md §5.9), then a seeded ``per_class`` subset. A test CSV (or the demo): a seeded
    ``per_class`` subset of its clips. The embedded demo keeps only its clips of at most 65536
    samples (2.05 s; 3 of its 6 per class): one length bucket, so one compiled program per attack
    and model, which keeps the default commands within minutes on a CPU. A class with fewer than
    ``per_class`` clips contributes all of its clips (see :func:`shortfall`). A CSV row with an
    unknown label is skipped by name (logged once, appended to ``failures``). ``labels``: the
    models' class names when they are not ``config.LABELS`` (:func:`jaxadv.wrap`, a sidecar).
    """
    from jaxadv import datasets as D
    from jaxadv import demo

    root = Path(data) if data else demo.data_dir()
    if data and not root.is_dir():
        raise UserError(f"--data {data}: no such folder; give an FSDKaggle2018 folder")
    has_train = (root / C.TRAIN_CSV).is_file()
    if split == "auto" and not has_train and not (root / C.TEST_CSV).is_file():
        raise D.DatasetError(
            f"--data {root}: neither {C.TRAIN_CSV} nor {C.TEST_CSV} is there; give an "
            "FSDKaggle2018 folder (the CSV next to audio_train/ or audio_test/)"
        )
    use_train = split == "train" or (split == "auto" and has_train)
    if use_train:
        clips = D.authors_attack_list(
            D.read_train(root, unknown_labels="skip", failures=failures, labels=labels)
        )
    else:
        clips = D.read_test(root, unknown_labels="skip", failures=failures, labels=labels)
    if classes is not None and labels is None:
        clips = D.music_subset(clips, classes)
    elif classes is not None:
        clips = [c for c in clips if c.label in classes]
    if data is None:
        import soundfile as sf

        def samples(c: Clip) -> float:
            info = sf.info(str(c.path))
            return info.frames * C.SAMPLE_RATE / info.samplerate

        clips = [c for c in clips if samples(c) <= C.AUTHORS_BLOCK]
    return D.untargeted_subset(clips, per_class, seed=seed, allow_fewer=True)


def shortfall(clips: Sequence[Clip], per_class: int) -> dict[str, int]:
    """``{label: clips}`` of the classes that have fewer than ``per_class`` selected clips."""
    counts: dict[str, int] = {}
    for c in clips:
        counts[c.label] = counts.get(c.label, 0) + 1
    return {k: n for k, n in sorted(counts.items()) if n < per_class}


def clip_digest(clip: Clip) -> str:
    """``"LABEL:SHA256[:16]"`` of a clip's file: what its rows depend on besides the settings."""
    h = hashlib.sha256()
    with open(clip.path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return f"{clip.label}:{h.hexdigest()[:16]}"


def clip_loader(preset: str, sample_rate: int = C.SAMPLE_RATE) -> Any:
    """``path -> [n] float32`` at ``sample_rate`` (the models', default 32 kHz): how the clips of a
    run are loaded.

    With ``preset="paper"`` the authors' loading: 22 050 Hz then 32 kHz, zero-padded to a
    multiple of 65536 samples, and the padded length is the clip's length (their attacks perturb
    the padding too, ORIGINALS.md §2.3).
    """
    from jaxadv import audio

    if preset != "paper":
        return functools.partial(audio.load_audio, sample_rate=sample_rate)

    def load(path: Path) -> np.ndarray:
        w = audio.load_audio(path, sample_rate, authors_path=True)
        return np.pad(w, (0, (-len(w)) % C.AUTHORS_BLOCK))

    return load


def load_waves(
    clips: Sequence[Clip], preset: str, failures: list[Failure], sample_rate: int = C.SAMPLE_RATE
) -> dict[str, np.ndarray]:
    """Load each clip once (:func:`jaxadv.datasets.load_waves` with :func:`clip_loader`); bad
    files are reported by name in ``failures`` and left out."""
    from jaxadv import datasets as D

    return D.load_waves(
        clips, loader=clip_loader(preset, sample_rate), on_error="skip", failures=failures
    )
