"""Experiment 3 (transferability): each model's DeepFool and C&W examples tested on every other model.

``python -m jaxadv.experiments.transfer`` runs untargeted DeepFool and C&W on every model (or
reuses an untargeted run with ``--from-untargeted DIR``), then feeds every successful adversarial
clip to every other model. A clip counts for a pair (source, target model) only if both models
classify the clean clip correctly; it *transfers* if the other model's prediction on the
adversarial clip is no longer the ground truth. Writes ``transfer.csv`` (one row per example and
other model), the paper's Table 5 (Markdown and CSV), ``results.csv`` of the attacks and
``config.json``.
"""

from __future__ import annotations

import argparse
import csv
from collections.abc import Sequence
from pathlib import Path

import jax
import numpy as np

from jaxadv import cli
from jaxadv import datasets as D
from jaxadv.attacks import criteria
from jaxadv.experiments import arrays, devices, flags, models, results, runfolder, runner, tables
from jaxadv.experiments.untargeted import untargeted_jobs

TRANSFER_COLUMNS = (
    "source_model",  # the model the adversarial example was made for
    "attack",
    "fname",
    "label",
    "eval_model",  # the model it is applied to
    "eval_prediction",  # that model's prediction on the adversarial clip
    "fooled",  # 1 if eval_prediction != label
)


def evaluate_transfer(
    run: runner.Run,
    rows: Sequence[dict],
    base: Path,
    attacks: Sequence[str] = ("deepfool", "cw"),
) -> list[dict]:
    """Apply every successful example of ``rows`` made by ``attacks`` to every other model.

    The examples are read from the array store of the run folder ``base`` (opened read-only;
    the WAV files of a run of an older jaxadv, which has none).
    """
    store = arrays.ArrayStore(base / arrays.FOLDER, writable=False)
    ok = [r for r in rows if r["success"] and r["attack"] in attacks]
    advs = {}
    for r in ok:
        wave = arrays.adversarial(store, r, base)
        if wave is not None:
            advs[(r["model"], r["attack"], r["fname"])] = wave
    ok = [r for r in ok if (r["model"], r["attack"], r["fname"]) in advs]
    out = []
    clip_of = {c.fname: c for c in run.clips}
    for m in run.models:
        fn = jax.jit(m.classifier)
        params = devices.replicate(m.params)
        correct = {c.fname for c in models.correct_clips(run.clips, run.preds[m.name])}
        todo = [r for r in ok if r["model"] != m.name and r["fname"] in correct]
        waves = [advs[(r["model"], r["attack"], r["fname"])] for r in todo]
        # the adversarial clips in the fixed bucket batches of the library, labelled as their clip
        for idx in D.balanced_batches([len(w) for w in waves], run.args.batch_size):
            batch = D.pad_batch([waves[i] for i in idx], [clip_of[todo[i]["fname"]] for i in idx])
            (xd, ld, yd), n = devices.shard([batch.x, batch.lengths, batch.label_indices], len(idx))
            out_m = fn(params, xd, ld)
            pred = np.asarray(out_m.probs)[:n].argmax(-1)
            # the same criterion as the attacks' success: the clip decision left the label
            fooled = np.asarray(criteria.Misclassification(yd).is_adversarial(out_m))[:n]
            for i, p, f in zip(idx, pred, fooled, strict=True):
                r = todo[i]
                out.append(
                    {
                        "source_model": r["model"],
                        "attack": r["attack"],
                        "fname": r["fname"],
                        "label": r["label"],
                        "eval_model": m.name,
                        "eval_prediction": m.labels[int(p)],
                        "fooled": int(f),
                    }
                )
    return out


# What an untargeted run reused by --from-untargeted must share with this command.
SOURCE_KEYS = ("preset", "data", "split", "per_class", "seed")


