"""Attack overhead: time per attack iteration / one jitted value_and_grad of the classifier.

For a classifier function and a batch ``[B, N]``, measures (medians over ``--repeats`` rounds
after a warm-up call; the calls are interleaved round by round so that load changes on a shared
machine hit all of them alike; every call is blocked until ready):

* ``ref``: one jitted ``value_and_grad`` (w.r.t. the waveform) of the summed cross-entropy of the
  classifier at the same batch: the unavoidable cost of one forward+backward.
* ``loop``: ``--iters`` of the same ``value_and_grad`` inside one ``lax.while_loop``, per
  iteration: the cost of a forward+backward inside a compiled loop (XLA:CPU runs it slower than
  a standalone call).
* ``cw``: C&W with one binary-search step, no early abort and ``--iters`` iterations (every
  example runs exactly that many): time / iterations. Goal <= 1.0 x ``ref``.
* ``lbfgs``: the JAX L-BFGS, one solve of ``--iters`` iterations with the convergence tests off
  and a large const (it keeps iterating): time / loop iterations (one batched forward+backward
  each, line-search trials included). Goal <= 1.0 x ``ref``.
* ``fwd``: one jitted forward pass (clip probabilities).
* ``deepfool``: DeepFool with overshoot -1 (the point never moves, so every example runs all
  ``--df-steps`` steps): (time - 2 ``fwd``, its initial and final forward) / step, compared with ``ref`` and with ``K`` separate
  forward+backward passes (``K`` = candidates - 1), which is what Foolbox 3 runs per step
  (``benchmarks/vs_foolbox.py`` times Foolbox itself).

The jitted attack cores are timed directly (host-side input validation excluded; it is a few
NumPy checks per call). Classifiers: a paper model (``vgg13`` (default), ``crnn``, ``gcnn``,
``dense_mel``, ``dense_wav``; ``--width``, ``--frontend`` for the Iqbal models, random weights),
``small_cnn`` (jaxadv.toy.SmallCNN, kapre front-end) or ``linear``.

Usage::

    PYTHONPATH=. python benchmarks/overhead.py                  # VGG13, iqbal, B=8, 2 s clips
    PYTHONPATH=. python benchmarks/overhead.py --model small_cnn --batch 16 --samples 32768
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import _common
from jaxadv import attacks as A
from jaxadv import config as C
from jaxadv.attacks import common
from jaxadv.attacks.cw import _cw_jit
from jaxadv.attacks.deepfool import _deepfool_jit
from jaxadv.attacks.lbfgs import _lbfgs_jit
from jaxadv.classifier import LinearClassifier


def _small_cnn(
    n: int, classes: int, width: float, key: jax.Array, frontend: str = ""
) -> tuple[Any, Any]:
    from jaxadv import toy

    model = toy.SmallCNN(num_classes=classes)
    return model, model.init(key, n)


def _linear(
    n: int, classes: int, width: float, key: jax.Array, frontend: str = ""
) -> tuple[Any, Any]:
    w = jax.random.normal(key, (n, classes)) * 0.01
    return LinearClassifier(), {"w": w, "b": jnp.zeros((classes,))}


def _real(name: str) -> Callable[..., tuple[Any, Any]]:
    def build(
        n: int, classes: int, width: float, key: jax.Array, frontend: str = "iqbal"
    ) -> tuple[Any, Any]:
        from jaxadv.classifier import Classifier

        fe = frontend if name in ("vgg13", "crnn", "gcnn") else None
        fn = Classifier.build(name, width=width, num_classes=classes, frontend=fe)
        return fn, fn.init_params(key)

    return build


CLASSIFIERS: dict[str, Callable[..., tuple[Any, Any]]] = {
    "small_cnn": _small_cnn,
    "linear": _linear,
    **{m: _real(m) for m in ("vgg13", "crnn", "gcnn", "dense_mel", "dense_wav")},
}


def run(args: argparse.Namespace) -> dict[str, Any]:
    key = jax.random.key(args.seed)
    fn, params = CLASSIFIERS[args.model](args.samples, args.classes, args.width, key, args.frontend)
    b, n, k, kd = args.batch, args.samples, args.iters, args.df_steps
    x = jax.random.uniform(jax.random.key(1), (b, n), minval=-0.3, maxval=0.3)
    lengths = jnp.full((b,), n, jnp.int32)
    labels = jnp.argmax(fn(params, x, lengths).probs, -1).astype(jnp.int32)
    targets = (labels + 1) % args.classes

    def loss(xx):
        return jnp.sum(common.cross_entropy(fn(params, xx, lengths), labels, "log_probs"))

    value_and_grad = jax.value_and_grad(loss)
    vg = jax.jit(value_and_grad)
    fwd = jax.jit(lambda xx: fn(params, xx, lengths).probs)

    @jax.jit
    def vg_loop(x):  # k value_and_grads inside a while_loop (a sign step keeps them dependent)
        def body(carry):
            i, xx = carry
            _, g = value_and_grad(xx)
            return i + 1, xx - 1e-4 * jnp.sign(g)

        return jax.lax.while_loop(lambda c: c[0] < k, body, (0, x))[1]

    cw_cfg = A.CWConfig(binary_search_steps=1, max_iterations=k, abort_early=False)
    # large const: the solve keeps iterating (no convergence) for all k iterations
    lb_cfg = A.LBFGSConfig(
        binary_search_steps=1, max_iterations=k, pgtol=0.0, factr=0.0, initial_const=1e3
    )
    cand = min(args.candidates, args.classes)
    df_cfg = A.DeepFoolConfig(steps=kd, candidates=cand, overshoot=-1.0)  # x never moves
    calls = {
        "ref": lambda: vg(x),
        "fwd": lambda: fwd(x),
        "loop": lambda: vg_loop(x),
        "cw": lambda: _cw_jit(fn, params, x, lengths, labels, None, config=cw_cfg),
        "lbfgs": lambda: _lbfgs_jit(fn, params, x, lengths, targets, config=lb_cfg),
        "deepfool": lambda: _deepfool_jit(fn, params, x, lengths, config=df_cfg),
    }
    # interleaved rounds after a warm-up (compilation) call of each
    med, times, results = _common.interleaved(calls, args.repeats)
    lb = results["lbfgs"]
    lb_loops = int(np.max(np.asarray(lb.steps))) + 1  # loop iterations + the initial gradient
    per = {
        "ref": med["ref"],
        "loop": med["loop"] / k,
        "cw": med["cw"] / k,
        "lbfgs": med["lbfgs"] / lb_loops,
        # kd steps plus the initial and final forward pass
        "deepfool": (med["deepfool"] - 2 * med["fwd"]) / kd,
    }
    ref = per["ref"]
    return {
        "model": args.model,
        "width": args.width,
        "frontend": args.frontend if args.model in ("vgg13", "crnn", "gcnn") else None,
        "batch": b,
        "samples": n,
        "iters": k,
        "df_steps": kd,
        "ref_value_and_grad_ms": 1e3 * ref,
        "forward_ms": 1e3 * med["fwd"],
        "loop_value_and_grad_ms": 1e3 * per["loop"],
        "cw_ms_per_iter": 1e3 * per["cw"],
        "cw_vs_ref": per["cw"] / ref,
        "cw_vs_loop": per["cw"] / per["loop"],
        "lbfgs_ms_per_eval": 1e3 * per["lbfgs"],
        "lbfgs_vs_ref": per["lbfgs"] / ref,
        "lbfgs_vs_loop": per["lbfgs"] / per["loop"],
        "lbfgs_evals_per_iter": float(np.sum(lb.steps) / max(int(np.sum(lb.iterations)), 1)),
        "deepfool_candidates": cand,
        "deepfool_ms_per_step": 1e3 * per["deepfool"],
        "deepfool_vs_ref": per["deepfool"] / ref,
        "deepfool_vs_separate": per["deepfool"] / ((cand - 1) * ref),
        "times_s": times,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=sorted(CLASSIFIERS), default="vgg13")
    p.add_argument("--frontend", default="iqbal", help="Iqbal models: iqbal or iqbal_attack")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--samples", type=int, default=64000, help="samples per clip (32 kHz)")
    p.add_argument("--classes", type=int, default=C.NUM_CLASSES)
    p.add_argument("--width", type=float, default=1.0, help="width multiplier of a real model")
    p.add_argument("--iters", type=int, default=10, help="C&W / L-BFGS iterations per call")
    p.add_argument("--df-steps", type=int, default=3, help="DeepFool steps per timed call")
    p.add_argument("--candidates", type=int, default=10, help="DeepFool candidates")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    _common.add_common_args(p)
    args = p.parse_args(argv)
    _common.apply_conv_vjp(args.conv_vjp)
    machine = _common.machine_info()
    out = run(args)
    path = _common.write_record("overhead", args, machine, out, args.out)
    if args.json:
        print(json.dumps({"machine": machine, **out}))
        return
    _common.print_machine(machine)
    for key, value in out.items():
        if key == "times_s":
            continue
        print(f"{key:28s} {value:.3f}" if isinstance(value, float) else f"{key:28s} {value}")
    print(f"appended to {path}")


if __name__ == "__main__":
    main()
