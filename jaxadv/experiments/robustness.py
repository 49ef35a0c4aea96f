"""Robustness curves: success rate against an SNR budget, per model.

``python -m jaxadv.experiments.robustness`` attacks every correctly classified clip with FGSM,
PGD L2 and PGD L∞ at each SNR budget of its preset (:mod:`jaxadv.experiments.configs.robustness`:
the demo 20-100 dB in steps of 20, the paper preset 10-80 dB; the radius per example from the budget, so
every perturbation has at least that SNR) and with FMN, whose per-clip SNR gives the cumulative
curve "share of clips with an adversarial example of at least this SNR" on the same axis (with
``--from-untargeted DIR``, also the curves of that run's DeepFool, C&W, FMN and DDN). Writes in its
run folder: ``results.csv``/``.json`` (one row per model × attack@budget × clip), the table
``robustness`` (success % per model, attack and budget, with the minimal-norm curves at the same
budgets) as Markdown and CSV, ``figure_robustness.png`` (a panel per model, its numbers those of
the table), ``report.html`` and ``config.json``. Resumable, ``--distributed`` like the others.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from jaxadv import cli
from jaxadv.experiments import flags, results, runner, tables, transfer
from jaxadv.experiments.untargeted import untargeted_jobs

FAMILIES = ("fgsm", "pgd_l2", "pgd_linf")  # the budgeted attacks, row names "family@budget"
MINIMAL = ("deepfool", "cw", "fmn", "ddn")  # minimal-norm attacks: cumulative curves


def curves(rows: Sequence[dict], models: Sequence[str]) -> list[tuple]:
    """``(model, attack, budget dB, N, success %)`` for every budgeted attack at its budgets and
    every minimal-norm attack at all of those budgets (success at ``s``: the attack found an
    adversarial example with an SNR of at least ``s``)."""
    budgets = sorted({float(r["attack"].split("@")[1]) for r in rows if "@" in r["attack"]})
    out = []
    for m in models:
        mine = [r for r in rows if r["model"] == m]
        for fam in FAMILIES:
            for s in budgets:
                g = [r for r in mine if r["attack"] == f"{fam}@{s:g}"]
                if g:
                    out.append((m, fam, s, len(g), 100.0 * np.mean([r["success"] for r in g])))
        for a in MINIMAL:
            g = [r for r in mine if r["attack"] == a]
            for s in budgets if g else ():
                hit = [bool(r["success"]) and r["snr_db"] >= s for r in g]
                out.append((m, a, s, len(g), 100.0 * np.mean(hit)))
    return out


def with_source(
    rows: list[dict], base: Path | None, models: Sequence[str], clips: set[str]
) -> list[dict]:
    """``rows`` plus the DeepFool, C&W and DDN rows of the untargeted run ``base`` (its FMN is
    left out: this run has its own), for the curves."""
    if base is None:
        return rows
    src = results.read_run_rows(base)
    keep = set(MINIMAL) - {"fmn"}
    return rows + [
        x for x in src if x["attack"] in keep and x["model"] in models and x["fname"] in clips
    ]


def tables_of(rows: Sequence[dict], models: Sequence[str]) -> dict[str, tables.Table]:
    """The robustness table from result rows, by file stem."""
    return {
        "robustness": tables.Table(
            "Success % against an SNR budget (attacks at the budget; minimal-norm attacks: "
            "share of clips with an adversarial example of at least that SNR)",
            ("Model", "Attack", "Budget (dB)", "N", "Success %"),
            tuple(curves(rows, models)),
        )
    }


def figure(points: Sequence[tuple], models: Sequence[str], path: Path) -> Path:
    """A panel per model: success % against the budget, a line per attack (the numbers of
    :func:`curves`); solid for the budgeted attacks, dashed for the minimal-norm curves."""
    from jaxadv.experiments.figures import _plt

    plt = _plt()
    fig, axes = plt.subplots(1, len(models), figsize=(4.0 * len(models), 3.8), squeeze=False)
    names = [a for a in (*FAMILIES, *MINIMAL) if any(p[1] == a for p in points)]
    colours = {a: plt.get_cmap("tab10")(i % 10) for i, a in enumerate(names)}
    for ax, m in zip(axes[0], models, strict=True):
        for a in names:
            pts = sorted((p[2], p[4]) for p in points if p[0] == m and p[1] == a)
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.plot(xs, ys, "-o" if a in FAMILIES else "--", color=colours[a], ms=3,
                        label=a)  # fmt: skip
        ax.set_title(m, fontsize=10)
        ax.set_xlabel("SNR budget (dB)")
        ax.set_ylim(-3, 103)
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("success %")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(names), 7), fontsize=8,
               frameon=False)  # fmt: skip
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run(args: argparse.Namespace) -> runner.Run:
    """Run (or resume) the robustness experiment with parsed flags; returns the run."""
    base = Path(args.from_untargeted) if args.from_untargeted else None
    doc = transfer.check_source(base) if base is not None else None
    check = (lambda fp: transfer.same_source(base, doc, fp)) if base is not None else None
    r = runner.start_run(args, "robustness", check=check)
    runner.clean_pass(r)
    runner.attack_models(r, untargeted_jobs)
    if not runner.gather(r):  # process 0 of several (or the only one) makes the tables
        return r
    names = [m.name for m in r.models]
    rows = [x for x in r.store.rows() if x["model"] in names and x["fname"] in r.waves]
    results.write_json(r.out / "results.json", rows)
    curve_rows = with_source(rows, base, names, set(r.waves))
    all_tables = tables_of(curve_rows, names)
    for stem, t in all_tables.items():
        t.write(r.out, stem)
    figure(curves(curve_rows, names), names, r.out / "figure_robustness.png")
    runner.write_report(r, rows, all_tables)
    runner.print_outputs(r, list(all_tables.values()))
    return r


def build_parser() -> argparse.ArgumentParser:
    """The command's flags (``--help``)."""
    p = flags.parser("robustness", __doc__.split("\n\n")[0])
    p.add_argument(
        "--from-untargeted", default=None, metavar="DIR",
        help="add the minimal-norm curves (DeepFool, C&W, DDN) of an untargeted run folder "
        "(same data flags; only read)",
    )  # fmt: skip
    add_budgets_flag(p, "the preset's, demo 20,40,60,80,100")
    return p


def add_budgets_flag(p: argparse.ArgumentParser, default: str) -> None:
    """``--budgets DB,DB,...`` (:func:`parse_budgets`), the SNR budgets of the budgeted attacks
    (applied by :func:`jaxadv.experiments.flags.attack_configs`); ``default`` describes the
    command's default in the help."""
    p.add_argument(
        "--budgets", type=parse_budgets, default=None, metavar="DB,DB,...",
        help=f"SNR budgets in dB (default: {default})",
    )  # fmt: skip


def parse_budgets(text: str) -> tuple[float, ...]:
    """``--budgets 20,40,60``: finite dB values, at least one, no repeats."""
    import math

    try:
        out = tuple(float(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected dB values like 20,40,60, got {text!r}"
        ) from None
    if not out or len(set(out)) != len(out) or not all(math.isfinite(v) for v in out):
        raise argparse.ArgumentTypeError(f"expected distinct finite dB values, got {text!r}")
    return out


def main(argv: Sequence[str] | None = None) -> None:
    """The command: a user error is one line on stderr and exit status 2 (``--debug``: raise)."""
    cli.main(build_parser(), run, argv, compile_cache=True)


if __name__ == "__main__":
    main()
