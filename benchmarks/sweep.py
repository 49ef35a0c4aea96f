"""Batch-at-a-time with compaction vs the engine's slot refill, on the demo targeted sweep's jobs.

For each model: the demo targeted experiment's jobs (each selected music clip of one 65536-sample
bucket towards each of the 5 other music classes) attacked with the demo presets' C&W and
L-BFGS, two ways, in the same process:

* ``batch``: the previous design — fixed batches of ``--batch`` rows, each a compiled
  ``lax.while_loop`` that evaluates only its running rows through ``compact_map``'s
  ``lax.switch`` over ``B, B/2, B/4, B/8`` (``ATTACKS[name](...)``, ``compact_levels=3``).
* ``sweep``: :func:`jaxadv.attacks.sweep` — the jobs stream through ``--slots`` slots of one
  program; finished slots are refilled with the next jobs (no switch copies).

Reported per model × attack × mode: wall time including compilation, compilation time (JAX's
backend-compile events), and slot efficiency = useful row-evaluations / row-evaluations
computed (``batch``: each iteration computes the compaction size that holds its running rows;
``sweep``: every iteration computes ``slots`` rows). Results must agree job by job (success).

    python benchmarks/sweep.py                                 # demo models, 2-core CPU: minutes
    python benchmarks/sweep.py --full-vgg13 --slots 256 --jobs 1024   # on a GPU: full-size VGG13

``--full-vgg13`` attacks a full-size VGG13 (random weights, ``Classifier.build``; the cost
per iteration is what matters) and also reports iterations per second and the fraction of the
device's peak FLOP/s (``--peak-tflops``, e.g. 989 for an H100/H200's dense BF16, 67 for FP32).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as B  # noqa: E402

from jaxadv import attacks as A  # noqa: E402
from jaxadv import audio, demo  # noqa: E402
from jaxadv import config as C  # noqa: E402
from jaxadv.attacks import common  # noqa: E402
from jaxadv.checkpoint import load_checkpoint  # noqa: E402

BUCKET = 65536


class CompileClock:
    """Seconds spent in XLA backend compilation since the last :meth:`take`."""

    def __init__(self) -> None:
        self.total = 0.0
        jax.monitoring.register_event_duration_secs_listener(self._on)

    def _on(self, event: str, secs: float, **kw) -> None:
        if event == "/jax/core/compile/backend_compile_duration":
            self.total += secs

    def take(self) -> float:
        t, self.total = self.total, 0.0
        return t


def demo_configs() -> dict[str, object]:
    """The demo targeted preset's configs (jaxadv.experiments.configs.targeted)."""
    from jaxadv.experiments.configs import get_config

    return {k: cfg for k, (_, cfg) in get_config("targeted", "demo").attacks("vgg13").items()}


def demo_jobs(clf, params, per_class: int):
    """Correctly classified music clips (<= 65536 samples), each towards the 5 other classes."""
    clips = [c for c in demo.eval_clips() if c.label in C.MUSIC_CLASSES]
    waves = {c.fname: audio.load_audio(c.path) for c in clips}
    clips = [c for c in clips if len(waves[c.fname]) <= BUCKET]
    x = np.zeros((len(clips), BUCKET), np.float32)
    for i, c in enumerate(clips):
        x[i, : len(waves[c.fname])] = waves[c.fname]
    lens = np.array([len(waves[c.fname]) for c in clips], np.int32)
    pred = np.concatenate(
        [np.asarray(clf(params, jnp.asarray(x[i : i + 8]), jnp.asarray(lens[i : i + 8])).probs)
         for i in range(0, len(clips), 8)]
    ).argmax(-1)  # fmt: skip
    chosen, count = [], {}
    for i, c in enumerate(clips):
        if pred[i] == c.label_index and count.get(c.label, 0) < per_class:
            chosen.append(i)
            count[c.label] = count.get(c.label, 0) + 1
    rows, targets = [], []
    for i in chosen:
        for t in C.MUSIC_CLASSES:
            if t != clips[i].label:
                rows.append(i)
                targets.append(C.LABEL_INDEX[t])
    rows = np.array(rows)
    return (
        x[rows],
        lens[rows],
        np.array([clips[i].label_index for i in rows], np.int32),
        np.array(targets, np.int32),
    )


