"""Certified robustness in dB: randomized smoothing of every model, certified accuracy against SNR.

``python -m jaxadv.experiments.certify`` smooths each model with Gaussian noise on the waveform
(:mod:`jaxadv.certify`, Cohen et al. 2019) at one or more noise levels (``--noise-dbfs``,
σ = 10^(dBFS/20) in sample units) and certifies every selected clip. A clip's certified SNR is
the bound: with probability at least ``1 - α``, no perturbation with an SNR above it changes the
smoothed prediction. A clip whose smoothed prediction is wrong, or that abstains, is certified at
no SNR.

It writes in its run folder:

- ``certify.csv``: one row per model, noise level and clip, with the smoothed prediction, the
  counts, the lower bound ``p_A``, the L2 radius and the certified SNR;
- ``certified_accuracy``: Markdown and CSV, the certified accuracy at the SNR budgets of
  ``--budgets`` with the clean and smoothed accuracy;
- ``figure_certified.png``: certified accuracy against SNR, one curve per model and noise level;
- ``results.json`` and ``config.json``.

The same command resumes; a run with other settings in the same folder is refused. Models come
as in the other commands (``--models``, ``--checkpoint``, ``--model-fn``), and so do the clips
(``--data``, ``--split``, ``--per-class``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxadv import cli
from jaxadv import config as C
from jaxadv.cli import UserError

log = logging.getLogger("jaxadv.experiments")

FILE = "certify.csv"
DEFAULT_BUDGETS = (20, 30, 40, 50, 60, 70, 80, 90, 100)


def schema() -> Any:
    """The columns and key of :data:`FILE` rows."""
    from jaxadv.experiments import results

    return results.Schema(
        columns=(
            "model", "noise_dbfs", "fname", "label", "clean_prediction", "prediction", "top_count",
            "n", "p_lower", "radius", "certified_snr_db",
        ),
        key=("model", "noise_dbfs", "fname"),
        ints=frozenset({"top_count", "n"}),
        floats=frozenset({"noise_dbfs", "p_lower", "radius", "certified_snr_db"}),
    )  # fmt: skip


def _floats(text: str, flag: str) -> list[float]:
    try:
        vals = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise UserError(f"{flag}: expected comma-separated numbers, got {text!r}") from None
    if not vals:
        raise UserError(f"{flag}: expected at least one number")
    return vals


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Run (or resume) the certification; returns its rows."""
    from tqdm import tqdm

    from jaxadv import logs
    from jaxadv.datasets import Failure
    from jaxadv.experiments import flags, results, runfolder
    from jaxadv.experiments import models as M
    from jaxadv.experiments.clips import clip_digest, load_waves, select_clips

    logs.setup()
    out = Path(args.out)
    cfgs = smoothing_configs(args)
    budgets = sorted(_floats(args.budgets, "--budgets"))
    old = runfolder.check_out(out, "certify")
    model_fns = flags.parse_model_fns(args.model_fn)
    names = flags.parse_models(args.models, model_fns, args.checkpoint)
    checkpoints = flags.parse_checkpoints(args.checkpoint, names, model_fns)
    missing = [f"{m}: {d}" for m, d in checkpoints.items() if not d.is_dir()]
    if missing:
        raise UserError("checkpoint folder(s) not found: " + "; ".join(missing))
    loaded = M.load_models(names, checkpoints, "demo", model_fns)
    labels, rate = M.run_labels(loaded), M.run_sample_rate(loaded)
    failures: list[Failure] = []
    own = None if labels == C.LABELS else labels
    clips = select_clips(args.data, args.split, args.per_class, args.seed, None, failures,
                         labels=own)  # fmt: skip
    waves = load_waves(clips, "demo", failures, rate)
    clips = [c for c in clips if c.fname in waves]
    if not clips:
        raise UserError("no clips selected or loaded (check --data, --split and --per-class)")
    fp = {
        "experiment": "certify", "data": str(Path(args.data).resolve()) if args.data else None,
        "split": args.split, "per_class": args.per_class, "seed": args.seed,
        "smoothing": smoothing_fingerprint(cfgs),
        "models": {m.name: m.digest for m in loaded},
        "clips": {c.fname: clip_digest(c) for c in clips},
    }  # fmt: skip
    if old is not None:
        was = old.get("fingerprint") or {}
        diff = sorted(k for k in set(was) | set(fp) if was.get(k) != fp.get(k))
        if diff:
            raise UserError(
                f"{out} holds a certification with other settings ({', '.join(diff)}); resume "
                "it with the same flags, models and clips, or choose another --out"
            )
    runfolder.make_out(out)
    runfolder.write_config(out, args, {"experiment": "certify", "fingerprint": fp,
                                       "sample_rate": rate})  # fmt: skip
    store = results.ResultStore(out / FILE, schema())
    bar = tqdm(total=len(loaded) * len(cfgs), desc="certify", unit="model×σ", file=sys.stderr,
               disable=args.no_progress)  # fmt: skip
    for m in loaded:
        certify_model(m, clips, waves, cfgs, store, seed=args.seed, batch_size=args.batch_size,
                      labels=labels, on_level=lambda: bar.update(1))  # fmt: skip
    bar.close()
    rows = store.rows()
    results.write_json(out / "results.json", rows)
    table = accuracy_table(rows, budgets)
    table.write(out, "certified_accuracy")
    figure(rows, out / "figure_certified.png")
    print("\n" + table.to_markdown())
    print(f"Run folder: {out}")
    return rows


