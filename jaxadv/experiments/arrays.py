"""The adversarial waveforms of a run: an append-only folder of ``.npz`` parts, keyed by job.

A sweep stores each group of finished jobs as one new part, ``adversarial/part-NNNNNN.npz``
(written to a temporary file, flushed, then renamed: a kill leaves either the whole part or none,
and a leftover temporary file is removed when the store is reopened for writing). A job's
waveform is stored *before* its row in ``results.csv``, so every finished row has its waveform;
a job redone after a kill between the two is stored again under the same key, and the later part
wins (a resumed run's waveforms equal an uninterrupted run's bit for bit, so the copies agree).

The key of a waveform is its row's :data:`jaxadv.experiments.results.KEY`: ``(model, attack,
fname, target)`` (target ``""`` when untargeted); inside a part it is the member name
``"model|attack|fname|target"``. Each waveform is ``[n] float32`` at 32 kHz over the clip's
valid samples, the same samples as the optional WAV file of the row.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

FOLDER = "adversarial"  # the store's folder inside a run folder
_SEP = "|"


def member(key: tuple[str, ...]) -> str:
    """The member name of a key ``(model, attack, fname, target)`` inside a part."""
    parts = tuple(str(k) for k in key)
    if len(parts) != 4 or any(_SEP in p for p in parts):
        raise ValueError(f"an adversarial key is (model, attack, fname, target) without '|': {key}")
    return _SEP.join(parts)


class ArrayStore:
    """Adversarial waveforms of one run folder, by job key (see the module docstring).

    Args:
      folder: the store's folder (``RUN/adversarial``).
      writable: create the folder and allow :meth:`append`; ``False`` only reads (a missing
        folder is an empty store, and nothing is created or removed).
      writer: the tag of this process's parts when several processes share the folder
        (``part-p1-NNNNNN.npz``; :attr:`jaxadv.experiments.cluster.Share.writer`): each writes and
        cleans up only its own, and reads everyone's.
    """

    def __init__(self, folder: str | os.PathLike, writable: bool = True, writer: str = ""):
        self.folder = Path(folder)
        self.writable = writable
        self.writer = writer
        self._prefix = f"part-{writer}-" if writer else "part-"
        if writable:
            self.folder.mkdir(parents=True, exist_ok=True)
            for tmp in self.folder.glob("part-*.tmp"):
                # a part torn by a kill: a single process removes any; one of several only its
                # own (another's may be in flight)
                if not writer or self._mine(tmp.name.removesuffix(".tmp")):
                    tmp.unlink()
        self._where: dict[str, Path] = {}
        self._parts = sorted(self.folder.glob("part-*.npz")) if self.folder.is_dir() else []
        for p in self._parts:  # in write order: a later part wins
            with np.load(p) as z:
                self._where.update(dict.fromkeys(z.files, p))
        self._own = [p for p in self._parts if self._mine(p.name)]

    def _mine(self, name: str) -> bool:
        """Whether ``name`` is a part of this store's writer: ``{prefix}NNNNNN.npz``."""
        rest = name.removeprefix(self._prefix)
        return rest != name and rest.endswith(".npz") and rest[:-4].isdigit()

    def __contains__(self, key: tuple[str, ...]) -> bool:
        return member(key) in self._where

    def __len__(self) -> int:
        return len(self._where)

    def keys(self) -> Iterator[tuple[str, ...]]:
        """The stored keys ``(model, attack, fname, target)``."""
        return (tuple(k.split(_SEP)) for k in self._where)

    def __getitem__(self, key: tuple[str, ...]) -> np.ndarray:
        name = member(key)
        if name not in self._where:
            raise KeyError(key)
        with np.load(self._where[name]) as z:
            return z[name]

    def get(self, key: tuple[str, ...]) -> np.ndarray | None:
        """The waveform ``[n] float32`` of ``key``, or None if it is not stored."""
        return self[key] if key in self else None

    def append(self, items: Mapping[tuple[str, ...], np.ndarray]) -> Path | None:
        """Store waveforms as one new part (atomically, flushed to disk); returns its path."""
        if not self.writable:
            raise ValueError(f"{self.folder}: this adversarial store was opened read-only")
        if not items:
            return None
        arrays: dict[str, Any] = {member(k): np.asarray(v, np.float32) for k, v in items.items()}
        n = int(self._own[-1].stem.split("-")[-1]) + 1 if self._own else 0
        path = self.folder / f"{self._prefix}{n:06d}.npz"
        tmp = self.folder / f"{self._prefix}{n:06d}.npz.tmp"
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        self._parts.append(path)
        self._own.append(path)
        self._where.update(dict.fromkeys(arrays, path))
        return path


def adversarial(store: ArrayStore, row: Mapping[str, Any], base: Path) -> np.ndarray | None:
    """The adversarial waveform of a result row: from ``store``, else from the row's WAV file
    (a run of an older jaxadv, relative to the run folder ``base``), else None."""
    from jaxadv import audio
    from jaxadv.experiments.results import row_key

    wave = store.get(row_key(row))
    if wave is None and row.get("adv_file"):
        wave = audio.load_audio(Path(base) / row["adv_file"])
    return wave
