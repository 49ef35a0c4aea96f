"""Iqbal's feature standardisation: one scalar mean and one scalar std of the training chunks.

tqbl/dcase2018_task2 fits ``ImageDataGenerator(featurewise_center=True,
featurewise_std_normalization=True)`` (keras-preprocessing 1.0.5) on the training chunks
``[M, 128, 64, 1]``: ``x = float32 copy; mean = np.mean(x, axis=(0, 1, 2)); x -= mean;
std = np.std(x, axis=(0, 1, 2))`` (population std, float32 NumPy reductions), then applies
``(x - mean) / (std + 1e-6)``. The numbers are not stored in any checkpoint (ORIGINALS.md §2.1).

:func:`keras_featurewise_stats` repeats those NumPy calls exactly; :func:`fit_standardisation`
computes the chunks with jaxadv's "iqbal" front-end and Iqbal's chunking rule. Not reproduced:
Iqbal's silence splitting of every clip before feature extraction (pydub, ORIGINALS.md §2.1), so
the statistics of whole clips differ slightly from those of silence-split segments.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import jax
import numpy as np

from jaxadv import config as C
from jaxadv.frontend import IqbalFrontend, bucket_length

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".aiff", ".aif")


def keras_featurewise_stats(x: np.ndarray) -> tuple[float, float]:
    """``ImageDataGenerator.fit`` (keras-preprocessing 1.0.5) on ``x [M, rows, cols, 1]``."""
    x = np.copy(np.asarray(x, dtype=np.float32))
    if x.ndim != 4 or x.shape[-1] != 1:
        raise ValueError(f"expected chunks [M, rows, cols, 1], got shape {x.shape}")
    mean = np.mean(x, axis=(0, 1, 2))
    x -= np.reshape(mean, (1, 1, 1))
    std = np.std(x, axis=(0, 1, 2))
    return float(mean[0]), float(std[0])


def training_chunks(
    waveforms: Iterable[np.ndarray], frontend: IqbalFrontend | None = None
) -> np.ndarray:
    """All valid log-mel chunks ``[M, 128, 64]`` of 32 kHz clips, by Iqbal's chunking rule.

    Clips are padded to the bucket ladder so only a few programs are compiled.
    """
    fe = frontend or IqbalFrontend()
    fn = jax.jit(fe)
    out = []
    for i, x in enumerate(waveforms):
        x = np.asarray(x, np.float32)
        if x.ndim != 1 or x.size == 0:
            raise ValueError(f"waveform {i}: expected a non-empty 1-D array, got shape {x.shape}")
        n = x.size
        padded = np.zeros((1, bucket_length(n)), np.float32)
        padded[0, :n] = x
        chunks, mask = fn(padded, np.array([n], np.int32))
        out.append(np.asarray(chunks[0])[np.asarray(mask[0])])
    if not out:
        raise ValueError("no audio to fit the standardisation on")
    return np.concatenate(out)


def fit_standardisation(
    waveforms: Iterable[np.ndarray], frontend: IqbalFrontend | None = None
) -> tuple[float, float]:
    """Iqbal's scalar ``(mean, std)`` from 32 kHz training waveforms (see the module docstring)."""
    return keras_featurewise_stats(training_chunks(waveforms, frontend)[..., None])


def load_folder(directory: str | Path, sample_rate: int = C.SAMPLE_RATE) -> Iterator[np.ndarray]:
    """Mono float32 waveforms of every audio file in ``directory`` (sorted), at ``sample_rate``.

    Loaded with :func:`jaxadv.audio.load_audio` (channels averaged, soxr HQ resampling; bad files
    raise an error naming them). Iqbal used librosa 0.6.2's 'kaiser_best' (resampy), which is not
    a dependency here.
    """
    from jaxadv.audio import load_audio
    from jaxadv.convert.keras_h5 import ConversionError

    if not Path(directory).is_dir():
        raise ConversionError(f"{directory}: no such folder; give the folder of the training audio")
    files = sorted(p for p in Path(directory).iterdir() if p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise ConversionError(
            f"{directory}: no audio files ({', '.join(AUDIO_SUFFIXES)}); give the folder of the "
            "training audio"
        )
    for p in files:
        yield load_audio(p, sample_rate=sample_rate)