def smoothing_configs(args: argparse.Namespace) -> dict[float, Any]:
    """``{noise dBFS: SmoothingConfig}`` from the smoothing flags (:func:`add_smoothing_flags`);
    a bad value is a one-line :class:`UserError`."""
    from jaxadv import certify as K

    levels = _floats(args.noise_dbfs, "--noise-dbfs")
    if max(levels) >= 0:
        raise UserError(f"--noise-dbfs: noise levels must be below 0 dBFS, got {levels}")
    try:
        cfgs = {lv: K.SmoothingConfig.at_dbfs(lv, n0=args.n0, n=args.n, alpha=args.alpha,
                                              per_step=args.per_step) for lv in levels}  # fmt: skip
    except ValueError as e:
        raise UserError(f"smoothing settings: {e}") from None
    for cfg in cfgs.values():
        if cfg.n % cfg.per_step or cfg.n0 % min(cfg.per_step, cfg.n0):
            raise UserError(
                f"--n ({cfg.n}) and --n0 ({cfg.n0}) must be multiples of --per-step "
                f"({cfg.per_step}), or --n0 smaller than it"
            )
    return cfgs


def smoothing_fingerprint(cfgs: dict[float, Any]) -> dict[str, list[float]]:
    """What a resumed certification must share: every level's sigma, n0, n, alpha, per_step."""
    return {str(lv): [c.sigma, c.n0, c.n, c.alpha, c.per_step] for lv, c in cfgs.items()}


def certify_model(
    m: Any,
    clips: Sequence[Any],
    waves: dict[str, np.ndarray],
    cfgs: dict[float, Any],
    store: Any,
    *,
    seed: int,
    batch_size: int,
    labels: Sequence[str],
    on_level: Any = None,
) -> None:
    """Certify every clip of ``clips`` not yet in ``store`` for the loaded model ``m`` at each
    noise level of ``cfgs``, appending one :data:`FILE` row per clip (resumable).

    Each clip's noise comes from a key of the seed, the model, the level and the clip, so a
    certificate depends on neither its batch nor a resume. ``on_level()`` is called after each
    level (progress).
    """
    import jax

    from jaxadv import certify as K
    from jaxadv.experiments import models as M
    from jaxadv.experiments.sweep import example_key

    clean = M.predict_waves(m, [waves[c.fname] for c in clips], batch_size).argmax(1)
    for lv, cfg in cfgs.items():
        todo = [(c, int(p)) for c, p in zip(clips, clean, strict=True)
                if (m.name, repr(float(lv)), c.fname) not in store]  # fmt: skip
        for i in range(0, len(todo), batch_size):
            part = todo[i : i + batch_size]
            n = max(len(waves[c.fname]) for c, _ in part)
            x = np.zeros((len(part), n), np.float32)
            for r, (c, _) in enumerate(part):
                x[r, : len(waves[c.fname])] = waves[c.fname]
            lens = np.array([len(waves[c.fname]) for c, _ in part], np.int32)
            keys = np.stack([example_key(seed, m.name, str(lv), c.fname) for c, _ in part])
            cert = K.certify(m.classifier, m.params, x, lens, jax.random.wrap_key_data(keys),
                             cfg)  # fmt: skip
            rows = []
            for r, (c, p) in enumerate(part):
                pred = int(cert.prediction[r])
                top = int(cert.counts[r].max())
                ok = pred == c.label_index
                rows.append({
                    "model": m.name, "noise_dbfs": float(lv), "fname": c.fname,
                    "label": c.label, "clean_prediction": labels[p],
                    "prediction": labels[pred] if pred >= 0 else "abstain",
                    "top_count": top, "n": cfg.n, "p_lower": float(cert.p_lower[r]),
                    "radius": float(cert.radius[r]),
                    # a wrong or abstaining smoothed prediction is certified at no SNR
                    "certified_snr_db": float(cert.snr_db[r]) if ok else float("inf"),
                })  # fmt: skip
            store.append(rows)
        if on_level is not None:
            on_level()


