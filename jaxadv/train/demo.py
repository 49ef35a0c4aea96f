"""``python -m jaxadv.train.demo``: reproduce the five committed demo models from scratch.

Renders the FluidR3 training split (notes/velocities/durations disjoint from the committed eval
clips) if it is not there yet, trains the five architectures at reduced width with Iqbal's recipe
(fewer epochs and a smaller batch, so the batch-norm statistics settle on a small set), evaluates
each on the 156 committed eval clips, and writes ``jaxadv/demo/models/<name>/`` (orbax + sidecar,
the same format as converted checkpoints) and ``jaxadv/demo/models/README.md``.
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

from jaxadv import cli
from jaxadv import config as C


@dataclasses.dataclass(frozen=True)
class DemoModel:
    """One demo model: its architecture and what it trains on (the rest is the demo recipe)."""

    model: str  # registry architecture
    width: float = 0.125
    epochs: int = 14
    frontend: str = "iqbal"
    adv_snr_db: float | None = None  # PGD adversarial training at this budget (dB)
    adv_steps: int = 5


# The demo's compact models: the five attacked architectures, then the representation and
# defence study's VGG13s (issue: input representations and defences): the same architecture on a
# linear STFT, on a CQT, and adversarially trained on log-mel. Widths keep them together well
# under 15 MB and make the experiments run in minutes on a 2-core CPU.
DEMO_MODELS: dict[str, DemoModel] = {
    "vgg13": DemoModel("vgg13"),
    "crnn": DemoModel("crnn"),
    "gcnn": DemoModel("gcnn"),
    "dense_mel": DemoModel("dense_mel"),
    "dense_wav": DemoModel("dense_wav"),
    "vgg13_stft": DemoModel("vgg13", frontend="stft"),
    "vgg13_cqt": DemoModel("vgg13", frontend="cqt"),
    "vgg13_pgd": DemoModel("vgg13", adv_snr_db=40.0, adv_steps=3),
}
DEMO_BATCH = 64
DEMO_SEED = 1000
DEMO_PER_CLASS = 100
MIN_ACCURACY = 0.90


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
    p.add_argument("--per-class", type=int, default=DEMO_PER_CLASS, help="rendered clips per label")
    p.add_argument("--jobs", type=int, default=2, help="parallel fluidsynth renders")
    p.add_argument("--no-progress", action="store_true")
    return cli.add_debug_flag(p)


def _run(args: argparse.Namespace) -> None:
    from jaxadv import datasets as D
    from jaxadv import demo, logs
    from jaxadv.machine import cpu_model
    from jaxadv.train import TrainConfig, fit, split_train_val

    logs.setup()
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    bad = [m for m in names if m not in DEMO_MODELS]
    if bad or not names:
        raise cli.UserError(f"--models: unknown {bad}; choose from {list(DEMO_MODELS)}")
    if args.per_class < 1:
        raise cli.UserError(f"--per-class must be at least 1, got {args.per_class}")
    work = Path(args.work)
    audio_root = work / "audio"
    if not (audio_root / C.TRAIN_CSV).is_file():
        from jaxadv.demo import render

        print(f"rendering the training split into {audio_root} ...")
        try:
            render.render_split("train", audio_root, per_class=args.per_class, jobs=args.jobs)
        except render.RenderError as e:  # fluidsynth or a soundfont missing
            raise cli.UserError(f"cannot render the training split: {e}") from e
    clips = D.read_train(audio_root)
    train, val = split_train_val(clips, val_fold=None, val_fraction=0.1, seed=DEMO_SEED)
    evals = demo.eval_clips()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary_path = out / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    for name in names:
        dm = DEMO_MODELS[name]
        cfg = TrainConfig(
            dm.model, width=dm.width, epochs=dm.epochs, batch_size=DEMO_BATCH, val_fraction=0.1,
            seed=DEMO_SEED, save_every=100, frontend=dm.frontend, adv_snr_db=dm.adv_snr_db,
            adv_steps=dm.adv_steps,
        )  # fmt: skip
        try:
            report = fit(cfg, train, work / name, val_clips=val, test_clips=evals,
                         progress=not args.no_progress)  # fmt: skip
        except cli.UserError:
            raise
        except ValueError as e:  # e.g. --work holds a training run with other settings
            raise cli.UserError(str(e)) from e
        dst = out / name
        if dst.exists():
            shutil.rmtree(dst)
        shutil.copytree(work / name / "model", dst)
        size = sum(f.stat().st_size for f in dst.rglob("*") if f.is_file())
        summary[name] = {
            "model": dm.model,
            "frontend": dm.frontend,
            "adv_snr_db": dm.adv_snr_db,
            "adv_steps": dm.adv_steps,
            "width": dm.width,
            "epochs": dm.epochs,
            "batch_size": DEMO_BATCH,
            "train_clips": len(train),
            "eval_accuracy": report["test_accuracy"],
            "eval_map3": report["test_map3"],
            "train_accuracy": report["train_accuracy"],
            "bytes": size,
            # summed per-epoch step time: correct across resumed runs (feature extraction and
            # evaluation excluded)
            "minutes": sum(h["seconds"] for h in report["history"]) / 60,
            "commit": _commit(),
            "machine": f"{cpu_model()}, {os.cpu_count()} cores",
        }
        summary_path.write_text(json.dumps(summary, indent=1))
        print(f"{name}: eval accuracy {report['test_accuracy']:.4f}, {size / 1e6:.2f} MB")
    write_readme(out, summary)


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
    return fe + (f", PGD L2 {adv:g} dB ({v.get('adv_steps', 5)} steps)" if adv is not None else "")


def write_readme(out: Path, summary: dict) -> Path:
    """``README.md`` of the demo models: widths, sizes, accuracies, the command, the machine."""
    import jax

    total = sum(v["bytes"] for v in summary.values())
    by_machine: dict[str, list[str]] = {}
    for k, v in summary.items():
        by_machine.setdefault(v.get("machine", "unrecorded"), []).append(k)
    machines = "; ".join(f"{', '.join(ks)} on {m}" for m, ks in by_machine.items())
    rows = "\n".join(
        f"| {k} | {v.get('model', k)} | {_trained_on(v)} | {v['width']} | {v['epochs']} | "
        f"{v['train_accuracy']:.4f} | {v['eval_accuracy']:.4f} | {v['eval_map3']:.4f} | "
        f"{v['bytes'] / 1e6:.2f} | {v['minutes']:.1f} | {v.get('commit', '')} |"
        for k, v in summary.items()
    )
    text = f"""# Demo models

