"""jaxadv's C&W L2 and DeepFool L2 against Foolbox 3.3.4 (JAX backend) on the same Flax model.

Foolbox attacks ``foolbox.JAXModel(f, bounds=(-1, 1))`` where ``f(x) = log(clip probabilities)``
of the same classifier at the same lengths: jaxadv's default scores (``"log_probs"``), so both
sides optimise the same margins. ``f`` is ``jax.jit``-ed (params passed as arguments), or, for
``--unjitted``, runs op by op. Same batch and hyper-parameters on both sides, measured in the same
run.

(a) Per-iteration (``--part iter``): a randomly initialised model (default: the full-size VGG13
    on the ``iqbal`` front-end, batch 8, 2 s clips = 1 chunk). C&W with ``binary_search_steps=1``,
    ``steps=--iter-steps`` and no early abort on both sides (every row runs every step): time per
    iteration, and relative to one jitted ``value_and_grad`` (``ref``). DeepFool with overshoot -1
    (the point never moves, so both run all ``--iter-df-steps`` steps): time per step after the
    forward passes outside the steps (ours: initial + final; Foolbox: initial).
(b) End-to-end (``--part e2e``): a TRAINED model (``--checkpoint``, default the demo VGG13 under
    ``jaxadv/demo/models/vgg13`` if present, else the benchmark fixture of ``fixture_model.py``)
    on real clips: the first ``--batch`` demo eval clips that fit one 65536-sample bucket and that
    the model classifies correctly, one per label in turn. C&W (early abort on) and DeepFool with
    the ``--cw-*`` / ``--df-*`` settings: wall time of the attack (compilation reported apart:
    jaxadv's program is compiled ahead of time, Foolbox's model functions by a 1-step warm-up
    call), success, median SNR over the successful examples. Success is a fresh forward pass on
    the returned audio (C&W: ``argmax != label``; DeepFool: ``argmax !=`` the original
    prediction); Foolbox 3 returns all-zero rows for failed C&W examples, which never count.
    Foolbox's C&W aborts on the batch-summed loss; jaxadv aborts per example.

Usage::

    PYTHONPATH=. python benchmarks/vs_foolbox.py --part iter
    PYTHONPATH=. python benchmarks/vs_foolbox.py --part e2e --batch 16
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import _common
from jaxadv import attacks as A
from jaxadv import datasets, demo
from jaxadv.attacks import common
from jaxadv.attacks.cw import _cw_jit
from jaxadv.attacks.deepfool import _deepfool_jit
from jaxadv.checkpoint import load_checkpoint
from jaxadv.classifier import Classifier
from jaxadv.frontend import bucket_length

DEMO_VGG13 = Path(demo.__file__).resolve().parent / "models" / "vgg13"
FIXTURE = Path(__file__).resolve().parent / ".fixtures" / "vgg13_w0.25"


def _fb():
    import foolbox

    if foolbox.__version__ != "3.3.4":
        print(f"warning: foolbox {foolbox.__version__}, the reference figures are for 3.3.4")
    return foolbox


class _Counted:
    """A model function that counts its calls (Foolbox calls it once per forward pass)."""

    def __init__(self, f: Any):
        self.f, self.calls = f, 0

    def __call__(self, x: Any) -> Any:
        self.calls += 1
        return self.f(x)


def foolbox_model(fn: Any, params: Any, lengths: jax.Array, jit: bool = True) -> Any:
    """``foolbox.JAXModel`` of ``x -> log(probs)`` of ``fn`` at ``lengths`` (jitted or eager).

    The wrapped function is a :class:`_Counted` (``model._model.calls`` counts forward passes).
    """
    fb = _fb()

    def scores(p, x):
        return common.safe_log(fn(p, x, lengths).probs)

    if jit:
        jitted = jax.jit(scores)

        def model(x):
            return jitted(params, x)
    else:

        def model(x):
            return scores(params, x)

    return fb.JAXModel(_Counted(model), bounds=(-1, 1))


def fb_cw(cfg: A.CWConfig) -> Any:
    return _fb().attacks.L2CarliniWagnerAttack(
        binary_search_steps=cfg.binary_search_steps,
        steps=cfg.max_iterations,
        stepsize=cfg.learning_rate,
        confidence=cfg.confidence,
        initial_const=cfg.initial_const,
        abort_early=cfg.abort_early,
    )


def fb_deepfool(cfg: A.DeepFoolConfig) -> Any:
    return _fb().attacks.L2DeepFoolAttack(
        steps=cfg.steps, candidates=cfg.candidates, overshoot=cfg.overshoot, loss="logits"
    )


# --------------------------------------------------------------------------------------------
# (a) per iteration
# --------------------------------------------------------------------------------------------


def per_iteration(args: argparse.Namespace) -> dict[str, Any]:
    fb = _fb()
    fe = "iqbal" if args.iter_model in ("vgg13", "crnn", "gcnn") else None
    fn = Classifier.build(args.iter_model, width=args.iter_width, frontend=fe)
    params = fn.init_params(jax.random.key(0))
    b, n, k, kd = args.iter_batch, args.iter_samples, args.iter_steps, args.iter_df_steps
    x = jax.random.uniform(jax.random.key(1), (b, n), minval=-0.3, maxval=0.3)
    lengths = jnp.full((b,), n, jnp.int32)
    labels = jnp.argmax(fn(params, x, lengths).probs, -1).astype(jnp.int32)
    crit = fb.criteria.Misclassification(labels)

    def loss(xx):
        return jnp.sum(common.cross_entropy(fn(params, xx, lengths), labels, "log_probs"))

    vg = jax.jit(jax.value_and_grad(loss))
    fwd = jax.jit(lambda xx: fn(params, xx, lengths).probs)
    cw_cfg = A.CWConfig(
        binary_search_steps=1,
        max_iterations=k,
        abort_early=False,
        learning_rate=args.cw_lr,
        initial_const=args.cw_c0,
        confidence=args.cw_kappa,
    )
    df_cfg = A.DeepFoolConfig(steps=kd, candidates=args.df_candidates, overshoot=-1.0)
    fm = foolbox_model(fn, params, lengths, jit=True)
    fb_cw_attack, fb_df_attack = fb_cw(cw_cfg), fb_deepfool(df_cfg)
    calls = {
        "ref": lambda: vg(x),
        "fwd": lambda: fwd(x),
        "ours_cw": lambda: _cw_jit(fn, params, x, lengths, labels, None, config=cw_cfg),
        "fb_cw": lambda: fb_cw_attack.run(fm, x, crit),
        "ours_df": lambda: _deepfool_jit(fn, params, x, lengths, config=df_cfg),
        "fb_df": lambda: fb_df_attack.run(fm, x, fb.criteria.Misclassification(labels)),
    }
    if args.unjitted:
        fm_eager = foolbox_model(fn, params, lengths, jit=False)
        calls["fb_cw_unjitted"] = lambda: fb_cw_attack.run(fm_eager, x, crit)
    med, times, _ = _common.interleaved(calls, args.repeats)
    ref = med["ref"]
    per = {
        "ref": ref,
        "ours_cw": med["ours_cw"] / k,
        "fb_cw": med["fb_cw"] / k,
        "ours_df": (med["ours_df"] - 2 * med["fwd"]) / kd,
        "fb_df": (med["fb_df"] - med["fwd"]) / kd,
    }
    if args.unjitted:
        per["fb_cw_unjitted"] = med["fb_cw_unjitted"] / k
    out = {
        "model": args.iter_model,
        "width": args.iter_width,
        "batch": b,
        "samples": n,
        "cw_steps": k,
        "df_steps": kd,
        "df_candidates": args.df_candidates,
        "ref_ms": 1e3 * ref,
        "forward_ms": 1e3 * med["fwd"],
        **{f"{name}_ms": 1e3 * v for name, v in per.items() if name != "ref"},
        **{f"{name}_vs_ref": v / ref for name, v in per.items() if name != "ref"},
        "cw_ours_vs_fb": per["ours_cw"] / per["fb_cw"],
        "df_ours_vs_fb": per["ours_df"] / per["fb_df"],
        "times_s": times,
    }
    if args.unjitted:
        out["cw_ours_vs_fb_unjitted"] = per["ours_cw"] / per["fb_cw_unjitted"]
    return out


# --------------------------------------------------------------------------------------------
# (b) end to end
# --------------------------------------------------------------------------------------------


def resolve_checkpoint(path: str | None) -> Path:
    if path:
        return Path(path)
    for cand in (DEMO_VGG13, FIXTURE):
        if (cand / "jaxadv.json").is_file():
            return cand
    raise SystemExit(
        f"no trained model: neither {DEMO_VGG13} nor {FIXTURE} exists; pass --checkpoint DIR or "
        "run `PYTHONPATH=. python benchmarks/fixture_model.py` first"
    )


def real_batch(
    fn: Any, params: Any, batch: int, *, skip: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Correctly classified demo eval clips of the smallest bucket, one label at a time."""
    clips = demo.eval_clips()
    n = bucket_length(1)
    b = datasets.load_batch(clips)
    keep = [i for i, c in enumerate(b.clips) if b.lengths[i] <= n]
    x = b.x[keep, :n]
    lengths, labels = b.lengths[keep], b.label_indices[keep]
    probs = np.asarray(fn.predict(params, jnp.asarray(x), jnp.asarray(lengths)))
    correct = np.argmax(probs, -1) == labels
    by_label: dict[int, list[int]] = {}
    for i in np.nonzero(correct)[0]:
        by_label.setdefault(int(labels[i]), []).append(int(i))
    order: list[int] = []
    depth = 0
    while len(order) < skip + batch and any(depth < len(v) for v in by_label.values()):
        order += [v[depth] for _, v in sorted(by_label.items()) if depth < len(v)]
        depth += 1
    chosen = order[skip : skip + batch]
    if len(chosen) < batch:
        raise SystemExit(
            f"only {len(chosen)} correctly classified clips of <= {n} samples, asked for {batch}"
        )
    names = [b.clips[keep[i]].fname for i in chosen]
    return x[chosen], lengths[chosen], labels[chosen], names


