"""``python -m jaxadv.train.demo``: reproduce the committed demo models from scratch.

Renders each model's training split (notes/velocities/durations disjoint from the committed eval
clips; the five attacked architectures from three permissively licensed sound banks, with
waveform augmentation) if it is not there yet, trains the models at reduced width with Iqbal's
recipe (fewer epochs and a smaller batch, so the batch-norm statistics settle on a small set),
evaluates each on the 156 committed eval clips and on held-out clips rendered from sound banks no
model trains on, and writes ``jaxadv/demo/models/<name>/`` (orbax + sidecar, the same format as
converted checkpoints) and ``jaxadv/demo/models/README.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from jaxadv import cli
from jaxadv import config as C
from jaxadv.demo.render import DEFAULT_BANK, HELDOUT_BANKS, TRAIN_BANKS
from jaxadv.train.augment import Augment

if TYPE_CHECKING:
    from jaxadv.train import TrainConfig

# The augmentation of the five attacked architectures' demo models: what audio taggers use, at
# strengths that keep every class recognisable (jaxadv.train.augment; each transform on 40 % of
# the examples, so 5 % of them are left as they are): +/-6 dB gain, white/pink/brown noise at
# 10-40 dB SNR, a +/-9 dB smooth EQ, +/-1 semitone, up to 0.25 s delay, rooms of RT60 0.1-0.8 s.
DEMO_AUGMENT = Augment(
    prob=0.4,
    gain_db=6.0,
    noise_snr_db=(10.0, 40.0),
    eq_db=9.0,
    pitch_semitones=1.0,
    shift_s=0.25,
    reverb_rt60_s=(0.1, 0.8),
)


@dataclasses.dataclass(frozen=True)
class DemoModel:
    """One demo model: its architecture and what it trains on (the rest is the demo recipe).

    ``banks`` are the sound banks of its training split (:data:`jaxadv.demo.render.BANKS`),
    ``per_class`` clips per label from each; ``augment`` its waveform augmentation.
    ``more_epochs``: a second run, a warm start from the model of the first ``epochs``
    (``jaxadv.train.fit(init=...)``: the schedule, data order and augmentation continue, Adam's
    moments start again), up to ``epochs + more_epochs``.
    """

    model: str  # registry architecture
    width: float = 0.125
    epochs: int = 14
    frontend: str = "iqbal"
    adv_snr_db: float | None = None  # PGD adversarial training at this budget (dB)
    adv_steps: int = 5
    banks: tuple[str, ...] = TRAIN_BANKS
    per_class: int = 40
    augment: Augment = DEMO_AUGMENT
    more_epochs: int = 0

    @property
    def total_epochs(self) -> int:
        return self.epochs + self.more_epochs


# The representation and defence study's variants keep the data they were trained on (FluidR3
# only, 100 clips per label, no augmentation), the like-for-like baseline of that study.
_FLUIDR3_ONLY = {"banks": (DEFAULT_BANK,), "per_class": 100, "augment": Augment()}


# The demo's compact models: the five attacked architectures, then the representation and
# defence study's VGG13s (issue: input representations and defences): the same architecture on a
# linear STFT, on a CQT, and adversarially trained on log-mel. Widths keep them together well
# under 15 MB and make the experiments run in minutes on a 2-core CPU.
DEMO_MODELS: dict[str, DemoModel] = {
    # 40 clips per label from each of three banks (120, or 80 for the GS-only labels): 61 steps
    # per epoch. The batch-norm moving averages (momentum 0.99) still hold 30 % of their initial
    # values after two epochs, so validation accuracy only means something from epoch 4 on.
    # Validation accuracy was still rising after 12 (14) epochs; `more_epochs=8` would continue
    # each from its committed model (--base-from), a run not yet made, so the recipe states what
    # the committed models are.
    "vgg13": DemoModel("vgg13", epochs=12),
    "crnn": DemoModel("crnn", epochs=12),
    "gcnn": DemoModel("gcnn", epochs=12),
    "dense_mel": DemoModel("dense_mel", epochs=14),
    "dense_wav": DemoModel("dense_wav", epochs=14),
    # the FluidR3-only vgg13 and dense_wav as they were before the three banks and augmentation:
    # the representation study's baselines, trained like the variants
    "vgg13_fluidr3": DemoModel("vgg13", **_FLUIDR3_ONLY),
    "dense_wav_fluidr3": DemoModel("dense_wav", **_FLUIDR3_ONLY),
    "vgg13_stft": DemoModel("vgg13", frontend="stft", **_FLUIDR3_ONLY),
    "vgg13_cqt": DemoModel("vgg13", frontend="cqt", **_FLUIDR3_ONLY),
    "vgg13_pgd": DemoModel("vgg13", adv_snr_db=40.0, adv_steps=3, **_FLUIDR3_ONLY),
}
DEMO_BATCH = 64
DEMO_SEED = 1000
# The floor tests/test_train.py holds every committed demo model to on the 156 eval clips. The
# target is 0.90 (issue 10); the augmented models trained here on two CPU cores reach 0.77-0.90
# (jaxadv/demo/models/README.md), so the floor guards against a broken model, not the target.
MIN_ACCURACY = 0.75
HELDOUT_PER_CLASS = 8  # held-out clips per label and bank (eval rules: notes, velocities, ...)
# A held-out clip whose MIDI, rendered from a training bank, correlates above this with it plays a
# recording that bank holds (measured: shared samples correlate 0.97-1.00, distinct ones <= 0.34).
SHARED_CORRELATION = 0.9
# The held-out set of recordings no model trains on: TimGM6mb's clips minus those it shares with
# a training bank (about half of csound's bank are TimGM6mb's samples; jaxadv/demo/data/README.md)
UNSEEN_BANK = "timgm6mb"
UNSEEN = f"{UNSEEN_BANK}-unseen"
HELDOUT_SETS = (*HELDOUT_BANKS, UNSEEN)  # the README's held-out columns


def first_run_config(dm: DemoModel) -> TrainConfig:
    """The :class:`jaxadv.train.TrainConfig` of a demo model's (first) run: its first ``epochs``."""
    from jaxadv.train import TrainConfig

    return TrainConfig(
        dm.model, width=dm.width, epochs=dm.epochs, batch_size=DEMO_BATCH, val_fraction=0.1,
        seed=DEMO_SEED, save_every=100, frontend=dm.frontend, adv_snr_db=dm.adv_snr_db,
        adv_steps=dm.adv_steps, augment=dm.augment,
    )  # fmt: skip


