"""Experiment 1 (untargeted): white noise, FGSM, DeepFool and C&W against each model.

``python -m jaxadv.experiments.untargeted`` writes, in its run folder: ``results.csv``/``.json``
(one row per model × attack × clip), the paper's Table 2 and Table 3 (a) DeepFool / (b) C&W as
Markdown and CSV, each attack's gap to the best-known perturbation of every clip
(``gap_to_best_known``, ``best_known``), Figure 1 (distribution of adversarial labels), Figure 3
(spectrograms of a clip and its C&W and DeepFool versions, one per model), the adversarial audio
and ``config.json``. The demo preset also runs the fast minimal-norm attacks FMN and DDN (extra
rows ``fmn`` and ``ddn``).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from jaxadv import cli
from jaxadv.experiments import arrays, figures, flags, results, runner, sweep, tables

ATTACK_ORDER = ("noise", "fgsm", "deepfool", "cw", "fmn", "ddn")  # fmn, ddn: demo preset only


def figure3(
    run: runner.Run, model: str, rows: Sequence[dict], fname: str | None = None
) -> Path | None:
    """Spectrograms of one clip and its C&W and DeepFool versions (SNR in the titles).

    Uses ``fname`` if given, else the first clip on which both attacks succeeded on ``model``,
    else the first clip both attacked (a failed attack is marked in its panel's title). The
    adversarial waveforms come from the run's array store (so also with ``--no-audio``).
    """
    mine = [r for r in rows if r["model"] == model]
    by = {(r["attack"], r["fname"]): r for r in mine}
    names = [fname] if fname else [r["fname"] for r in mine if r["attack"] == "cw"]
    both = [f for f in names if ("cw", f) in by and ("deepfool", f) in by]
    advs = {}
    for f in both:
        pair = [arrays.adversarial(run.arrays, by[(a, f)], run.out) for a in ("cw", "deepfool")]
        if all(w is not None for w in pair):
            advs[f] = pair
    both = [f for f in both if f in advs]
    good = [f for f in both if by[("cw", f)]["success"] and by[("deepfool", f)]["success"]]
    if not both:
        return None
    f = (good or both)[0]
    panels = [(f"{by[('cw', f)]['label']} ({f})", run.waves[f])]
    for title, r, adv in zip(("C&W", "DeepFool"), (by[("cw", f)], by[("deepfool", f)]), advs[f],
                             strict=True):  # fmt: skip
        what = r["adversarial"] if r["success"] else "not adversarial"
        panels.append((f"{title} → {what} ({r['snr_db']:.1f} dB)", adv))
    return figures.spectrograms(panels, run.out / f"figure3_{model}.png", run.sample_rate)


def untargeted_jobs(clips: Sequence) -> list[sweep.Job]:
    """One untargeted job per clip."""
    return [sweep.Job(c) for c in clips]


def tables_of(rows: Sequence[dict], models: Sequence[str]) -> dict[str, tables.Table]:
    """Every table of an untargeted run from its rows, by file stem: Tables 2, 3 (a) and (b), the
    gaps to the best-known perturbations and the best-known SNRs."""
    ran = {r["attack"] for r in rows}
    order = [a for a in ATTACK_ORDER if a in ran]  # the paper preset runs no fmn/ddn
    return {
        "table2": tables.table2(rows, order),
        "table3a_deepfool": tables.table3(rows, "deepfool", models),
        "table3b_cw": tables.table3(rows, "cw", models),
        "gap_to_best_known": tables.gap_table(rows, order),
        "best_known": tables.best_known(rows),
    }


def report(run: runner.Run) -> list[tables.Table]:
    """Tables 2 and 3, Figures 1 and 3, results.json and report.html from the stored rows."""
    names = [m.name for m in run.models]
    keep = set(run.waves)
    rows = [r for r in run.store.rows() if r["model"] in names and r["fname"] in keep]
    results.write_json(run.out / "results.json", rows)
    all_tables = tables_of(rows, names)
    for stem, t in all_tables.items():
        t.write(run.out, stem)
    figures.label_distribution(rows, ["deepfool", "cw"], run.out / "figure1.png", run.labels)
    for m in names:
        figure3(run, m, rows, run.args.figure3)
    runner.write_report(run, rows, all_tables)
    return [
        all_tables[k] for k in ("table2", "table3a_deepfool", "table3b_cw", "gap_to_best_known")
    ]


def run(args: argparse.Namespace) -> runner.Run:
    """Run (or resume) Experiment 1 with parsed flags; returns the run."""
    r = runner.start_run(args, "untargeted")
    runner.clean_pass(r)
    runner.attack_models(r, untargeted_jobs)
    if runner.gather(r):  # process 0 of several (or the only one) makes the tables
        runner.print_outputs(r, report(r))
    return r


def build_parser() -> argparse.ArgumentParser:
    """The command's flags (``--help``)."""
    p = flags.parser("untargeted", __doc__.split("\n\n")[0])
    p.add_argument(
        "--figure3", default=None, metavar="FNAME",
        help="clip shown in Figure 3 (default: the first on which C&W and DeepFool both succeed)",
    )  # fmt: skip
    return p


def main(argv: Sequence[str] | None = None) -> None:
    """The command: a user error is one line on stderr and exit status 2 (``--debug``: raise)."""
    cli.main(build_parser(), run, argv, compile_cache=True)


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