def summary(fn, params, x, lengths, away, adv, zero_rows=None) -> dict[str, Any]:
    """Success by a fresh forward pass (``argmax != away``) and the SNR of the successful rows."""
    adv = jnp.asarray(adv, jnp.float32)
    pred = np.asarray(jnp.argmax(fn.predict(params, adv, jnp.asarray(lengths)), -1))
    ok = pred != np.asarray(away)
    if zero_rows is not None:
        ok = ok & ~zero_rows
    snr = np.asarray(A.snr_db(jnp.asarray(x), adv, jnp.asarray(lengths)))
    s = snr[ok & np.isfinite(snr)]
    return {
        "success": float(np.mean(ok)),
        "n_success": int(ok.sum()),
        "median_snr_db": float(np.median(s)) if s.size else float("nan"),
        "mean_snr_db": float(np.mean(s)) if s.size else float("nan"),
        "snr_db": snr.tolist(),
        "ok": ok.tolist(),
    }


def end_to_end(args: argparse.Namespace) -> dict[str, Any]:
    fb = _fb()
    ckpt = resolve_checkpoint(args.checkpoint)
    fn, params, meta = load_checkpoint(ckpt)
    x, lengths, labels, names = real_batch(fn, params, args.batch)
    xj, lj, yj = jnp.asarray(x), jnp.asarray(lengths), jnp.asarray(labels)
    fm = foolbox_model(fn, params, lj, jit=True)
    rows: dict[str, Any] = {}

    cw_cfg = A.CWConfig(
        binary_search_steps=args.cw_bss,
        max_iterations=args.cw_steps,
        learning_rate=args.cw_lr,
        initial_const=args.cw_c0,
        confidence=args.cw_kappa,
        abort_early=True,
    )
    df_cfg = A.DeepFoolConfig(
        steps=args.df_steps, candidates=args.df_candidates, overshoot=args.df_overshoot
    )
    original = np.asarray(jnp.argmax(fn.predict(params, xj, lj), -1))

    def ours(name, jitted, cfg, *a, away):
        t = time.perf_counter()
        compiled = jitted.lower(fn, params, xj, lj, *a, config=cfg).compile()
        compile_s = time.perf_counter() - t
        run_s, res = _common.timed(lambda: compiled(params, xj, lj, *a))
        rows[name] = {
            "time_s": run_s,
            "compile_s": compile_s,
            "max_steps": int(np.max(np.asarray(res.steps))),
            "steps": np.asarray(res.steps).tolist(),
            **summary(fn, params, x, lengths, away, res.adversarial),
        }

    def foolbox(name, attack, warm_attack, away, zero_check):
        crit = fb.criteria.Misclassification(jnp.asarray(away, jnp.int32))
        t = time.perf_counter()
        jax.block_until_ready(warm_attack(fm, xj, crit, epsilons=None))  # compiles f, its grad
        compile_s = time.perf_counter() - t
        fm._model.calls = 0
        run_s, (raw, _, _) = _common.timed(lambda: attack(fm, xj, crit, epsilons=None))
        calls = fm._model.calls
        raw = np.asarray(raw)
        zero = np.all(raw == 0, axis=1) & np.any(x != 0, axis=1) if zero_check else None
        rows[name] = {
            "time_s": run_s,
            "warmup_s": compile_s,
            "forward_calls": calls,
            **summary(fn, params, x, lengths, away, raw, zero),
        }
        if zero is not None:
            rows[name]["zero_rows"] = int(zero.sum())

    order = ["ours", "fb"] if not args.foolbox_first else ["fb", "ours"]
    attacks = args.attacks.split(",")
    for who in order if "cw" in attacks else []:
        if who == "ours":
            ours("cw_ours", _cw_jit, cw_cfg, yj, None, away=labels)
        else:
            warm = fb_cw(A.CWConfig(binary_search_steps=1, max_iterations=1, abort_early=False))
            foolbox("cw_fb", fb_cw(cw_cfg), warm, labels, True)
    for who in order if "df" in attacks else []:
        if who == "ours":
            ours("df_ours", _deepfool_jit, df_cfg, away=original)
        else:
            warm = fb_deepfool(A.DeepFoolConfig(steps=1, candidates=args.df_candidates))
            foolbox("df_fb", fb_deepfool(df_cfg), warm, original, False)
    out = {
        "checkpoint": str(ckpt),
        "model": fn.model,
        "width": fn.model_config.width,
        "fixture": meta.get("benchmark_fixture"),
        "batch": args.batch,
        "samples": int(x.shape[1]),
        "clips": names,
        "cw": {
            "bss": args.cw_bss,
            "steps": args.cw_steps,
            "lr": args.cw_lr,
            "c0": args.cw_c0,
            "kappa": args.cw_kappa,
        },
        "deepfool": {
            "steps": args.df_steps,
            "candidates": args.df_candidates,
            "overshoot": args.df_overshoot,
        },
        "rows": rows,
    }
    for a in attacks:
        o, f = rows[f"{a}_ours"], rows[f"{a}_fb"]
        out[f"{a}_speedup"] = f["time_s"] / o["time_s"]
        out[f"{a}_success_diff"] = o["success"] - f["success"]
        out[f"{a}_median_snr_diff_db"] = o["median_snr_db"] - f["median_snr_db"]
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--part", choices=("iter", "e2e", "both"), default="both")
    g = p.add_argument_group("per iteration (random weights)")
    g.add_argument("--iter-model", default="vgg13")
    g.add_argument("--iter-width", type=float, default=1.0)
    g.add_argument("--iter-batch", type=int, default=8)
    g.add_argument("--iter-samples", type=int, default=64000, help="2 s clips: 1 chunk")
    g.add_argument("--iter-steps", type=int, default=5, help="C&W iterations per timed call")
    g.add_argument("--iter-df-steps", type=int, default=2, help="DeepFool steps per timed call")
    g.add_argument("--unjitted", action="store_true", help="also Foolbox with an eager model")
    g = p.add_argument_group("end to end (trained model, real clips)")
    g.add_argument("--checkpoint", default=None, help="jaxadv checkpoint directory")
    g.add_argument("--batch", type=int, default=16)
    g.add_argument("--foolbox-first", action="store_true", help="run Foolbox before jaxadv")
    g.add_argument("--attacks", default="cw,df", help="cw, df or cw,df")
    g = p.add_argument_group("hyper-parameters (both sides)")
    g.add_argument("--cw-bss", type=int, default=5, help="C&W binary-search steps")
    g.add_argument("--cw-steps", type=int, default=200, help="C&W iterations per step")
    g.add_argument("--cw-lr", type=float, default=1e-3, help="C&W Adam step size")
    g.add_argument("--cw-c0", type=float, default=1e-2, help="C&W initial const")
    g.add_argument("--cw-kappa", type=float, default=0.0, help="C&W confidence")
    g.add_argument("--df-steps", type=int, default=50)
    g.add_argument("--df-candidates", type=int, default=10)
    g.add_argument("--df-overshoot", type=float, default=0.02)
    _common.add_common_args(p)
    args = p.parse_args(argv)
    _common.apply_conv_vjp(args.conv_vjp)
    machine = _common.machine_info()
    results: dict[str, Any] = {}
    if args.part in ("iter", "both"):
        results["per_iteration"] = r = per_iteration(args)
        _common.print_machine(machine)
        print(f"\nper iteration: {r['model']} width {r['width']}, B={r['batch']}, N={r['samples']}")
        names = ["ours_cw", "fb_cw", "fb_cw_unjitted", "ours_df", "fb_df"]
        _common.print_table(
            [
                {"call": k, "ms": r[f"{k}_ms"], "x ref": r[f"{k}_vs_ref"]}
                for k in names
                if f"{k}_ms" in r
            ],
            ["call", "ms", "x ref"],
        )
        print(f"ref {r['ref_ms']:.1f} ms; C&W ours/FB {r['cw_ours_vs_fb']:.3f}; ", end="")
        print(f"DeepFool ours/FB {r['df_ours_vs_fb']:.3f}")
    if args.part in ("e2e", "both"):
        results["end_to_end"] = r = end_to_end(args)
        _common.print_machine(machine)
        print(f"\nend to end: {r['checkpoint']} ({r['model']} width {r['width']}), B={r['batch']}")
        _common.print_table(
            [{"run": k, **v} for k, v in r["rows"].items()],
            [
                "run",
                "time_s",
                "compile_s",
                "warmup_s",
                "max_steps",
                "forward_calls",
                "success",
                "median_snr_db",
                "zero_rows",
            ],
        )
        for a in args.attacks.split(","):
            print(
                f"{a}: speed-up {r[f'{a}_speedup']:.2f}x, success diff "
                f"{r[f'{a}_success_diff']:+.3f}, median SNR diff {r[f'{a}_median_snr_diff_db']:+.2f} dB"
            )
    path = _common.write_record("vs_foolbox", args, machine, results, args.out)
    print(f"appended to {path}")


if __name__ == "__main__":
    main()