def audio_dir(work: Path, dm: DemoModel) -> Path:
    """The rendered training split of a demo model under ``--work`` (shared by equal settings)."""
    if dm.banks == (DEFAULT_BANK,) and dm.per_class == 100:
        return work / "audio"  # the original demo data's folder
    return work / f"audio-{'+'.join(dm.banks)}-{dm.per_class}"


def heldout_clips(work: Path, bank: str, *, jobs: int = 2) -> list:
    """The held-out test clips of ``bank`` (rendered into ``work/heldout-<bank>`` on first use):
    :data:`HELDOUT_PER_CLASS` per label it covers, by the eval split's rules."""
    from jaxadv import datasets as D
    from jaxadv.demo import render

    root = work / f"heldout-{bank}"
    if not (root / C.TEST_CSV).is_file():
        print(f"rendering the held-out clips of bank {bank} into {root} ...")
        try:
            render.render_split(
                "eval", root, per_class=HELDOUT_PER_CLASS, jobs=jobs, banks=[bank], overwrite=True
            )
        except render.RenderError as e:
            raise cli.UserError(f"cannot render the held-out clips: {e}") from e
    return D.read_test(root)


def unseen_clips(
    clips: list, bank: str, train_banks: Sequence[str] = TRAIN_BANKS, *, jobs: int = 2
) -> list:
    """The clips of ``bank``'s held-out set (:func:`heldout_clips`) whose recordings no training
    bank holds: each clip's MIDI is rendered again from ``bank`` and from every training bank that
    plays the same source (GM/GS program or drum kit); a clip is kept when the absolute zero-lag
    correlation of every such pair of waveforms is at most :data:`SHARED_CORRELATION`."""
    import dataclasses as dc
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    from jaxadv.demo import render

    names = {c.fname for c in clips}
    specs: dict[str, render.RenderSpec] = {}  # fname -> the spec that rendered it
    for label in sorted({c.label for c in clips}):
        for spec in render.eval_candidates(label, bank=bank):
            specs.update({f: spec for f in (spec.fname(".flac"), spec.fname(".wav")) if f in names})
    if len(specs) != len(names):
        raise cli.UserError(
            f"{len(names) - len(specs)} held-out clips of bank {bank} are not the eval renders "
            "of this jaxadv version: delete the held-out folder to render them again"
        )

    def shared(spec: render.RenderSpec) -> bool:
        x = render.render_clip(spec)
        for tb in train_banks:
            if spec.source not in render.bank_sources(tb, spec.label):
                continue
            try:
                y = render.render_clip(dc.replace(spec, bank=tb))
            except render.SilentRender:
                continue
            corr = abs(float(x @ y)) / (float(np.linalg.norm(x) * np.linalg.norm(y)) + 1e-30)
            if corr > SHARED_CORRELATION:
                return True
        return False

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        is_shared = dict(zip(specs, pool.map(shared, specs.values()), strict=True))
    return [c for c in clips if not is_shared[c.fname]]