def add_smoothing_flags(p: argparse.ArgumentParser, n: int = 500) -> None:
    """``--noise-dbfs``, ``--n0``, ``--n``, ``--alpha``, ``--per-step`` (randomized smoothing)."""
    p.add_argument(
        "--noise-dbfs",
        default="-60",
        help="smoothing noise levels, dBFS RMS (comma-separated; -60 is σ = 0.001)",
    )
    p.add_argument("--n0", type=int, default=50, help="noisy copies that select the class")
    p.add_argument(
        "--n",
        type=int,
        default=n,
        help="noisy copies that bound its probability (Cohen et al.: 100000)",
    )
    p.add_argument("--alpha", type=float, default=0.001, help="certificates hold w.p. 1 - alpha")
    p.add_argument("--per-step", type=int, default=50, help="noisy copies per compiled step")


def _curves(rows: Sequence[dict[str, Any]]) -> dict[tuple[str, float], list[dict[str, Any]]]:
    by: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for r in rows:
        by.setdefault((r["model"], r["noise_dbfs"]), []).append(r)
    return by


def accuracy_table(rows: Sequence[dict[str, Any]], budgets: Sequence[float]) -> Any:
    """Per model and noise level: clean and smoothed accuracy, the median certified SNR of the
    clips certified correct, and the certified accuracy at each SNR budget (%)."""
    from jaxadv.experiments.tables import Table

    out = []
    for (model, lv), mine in _curves(rows).items():
        snr = np.array([r["certified_snr_db"] for r in mine])
        clean = np.mean([r["clean_prediction"] == r["label"] for r in mine])
        smooth = np.mean([r["prediction"] == r["label"] for r in mine])
        fin = snr[np.isfinite(snr)]
        acc = [100.0 * float(np.mean(snr <= b)) for b in budgets]
        out.append((model, lv, len(mine), 100.0 * clean, 100.0 * smooth,
                    float(np.median(fin)) if fin.size else float("inf"), *acc))  # fmt: skip
    return Table(
        "Certified accuracy (%) at each SNR budget: smoothed prediction correct and certified "
        "against every perturbation with an SNR above the budget",
        ("Model", "Noise dBFS", "Clips", "Clean acc %", "Smoothed acc %",
         "Median certified SNR dB", *(f"≥{b:g} dB" for b in budgets)),
        tuple(out),
    )  # fmt: skip


def figure(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """Certified accuracy against the SNR budget, one curve per model and noise level."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib import pyplot as plt

    grid = np.linspace(0, 140, 281)
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for (model, lv), mine in _curves(rows).items():
        snr = np.array([r["certified_snr_db"] for r in mine])
        ax.plot(grid, [100.0 * np.mean(snr <= g) for g in grid], label=f"{model}, σ {lv:g} dBFS")
    ax.set_xlabel("SNR budget (dB): every perturbation at a higher SNR is certified")
    ax.set_ylabel("certified accuracy (%)")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def build_parser() -> argparse.ArgumentParser:
    """The command's flags (``--help``)."""
    from jaxadv.experiments.configs import ALL_MODELS

    p = argparse.ArgumentParser(
        prog="python -m jaxadv.experiments.certify",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--out", default="runs/certify", help="run folder; the same command resumes")
    p.add_argument("--models", default=None,
                   help=f"comma-separated models (default {','.join(ALL_MODELS)})")  # fmt: skip
    p.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        metavar="MODEL=DIR",
        help="checkpoint folder of a model (default: the demo's); repeatable",
    )
    p.add_argument(
        "--model-fn",
        action="append",
        default=[],
        metavar="NAME=MODULE:ATTR",
        help="a model of your own (jaxadv.wrap); repeatable",
    )
    p.add_argument("--data", default=None, help="an FSDKaggle2018 folder (default: the demo)")
    p.add_argument(
        "--split", choices=("auto", "train", "test"), default="auto", help="which CSV of --data"
    )
    p.add_argument("--per-class", type=int, default=1, help="clips per class")
    add_smoothing_flags(p)
    p.add_argument("--batch-size", type=int, default=8, help="clips per batch")
    p.add_argument(
        "--budgets",
        default=",".join(map(str, DEFAULT_BUDGETS)),
        help="SNR budgets (dB) of the table",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the clip choice and the noise")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> None:
    """The command: a user error is one line on stderr and exit status 2 (``--debug``: raise)."""
    cli.main(build_parser(), run, argv, compile_cache=True)


if __name__ == "__main__":
    main()
