"""The XLA:CPU input-gradient convolution trap: value_and_grad standalone vs inside a while loop.

For each model, one ``value_and_grad`` w.r.t. the waveform of the summed cross-entropy (log clip
probabilities) is compiled (a) as a standalone jitted call and (b) ``--iters`` times inside one
``lax.fori_loop`` (a sign step keeps the iterations dependent), each with the input-gradient
convolution of ``jaxadv.models._layers.conv`` computed by JAX's own rule (``native``) and by the
flipped-kernel custom VJP (``flipped``). The four programs are compiled ahead of time and timed
interleaved (medians). On XLA:CPU (jaxlib 0.10.2) the native rule's convolution keeps the kernel's
in/out swap in its dimension numbers (``01oi``) and, inside a loop body, misses the Eigen fast path.

Usage::

    PYTHONPATH=. python benchmarks/conv_trap.py --models vgg13 --batch 8 --samples 64000
"""

from __future__ import annotations

import argparse
import re
from typing import Any

import jax
import jax.numpy as jnp

from benchmarks import _common
from jaxadv.attacks import common
from jaxadv.classifier import Classifier
from jaxadv.models import _layers

MODES = ("native", "flipped")
# a convolution whose kernel keeps the in/out swap in its dimension numbers (1-D: 0oi, 2-D: 01oi)
SWAPPED = re.compile(r"dim_labels=\w+_[0-9]+oi->")


def compile_pair(clf: Classifier, params: Any, x, lengths, labels, iters: int) -> dict[str, Any]:
    """Standalone and in-loop value_and_grad, compiled for the current conv VJP mode."""

    def loss(xx, p):
        return jnp.sum(common.cross_entropy(clf(p, xx, lengths), labels, "log_probs"))

    vg = jax.value_and_grad(loss)

    def loop(x0, p):
        def body(i, xx):
            _, g = vg(xx, p)
            return xx - 1e-4 * jnp.sign(g)

        return jax.lax.fori_loop(0, iters, body, x0)

    hlo = jax.jit(loop).lower(x, params).compile()
    return {
        "standalone": jax.jit(vg).lower(x, params).compile(),
        "loop": hlo,
        "swapped_convs_in_loop": len(SWAPPED.findall(hlo.as_text())),
    }


def run_model(name: str, args: argparse.Namespace) -> dict[str, Any]:
    frontend = "iqbal" if name in ("vgg13", "crnn", "gcnn") else None
    clf = Classifier.build(name, width=args.width, frontend=frontend)
    params = clf.init_params(jax.random.key(0))
    b, n, k = args.batch, args.samples, args.iters
    x = jax.random.uniform(jax.random.key(1), (b, n), minval=-0.3, maxval=0.3)
    lengths = jnp.full((b,), n, jnp.int32)
    labels = jnp.zeros((b,), jnp.int32)
    compiled = {}
    swapped = {}
    for mode in MODES:
        _layers.set_conv_vjp(mode)
        c = compile_pair(clf, params, x, lengths, labels, k)
        swapped[mode] = c.pop("swapped_convs_in_loop")
        for kind, exe in c.items():
            compiled[f"{mode}_{kind}"] = exe
    _layers.set_conv_vjp(args.conv_vjp)
    calls = {key: (lambda exe=exe: exe(x, params)) for key, exe in compiled.items()}
    med, times, _ = _common.interleaved(calls, args.repeats)
    per = {key: med[key] / (k if key.endswith("loop") else 1) for key in med}
    return {
        "model": name,
        "width": args.width,
        "batch": b,
        "samples": n,
        "iters": k,
        **{f"{key}_ms": 1e3 * v for key, v in per.items()},
        "native_loop_vs_standalone": per["native_loop"] / per["native_standalone"],
        "flipped_loop_vs_standalone": per["flipped_loop"] / per["flipped_standalone"],
        "loop_speedup": per["native_loop"] / per["flipped_loop"],
        "flipped_loop_vs_native_standalone": per["flipped_loop"] / per["native_standalone"],
        "swapped_convs_native": swapped["native"],
        "swapped_convs_flipped": swapped["flipped"],
        "times_s": times,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="vgg13", help="comma-separated jaxadv.models names")
    p.add_argument("--width", type=float, default=1.0, help="width multiplier")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--samples", type=int, default=64000, help="samples per clip (2 s = 1 chunk)")
    p.add_argument("--iters", type=int, default=5, help="value_and_grads per loop call")
    _common.add_common_args(p)
    args = p.parse_args(argv)
    machine = _common.machine_info()
    rows = [run_model(m, args) for m in args.models.split(",")]
    _common.print_machine(machine)
    _common.print_table(
        rows,
        [
            "model",
            "native_standalone_ms",
            "native_loop_ms",
            "flipped_standalone_ms",
            "flipped_loop_ms",
            "native_loop_vs_standalone",
            "loop_speedup",
            "swapped_convs_native",
            "swapped_convs_flipped",
        ],
    )
    path = _common.write_record("conv_trap", args, machine, rows, args.out)
    print(f"appended to {path}")


if __name__ == "__main__":
    main()
