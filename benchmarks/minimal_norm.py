"""Minimal-norm attacks on the demo VGG13: FMN (L2, Linf) and DDN, audio defaults vs Foolbox 3.

The batch: ``--batch`` (12) correctly classified demo eval clips of at most 65536 samples, one per
label, zero padded to 65536 (``benchmarks/vs_foolbox.py``'s ``real_batch``). Rows: FMN L2, FMN
Linf and DDN at the defaults (scale-free steps, DDN's DeepFool initial norm) with each of
``--steps`` (100, 300), the same attacks with their ``foolbox3()`` presets (Foolbox 3.3.4's stock
settings: absolute steps 1 -> 0.01, DDN eps_0 = 1, L2 FMN without the ball projection), and
DeepFool L2 (``--df-steps`` 200, top 10 candidates) for reference. Untargeted (away from the
label). Per row: success (``jaxadv.attacks.evaluate``'s ``fooled``, a fresh forward), the median
SNR over the successful clips (``snr_db``: valid samples only), the median L2 / Linf norm, the
wall time of the compiled program (compiled ahead of time, compilation reported apart).

Usage::

    PYTHONPATH=. python benchmarks/minimal_norm.py
    PYTHONPATH=. python benchmarks/minimal_norm.py --steps 100 --batch 4
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


def rows_to_run(args: argparse.Namespace) -> list[tuple[str, str, str, Any]]:
    """``(attack, preset, ATTACKS key, config)`` of every row."""
    steps = [int(s) for s in args.steps.split(",")]
    rows = []
    for s in steps:
        rows += [
            ("FMN L2", "default", "fmn", A.FMNConfig(steps=s)),
            ("FMN Linf", "default", "fmn", A.FMNConfig(norm="linf", steps=s)),
            ("DDN", "default", "ddn", A.DDNConfig(steps=s)),
        ]
    rows += [
        ("FMN L2", "foolbox3", "fmn", A.FMNConfig.foolbox3()),
        ("FMN Linf", "foolbox3", "fmn", A.FMNConfig.foolbox3("linf")),
        ("DDN", "foolbox3", "ddn", A.DDNConfig.foolbox3()),
        ("DeepFool L2", "top 10", "deepfool", A.DeepFoolConfig(steps=args.df_steps)),
    ]
    return rows


def run_row(clf, params, x, lengths, labels, key: str, config: Any) -> dict[str, Any]:
    spec = A.ATTACKS[key]
    a = () if key == "deepfool" else (labels, None)
    t = time.perf_counter()
    compiled = spec.core.lower(clf, params, x, lengths, *a, config=config).compile()
    compile_s = time.perf_counter() - t
    run_s, res = _common.timed(lambda: compiled(params, x, lengths, *a))
    m = A.evaluate(clf, params, x, lengths, labels, res)
    ok = np.asarray(m.fooled)
    snr, l2, linf = (np.asarray(v) for v in (m.snr_db, m.l2, m.linf))
    good = ok & np.isfinite(snr)

    def med(v: np.ndarray) -> float:
        return float(np.median(v[good])) if good.any() else float("nan")

    return {
        "success": f"{int(ok.sum())}/{ok.size}",
        "n_success": int(ok.sum()),
        "median_snr_db": med(snr),
        "min_snr_db": float(np.min(snr[good])) if good.any() else float("nan"),
        "median_l2": med(l2),
        "median_linf": med(linf),
        "evaluations": float(np.mean(np.asarray(res.steps))),
        "time_s": run_s,
        "compile_s": compile_s,
        "snr_db": snr.tolist(),
        "ok": ok.tolist(),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=12, help="clips (one per label)")
    p.add_argument("--steps", default="100,300", help="steps of the default configs")
    p.add_argument("--df-steps", type=int, default=200, help="DeepFool's steps")
    p.add_argument("--out", default=None, help="JSON file the record is appended to")
    p.add_argument("--conv-vjp", choices=("auto", "flipped", "native"), default="auto")
    args = p.parse_args()
    _common.apply_conv_vjp(args.conv_vjp)
    machine = _common.machine_info()
    clf, params, _ = load_checkpoint(demo.models_dir() / "vgg13")
    x, lengths, labels, names = real_batch(clf, params, args.batch)
    x, lengths, labels = jnp.asarray(x), jnp.asarray(lengths), jnp.asarray(labels)
    results = []
    for attack, preset, key, config in rows_to_run(args):
        r = run_row(clf, params, x, lengths, labels, key, config)
        steps = getattr(config, "steps", None)
        row = {"attack": attack, "preset": preset, "steps": steps}
        results.append({**row, "config": dataclasses.asdict(config), **r})
        line = f"{attack} {preset} {steps}: {r['success']} {r['median_snr_db']:.1f} dB"
        print(f"{line} ({r['time_s']:.1f} s, compile {r['compile_s']:.1f} s)", flush=True)
    print()
    _common.print_machine(machine)
    print(f"# demo VGG13, {len(names)} clips (one per label), padded to {x.shape[1]} samples")
    cols = ["attack", "preset", "steps", "success", "median_snr_db", "min_snr_db"]
    cols += ["median_l2", "median_linf", "evaluations", "time_s", "compile_s"]
    _common.print_table(results, cols)
    path = _common.write_record(
        "minimal_norm", args, machine, {"clips": names, "rows": results}, args.out
    )
    print(f"\nrecord appended to {path}")


if __name__ == "__main__":
    main()
