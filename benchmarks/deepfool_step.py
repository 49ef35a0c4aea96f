"""Where a DeepFool step's time goes: the engine's step against its parts and a bare step.

A step of DeepFool (``K`` candidates) is one forward pass and ``K - 1`` pullbacks of score
differences, then a little arithmetic on ``[B, N]`` arrays. This script times, on one model and
batch, in the same run (interleaved, medians, compilation excluded):

* ``engine``: ``jaxadv``'s DeepFool as it runs (the engine's loop, compaction ``lax.switch``,
  per-chunk cotangents, the ``[K, Q, B, N]`` gradient tensor kept for the direction);
* ``engine, no compaction``: the same with ``compact_levels=0`` (no ``lax.switch`` branches);
* ``engine, vmap``: the pullbacks in one ``vmap`` (``pullbacks="vmap"``; the engine default on CPU
  is ``"map"``, one at a time);
* ``engine, vjp_batch=k``: pullbacks in a ``lax.map`` of ``k`` cotangents (norms only, one more
  pullback for the direction);
* ``bare``: a hand-written loop of the same algorithm (clip-level log-probabilities, one
  ``jax.vjp`` and ``jax.vmap`` of its pullback, minimum distance, L2 step), nothing else;
* ``vjp core``: one forward and the ``K - 1`` vmapped pullbacks alone, in a ``fori_loop``.

The per-step time is the difference between a call of ``--steps2`` and one of ``--steps1`` steps
(overshoot -1: the point never moves, every row runs every step), divided by the step
difference, so initialisation and the final check cancel. Reported also relative to one jitted
``value_and_grad`` of the summed cross-entropy (``ref``).

    PYTHONPATH=. python benchmarks/deepfool_step.py                 # full-size VGG13, B=8, 2 s
    PYTHONPATH=. python benchmarks/deepfool_step.py --width 0.125   # the demo's width
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as B  # noqa: E402

from jaxadv import attacks as A  # noqa: E402
from jaxadv.attacks import common  # noqa: E402
from jaxadv.attacks.deepfool import _deepfool_jit  # noqa: E402
from jaxadv.classifier import Classifier  # noqa: E402


def bare_deepfool(fn, params, x, lengths, steps: int, k: int, map_batch: int = 0):
    """The minimal DeepFool loop (L2, clip log-probs, top-``k``, overshoot -1: no move).

    ``map_batch``: 0 = one ``vmap`` of the pullback over the ``k - 1`` cotangents; else a
    ``lax.map`` over batches of that many (the gradients kept either way).
    """

    def scores(xx):
        return jnp.log(fn(params, xx, lengths).probs + 1e-30)

    p0 = fn(params, x, lengths).probs
    orig = jnp.argmax(p0, -1)
    cand = jnp.argsort(-p0, -1)[:, 1:k]  # [B, K-1]
    c = p0.shape[-1]
    cts = jax.nn.one_hot(cand, c) - jax.nn.one_hot(orig, c)[:, None]  # [B, K-1, C]
    cts = jnp.swapaxes(cts, 0, 1)  # [K-1, B, C]

    def body(_, xc):
        s, pull = jax.vjp(scores, xc)
        if map_batch:
            g = jax.lax.map(lambda ct: pull(ct)[0], cts, batch_size=map_batch)
        else:
            g = jax.vmap(lambda ct: pull(ct)[0])(cts)  # [K-1, B, N]
        f = jnp.take_along_axis(s, cand, -1) - jnp.take_along_axis(s, orig[:, None], -1)
        gn = jnp.sqrt(jnp.sum(g * g, -1)).T  # [B, K-1]
        d = jnp.abs(f) / (gn + 1e-8)
        best = jnp.argmin(d, 1)
        w = jnp.take_along_axis(g, best[None, :, None], 0)[0]
        db = jnp.take_along_axis(d, best[:, None], 1)
        r = (db + 1e-4) * w / (jnp.sqrt(jnp.sum(w * w, -1, keepdims=True)) + 1e-8)
        return jnp.clip(x + 0.0 * r, -1, 1)  # overshoot -1: x0 + 0 * p_total

    return jax.lax.fori_loop(0, steps, body, x)


def vjp_core(fn, params, x, lengths, steps: int, k: int):
    """Only the forward and ``k - 1`` vmapped pullbacks, ``steps`` times."""
    c = fn(params, x[:1], lengths[:1]).probs.shape[-1]
    cts = jnp.broadcast_to(jnp.eye(c)[1:k, None, :], (k - 1, x.shape[0], c))

    def body(_, acc):
        s, pull = jax.vjp(lambda xx: jnp.log(fn(params, xx, lengths).probs + 1e-30), x + acc)
        g = jax.vmap(lambda ct: pull(ct)[0])(cts)
        return acc + 0.0 * jnp.sum(g, 0)

    return jax.lax.fori_loop(0, steps, body, jnp.zeros_like(x))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="vgg13")
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--samples", type=int, default=64000, help="2 s clips: one chunk")
    p.add_argument("--candidates", type=int, default=10)
    p.add_argument("--steps1", type=int, default=1)
    p.add_argument("--steps2", type=int, default=3)
    p.add_argument("--vjp-batch", type=int, default=3)
    p.add_argument("--map-batch", type=int, nargs="*", default=[1, 3], help="bare lax.map sizes")
    p.add_argument("--only-bare", action="store_true", help="skip the engine variants")
    B.add_common_args(p)
    args = p.parse_args(argv)
    B.apply_conv_vjp(args.conv_vjp)
    info = B.machine_info()
    fe = "iqbal" if args.model in ("vgg13", "crnn", "gcnn") else None
    fn = Classifier.build(args.model, width=args.width, frontend=fe)
    params = fn.init_params(jax.random.key(0))
    b, n, k = args.batch, args.samples, args.candidates
    x = jax.random.uniform(jax.random.key(1), (b, n), minval=-0.3, maxval=0.3)
    lengths = jnp.full((b,), n, jnp.int32)
    labels = jnp.argmax(fn(params, x, lengths).probs, -1).astype(jnp.int32)

    def loss(xx):
        return jnp.sum(common.cross_entropy(fn(params, xx, lengths), labels, "log_probs"))

    vg = jax.jit(jax.value_and_grad(loss))
    base = A.DeepFoolConfig(candidates=k, overshoot=-1.0)
    variants = {
        "engine": base,
        "engine, no compaction": dataclasses.replace(base, compact_levels=0),
        "engine, vmap": dataclasses.replace(base, pullbacks="vmap"),
        f"engine, vjp_batch={args.vjp_batch}": dataclasses.replace(base, vjp_batch=args.vjp_batch),
    }
    bare = jax.jit(bare_deepfool, static_argnames=("fn", "steps", "k", "map_batch"))
    core = jax.jit(vjp_core, static_argnames=("fn", "steps", "k"))
    calls = {"ref": lambda: vg(x)}
    if args.only_bare:
        variants = {}
    for name, cfg in variants.items():
        for s in (args.steps1, args.steps2):
            c = dataclasses.replace(cfg, steps=s)
            calls[f"{name}@{s}"] = lambda c=c: _deepfool_jit(fn, params, x, lengths, config=c)
    for s in (args.steps1, args.steps2):
        calls[f"bare@{s}"] = lambda s=s: bare(fn, params, x, lengths, steps=s, k=k)
        for mb in args.map_batch:
            calls[f"bare, lax.map {mb}@{s}"] = lambda s=s, mb=mb: bare(
                fn, params, x, lengths, steps=s, k=k, map_batch=mb
            )
        calls[f"vjp core@{s}"] = lambda s=s: core(fn, params, x, lengths, steps=s, k=k)
    med, times, _ = B.interleaved(calls, args.repeats)
    ref = med["ref"]
    ds = args.steps2 - args.steps1
    names = list(variants) + ["bare"] + [f"bare, lax.map {mb}" for mb in args.map_batch]
    names.append("vjp core")
    per = {nm: (med[f"{nm}@{args.steps2}"] - med[f"{nm}@{args.steps1}"]) / ds for nm in names}
    B.print_machine(info)
    print(f"# {args.model} width {args.width}, B={b}, N={n}, K={k}; ref {1e3 * ref:.0f} ms\n")
    rows = [
        {
            "variant": nm,
            "ms per step": 1e3 * per[nm],
            "x ref": per[nm] / ref,
            "x bare": per[nm] / per["bare"],
        }
        for nm in names
    ]
    B.print_table(rows, ["variant", "ms per step", "x ref", "x bare"])
    results = {"ref_ms": 1e3 * ref, "rows": rows, "times_s": times}
    print("\nrecord:", B.write_record("deepfool_step", args, info, results, args.out))


if __name__ == "__main__":
    main()
