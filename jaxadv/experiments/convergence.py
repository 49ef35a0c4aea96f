"""Convergence study: success and median SNR of each minimal-perturbation attack vs its budget.

``python -m jaxadv.experiments.convergence`` attacks the same correctly classified demo clips
(one per label, at most 65536 samples) with each attack at a range of iteration budgets, and
writes in its run folder ``convergence.csv`` / ``.md`` (per model x attack x budget: success %,
median and 10th-percentile SNR over the successful clips (90 % of them reach ``snr_p10``),
mean steps, seconds),
``convergence.png`` (median SNR vs budget, one panel per model) and ``choice.md``: for each
attack, the smallest budget whose median SNR is within ``--tolerance`` dB (1 dB) of what a 10x
budget gives — how the demo presets' budgets are chosen. Budgets replace one field of each
attack's demo config (:data:`BUDGET_FIELD`): DeepFool/FMN/DDN ``steps``, C&W
``max_iterations`` (per binary-search step).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxadv import cli

BUDGET_FIELD = {"deepfool": "steps", "fmn": "steps", "ddn": "steps", "cw": "max_iterations"}
BUCKET = 65536
COLUMNS = (
    "model", "attack", "budget", "clips", "success_pct", "snr_median", "snr_p10", "steps_mean",
    "seconds",
)  # fmt: skip


def base_configs(model: str, attacks: Sequence[str]) -> dict[str, Any]:
    """Each attack's demo config (the untargeted demo preset; FMN/DDN their defaults)."""
    from jaxadv import attacks as A
    from jaxadv.experiments.configs import get_config

    demo_cfgs = {k: cfg for k, (_, cfg) in get_config("untargeted", "demo").attacks(model).items()}
    out = {}
    for a in attacks:
        if a not in BUDGET_FIELD:
            raise cli.UserError(
                f"--attacks: {a!r} has no budget; choose from {sorted(BUDGET_FIELD)}"
            )
        if a not in A.ATTACKS:
            raise cli.UserError(f"--attacks: {a!r} is not an attack of this jaxadv")
        out[a] = demo_cfgs.get(a, A.ATTACKS[a].config())
    return out


def with_budget(attack: str, config: Any, budget: int) -> Any:
    """``config`` with its budget field set to ``budget`` (compaction off: the sweep refills)."""
    return dataclasses.replace(config, **{BUDGET_FIELD[attack]: budget, "compact_levels": 0})


