"""JAX's persistent compilation cache for the commands: a second run compiles nothing.

The experiment, training and benchmark commands call :func:`enable_compilation_cache` in their
``main`` (never at import: the library changes no global JAX setting by itself). The folder is, in
order: the ``--cache-dir`` flag, the ``JAXADV_CACHE_DIR`` environment variable, then
``$XDG_CACHE_HOME/jaxadv/xla`` (``~/.cache/jaxadv/xla``). ``--no-cache``, or
``JAXADV_CACHE_DIR=off``, disables it. Every program is cached (no minimum compile time or size):
an attack's first batch costs seconds to compile on a 2-core CPU, which is what the cache saves.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax

ENV = "JAXADV_CACHE_DIR"
OFF = ("", "0", "off", "none", "false")


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/jaxadv/xla``, else ``~/.cache/jaxadv/xla``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "jaxadv" / "xla"


def cache_dir(path: str | os.PathLike | None = None, *, disable: bool = False) -> Path | None:
    """The folder the cache would use (None when disabled), without changing anything."""
    if disable:
        return None
    if path is not None:
        return Path(path).expanduser()
    env = os.environ.get(ENV)
    if env is not None:
        return None if env.strip().lower() in OFF else Path(env).expanduser()
    return default_cache_dir()


def enable_compilation_cache(
    path: str | os.PathLike | None = None, *, disable: bool = False
) -> Path | None:
    """Turn on JAX's persistent compilation cache in ``path`` (see the module docstring).

    Returns the folder used, or None when disabled. A folder that cannot be created disables the
    cache with a warning rather than failing the run: the cache only saves time.
    """
    folder = cache_dir(path, disable=disable)
    if folder is None:
        jax.config.update("jax_compilation_cache_dir", None)
        return None
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        import logging

        logging.getLogger("jaxadv").warning(
            "compilation cache disabled: cannot create %s (%s); pass --cache-dir", folder, e
        )
        return None
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return folder


def add_cache_flags(parser) -> None:
    """``--cache-dir DIR`` and ``--no-cache`` on an argparse parser (for every command)."""
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help=f"persistent compilation cache folder (default: ${ENV} or {default_cache_dir()})",
    )
    parser.add_argument(
        "--no-cache",
        action="store_true",
        help="do not use the persistent compilation cache (every program is compiled again)",
    )


def enable_from_args(args) -> Path | None:
    """:func:`enable_compilation_cache` from the flags of :func:`add_cache_flags`."""
    return enable_compilation_cache(args.cache_dir, disable=args.no_cache)