def heldout_sets(work: Path, *, jobs: int = 2) -> dict[str, list]:
    """``{name: clips}`` of the generalisation test: each held-out bank's clips and
    :data:`UNSEEN` (those of :data:`UNSEEN_BANK` no training bank shares a recording with)."""
    sets = {b: heldout_clips(work, b, jobs=jobs) for b in HELDOUT_BANKS}
    sets[UNSEEN] = unseen_clips(sets[UNSEEN_BANK], UNSEEN_BANK, jobs=jobs)
    return sets


def write_heldout_list(out: Path, sets: dict[str, list]) -> Path:
    """``out/heldout.json``: which held-out clips each set holds (by file name, as rendered by
    :func:`heldout_clips`) and the rule of :data:`UNSEEN`, so that its accuracies can be
    checked without redoing the correlations."""
    path = out / "heldout.json"
    rule = {
        "bank": UNSEEN_BANK,
        "train_banks": list(TRAIN_BANKS),
        "max_correlation": SHARED_CORRELATION,
    }
    body = {name: sorted(c.fname for c in clips) for name, clips in sets.items()}
    path.write_text(json.dumps({"unseen_rule": rule, "sets": body}, indent=1) + "\n")
    return path


def heldout_accuracy(directory: Path, sets: dict[str, list]) -> dict[str, dict[str, float]]:
    """``{bank: {"accuracy", "map3", "clips"}}`` of the checkpoint in ``directory``."""
    from jaxadv import checkpoint
    from jaxadv.train._loop import _evaluate

    clf, params, _ = checkpoint.load_checkpoint(directory)
    out = {}
    for bank, clips in sets.items():
        r = _evaluate(clf, params, clips)
        out[bank] = {"accuracy": r["acc"], "map3": r["map3"], "clips": r["n"]}
    return out


def main(argv: Sequence[str] | None = None) -> None:
    """The command: a user error is one line on stderr, exit status 2 (``--debug``: raise)."""
    cli.main(build_parser(), _run, argv, compile_cache=True)


