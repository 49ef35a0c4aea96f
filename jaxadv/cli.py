"""What every jaxadv command does with an error: a user error is one line, a bug a traceback.

A *user error* is something the person running the command can fix — a missing folder or file, a
damaged checkpoint, a bad flag value, a run folder that holds another run. The commands
(``python -m jaxadv.experiments.{untargeted,targeted,transfer}``, ``python -m jaxadv.train``,
``python -m jaxadv.train.demo``) run their work through :func:`main`, which prints such an error
as one line on stderr, ``PROG: error: MESSAGE``, and exits with status 2 (as argparse does for a
bad flag). ``--debug`` re-raises it instead, to show the traceback. Anything else is a bug and
keeps its traceback.

This module imports nothing heavy (no JAX), so it can be imported first by every command.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

EXIT_USER_ERROR = 2


class UserError(Exception):
    """An error in the command line, the data or a file the user gave; shown as one line.

    :class:`jaxadv.checkpoint.CheckpointError` and :class:`jaxadv.datasets.DatasetError` are
    user errors too. The message should name the thing (flag, file, folder) and the fix.
    """


def user_errors() -> tuple[type[BaseException], ...]:
    """The exception types shown as one line: :class:`UserError` (and its subclasses), audio
    files that cannot be read (:class:`jaxadv.audio.AudioError`) and operating-system errors
    (a folder that cannot be written, a full disk)."""
    from jaxadv.audio import AudioError

    return (UserError, AudioError, OSError)


def one_line(err: BaseException) -> str:
    """The message of ``err`` on one line (the lines of a multi-line message joined by "; ")."""
    text = str(err)
    if isinstance(err, OSError) and err.filename is not None and err.strerror:
        text = f"{err.filename}: {err.strerror}"
    parts = [p.strip() for p in text.splitlines() if p.strip()]
    return "; ".join(parts) or type(err).__name__


def add_debug_flag(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``--debug`` (show the traceback of a user error) to ``parser``, once."""
    if not any("--debug" in a.option_strings for a in parser._actions):
        parser.add_argument(
            "--debug",
            action="store_true",
            help="show the full traceback of an error instead of its one-line message",
        )
    return parser


def main(
    parser: argparse.ArgumentParser,
    run: Callable[[argparse.Namespace], Any],
    argv: Sequence[str] | None = None,
    *,
    compile_cache: bool = False,
) -> Any:
    """Parse ``argv`` with ``parser`` (which gets ``--debug``) and call ``run(args)``.

    A user error (:func:`user_errors`, or a ``SystemExit`` with a message) is printed as one line
    ``PROG: error: MESSAGE`` on stderr and exits with status 2; with ``--debug`` it is re-raised.
    ``args.argv`` holds the arguments as given, for the record of the run. With
    ``compile_cache`` (the commands that compile attacks or training steps) the parser also gets
    ``--cache-dir``/``--no-cache`` and JAX's persistent compilation cache is turned on before
    ``run`` (:mod:`jaxadv.cache`), so a second run compiles nothing.
    """
    add_debug_flag(parser)
    if compile_cache:
        from jaxadv import cache

        cache.add_cache_flags(parser)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    debug = bool(getattr(args, "debug", False))
    try:
        if compile_cache:
            cache.enable_from_args(args)
        return run(args)
    except user_errors() as e:
        if debug:
            raise
        _fail(parser.prog, one_line(e))
    except SystemExit as e:
        if debug or e.code is None or isinstance(e.code, int):
            raise
        _fail(parser.prog, one_line(Exception(str(e.code))))


def _fail(prog: str, message: str) -> None:
    sys.stdout.flush()
    print(f"{prog}: error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_USER_ERROR)
