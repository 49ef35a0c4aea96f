"""How close C&W L2 gets to the smallest perturbation on the demo VGG13 (issue 17 item 2).

The batch: ``--batch`` (12) correctly classified demo eval clips of at most 65536 samples, one per
label, zero padded to 65536 (``benchmarks/vs_foolbox.py``'s ``real_batch``). Untargeted (away
from the label). Rows: C&W at the experiments' demo preset (3 x 60, lr 1e-3, c0 0.1), Carlini's
settings at a small budget (5 x 200, lr 1e-2), each convergence option of :class:`CWConfig`
alone and combined (``lr_schedule``, ``lr_relative``, ``abort_*``, ``restart``), the
``CWConfig.audio()`` preset, and DeepFool L2 (``--df-steps`` 200, top 10 candidates) as the
reference. Per row: success (``jaxadv.attacks.evaluate``'s ``fooled``, a fresh forward), the
median SNR over the successful clips (valid samples only), the median per-clip gap to DeepFool's
SNR and to the best SNR any row found for that clip (over the clips both fooled), the mean
forward+backward evaluations per clip and the wall time of the compiled program (compiled ahead
of time, compilation excluded).

Usage::

    PYTHONPATH=. python benchmarks/cw_convergence.py                  # every row (~15 min on 2 cores)
    PYTHONPATH=. python benchmarks/cw_convergence.py --rows demo,audio --batch 4
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from typing import Any

import jax.numpy as jnp
import numpy as np

from benchmarks import _common
from benchmarks.vs_foolbox import real_batch
from jaxadv import attacks as A
from jaxadv import demo
from jaxadv.checkpoint import load_checkpoint

DEMO = A.CWConfig(binary_search_steps=3, max_iterations=60, learning_rate=1e-3, initial_const=1e-1)
SMALL = A.CWConfig(binary_search_steps=5, max_iterations=200)  # Carlini's lr 1e-2, c0 1e-3


def _r(cfg: A.CWConfig, **kw: Any) -> A.CWConfig:
    return dataclasses.replace(cfg, **kw)


def rows_to_run() -> dict[str, Any]:
    """``name -> config`` of every row (DeepFool's row is added by :func:`main`).

    The options one at a time are added to Carlini's settings at 5 x 200 without early abort
    (``base``), so each row differs from it by one option; the abort rules are added to the
    same settings with abort.
    """
    audio = A.CWConfig.audio()
    base = _r(SMALL, abort_early=False)
    return {
        "demo preset 3x60 lr 1e-3 c0 0.1": DEMO,
        "carlini 5x200 lr 1e-2 c0 1e-3": SMALL,
        "carlini 5x200 lr 1e-4": _r(SMALL, learning_rate=1e-4),
        "abort_min_iterations=100": _r(SMALL, abort_min_iterations=100),
        "abort_on=distance (tol 1e-3, from it 20)": _r(
            SMALL, abort_on="distance", abort_tolerance=1e-3, abort_min_iterations=20
        ),
        "base: 5x200 no abort": base,
        "base + lr_schedule=cosine (-> 1e-3 lr)": _r(base, lr_schedule="cosine", lr_final=1e-3),
        "base + lr_relative=rms, lr 1e-4": _r(base, lr_relative="rms", learning_rate=1e-4),
        "base + const_update=geometric": _r(base, const_update="geometric"),
        "base + restart=best": _r(base, restart="best"),
        "base + all (audio settings at 5x200)": _r(audio, max_iterations=200),
        "audio() preset 5x100": audio,
        "audio settings at 9x300": _r(audio, binary_search_steps=9, max_iterations=300),
    }


def run_row(clf, params, x, lengths, labels, key: str, config: Any) -> dict[str, Any]:
    spec = A.ATTACKS[key]
    a = () if key == "deepfool" else (labels, None)
    t = time.perf_counter()
    compiled = spec.core.lower(clf, params, x, lengths, *a, config=config).compile()
    compile_s = time.perf_counter() - t
    run_s, res = _common.timed(lambda: compiled(params, x, lengths, *a))
    m = A.evaluate(clf, params, x, lengths, labels, res)
    ok = np.asarray(m.fooled)
    snr = np.asarray(m.snr_db, np.float64)
    good = ok & np.isfinite(snr)
    return {
        "success_pct": 100.0 * float(ok.mean()),
        "median_snr_db": float(np.median(snr[good])) if good.any() else float("nan"),
        "mean_steps": float(np.mean(np.asarray(res.steps))),
        "time_s": run_s,
        "compile_s": compile_s,
        "snr_db": np.where(good, snr, np.nan).tolist(),
        "best_const": np.asarray(getattr(res, "best_const", np.zeros(0))).tolist(),
    }


def _gap(snr: list[float], ref: np.ndarray) -> float:
    d = np.asarray(snr) - ref
    d = d[np.isfinite(d)]
    return float(np.median(d)) if d.size else float("nan")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=12)
    p.add_argument("--df-steps", type=int, default=200)
    p.add_argument("--rows", default="", help="comma-separated substrings of row names (all)")
    _common.add_common_args(p)
    args = p.parse_args()
    _common.apply_conv_vjp(args.conv_vjp)
    machine = _common.machine_info()
    _common.print_machine(machine)
    clf, params, _ = load_checkpoint(demo.models_dir() / "vgg13")
    x, lengths, labels, names = real_batch(clf, params, args.batch)
    x, lengths, labels = jnp.asarray(x), jnp.asarray(lengths), jnp.asarray(labels)
    rows = rows_to_run()
    if args.rows:
        want = [w.strip() for w in args.rows.split(",") if w.strip()]
        rows = {k: v for k, v in rows.items() if any(w in k for w in want)}
    results: dict[str, dict[str, Any]] = {}
    df_name = f"DeepFool L2 {args.df_steps} steps (reference)"
    df_cfg = A.DeepFoolConfig(steps=args.df_steps)
    results[df_name] = run_row(clf, params, x, lengths, labels, "deepfool", df_cfg)
    print(f"{df_name}: {results[df_name]['median_snr_db']:.1f} dB", flush=True)
    for name, cfg in rows.items():
        results[name] = run_row(clf, params, x, lengths, labels, "cw", cfg)
        r = results[name]
        print(f"{name}: {r['median_snr_db']:.1f} dB, {r['time_s']:.0f} s", flush=True)
    ref = np.asarray(results[df_name]["snr_db"])
    best = np.nanmax(np.array([r["snr_db"] for r in results.values()]), axis=0)
    table = []
    for name, r in results.items():
        r["gap_to_deepfool_db"] = _gap(r["snr_db"], ref)
        r["gap_to_best_db"] = _gap(r["snr_db"], best)
        table.append({"setting": name, **r})
    print()
    _common.print_table(
        table,
        [
            "setting",
            "success_pct",
            "median_snr_db",
            "gap_to_deepfool_db",
            "gap_to_best_db",
            "mean_steps",
            "time_s",
        ],
    )
    configs = {k: dataclasses.asdict(v) for k, v in rows.items()}
    configs[df_name] = dataclasses.asdict(df_cfg)
    record = {"clips": names, "rows": results, "configs": configs, "best_snr_db": best.tolist()}
    path = _common.write_record("cw_convergence", args, machine, record, args.out)
    print(f"\nrecord appended to {path}")


if __name__ == "__main__":
    main()