def demo_problem(clf: Any, params: Any, clips: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``clips`` correctly classified demo clips, one per label, padded to 65536 samples."""
    import jax.numpy as jnp

    from jaxadv import audio, demo

    chosen: dict[str, tuple[np.ndarray, int]] = {}
    for c in demo.eval_clips():
        if c.label in chosen:
            continue
        w = audio.load_audio(c.path)
        if len(w) > BUCKET:
            continue
        x = np.zeros((1, BUCKET), np.float32)
        x[0, : len(w)] = w
        pred = int(np.asarray(clf(params, jnp.asarray(x), jnp.asarray([len(w)])).probs).argmax())
        if pred == c.label_index:
            chosen[c.label] = (x[0], len(w), c.label_index)
        if len(chosen) == clips:
            break
    if not chosen:
        raise cli.UserError("no demo clip is classified correctly by this model")
    xs, lens, labels = zip(*chosen.values(), strict=True)
    return np.stack(xs), np.array(lens, np.int32), np.array(labels, np.int32)


def study(
    model: str,
    attacks: Sequence[str],
    budgets: Sequence[int],
    clips: int,
    slots: int,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Rows of :data:`COLUMNS` for one demo model."""
    from tqdm import tqdm

    from jaxadv import attacks as A
    from jaxadv import demo
    from jaxadv.checkpoint import load_checkpoint

    clf, params, _ = load_checkpoint(demo.models_dir() / model)
    x, lens, labels = demo_problem(clf, params, clips)
    configs = base_configs(model, attacks)
    rows = []
    bar = tqdm(total=len(attacks) * len(budgets), desc=model, disable=not progress, file=sys.stderr)
    for a in attacks:
        for b in budgets:
            cfg = with_budget(a, configs[a], b)
            t0 = time.perf_counter()
            res, _ = A.sweep(a, clf, params, x, lens, labels, config=cfg, slots=slots)
            res = A.engine.stack(res)
            m = A.evaluate(clf, params, x, lens, labels, res)
            secs = time.perf_counter() - t0
            ok = np.asarray(m.success, bool)
            snr = np.asarray(m.snr_db)[ok]
            snr = snr[np.isfinite(snr)]
            rows.append(
                {
                    "model": model,
                    "attack": a,
                    "budget": b,
                    "clips": int(ok.size),
                    "success_pct": 100.0 * float(ok.mean()),
                    "snr_median": float(np.median(snr)) if snr.size else float("nan"),
                    "snr_p10": float(np.percentile(snr, 10)) if snr.size else float("nan"),
                    "steps_mean": float(np.mean(np.asarray(res.steps))),
                    "seconds": secs,
                }
            )
            bar.update(1)
    bar.close()
    return rows


def choose(rows: Sequence[dict[str, Any]], tolerance: float) -> list[dict[str, Any]]:
    """Per model x attack: the smallest budget within ``tolerance`` dB of its 10x budget.

    A budget qualifies when its median SNR is within ``tolerance`` dB of the 10x budget's and
    its success rate is at least the 10x budget's. Only budgets ``b`` whose ``10 b`` was also run
    can be chosen; None when none qualifies.
    """
    out = []
    keys = sorted({(r["model"], r["attack"]) for r in rows})
    for model, attack in keys:
        by = {r["budget"]: r for r in rows if r["model"] == model and r["attack"] == attack}
        pick = None
        for b in sorted(by):
            ten = by.get(10 * b)
            if ten is None:
                continue
            close = abs(ten["snr_median"] - by[b]["snr_median"]) <= tolerance
            if close and by[b]["success_pct"] >= ten["success_pct"]:
                pick = b
                break
        best = by[max(by)]
        out.append(
            {
                "model": model,
                "attack": attack,
                "budget": pick,
                "snr_median": by[pick]["snr_median"] if pick else None,
                "snr_median_10x": by[10 * pick]["snr_median"] if pick else None,
                "largest_budget": max(by),
                "snr_median_largest": best["snr_median"],
                "success_pct_largest": best["success_pct"],
            }
        )
    return out


def _fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return "nan" if v != v else f"{v:.2f}"
    return str(v)


def write_markdown(path: Path, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in columns) + " |" for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def plot(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """Median SNR vs budget (log x), one panel per model, one line per attack."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = sorted({r["model"] for r in rows})
    fig, axes = plt.subplots(1, len(models), figsize=(4.5 * len(models), 3.6), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        for attack in sorted({r["attack"] for r in rows if r["model"] == model}):
            rs = sorted(
                (r for r in rows if r["model"] == model and r["attack"] == attack),
                key=lambda r: r["budget"],
            )
            ax.plot([r["budget"] for r in rs], [r["snr_median"] for r in rs], "o-", label=attack)
        ax.set_xscale("log")
        ax.set_xlabel("iteration budget")
        ax.set_ylabel("median SNR of successful clips (dB)")
        ax.set_title(model)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m jaxadv.experiments.convergence",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("--models", default="vgg13", help="demo models, comma separated")
    p.add_argument("--attacks", default="deepfool,cw,fmn,ddn", help="comma separated")
    p.add_argument("--budgets", default="10,30,100,300,1000", help="iteration budgets")
    p.add_argument("--clips", type=int, default=12, help="clips per model (one per label)")
    p.add_argument("--slots", type=int, default=12, help="slots of each sweep")
    p.add_argument("--tolerance", type=float, default=1.0, help="dB from the 10x budget")
    p.add_argument("--out", type=Path, default=Path("runs/convergence-demo"), help="run folder")
    p.add_argument("--overwrite", action="store_true", help="replace an existing study")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def _ints(text: str, flag: str) -> list[int]:
    try:
        vals = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise cli.UserError(f"{flag}: expected comma-separated integers, got {text!r}") from None
    if not vals or min(vals) < 1:
        raise cli.UserError(f"{flag}: budgets must be integers >= 1, got {text!r}")
    return sorted(set(vals))


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    budgets = _ints(args.budgets, "--budgets")
    attacks = [a for a in args.attacks.split(",") if a]
    models = [m for m in args.models.split(",") if m]
    if args.clips < 1 or args.slots < 1:
        raise cli.UserError("--clips and --slots must be >= 1")
    out = args.out
    if (out / "convergence.csv").exists() and not args.overwrite:
        raise cli.UserError(f"{out} already holds a convergence study; pass --overwrite or --out")
    if out.exists() and any(out.iterdir()) and not (out / "convergence.csv").exists():
        raise cli.UserError(f"{out} is not empty and not a convergence study; choose another --out")
    rows = []
    for m in models:
        rows += study(m, attacks, budgets, args.clips, args.slots, not args.no_progress)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "convergence.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    write_markdown(out / "convergence.md", rows, COLUMNS)
    picks = choose(rows, args.tolerance)
    write_markdown(out / "choice.md", picks, list(picks[0]) if picks else ["model"])
    plot(out / "convergence.png", rows)
    print((out / "convergence.md").read_text())
    print((out / "choice.md").read_text())
    print(f"wrote {out}/convergence.csv, convergence.md, choice.md, convergence.png")
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    """The command: a user error is one line on stderr and exit status 2 (``--debug``: raise)."""
    cli.main(build_parser(), run, argv, compile_cache=True)


if __name__ == "__main__":
    main()
