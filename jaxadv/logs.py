"""Logging set-up shared by the commands: jaxadv's own messages only (bad files by name,
resumption), on stderr, while the root logger stays quiet (orbax and jax log at INFO)."""

from __future__ import annotations

import logging
import sys


class _StderrHandler(logging.StreamHandler):
    """A handler that writes to whatever ``sys.stderr`` is when a record is emitted (so a
    replaced stderr, as under pytest's capture, gets the messages, each once)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def setup(level: int = logging.INFO) -> logging.Logger:
    """Attach one stderr handler to the ``jaxadv`` logger (idempotent) and return it."""
    logger = logging.getLogger("jaxadv")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(level)
    return logger
