"""One run of an experiment, the part every command shares: resolve the flags, load clips and
models, check the run folder (:func:`start_run`), the clean pass, the sweeps of every model
(:func:`attack_models`) and the printed summary.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxadv import config as C
from jaxadv.cli import UserError
from jaxadv.datasets import Clip, Failure
from jaxadv.experiments import cluster
from jaxadv.experiments.clips import clip_digest, load_waves, select_clips, shortfall
from jaxadv.experiments.configs import get_config
from jaxadv.experiments.flags import (
    parse_checkpoints,
    parse_model_fns,
    parse_models,
    resolve_attacks,
)
from jaxadv.experiments.models import (
    LoadedModel,
    clean_predictions,
    clean_table,
    correct_clips,
    load_models,
    read_clean,
    run_labels,
    run_sample_rate,
    write_clean,
)
from jaxadv.experiments.runfolder import (
    check_out,
    fingerprint,
    fingerprint_diff,
    make_out,
    merge_fingerprints,
    report_failures,
    setup_run,
    summary_lines,
    write_config,
    writes_audio,
)
from jaxadv.experiments.sweep import Compiler, Job, plan, sweep

log = logging.getLogger("jaxadv.experiments")


# Shown in every report of a demo run: the settings are cut down to run in minutes on a laptop.
DEMO_NOTE = (
    "Preset 'demo': compact demo models, the embedded FluidR3 clips and FEWER attack iterations "
    "than the paper (see config.json); use --preset paper for the authors' settings."
)


@dataclasses.dataclass
class Run:
    """The state of one run: folder, models, clips, waveforms, result store."""

    out: Path
    args: argparse.Namespace
    experiment: str
    models: list[LoadedModel]
    clips: list[Clip]
    waves: dict[str, np.ndarray]
    store: Any
    failures: list[Failure]
    preds: dict[str, dict[str, tuple[int, float]]] = dataclasses.field(default_factory=dict)
    write_audio: bool = True
    configs: dict[str, dict[str, tuple[str, Any]]] = dataclasses.field(default_factory=dict)
    arrays: Any = None  # the run's ArrayStore of adversarial waveforms
    share: cluster.Share = dataclasses.field(default_factory=cluster.Share)  # this process's jobs
    labels: tuple[str, ...] = C.LABELS  # every model's class names (models.run_labels)
    sample_rate: int = C.SAMPLE_RATE  # of ``waves`` and every adversarial example, in Hz

    def attacks(self, model: str) -> dict[str, tuple[str, Any]]:
        """The attacks of this experiment for one model, with the ``--set`` overrides."""
        if model not in self.configs:
            self.configs[model] = resolve_attacks(self.args, self.experiment, [model])[model]
        return self.configs[model]


def start_run(
    args: argparse.Namespace,
    experiment: str,
    classes: Sequence[str] | None = None,
    check: Callable[[dict[str, Any]], None] | None = None,
    sample_rates: Sequence[int] | None = None,
) -> Run:
    """Resolve flags, load clips and models, check a resumed folder holds the same run.

    Nothing is written until every check passed (flags, ``--out``, data, checkpoints, labels,
    finite clean predictions, the fingerprint of a resumed run, and ``check(fingerprint)`` if
    given; ``sample_rates``: the rates the experiment can run at, default any); then the run folder, ``config.json`` (first), ``skipped.txt`` and ``results.csv``.

    One process of several (:mod:`~jaxadv.experiments.cluster`): every process checks, then
    process 0 alone writes ``config.json`` and ``skipped.txt`` while the others wait for it; each
    process's rows and waveforms go to files of its own.
    """
    from jaxadv.experiments.arrays import FOLDER as ARRAYS_FOLDER
    from jaxadv.experiments.arrays import ArrayStore
    from jaxadv.experiments.results import RunResults

    share = cluster.initialize(args)  # before anything touches a device
    out = setup_run(args, experiment)
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.per_class is None:
        args.per_class = get_config(experiment, args.preset).per_class
    if args.per_class < 1:
        raise UserError(f"--per-class must be at least 1, got {args.per_class}")
    model_fns = parse_model_fns(getattr(args, "model_fn", []))
    names = parse_models(args.models, model_fns, args.checkpoint)
    configs = resolve_attacks(args, experiment, names)  # every --set, checked before any work
    old_doc = check_out(out, experiment)
    checkpoints = parse_checkpoints(args.checkpoint, names, model_fns)
    missing = [f"{m}: {d}" for m, d in checkpoints.items() if not d.is_dir()]
    if missing:
        raise UserError(
            "checkpoint folder(s) not found: " + "; ".join(missing) + " (check --checkpoint)"
        )
    # the models first: their labels decide how the data's label names are read, their sample
    # rate how the clips are loaded
    models = load_models(names, checkpoints, args.preset, model_fns)
    labels, rate = run_labels(models), run_sample_rate(models)
    if sample_rates is not None and rate not in sample_rates:
        raise UserError(
            f"the {experiment} experiment runs at {', '.join(map(str, sample_rates))} Hz, but "
            f"model {models[0].name} takes {rate} Hz"
        )
    if classes is not None and labels != C.LABELS:
        unknown = [c for c in classes if c not in labels]
        if unknown:
            raise UserError(
                f"the {experiment} experiment's classes {unknown} are not among the models' "
                f"labels {list(labels)}"
            )
    failures: list[Failure] = []
    clips = select_clips(
        args.data, args.split, args.per_class, args.seed, classes, failures,
        labels=None if labels == C.LABELS else labels,
    )  # fmt: skip
    if not clips:
        hint = "" if labels == C.LABELS else f" with the models' labels {list(labels)}"
        raise UserError(f"no clips selected{hint} (check --data, --split and --per-class)")
    short = shortfall(clips, args.per_class)
    if short:
        log.warning(
            "--per-class %d: %d class(es) have fewer clips, all of theirs are used: %s",
            args.per_class, len(short), ", ".join(f"{k} {n}" for k, n in short.items()),
        )  # fmt: skip
    waves = load_waves(clips, args.preset, failures, rate)
    if not waves:
        f = failures[0]
        raise UserError(
            f"none of the {len(clips)} selected clip(s) could be loaded (the first: {f.message}); "
            "check the audio files of --data"
        )
    digests = {c.fname: clip_digest(c) for c in clips if c.fname in waves}
    fp = fingerprint(args, experiment, models, digests, configs)
    old_fp = (old_doc or {}).get("fingerprint")
    if old_doc is not None:
        diff = fingerprint_diff(old_fp or {}, fp)
        if diff:
            raise UserError(
                f"{out} holds a run with other settings: {'; '.join(diff)}; resume it with the "
                "same flags, checkpoints and clips, or choose another --out"
            )
    if check is not None:
        check(fp)
    preds = {m.name: clean_predictions(m, clips, waves, args.batch_size) for m in models}
    # every process passed its checks before any writes (a resume reads the old config.json)
    cluster.barrier(share, f"{experiment}:checked")
    make_out(out)
    run = Run(
        out, args, experiment, models, clips, waves, None, failures, preds,
        writes_audio(args, experiment), configs, share=share, labels=labels, sample_rate=rate,
    )  # fmt: skip
    if share.main:
        _write_run_config(run, fp, old_fp, short)
        report_failures(out, failures)
    cluster.barrier(share, f"{experiment}:configured")
    run.arrays = ArrayStore(out / ARRAYS_FOLDER, writer=share.writer)
    run.store = RunResults(out, share)
    return run


def _write_run_config(
    run: Run, fp: dict[str, Any], old_fp: dict[str, Any] | None, short: dict[str, int]
) -> None:
    write_config(
        run.out,
        run.args,
        {
            "experiment": run.experiment,
            "fingerprint": merge_fingerprints(old_fp, fp),
            "note": DEMO_NOTE if run.args.preset == "demo" else "",
            "attacks": {m.name: run.attacks(m.name) for m in run.models},
            "models": {
                m.name: {
                    "checkpoint": str(m.checkpoint),
                    "digest": m.digest,
                    "frontend": getattr(getattr(m.classifier, "frontend", None), "name", None),
                    "merge": getattr(m.classifier, "merge", None),
                    "width": getattr(getattr(m.classifier, "model_config", None), "width", None),
                    "source": m.meta.get("source"),
                    "sample_rate": m.sample_rate,
                    "labels": None if m.labels == C.LABELS else list(m.labels),
                }
                for m in run.models
            },
            "clips": [c.fname for c in run.clips if c.fname in run.waves],
            "per_class_shortfall": short,
            "skipped": [f.clip.fname for f in run.failures],
            "processes": run.share.count,
        },
    )


def clean_pass(run: Run) -> Path:
    """Clean predictions of every model (``clean.csv``) and a clean-accuracy table (written by
    process 0 only; every process has the predictions)."""
    path = run.out / "clean.csv"
    if not run.share.main:
        return path
    path.unlink(missing_ok=True)
    for m in run.models:
        if m.name not in run.preds:
            run.preds[m.name] = clean_predictions(m, run.clips, run.waves, run.args.batch_size)
        write_clean(path, m.name, run.clips, run.preds[m.name], m.labels)
    clean_table(read_clean(path)).write(run.out, "clean_accuracy")
    return path


def attack_models(
    run: Run,
    jobs_of: Callable[[Sequence[Clip]], list[Job]],
    *,
    write_audio: bool | None = None,
) -> None:
    """Sweep every model of ``run`` with its attacks over ``jobs_of(correctly classified clips)``
    (this process's share of them).

    ``write_audio``: default ``run.write_audio`` (what the run's fingerprint records).
    """
    audio = run.write_audio if write_audio is None else write_audio
    jobs = {m.name: jobs_of(correct_clips(run.clips, run.preds[m.name])) for m in run.models}
    # every model's programs start compiling now, in worker threads, in run order: they build
    # side by side and while earlier models are attacked (a cold start's compile is hidden)
    compiler = Compiler()
    try:
        for m in run.models:
            parts = plan(
                run.store, m, run.attacks(m.name), jobs[m.name], run.waves, run.args.batch_size,
                run.share,
            )  # fmt: skip
            compiler.submit(m, parts, run.waves, run.args.seed)
        for m in run.models:
            sweep(
                run.out, run.store, m, run.attacks(m.name), jobs[m.name], run.waves,
                batch_size=run.args.batch_size, seed=run.args.seed, write_audio=audio,
                arrays=run.arrays, compiler=compiler, share=run.share,
            )  # fmt: skip
    finally:
        compiler.close()


def gather(run: Run) -> bool:
    """After the sweeps: wait for every process's share, then process 0 merges the result
    shards into ``results.csv`` and sees every process's waveforms. Returns whether this process
    makes the tables and figures (process 0; the others print where they are and return)."""
    from jaxadv.experiments.arrays import ArrayStore

    cluster.barrier(run.share, f"{run.experiment}:swept")
    if not run.share.main:
        print(
            f"process {run.share.index} of {run.share.count}: its share is done; process 0 "
            f"writes the tables of {run.out}"
        )
        return False
    n = run.store.merge()
    if n:
        log.info("merged %d rows of other processes into %s", n, run.out / "results.csv")
    run.arrays = ArrayStore(run.arrays.folder)  # every process's parts
    return True


def write_report(
    run: Run, rows: Sequence[dict[str, Any]], tables: dict[str, Any], store: Any = None
) -> Path:
    """``report.html`` of the run (:mod:`jaxadv.report`): its config, the clean-accuracy table
    and ``tables``, its figures and an example browser over ``rows`` with the run's clean
    waveforms and the adversarial ones of ``store`` (default: the run's own)."""
    from jaxadv import report

    tables = {"clean_accuracy": clean_table(read_clean(run.out / "clean.csv")), **tables}
    store = run.arrays if store is None else store
    return report.write(run.out, rows, tables, run.waves, store, sample_rate=run.sample_rate)


def print_outputs(run: Run, tables: Sequence[Any]) -> None:
    """Print the tables and where every file of the run went."""
    files = sorted(p for p in run.out.iterdir() if p.is_file())
    if run.args.preset == "demo":
        print("\n" + DEMO_NOTE)
    for t in tables:
        print("\n" + t.to_markdown())
    print(f"Run folder: {run.out}")
    print(summary_lines(run.out, files))
    if run.arrays is not None and len(run.arrays):
        print(
            f"  {run.arrays.folder.name}/: {len(run.arrays)} adversarial waveforms (.npz parts, "
            "keyed by model|attack|fname|target)"
        )
    n_audio = len(list((run.out / "audio").rglob("*.wav"))) if (run.out / "audio").is_dir() else 0
    if n_audio:
        print(f"  audio/: {n_audio} adversarial WAV files ({run.sample_rate} Hz, float)")