def build_parser() -> argparse.ArgumentParser:
    """The command's flags (``--help``)."""
    from jaxadv import demo

    p = argparse.ArgumentParser(
        prog="python -m jaxadv.train.demo",
        description=__doc__.split("\n\n")[1],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--out", default=str(demo.models_dir()), help="where the models go")
    p.add_argument("--work", default="runs/demo-train", help="rendered audio and training runs")
    p.add_argument("--models", default=",".join(DEMO_MODELS), help="comma-separated subset")
    p.add_argument(
        "--per-class",
        type=int,
        default=None,
        help="rendered clips per label and bank (default: each model's own, 40 per bank for the "
        "five architectures, 100 for the FluidR3-only variants)",
    )
    p.add_argument("--jobs", type=int, default=2, help="parallel fluidsynth renders")
    p.add_argument(
        "--base-from",
        default=None,
        metavar="DIR",
        help="take the first run of each model with more_epochs (its first `epochs`) from the "
        "checkpoint DIR/<name> instead of training it, e.g. a copy of the models before they "
        "were extended; it must have been trained with exactly that run's settings",
    )
    p.add_argument(
        "--heldout-only",
        action="store_true",
        help="no training: measure the models already in --out on the held-out sound banks "
        f"({', '.join(HELDOUT_BANKS)}) and rewrite the README",
    )
    p.add_argument("--no-progress", action="store_true")
    return cli.add_debug_flag(p)


def _run(args: argparse.Namespace) -> None:
    from jaxadv import datasets as D
    from jaxadv import demo, logs
    from jaxadv.machine import cpu_model
    from jaxadv.train import fit, split_train_val

    logs.setup()
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    bad = [m for m in names if m not in DEMO_MODELS]
    if bad or not names:
        raise cli.UserError(f"--models: unknown {bad}; choose from {list(DEMO_MODELS)}")
    if args.per_class is not None and args.per_class < 1:
        raise cli.UserError(f"--per-class must be at least 1, got {args.per_class}")
    work = Path(args.work)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary_path = out / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    if args.heldout_only:
        for name in names:
            if name not in summary or not (out / name).is_dir():
                raise cli.UserError(f"--heldout-only: no trained model {name!r} in {out}")
    if args.base_from is not None:  # before rendering anything
        for name in names:
            if DEMO_MODELS[name].more_epochs:
                _base_checkpoint(Path(args.base_from), name, first_run_config(DEMO_MODELS[name]))
    heldout = heldout_sets(work, jobs=args.jobs)
    write_heldout_list(out, heldout)
    if args.heldout_only:
        for name in names:
            summary[name]["heldout"] = heldout_accuracy(out / name, heldout)
            summary_path.write_text(json.dumps(summary, indent=1))
            print(f"{name}: held-out {_heldout_text(summary[name])}")
        write_readme(out, summary)
        return
    evals = demo.eval_clips()
    for name in names:
        dm = DEMO_MODELS[name]
        if args.per_class is not None:
            dm = dataclasses.replace(dm, per_class=args.per_class)
        audio_root = audio_dir(work, dm)
        if not (audio_root / C.TRAIN_CSV).is_file():
            from jaxadv.demo import render

            print(f"rendering the training split of {name} into {audio_root} ...")
            try:
                render.render_split(
                    "train", audio_root, per_class=dm.per_class, jobs=args.jobs, banks=dm.banks
                )
            except render.RenderError as e:  # fluidsynth or a soundfont missing
                raise cli.UserError(f"cannot render the training split: {e}") from e
        clips = D.read_train(audio_root)
        train, val = split_train_val(clips, val_fold=None, val_fraction=0.1, seed=DEMO_SEED)
        cfg = first_run_config(dm)
        prog = not args.no_progress
        base_minutes = 0.0
        try:
            if args.base_from is not None and dm.more_epochs:
                base = _base_checkpoint(Path(args.base_from), name, cfg)
                base_minutes = _base_minutes(Path(args.base_from), name)
            else:
                report = fit(cfg, train, work / name, val_clips=val, test_clips=evals,
                             progress=prog)  # fmt: skip
                base = work / name / "model"
                base_minutes = sum(h["seconds"] for h in report["history"]) / 60
            final = work / name / "model"
            if dm.more_epochs:
                more = dataclasses.replace(cfg, epochs=dm.total_epochs, start_epoch=dm.epochs)
                report = fit(more, train, work / f"{name}-more", val_clips=val,
                             test_clips=evals, progress=prog, init=base)  # fmt: skip
                final = work / f"{name}-more" / "model"
        except cli.UserError:
            raise
        except ValueError as e:  # e.g. --work holds a training run with other settings
            raise cli.UserError(str(e)) from e
        dst = out / name
        if dst.exists():
            shutil.rmtree(dst)
        shutil.copytree(final, dst)
        size = sum(f.stat().st_size for f in dst.rglob("*") if f.is_file())
        summary[name] = {
            "model": dm.model,
            "frontend": dm.frontend,
            "adv_snr_db": dm.adv_snr_db,
            "adv_steps": dm.adv_steps,
            "banks": list(dm.banks),
            "per_class": dm.per_class,
            "augment": dm.augment.active,
            "width": dm.width,
            "epochs": dm.total_epochs,
            **({"warm_start_epoch": dm.epochs} if dm.more_epochs else {}),
            "batch_size": DEMO_BATCH,
            "train_clips": len(train),
            "eval_accuracy": report["test_accuracy"],
            "eval_map3": report["test_map3"],
            "train_accuracy": report["train_accuracy"],
            "heldout": heldout_accuracy(dst, heldout),
            "bytes": size,
            # summed per-epoch step time of both runs: correct across resumed runs (feature
            # extraction and evaluation excluded)
            "minutes": base_minutes * bool(dm.more_epochs)
            + sum(h["seconds"] for h in report["history"]) / 60,
            "commit": _commit(),
            "machine": f"{cpu_model()}, {os.cpu_count()} cores",
        }
        summary_path.write_text(json.dumps(summary, indent=1))
        print(
            f"{name}: eval accuracy {report['test_accuracy']:.4f}, held-out "
            f"{_heldout_text(summary[name])}, {size / 1e6:.2f} MB"
        )
    write_readme(out, summary)


def _base_checkpoint(root: Path, name: str, cfg: TrainConfig) -> Path:
    """``root/name``, after checking that it is the model of the first run ``cfg`` (--base-from)."""
    from jaxadv import checkpoint
    from jaxadv.train import TrainConfig

    path = root / name
    try:
        meta = checkpoint.read_meta(path)
    except (checkpoint.CheckpointError, FileNotFoundError, OSError) as e:
        raise cli.UserError(f"--base-from: no checkpoint of {name} in {root} ({e})") from None
    got = meta.get("training")
    if got is None or TrainConfig.from_dict(got) != cfg:
        raise cli.UserError(
            f"--base-from: {path} was not trained as the first {cfg.epochs} epochs of {name} "
            "(its training settings differ); train it again without --base-from"
        )
    return path


def _base_minutes(root: Path, name: str) -> float:
    """The first run's training minutes from ``root/summary.json`` (0 when it does not say)."""
    try:
        return float(json.loads((root / "summary.json").read_text())[name]["minutes"])
    except (OSError, KeyError, ValueError):
        return 0.0


def _heldout_text(v: dict) -> str:
    return ", ".join(f"{b} {r['accuracy']:.4f}" for b, r in v.get("heldout", {}).items())


def _commit() -> str:
    """The short commit of the checkout, or "" outside git."""
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        return ""


def _trained_on(v: dict) -> str:
    """The "training" column: the front-end and the defence of a demo model."""
    fe = {"iqbal": "log-mel"}.get(v.get("frontend", "iqbal"), v.get("frontend", "iqbal"))
    if v.get("model", "vgg13") in ("dense_mel", "dense_wav"):
        fe = "its own (Kapre mel)" if v["model"] == "dense_mel" else "raw waveform"
    adv = v.get("adv_snr_db")
    fe += f", PGD L2 {adv:g} dB ({v.get('adv_steps', 5)} steps)" if adv is not None else ""
    fe += ", augmented" if v.get("augment") else ""
    return fe


def _data(v: dict) -> str:
    """The "data" column: the sound banks and clips per label and bank."""
    return f"{'+'.join(v.get('banks', [DEFAULT_BANK]))} ×{v.get('per_class', 100)}"


def _epochs(v: dict) -> str:
    """The "epochs" column: ``12+8`` for a model warm-started at epoch 12 and trained to 20."""
    w = v.get("warm_start_epoch")
    return f"{w}+{v['epochs'] - w}" if w else str(v["epochs"])


def _acc(v: dict, bank: str) -> str:
    r = v.get("heldout", {}).get(bank)
    return f"{r['accuracy']:.4f}" if r else "–"


def write_readme(out: Path, summary: dict) -> Path:
    """``README.md`` of the demo models: widths, sizes, accuracies, the command, the machine."""
    import jax

    total = sum(v["bytes"] for v in summary.values())
    by_machine: dict[str, list[str]] = {}
    for k, v in summary.items():
        by_machine.setdefault(v.get("machine", "unrecorded"), []).append(k)
    machines = "; ".join(f"{', '.join(ks)} on {m}" for m, ks in by_machine.items())
    rows = "\n".join(
        f"| {k} | {v.get('model', k)} | {_trained_on(v)} | {_data(v)} | {v['width']} | "
        f"{_epochs(v)} | {v['train_accuracy']:.4f} | {v['eval_accuracy']:.4f} | "
        f"{v['eval_map3']:.4f} | " + " | ".join(_acc(v, b) for b in HELDOUT_SETS) + " | "
        f"{v['bytes'] / 1e6:.2f} | {v['minutes']:.1f} | {v.get('commit', '')} |"
        for k, v in summary.items()
    )
    warm = any(v.get("warm_start_epoch") for v in summary.values())
    warm_text = (
        " *Epochs* `12+8`: a first run of 12 epochs, then a warm start from its\n"
        "model for 8 more (`jaxadv.train.fit(init=...)`, `python -m jaxadv.train --init DIR\n"
        "--start-epoch 12`: the learning-rate schedule, the data order and the augmentation "
        "continue where\nthe first run stopped, Adam's moments start again); its training "
        "minutes are both runs'."
        if warm
        else ""
    )
    base_cmd = (
        "python -m jaxadv.train.demo --base-from OLD  # only the more epochs, from OLD/<name>\n"
        if warm
        else ""
    )
    held_cols = " | ".join(f"held-out {b}" for b in HELDOUT_SETS)
    held_rule = "---|" * len(HELDOUT_SETS)
    text = f"""# Demo models

Compact models trained by jaxadv on real instrument and effect audio rendered from soundfonts
(26 FSDKaggle2018 labels; the models output all 41 classes): one per attacked architecture,
trained on three permissively licensed sound banks with waveform augmentation (`vgg13`, `crnn`,
`gcnn`, `dense_mel`, `dense_wav`: the experiments' default models), and the five models of the
study of input representations and defences (`python -m jaxadv.experiments.representations`),
all trained on FluidR3 alone without augmentation: `vgg13_fluidr3` and `dense_wav_fluidr3` (the
earlier demo vgg13 and dense_wav), the same VGG13 on a linear-frequency STFT (`vgg13_stft`), on a
constant-Q transform (`vgg13_cqt`), and adversarially trained on log-mel with PGD at a 40 dB SNR
budget (`vgg13_pgd`). Load one with
`jaxadv.checkpoint.load_checkpoint(jaxadv.demo.models_dir() / "vgg13")`, the same loader as
converted and trained checkpoints; the experiments take the variants by name
(`--models vgg13,vgg13_fluidr3,vgg13_stft`). The training data's licences:
`LICENSE-training-data.md`.

| name | architecture | trained on | data (banks × clips per label) | width | epochs | train accuracy | eval accuracy | eval MAP@3 | {held_cols} | MB | training minutes | commit |
|---|---|---|---|---|---|---|---|---|{held_rule}---|---|---|
{rows}

Total size {total / 1e6:.2f} MB. *Eval* is the 156 committed FluidR3 clips of `jaxadv/demo/data`
(6 per label, notes/velocities/durations never seen in training); *held-out* are
{HELDOUT_PER_CLASS} clips per label rendered by the same rules from sound banks no model trains on
(rendered on demand, never committed; `jaxadv/demo/data/README.md` says what they are and how far
they are from the training banks): `opl3` is FM synthesis (no samples at all), `timgm6mb` a
sample bank that shares about half its recordings with the `csound` training bank, so it is a
fair test only of the FluidR3-only models; `{UNSEEN}` are its clips whose recordings no training
bank holds (the same MIDI rendered from each training bank correlates at most
{SHARED_CORRELATION} with the clip; `heldout.json` lists them), the models' accuracy on
recordings they have never heard. *Train accuracy* is on the rendered training clips (clip level,
no augmentation); *training minutes* sums the epochs' step time (feature extraction
and evaluation excluded) on the machine below, which also ran other jobs. Recipe: Iqbal et al.'s
(Adam 5e-4 ×0.9 every 2 epochs, class-balanced mixup with alpha 1, standardisation fitted on the
training chunks), with batch {DEMO_BATCH} instead of 128 and the epochs above instead of 40
(fewer examples: the batch-norm moving averages need enough steps), 10 % of the rendered clips
held out for validation. *Augmented* models train on 65536-sample waveform segments (log-mel
computed in the step, mixup on the waveform) through `jaxadv.train.augment` with
`{DEMO_AUGMENT}`; so do the Cochlear models and the adversarially trained VGG13 (half of every
batch replaced by PGD examples from a random start, the last of the steps above, step 0.5 ε,
ε = ‖x‖·10^(−40/20)).{warm_text}

Reproduce from scratch (renders each model's training split with fluidsynth first; the Debian
packages of the banks are in `.ci/run`):

```sh
python -m jaxadv.train.demo                  # all of them; --models vgg13 for one
python -m jaxadv.train.demo --heldout-only   # re-measure the held-out columns only
{base_cmd}```

Trained on CPUs, jax {jax.__version__}: {machines}. *Commit* is the jaxadv commit whose training
code trained the model.
"""
    path = out / "README.md"
    path.write_text(text)
    return path


if __name__ == "__main__":
    main()