Compact models trained by jaxadv on real instrument and effect audio rendered from the MIT FluidR3
soundfonts (26 FSDKaggle2018 labels; the models output all 41 classes): one per attacked
architecture, and three VGG13s of the study of input representations and defences
(`python -m jaxadv.experiments.representations`): the same network on a linear-frequency STFT
(`vgg13_stft`), on a constant-Q transform (`vgg13_cqt`), and adversarially trained on log-mel
with PGD at a 40 dB SNR budget (`vgg13_pgd`). Load one with
`jaxadv.checkpoint.load_checkpoint(jaxadv.demo.models_dir() / "vgg13")`, the same loader as
converted and trained checkpoints; the experiments take the three VGG13 variants by name
(`--models vgg13,vgg13_stft,vgg13_cqt,vgg13_pgd`).

| name | architecture | trained on | width | epochs | train accuracy | eval accuracy | eval MAP@3 | MB | training minutes | commit |
|---|---|---|---|---|---|---|---|---|---|---|
{rows}

Total size {total / 1e6:.2f} MB. *Eval* is the 156 committed clips of `jaxadv/demo/data` (6 per
label, notes/velocities/durations never seen in training); *train accuracy* is on the rendered
training clips (clip level); *training minutes* sums the epochs' step time (feature extraction
and evaluation excluded) on the machine below, which also ran other jobs (the STFT model's 513
frequency rows make it about 8x the log-mel model's cost). Recipe: Iqbal et al.'s (Adam 5e-4
×0.9 every 2 epochs, class-balanced mixup with alpha 1, standardisation fitted on the training
chunks), with batch {DEMO_BATCH} instead of 128 and the epochs above instead of 40 (fewer
examples: the batch-norm moving averages need enough steps), 10 % of the rendered clips held out
for validation; Cochlear models train on 65536-sample waveform segments, and so does the
adversarially trained VGG13 (its log-mel computed in the step, mixup on the waveform, half of
every batch replaced by PGD examples from a random start, the last of the steps above, step 0.5 ε,
ε = ‖x‖·10^(−40/20)).

Reproduce from scratch (renders {DEMO_PER_CLASS} clips per label with fluidsynth first):

```sh
python -m jaxadv.train.demo            # all of them; --models vgg13 for one
```

Trained on CPUs, jax {jax.__version__}: {machines}. *Commit* is the jaxadv commit whose training
code trained the model.
"""
    path = out / "README.md"
    path.write_text(text)
    return path


if __name__ == "__main__":
    main()