def batch_efficiency(evals: np.ndarray, batch: int, levels: int) -> tuple[int, int]:
    """(useful, computed) row-evaluations of batch-at-a-time with compaction.

    A last, short batch is padded to ``batch`` rows (repeats of its last job: one compiled
    program per bucket, as the experiments do); the padding's evaluations are computed too.
    """
    useful = int(evals.sum())
    computed = 0
    for start in range(0, len(evals), batch):
        e = evals[np.minimum(np.arange(start, start + batch), len(evals) - 1)]
        sizes = common.compaction_sizes(batch, levels)
        for t in range(int(e.max())):
            active = int((e > t).sum())
            computed += min(s for s in sizes if s >= active)
    return useful, computed


def run_batch_mode(name, cfg, clf, params, x, lens, labels, targets, batch):
    """Fixed batches padded to ``batch`` rows (one compiled program), compaction on."""
    cfg = dataclasses.replace(cfg, compact_levels=common.COMPACT_LEVELS)
    out = []
    n = len(x)
    for s in range(0, n, batch):
        idx = np.minimum(np.arange(s, s + batch), n - 1)
        res = A.ATTACKS[name](clf, params, x[idx], lens[idx], labels[idx],
                              targets=targets[idx], config=cfg)  # fmt: skip
        res = jax.tree.map(np.asarray, res)
        k = min(batch, n - s)
        out.append(jax.tree.map(lambda a, k=k: a[:k], res))
    return jax.tree.map(lambda *a: np.concatenate(a), *out)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="vgg13,crnn,gcnn,dense_mel,dense_wav")
    p.add_argument("--attacks", default="cw,lbfgs")
    p.add_argument("--per-class", type=int, default=1, help="clips per music class (5 jobs each)")
    p.add_argument("--batch", type=int, default=16, help="rows per batch (today's --batch-size)")
    p.add_argument(
        "--slots", type=int, default=0, help="sweep slots (0: the experiments' rule, auto_slots)"
    )
    p.add_argument("--chunk", type=int, default=16, help="engine iterations per sweep call")
    p.add_argument("--full-vgg13", action="store_true", help="full-size VGG13 (random weights)")
    p.add_argument("--jobs", type=int, default=0, help="with --full-vgg13: jobs (copies of clips)")
    p.add_argument("--peak-tflops", type=float, default=0.0, help="device peak for the fraction")
    p.add_argument("--modes", default="batch,sweep")
    B.add_common_args(p)
    args = p.parse_args(argv)
    B.apply_conv_vjp(args.conv_vjp)
    machine = B.machine_info()
    B.print_machine(machine)
    clock = CompileClock()
    configs = demo_configs()
    records = []
    models = ["vgg13_full"] if args.full_vgg13 else args.models.split(",")
    for model in models:
        if args.full_vgg13:
            from jaxadv.classifier import Classifier

            clf = Classifier.build("vgg13", width=1.0, num_classes=41, frontend="iqbal")
            params = clf.init_params(jax.random.key(0))
            ref_clf, ref_params, _ = load_checkpoint(demo.models_dir() / "vgg13")
            x, lens, labels, targets = demo_jobs(ref_clf, ref_params, args.per_class)
            labels = np.asarray(clf(params, jnp.asarray(x[:1]), jnp.asarray(lens[:1])).probs)
            labels = np.full(len(x), int(labels.argmax()), np.int32)
            targets = np.where(targets == labels, (targets + 1) % 41, targets).astype(np.int32)
            if args.jobs:
                rep = np.resize(np.arange(len(x)), args.jobs)
                x, lens, labels, targets = x[rep], lens[rep], labels[rep], targets[rep]
        else:
            clf, params, _ = load_checkpoint(demo.models_dir() / model)
            x, lens, labels, targets = demo_jobs(clf, params, args.per_class)
        clock.take()
        for name in args.attacks.split(","):
            cfg = configs[name]
            got = {}
            for mode in args.modes.split(","):
                t0 = time.perf_counter()
                if mode == "batch":
                    res = run_batch_mode(
                        name, cfg, clf, params, x, lens, labels, targets, args.batch
                    )
                    evals = res.steps + (1 if name == "lbfgs" else 0)  # + L-BFGS's CE at x0
                    useful, computed = batch_efficiency(np.asarray(evals), args.batch, 3)
                    iters = None
                else:
                    cfg0 = dataclasses.replace(cfg, compact_levels=0)
                    slots = args.slots or A.engine.auto_slots(len(x), args.batch)
                    rows, stats = A.sweep(name, clf, params, x, lens, labels, targets=targets,
                                          config=cfg0, slots=slots, chunk=args.chunk)  # fmt: skip
                    res = A.engine.stack(rows)
                    useful, computed, iters = stats.useful, stats.computed, stats.iterations
                    rec_slots = slots
                wall = time.perf_counter() - t0
                comp = clock.take()
                got[mode] = res
                rec = {
                    "model": model, "attack": name, "mode": mode, "jobs": len(x),
                    "wall_s": wall, "compile_s": comp, "run_s": wall - comp,
                    "efficiency": useful / max(computed, 1), "useful": useful,
                    "computed": computed, "success": float(np.mean(res.success)),
                }  # fmt: skip
                rec["slots"] = rec_slots if mode == "sweep" else args.batch
                if iters is not None:
                    rec["iterations"] = iters
                    rec["it_per_s"] = iters / max(wall - comp, 1e-9)
                    if args.full_vgg13 and args.peak_tflops:
                        rec["peak_fraction"] = _peak_fraction(clf, params, x, lens, args, rec)
                records.append(rec)
                print({k: round(v, 3) if isinstance(v, float) else v for k, v in rec.items()},
                      flush=True)  # fmt: skip
            if len(got) == 2:
                agree = float(np.mean(got["batch"].success == got["sweep"].success))
                for r in records[-2:]:
                    r["success_agreement"] = agree
    cols = ["model", "attack", "mode", "jobs", "slots", "wall_s", "compile_s", "run_s", "efficiency",
            "success", "success_agreement"]  # fmt: skip
    if args.full_vgg13:
        cols += ["it_per_s", "peak_fraction"]
    B.print_table(records, cols)
    ratios = []
    for i in range(0, len(records) - 1):
        a, b = records[i], records[i + 1]
        if a["mode"] == "batch" and b["mode"] == "sweep" and a["attack"] == b["attack"]:
            ratios.append({
                "model": a["model"], "attack": a["attack"],
                "wall_ratio": b["wall_s"] / a["wall_s"],
                "compile_ratio": b["compile_s"] / max(a["compile_s"], 1e-9),
                "efficiency_batch": a["efficiency"], "efficiency_sweep": b["efficiency"],
            })  # fmt: skip
    if ratios:
        print()
        B.print_table(ratios, list(ratios[0]))
    path = B.write_record("sweep", args, machine, {"rows": records, "ratios": ratios}, args.out)
    print(f"\nrecord appended to {path}")


def _peak_fraction(clf, params, x, lens, args, rec) -> float:
    """Achieved / peak FLOP/s: one iteration = one forward+backward of ``slots`` rows."""
    xs = jnp.asarray(x[: args.slots])
    ls = jnp.asarray(lens[: args.slots])

    def loss(xx):
        return jnp.sum(clf(params, xx, ls).probs[:, 0])

    cost = jax.jit(jax.value_and_grad(loss)).lower(xs).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    flops = float(cost.get("flops", 0.0))
    return flops * rec["it_per_s"] / (args.peak_tflops * 1e12)


if __name__ == "__main__":
    main()
