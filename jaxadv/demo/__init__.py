"""The embedded demo data: real sampled instrument and effect clips rendered from FluidR3 (MIT).

``jaxadv/demo/data`` is an FSDKaggle2018-layout folder (test split only): 6 clips for each of the
26 labels the FluidR3 soundfonts cover, mono 16-bit FLAC at 32 kHz, 1.5-3 s, listed in
``test_post_competition_scoring_clips.csv`` (see ``data/README.md``). A disjoint train split is
rendered on demand with ``python -m jaxadv.demo.render --split train --out DIR``.

Nothing here does I/O at import time, and :mod:`jaxadv.demo.render` (fluidsynth) is not imported.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import TYPE_CHECKING

from jaxadv import config as C

if TYPE_CHECKING:
    from jaxadv.datasets import Clip

__all__ = ["data_dir", "eval_clips"]


def data_dir() -> Path:
    """Path of the packaged demo folder (``jaxadv/demo/data``), an FSDKaggle2018 layout."""
    root = importlib.resources.files(__name__) / "data"
    path = Path(str(root))
    if not (path / C.TEST_CSV).is_file():
        raise FileNotFoundError(
            f"demo data not found at '{path}' (is jaxadv installed from a zip? the demo clips "
            "need a regular package directory)"
        )
    return path


def models_dir() -> Path:
    """Path of the packaged demo models (``jaxadv/demo/models/<name>``; may not exist yet)."""
    return Path(str(importlib.resources.files(__name__) / "models"))


def eval_clips() -> list[Clip]:
    """The demo eval clips as :class:`jaxadv.datasets.Clip` (split ``"test"``), in CSV order."""
    from jaxadv.datasets import read_test

    return read_test(data_dir())
