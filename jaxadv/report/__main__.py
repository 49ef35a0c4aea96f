"""``python -m jaxadv.report RUN``: write (again) the ``report.html`` of an experiment's run folder.

Open ``RUN/report.html`` in any browser (no network needed). ``--embed`` writes one portable file
with the audio and images inside it.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from jaxadv import cli


def build_parser() -> argparse.ArgumentParser:
    """The command's flags (``--help``)."""
    from jaxadv.report import PER_PAGE

    p = argparse.ArgumentParser(
        prog="python -m jaxadv.report",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("run", metavar="RUN", help="the run folder (--out of an experiment command)")
    p.add_argument(
        "--data", default=None,
        help="the run's --data folder, if it moved since the run (default: as recorded)",
    )  # fmt: skip
    p.add_argument(
        "--embed", action="store_true",
        help="put the audio and images inside report.html (one portable file; large)",
    )  # fmt: skip
    p.add_argument("--per-page", type=int, default=PER_PAGE, help="examples per page")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def run(args: argparse.Namespace) -> None:
    from jaxadv import logs
    from jaxadv.report import regenerate

    logs.setup()
    if args.per_page < 1:
        raise cli.UserError(f"--per-page must be at least 1, got {args.per_page}")
    path = regenerate(
        args.run, data=args.data, embed=args.embed, per_page=args.per_page,
        progress=not args.no_progress,
    )  # fmt: skip
    print(f"wrote {path} (open it in a browser)")


def main(argv: Sequence[str] | None = None) -> None:
    """The command: a user error is one line on stderr and exit status 2 (``--debug``: raise)."""
    cli.main(build_parser(), run, argv)


if __name__ == "__main__":
    main()
