"""Logging set-up shared by the commands: jaxadv's own messages only (bad files by name,
resumption), on stderr, while the root logger stays quiet (orbax and jax log at INFO)."""

from __future__ import annotations

import logging
import sys


def setup(level: int = logging.INFO) -> logging.Logger:
    """Attach one stderr handler to the ``jaxadv`` logger (idempotent) and return it."""
    logger = logging.getLogger("jaxadv")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(level)
    return logger