def check_source(base: Path, experiment: str = "untargeted") -> dict:
    """The config of ``--from-EXPERIMENT DIR``, which must be a run folder of ``experiment`` with
    results and adversarial waveforms; nothing in it is ever written."""
    flag = f"--from-{experiment}"
    doc = runfolder.read_run_config(base)
    if doc is None or doc.get("experiment") != experiment:
        art = "an" if experiment[0] in "aeiou" else "a"
        what = "no such folder" if not base.exists() else f"not {art} {experiment} run folder"
        raise cli.UserError(
            f"{flag} {base}: {what} (no config.json written by python -m "
            f"jaxadv.experiments.{experiment}); give the --out folder of {art} {experiment} run"
        )
    if not (base / "results.csv").is_file():
        raise cli.UserError(
            f"{flag} {base}: the run has no results.csv yet; finish (resume) it first"
        )
    if (doc.get("fingerprint") or {}).get("audio") is False and not (base / arrays.FOLDER).is_dir():
        raise cli.UserError(
            f"{flag} {base}: that run was made with --no-audio by an older jaxadv, "
            f"so it has neither adversarial audio nor {arrays.FOLDER}/ to reuse; rerun it "
            "(in a new --out)"
        )
    return doc


def same_source(base: Path, doc: dict, fp: dict, experiment: str = "untargeted") -> None:
    """Refuse a source run made with other data, clips or checkpoints than this command."""
    diff = runfolder.fingerprint_diff(doc.get("fingerprint") or {}, fp, SOURCE_KEYS, attacks=False)
    if diff:
        raise cli.UserError(
            f"--from-{experiment} {base} was made with other settings than this command: "
            f"{'; '.join(diff)}; give the same --preset, --data, --split, --per-class, --seed "
            "and checkpoints as that run"
        )


def run(args: argparse.Namespace) -> runner.Run:
    """Run (or resume) Experiment 3 with parsed flags; returns the run."""
    base = Path(args.from_untargeted) if args.from_untargeted else None
    doc = check_source(base) if base is not None else None
    check = (lambda fp: same_source(base, doc, fp)) if base is not None else None
    r = runner.start_run(args, "transfer", check=check)
    runner.clean_pass(r)
    names = [m.name for m in r.models]
    if base is None:
        runner.attack_models(r, untargeted_jobs)  # the waveforms go to r.arrays
    if not runner.gather(r):  # process 0 of several (or the only one) evaluates the transfers
        return r
    if base is not None:
        src = results.read_rows(base / "results.csv")  # read only: DIR is never written
        rows = [x for x in src if x["model"] in names and x["fname"] in r.waves]
        if not rows:
            raise cli.UserError(
                f"--from-untargeted {base}: its results.csv has no rows for these models and "
                "clips; give --models of that run"
            )
    else:
        base = r.out
        rows = [x for x in r.store.rows() if x["model"] in names and x["fname"] in r.waves]
    trows = evaluate_transfer(r, rows, base)
    with open(r.out / "transfer.csv", "w", newline="") as f:
        w = csv.DictWriter(f, TRANSFER_COLUMNS)
        w.writeheader()
        w.writerows(trows)
    all_tables = tables_of(trows, names)
    for stem, t in all_tables.items():
        t.write(r.out, stem)
    runner.write_report(
        r, rows, all_tables, arrays.ArrayStore(base / arrays.FOLDER, writable=False)
    )
    runner.print_outputs(r, [all_tables["table5"]])
    return r


def tables_of(transfer_rows: Sequence[dict], models: Sequence[str]) -> dict[str, tables.Table]:
    """Table 5 from the transfer rows (:data:`TRANSFER_COLUMNS`), over both attacks and per
    attack, by file stem."""
    out = {"table5": tables.table5(transfer_rows, models)}
    for a in ("deepfool", "cw"):
        t = tables.table5([t for t in transfer_rows if t["attack"] == a], models)
        out[f"table5_{a}"] = tables.Table(
            t.title.replace("DeepFool and C&W", a), t.header, t.rows, t.note
        )
    return out


def build_parser() -> argparse.ArgumentParser:
    """The command's flags (``--help``)."""
    p = flags.parser("transfer", __doc__.split("\n\n")[0])
    p.add_argument(
        "--from-untargeted", default=None, metavar="DIR",
        help="reuse the DeepFool and C&W examples of an untargeted run folder (same data flags)",
    )  # fmt: skip
    return p


def main(argv: Sequence[str] | None = None) -> None:
    """The command: a user error is one line on stderr and exit status 2 (``--debug``: raise)."""
    cli.main(build_parser(), run, argv, compile_cache=True)


if __name__ == "__main__":
    main()
