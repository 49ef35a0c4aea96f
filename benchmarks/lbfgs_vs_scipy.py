"""Batched JAX L-BFGS (``mode="jax"``) against the per-example scipy fidelity mode (``"scipy"``).

Targeted L-BFGS on a TRAINED model and real clips (``--checkpoint``, default as in
``vs_foolbox.py``: the demo VGG13 if present, else the benchmark fixture), batch ``--batch``
(default 32) of correctly classified demo eval clips of one 65536-sample bucket, each with a
random target among the labels of the demo set (seeded, never the clip's label). Same
``LBFGSConfig`` (bisect search over ``c``, ``--bss`` solves from ``--c0``, ``--iters`` iterations,
memory ``--memory``) in both modes: ``mode="scipy"`` runs ``scipy.optimize.fmin_l_bfgs_b`` per
example on the host with a jitted value-and-grad of one clip; ``mode="jax"`` is one compiled
program over the batch, once per ``--first-step`` rule (``LBFGSConfig.first_step``; default: the
config's default). Reported: wall time of each (jaxadv's program compiled ahead of time and
reported apart; the scipy mode's jitted value-and-grad compiled by one call first), the ratio, success
(``argmax == target`` by a fresh forward pass), median SNR over the successful examples, the
examples whose solves never moved (no accepted iteration: with ``--bss 1``, a solve ended by a
failed first line search), and the per-example SNR differences where both succeed.

Usage::

    PYTHONPATH=. python benchmarks/lbfgs_vs_scipy.py --batch 32
    PYTHONPATH=. python benchmarks/lbfgs_vs_scipy.py --batch 16 --bss 1 --iters 40 --c0 10 \
        --first-step unit scipy
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import _common
from benchmarks.vs_foolbox import real_batch, resolve_checkpoint
from jaxadv import attacks as A
from jaxadv import config as C
from jaxadv import demo
from jaxadv.attacks.lbfgs import FIRST_STEPS, _lbfgs_jit, _lbfgs_scipy, _single_vg_jit
from jaxadv.checkpoint import load_checkpoint


def pick_targets(labels: np.ndarray, seed: int) -> np.ndarray:
    """A random target per clip among the demo set's labels, never the clip's own label."""
    present = sorted({c.label_index for c in demo.eval_clips()})
    rng = np.random.default_rng(seed)
    return np.array([rng.choice([t for t in present if t != y]) for y in labels], np.int32)


def run(args: argparse.Namespace) -> dict[str, Any]:
    ckpt = resolve_checkpoint(args.checkpoint)
    fn, params, meta = load_checkpoint(ckpt)
    x, lengths, labels, names = real_batch(fn, params, args.batch)
    targets = pick_targets(labels, args.seed)
    xj, lj, yj, tj = map(jnp.asarray, (x, lengths, labels, targets))
    cfg = A.LBFGSConfig(
        binary_search_steps=args.bss,
        initial_const=args.c0,
        max_iterations=args.iters,
        memory=args.memory,
    )
    first_steps = args.first_step or [cfg.first_step]
    rows: dict[str, Any] = {}

    def summary(res) -> dict[str, Any]:
        adv = jnp.asarray(res.adversarial)
        pred = np.asarray(jnp.argmax(fn.predict(params, adv, lj), -1))
        ok = pred == targets
        snr = np.asarray(A.snr_db(xj, adv, lj))
        s = snr[ok & np.isfinite(snr)]
        return {
            "success": float(np.mean(ok)),
            "median_snr_db": float(np.median(s)) if s.size else float("nan"),
            "evaluations": np.asarray(res.steps).tolist(),
            "never_moved": int(np.sum(np.asarray(res.iterations) == 0)),
            "total_evaluations": int(np.sum(res.steps)),
            "max_evaluations": int(np.max(res.steps)),
            "snr_db": snr.tolist(),
            "ok": ok.tolist(),
        }

    # jaxadv: one compiled program over the batch (compiled ahead of time, timed apart)
    for rule in first_steps:
        jcfg = dataclasses.replace(cfg, first_step=rule)
        t = time.perf_counter()
        compiled = _lbfgs_jit.lower(fn, params, xj, lj, tj, config=jcfg).compile()
        compile_s = time.perf_counter() - t
        run_s, res = _common.timed(lambda compiled=compiled: compiled(params, xj, lj, tj))
        rows[f"jax/{rule}"] = {"time_s": run_s, "compile_s": compile_s, **summary(res)}
    jax_row = rows[f"jax/{first_steps[0]}"]
    if args.no_scipy:
        return {**_describe(args, ckpt, fn, meta, x, names, targets), "rows": rows}

    # scipy fidelity mode: compile its per-clip jitted value-and-grad (same config) first
    scipy_cfg = dataclasses.replace(cfg, mode="scipy")
    t = time.perf_counter()
    one = jnp.ones((1,), jnp.float32)
    jax.block_until_ready(
        _single_vg_jit(fn, params, xj[:1], xj[:1], lj[:1], tj[:1], one, config=scipy_cfg)
    )
    warm_s = time.perf_counter() - t
    run_s, res_s = _common.timed(lambda: _lbfgs_scipy(fn, params, xj, lj, tj, scipy_cfg))
    rows["scipy"] = {"time_s": run_s, "warmup_s": warm_s, **summary(res_s)}

    both = np.array(jax_row["ok"]) & np.array(rows["scipy"]["ok"])
    d = np.array(jax_row["snr_db"])[both] - np.array(rows["scipy"]["snr_db"])[both]
    d = d[np.isfinite(d)]
    return {
        **_describe(args, ckpt, fn, meta, x, names, targets),
        "rows": rows,
        "speedup": rows["scipy"]["time_s"] / jax_row["time_s"],
        "success_diff": jax_row["success"] - rows["scipy"]["success"],
        "median_snr_diff_db": jax_row["median_snr_db"] - rows["scipy"]["median_snr_db"],
        "snr_diff_both_succeed_db": {
            "n": int(d.size),
            "median": float(np.median(d)) if d.size else float("nan"),
            "min": float(np.min(d)) if d.size else float("nan"),
            "max": float(np.max(d)) if d.size else float("nan"),
        },
    }


def _describe(args, ckpt, fn, meta, x, names, targets) -> dict[str, Any]:
    return {
        "checkpoint": str(ckpt),
        "model": fn.model,
        "width": fn.model_config.width,
        "fixture": meta.get("benchmark_fixture"),
        "batch": args.batch,
        "samples": int(x.shape[1]),
        "clips": names,
        "targets": [C.LABELS[t] for t in targets],
        "config": {
            "bss": args.bss,
            "c0": args.c0,
            "iters": args.iters,
            "memory": args.memory,
            "first_step": args.first_step or [A.LBFGSConfig().first_step],
        },
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default=None, help="jaxadv checkpoint directory")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--bss", type=int, default=2, help="solves per example (bisect search)")
    p.add_argument("--c0", type=float, default=0.1, help="initial const")
    p.add_argument("--iters", type=int, default=100, help="L-BFGS iterations per solve")
    p.add_argument("--memory", type=int, default=10)
    p.add_argument("--seed", type=int, default=0, help="target draw")
    p.add_argument(
        "--first-step",
        nargs="+",
        choices=FIRST_STEPS,
        default=None,
        help="LBFGSConfig.first_step rules of the jax mode, one run each (the first one is "
        "compared with scipy; default: the config's default)",
    )
    p.add_argument("--no-scipy", action="store_true", help="run the jax mode only")
    _common.add_common_args(p)
    args = p.parse_args(argv)
    _common.apply_conv_vjp(args.conv_vjp)
    machine = _common.machine_info()
    r = run(args)
    _common.print_machine(machine)
    print(f"\n{r['checkpoint']} ({r['model']} width {r['width']}), B={r['batch']}, {r['config']}")
    _common.print_table(
        [{"mode": k, **v} for k, v in r["rows"].items()],
        [
            "mode",
            "time_s",
            "compile_s",
            "warmup_s",
            "total_evaluations",
            "max_evaluations",
            "never_moved",
            "success",
            "median_snr_db",
        ],
    )
    if "speedup" not in r:
        path = _common.write_record("lbfgs_vs_scipy", args, machine, r, args.out)
        print(f"appended to {path}")
        return
    d = r["snr_diff_both_succeed_db"]
    print(
        f"speed-up {r['speedup']:.1f}x, success diff {r['success_diff']:+.3f}, median SNR diff "
        f"{r['median_snr_diff_db']:+.2f} dB; per-clip SNR jax - scipy (both succeed, n={d['n']}): "
        f"median {d['median']:+.2f}, range [{d['min']:+.2f}, {d['max']:+.2f}] dB"
    )
    path = _common.write_record("lbfgs_vs_scipy", args, machine, r, args.out)
    print(f"appended to {path}")


if __name__ == "__main__":
    main()
