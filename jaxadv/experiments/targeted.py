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


def jobs_for(
    clips: Sequence,
    classes: Sequence[str] = C.MUSIC_CLASSES,
    labels: Sequence[str] = C.LABELS,
) -> list[sweep.Job]:
    """Each clip towards every class of ``classes`` but its own (5 jobs per music clip);
    ``labels``: the models' class names (the targets' indices count in them)."""
    index = {lab: i for i, lab in enumerate(labels)}
    return [
        sweep.Job(c, index[t], t) for c in clips for t in classes if t != c.label
    ]  # fmt: skip


def tables_of(rows: Sequence[dict], models: Sequence[str]) -> dict[str, tables.Table]:
    """Every table of a targeted run from its rows, by file stem: Table 4 and the success matrix
    of Figure 2 per attack, the gaps to the best-known perturbations and the best-known SNRs."""
    out = {}
    labels = list(C.MUSIC_CLASSES)
    for a in ATTACK_ORDER:
        out[f"table4_{a}"] = tables.table4(rows, a, labels)
        mat = tables.success_pct_matrix(rows, a, labels)
        out[f"figure2_{a}_success"] = tables.success_table(mat, a, labels)
    out["gap_to_best_known"] = tables.gap_table(rows, ATTACK_ORDER)
    out["best_known"] = tables.best_known(rows)
    return out


def report(run: runner.Run) -> list[tables.Table]:
    """Table 4, Figure 2, results.json and report.html from the stored rows of this run."""
    names = [m.name for m in run.models]
    keep = set(run.waves)
    rows = [r for r in run.store.rows() if r["model"] in names and r["fname"] in keep]
    results.write_json(run.out / "results.json", rows)
    all_tables = tables_of(rows, names)
    for stem, t in all_tables.items():
        t.write(run.out, stem)
    labels = list(C.MUSIC_CLASSES)
    for a in ATTACK_ORDER:
        figures.success_matrix(
            tables.success_pct_matrix(rows, a, labels), labels,
            f"Targeted {a}: success % (all models)", run.out / f"figure2_{a}.png",
        )  # fmt: skip
    runner.write_report(run, rows, all_tables)
    shown = [k for a in ATTACK_ORDER for k in (f"table4_{a}", f"figure2_{a}_success")]
    return [all_tables[k] for k in (*shown, "gap_to_best_known")]


def run(args: argparse.Namespace) -> runner.Run:
    """Run (or resume) Experiment 2 with parsed flags; returns the run."""
    r = runner.start_run(args, "targeted", classes=C.MUSIC_CLASSES)
    runner.clean_pass(r)
    runner.attack_models(r, lambda clips: jobs_for(clips, C.MUSIC_CLASSES, r.labels))
    if runner.gather(r):  # process 0 of several (or the only one) makes the tables
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
