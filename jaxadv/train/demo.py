"""``python -m jaxadv.train.demo``: reproduce the five committed demo models from scratch.

Renders the FluidR3 training split (notes/velocities/durations disjoint from the committed eval
clips) if it is not there yet, trains the five architectures at reduced width with Iqbal's recipe
(fewer epochs and a smaller batch, so the batch-norm statistics settle on a small set), evaluates
each on the 156 committed eval clips, and writes ``jaxadv/demo/models/<name>/`` (orbax + sidecar,
the same format as converted checkpoints) and ``jaxadv/demo/models/README.md``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from jaxadv import cli
from jaxadv import config as C

# name -> (width, epochs): the demo's compact models. Widths keep the five together well under
# 15 MB and make the experiments run in minutes on a 2-core CPU.
DEMO_MODELS: dict[str, tuple[float, int]] = {
    "vgg13": (0.125, 14),
    "crnn": (0.125, 14),
    "gcnn": (0.125, 14),
    "dense_mel": (0.125, 14),
    "dense_wav": (0.125, 14),
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
        width, epochs = DEMO_MODELS[name]
        cfg = TrainConfig(
            name, width=width, epochs=epochs, batch_size=DEMO_BATCH, val_fraction=0.1,
            seed=DEMO_SEED, save_every=100,
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
            "width": width,
            "epochs": epochs,
            "batch_size": DEMO_BATCH,
            "train_clips": len(train),
            "eval_accuracy": report["test_accuracy"],
            "eval_map3": report["test_map3"],
            "train_accuracy": report["train_accuracy"],
            "bytes": size,
            # summed per-epoch step time: correct across resumed runs (feature extraction and
            # evaluation excluded)
            "minutes": sum(h["seconds"] for h in report["history"]) / 60,
        }
        summary_path.write_text(json.dumps(summary, indent=1))
        print(f"{name}: eval accuracy {report['test_accuracy']:.4f}, {size / 1e6:.2f} MB")
    write_readme(out, summary)


def write_readme(out: Path, summary: dict) -> Path:
    """``README.md`` of the demo models: widths, sizes, accuracies, the command, the machine."""
    import jax

    from jaxadv.machine import cpu_model

    total = sum(v["bytes"] for v in summary.values())
    rows = "\n".join(
        f"| {k} | {v['width']} | {v['epochs']} | {v['train_accuracy']:.4f} | "
        f"{v['eval_accuracy']:.4f} | {v['eval_map3']:.4f} | {v['bytes'] / 1e6:.2f} | "
        f"{v['minutes']:.1f} |"
        for k, v in summary.items()
    )
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        commit = ""
    text = f"""# Demo models

Five compact models, one per attacked architecture, trained by jaxadv on real instrument and
effect audio rendered from the MIT FluidR3 soundfonts (26 FSDKaggle2018 labels; the models
output all 41 classes). Load one with `jaxadv.checkpoint.load_checkpoint(jaxadv.demo.models_dir()
/ "vgg13")`, the same loader as converted and trained checkpoints.

| model | width | epochs | train accuracy | eval accuracy | eval MAP@3 | MB | training minutes |
|---|---|---|---|---|---|---|---|
{rows}

Total size {total / 1e6:.2f} MB. *Eval* is the 156 committed clips of `jaxadv/demo/data` (6 per
label, notes/velocities/durations never seen in training); *train accuracy* is on the rendered
training clips (clip level); *training minutes* sums the epochs' step time (feature extraction
and evaluation excluded) on the machine below, which also ran other jobs. Recipe: Iqbal et al.'s (Adam 5e-4 ×0.9 every 2 epochs, class-balanced
mixup with alpha 1, standardisation fitted on the training chunks), with batch
{DEMO_BATCH} instead of 128 and the epochs above instead of 40 (fewer examples: the batch-norm
moving averages need enough steps), 10 % of the rendered clips held out for validation; Cochlear
models train on 65536-sample waveform segments.

Reproduce from scratch (renders {DEMO_PER_CLASS} clips per label with fluidsynth first):

```sh
python -m jaxadv.train.demo            # all five; --models vgg13 for one
```

Trained on: {cpu_model()}, {jax.device_count()} {jax.devices()[0].platform} device(s), jax
{jax.__version__}{f", jaxadv commit {commit}" if commit else ""}.
"""
    path = out / "README.md"
    path.write_text(text)
    return path


if __name__ == "__main__":
    main()
