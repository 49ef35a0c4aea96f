"""Input representations and defences: how the input representation and adversarial training
change robustness, on one architecture (the paper's future work).

``python -m jaxadv.experiments.representations`` takes the demo's VGG13 on log-mel (``vgg13``),
on a linear-frequency STFT (``vgg13_stft``), on a constant-Q transform (``vgg13_cqt``), the VGG13
adversarially trained with PGD at 40 dB (``vgg13_pgd``) and the raw-waveform dense_wav, and
measures for each: the clean accuracy; every correctly classified clip's minimal-perturbation SNR
(the best over DeepFool and FMN); the robust accuracy against FGSM and PGD L2 at each SNR budget
(:mod:`jaxadv.experiments.configs.representations`); the certified SNR of randomized smoothing
(:mod:`jaxadv.certify`); and the transfer matrix of the PGD examples at 40 dB and of DeepFool's
between the models. Any models can be compared (``--models``, ``--checkpoint``, ``--model-fn``).

It writes in its run folder: ``results.csv``/``.json`` (one row per model × attack × clip),
``certify.csv`` (one row per model and clip), ``transfer.csv``, the tables ``representations``
(the summary), ``robust_accuracy``, ``certified_accuracy``, ``transfer_pgd_l2@40`` and
``transfer_deepfool`` (Markdown and CSV), ``figure_representations.png`` (robust accuracy against
the budget, certified accuracy against SNR, the PGD transfer matrix), ``report.html`` and
``config.json``. The same command resumes; other settings in the same folder are refused.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxadv import cli
from jaxadv.experiments import certify as K
from jaxadv.experiments import flags, results, runfolder, runner, tables, transfer
from jaxadv.experiments.configs import representations as P
from jaxadv.experiments.untargeted import untargeted_jobs

SMOOTHING_FILE = "smoothing.json"  # the certification settings a resumed run must share
# the summary's certified-accuracy budget (the demo's certificates reach 80-90 dB)
CERTIFIED_COLUMN_DB = 90.0


def transfer_attacks() -> tuple[str, ...]:
    """The attacks whose examples are transferred: PGD L2 at :data:`P.TRANSFER_BUDGET` (every
    model's examples at the same budget) and DeepFool (minimal perturbations)."""
    from jaxadv.experiments.configs.robustness import budget_name

    return (budget_name("pgd_l2", P.TRANSFER_BUDGET), "deepfool")


def representation(model: Any) -> str:
    """What a loaded model listens to, for the tables: its front-end's name (``iqbal`` is
    log-mel), ``waveform`` for dense_wav, the checkpoint's model otherwise."""
    fe = getattr(getattr(model.classifier, "frontend", None), "name", None)
    arch = getattr(getattr(model.classifier, "model_config", None), "name", None)
    if arch == "dense_wav":
        return "waveform"
    if arch == "dense_mel":
        return "mel (Kapre)"
    return {"iqbal": "log-mel", "iqbal_attack": "log-mel"}.get(fe, fe or str(arch))


def training(model: Any) -> str:
    """``standard`` or ``PGD L2 40 dB`` (from the checkpoint's training config)."""
    t = model.meta.get("training") or {}
    if t.get("adv_snr_db") is None:
        return "standard"
    return f"PGD {t.get('adv_norm', 'l2').upper()} {t['adv_snr_db']:g} dB"


def minimal_snr(rows: Sequence[dict], model: str) -> dict[str, float]:
    """``{fname: SNR dB}`` of each attacked clip's best successful minimal-norm example (the
    highest SNR over :data:`P.MINIMAL`; ``-inf`` when none succeeded)."""
    out: dict[str, float] = {}
    for r in rows:
        if r["model"] == model and r["attack"] in P.MINIMAL:
            snr = float(r["snr_db"]) if r["success"] else -np.inf
            out[r["fname"]] = max(out.get(r["fname"], -np.inf), snr)
    return out


def robust_accuracy(
    rows: Sequence[dict], model: str, attack: str, n_clips: int, n_correct: int
) -> float:
    """% of all clips still classified correctly under ``attack`` (a clip the model already
    misclassifies counts as lost; only correct clips are attacked)."""
    fooled = sum(bool(r["success"]) for r in rows if r["model"] == model and r["attack"] == attack)
    return 100.0 * (n_correct - fooled) / max(n_clips, 1)


def summary_table(
    run: runner.Run, rows: Sequence[dict], cert_rows: Sequence[dict], budgets: Sequence[float]
) -> tables.Table:
    """One row per model: representation, training, clean accuracy, the median minimal SNR, PGD
    robust accuracy at each budget and the median certified SNR."""
    from jaxadv.experiments.configs.robustness import budget_name
    from jaxadv.experiments.models import correct_clips

    out = []
    for m in run.models:
        n_clips = len(run.clips)
        n_ok = len(correct_clips(run.clips, run.preds[m.name]))
        snr = np.array(list(minimal_snr(rows, m.name).values()) or [np.nan])
        cert = np.array([r["certified_snr_db"] for r in cert_rows if r["model"] == m.name])
        fin = cert[np.isfinite(cert)]
        out.append(
            (
                m.name, representation(m), training(m), 100.0 * n_ok / max(n_clips, 1),
                float(np.median(snr)),
                *(robust_accuracy(rows, m.name, budget_name("pgd_l2", s), n_clips, n_ok)
                  for s in budgets),
                float(np.median(fin)) if fin.size else float("inf"),
                100.0 * float(np.mean(cert <= CERTIFIED_COLUMN_DB)) if cert.size else float("nan"),
            )
        )  # fmt: skip
    return tables.Table(
        "Input representations and defences: clean accuracy, minimal perturbation, robust and "
        "certified accuracy",
        ("Model", "Representation", "Training", "Clean acc %", "Median minimal SNR dB",
         *(f"PGD robust acc % @{s:g} dB" for s in budgets), "Median certified SNR dB",
         f"Certified acc % @{CERTIFIED_COLUMN_DB:g} dB"),
        tuple(out),
        "Minimal SNR: per attacked clip, the highest SNR of a successful DeepFool or FMN example "
        "(higher: a smaller perturbation fools it). Robust accuracy: % of all clips still "
        "correct under PGD L2 in the ball of that SNR. Certified: randomized smoothing; a clip "
        "that is wrong or abstains is certified at no SNR (inf).",
    )  # fmt: skip


def robust_table(run: runner.Run, rows: Sequence[dict], budgets: Sequence[float]) -> tables.Table:
    """Robust accuracy (%) per model, attack family and budget."""
    from jaxadv.experiments.configs.robustness import budget_name
    from jaxadv.experiments.models import correct_clips

    out = []
    for m in run.models:
        n_ok = len(correct_clips(run.clips, run.preds[m.name]))
        for fam in ("fgsm", "pgd_l2"):
            out.append((m.name, fam, *(robust_accuracy(rows, m.name, budget_name(fam, s),
                                                       len(run.clips), n_ok) for s in budgets)))  # fmt: skip
    return tables.Table(
        "Robust accuracy (%): clips still classified correctly under the attack at each SNR budget",
        ("Model", "Attack", *(f"{s:g} dB" for s in budgets)),
        tuple(out),
    )


def transfer_tables(trows: Sequence[dict], names: Sequence[str]) -> dict[str, tables.Table]:
    """A transfer matrix per transferred attack (the paper's Table 5 layout)."""
    out = {}
    for a in transfer_attacks():
        t = tables.table5([r for r in trows if r["attack"] == a], names)
        out[f"transfer_{a}"] = tables.Table(
            f"Transferability (%) of the {a} adversarial examples between representations",
            t.header, t.rows, t.note, digits=t.digits,
        )  # fmt: skip
    return out


def figure(
    run: runner.Run,
    rows: Sequence[dict],
    cert_rows: Sequence[dict],
    transfer_table: tables.Table,
    budgets: Sequence[float],
    path: Path,
) -> Path:
    """Three panels: PGD robust accuracy against the budget, certified accuracy against SNR
    (one line per model), and ``transfer_table`` (a :func:`transfer_tables` matrix)."""
    from jaxadv.experiments.configs.robustness import budget_name
    from jaxadv.experiments.figures import _plt
    from jaxadv.experiments.models import correct_clips

    plt = _plt()
    names = [m.name for m in run.models]
    fig, axes = plt.subplots(1, 3, figsize=(15.0, 4.2))
    grid = np.linspace(0, 140, 281)
    for i, m in enumerate(run.models):
        colour = plt.get_cmap("tab10")(i % 10)
        n_ok = len(correct_clips(run.clips, run.preds[m.name]))
        acc = [robust_accuracy(rows, m.name, budget_name("pgd_l2", s), len(run.clips), n_ok)
               for s in budgets]  # fmt: skip
        axes[0].plot(budgets, acc, "-o", ms=3, color=colour, label=m.name)
        cert = np.array([r["certified_snr_db"] for r in cert_rows if r["model"] == m.name])
        if cert.size:
            axes[1].plot(grid, [100.0 * np.mean(cert <= g) for g in grid], color=colour,
                         label=m.name)  # fmt: skip
    axes[0].set_xlabel("SNR budget (dB)")
    axes[0].set_ylabel("PGD L2 robust accuracy (%)")
    axes[1].set_xlabel("SNR (dB): every perturbation above it is certified")
    axes[1].set_ylabel("certified accuracy (%)")
    for ax in axes[:2]:
        ax.set_ylim(-3, 103)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    mat = np.array(
        [[np.nan if v == "NA" else float(v) for v in row[1:]] for row in transfer_table.rows]
    )
    im = axes[2].imshow(mat, vmin=0, vmax=100, cmap="viridis")
    for (i, j), v in np.ndenumerate(mat):
        if np.isfinite(v):
            axes[2].text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=8,
                         color="white" if v < 60 else "black")  # fmt: skip
    axes[2].set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    axes[2].set_yticks(range(len(names)), names, fontsize=8)
    axes[2].set_xlabel("examples made for")
    axes[2].set_ylabel("applied to")
    axes[2].set_title(f"{transfer_attacks()[0]} transfer (% fooled)", fontsize=10)
    fig.colorbar(im, ax=axes[2], fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _smoothing_check(args: argparse.Namespace, cfgs: dict[float, Any]) -> Any:
    """The ``check`` of :func:`runner.start_run`: a resumed run must certify with the same
    smoothing settings."""

    def check(fp: dict) -> None:
        del fp
        path = runfolder.setup_run(args, "representations") / SMOOTHING_FILE
        if path.is_file() and json.loads(path.read_text()) != K.smoothing_fingerprint(cfgs):
            raise cli.UserError(
                f"{path.parent} holds a run certified with other smoothing settings "
                "(--noise-dbfs, --n0, --n, --alpha, --per-step); resume it with the same ones or "
                "choose another --out"
            )

    return check


def run(args: argparse.Namespace) -> runner.Run:
    """Run (or resume) the study with parsed flags; returns the run."""
    from tqdm import tqdm

    if args.models is None and not args.model_fn:
        args.models = ",".join(P.MODELS)
    cfgs = K.smoothing_configs(args)
    r = runner.start_run(args, "representations", check=_smoothing_check(args, cfgs))
    runner.clean_pass(r)
    runner.attack_models(r, untargeted_jobs)
    if not runner.gather(r):  # process 0 of several (or the only one) makes the rest
        return r
    names = [m.name for m in r.models]
    rows = [x for x in r.store.rows() if x["model"] in names and x["fname"] in r.waves]
    results.write_json(r.out / "results.json", rows)
    (r.out / SMOOTHING_FILE).write_text(json.dumps(K.smoothing_fingerprint(cfgs)))
    store = results.ResultStore(r.out / K.FILE, K.schema())
    clips = [c for c in r.clips if c.fname in r.waves]
    bar = tqdm(total=len(r.models) * len(cfgs), desc="certify", unit="model×σ", file=sys.stderr)
    for m in r.models:
        K.certify_model(m, clips, r.waves, cfgs, store, seed=args.seed,
                        batch_size=args.batch_size, labels=r.labels,
                        on_level=lambda: bar.update(1))  # fmt: skip
    bar.close()
    cert_rows = [x for x in store.rows() if x["model"] in names and x["fname"] in r.waves]
    trows = transfer.evaluate_transfer(r, rows, r.out, attacks=transfer_attacks())
    with open(r.out / "transfer.csv", "w", newline="") as f:
        w = csv.DictWriter(f, transfer.TRANSFER_COLUMNS)
        w.writeheader()
        w.writerows(trows)
    budgets = sorted({float(x["attack"].split("@")[1]) for x in rows if "@" in x["attack"]})
    all_tables = {
        "representations": summary_table(r, rows, cert_rows, budgets),
        "robust_accuracy": robust_table(r, rows, budgets),
        "certified_accuracy": K.accuracy_table(cert_rows, K.DEFAULT_BUDGETS),
        **transfer_tables(trows, names),
    }
    for stem, t in all_tables.items():
        t.write(r.out, stem)
    pgd_transfer = all_tables[f"transfer_{transfer_attacks()[0]}"]
    figure(r, rows, cert_rows, pgd_transfer, budgets, r.out / "figure_representations.png")
    runner.write_report(r, rows, all_tables)
    runner.print_outputs(r, [all_tables["representations"], pgd_transfer])
    return r


def build_parser() -> argparse.ArgumentParser:
    """The command's flags (``--help``)."""
    from jaxadv.experiments.robustness import add_budgets_flag

    p = flags.parser("representations", __doc__.split("\n\n")[0], default_models=P.MODELS)
    add_budgets_flag(
        p, f"the preset's, demo 20,40,60,80; {P.TRANSFER_BUDGET:g} must be among them for the "
        "PGD transfer matrix"
    )  # fmt: skip
    K.add_smoothing_flags(p, n=100)
    return p


def main(argv: Sequence[str] | None = None) -> None:
    """The command: a user error is one line on stderr and exit status 2 (``--debug``: raise)."""
    cli.main(build_parser(), run, argv, compile_cache=True)


if __name__ == "__main__":
    main()
