"""Experiment 2 (targeted): L-BFGS and C&W from each music class towards each other one.

``python -m jaxadv.experiments.targeted`` attacks every selected clip of the six music classes
(Bass_drum, Cello, Clarinet, Oboe, Snare_drum, Violin_or_fiddle) towards each of the five other
classes, on every model, and writes in its run folder: ``results.csv``/``.json``, the paper's
Table 4 (mean SNR per source → target pair, (a) C&W and (b) L-BFGS) as Markdown and CSV,
Figure 2 (targeted success matrices, PNG, plus their numbers as tables), the adversarial audio and
``config.json``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from jaxadv import cli
from jaxadv import config as C
from jaxadv.experiments import figures, flags, results, runner, sweep, tables

ATTACK_ORDER = ("cw", "lbfgs")


def jobs_for(clips: Sequence, classes: Sequence[str] = C.MUSIC_CLASSES) -> list[sweep.Job]:
    """Each clip towards every class of ``classes`` but its own (5 jobs per music clip)."""
    return [
        sweep.Job(c, C.LABEL_INDEX[t]) for c in clips for t in classes if t != c.label
    ]  # fmt: skip


def report(run: runner.Run) -> list[tables.Table]:
    """Table 4, Figure 2 and results.json from the stored rows of this run."""
    names = [m.name for m in run.models]
    keep = set(run.waves)
    rows = [r for r in run.store.rows() if r["model"] in names and r["fname"] in keep]
    results.write_json(run.out / "results.json", rows)
    out = []
    labels = list(C.MUSIC_CLASSES)
    for a in ATTACK_ORDER:
        t4 = tables.table4(rows, a, labels)
        t4.write(run.out, f"table4_{a}")
        mat = tables.success_pct_matrix(rows, a, labels)  # once: the table and the figure
        sm = tables.success_table(mat, a, labels)
        sm.write(run.out, f"figure2_{a}_success")
        figures.success_matrix(
            mat, labels, f"Targeted {a}: success % (all models)", run.out / f"figure2_{a}.png"
        )
        out += [t4, sm]
    gaps = tables.gap_table(rows, ATTACK_ORDER)
    gaps.write(run.out, "gap_to_best_known")
    tables.best_known(rows).write(run.out, "best_known")
    return out + [gaps]


def run(args: argparse.Namespace) -> runner.Run:
    """Run (or resume) Experiment 2 with parsed flags; returns the run."""
    r = runner.start_run(args, "targeted", classes=C.MUSIC_CLASSES)
    runner.clean_pass(r)
    runner.attack_models(r, jobs_for)
    runner.print_outputs(r, report(r))
    return r


def build_parser() -> argparse.ArgumentParser:
    """The command's flags (``--help``)."""
    return flags.parser("targeted", __doc__.split("\n\n")[0])


def main(argv: Sequence[str] | None = None) -> None:
    """The command: a user error is one line on stderr and exit status 2 (``--debug``: raise)."""
    cli.main(build_parser(), run, argv, compile_cache=True)


if __name__ == "__main__":
    main()
