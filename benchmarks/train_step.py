"""Cost of one training step of the full-size models (``jaxadv.train.train_step``), per example.

For each model: the jitted mixup step (forward in training mode, cross-entropy, backward, Adam
update, donated state) on a random batch of ``--batch`` examples of the model's input (Iqbal:
128 x 64 log-mel chunks; Cochlear: 65536-sample waveform segments), compiled first, then
``--repeats`` timed steps (median). Reported: seconds per step, milliseconds per example, and the
implied time of one epoch of FSDKaggle2018 at Iqbal's batch 128 (``--examples`` training chunks,
default 36 000: ~9 500 clips of 18 h, one 128-frame chunk per 2.05 s).

Usage::

    PYTHONPATH=. python benchmarks/train_step.py --models vgg13,dense_mel --batch 16
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import _common
from jaxadv import config as C
from jaxadv.classifier import Classifier
from jaxadv.train import TrainConfig
from jaxadv.train._loop import make_optimizer, train_step


def run_model(name: str, args: argparse.Namespace) -> dict[str, Any]:
    clf = Classifier.build(name, width=args.width)
    cfg = TrainConfig(name, width=args.width, batch_size=args.batch)
    opt = make_optimizer(cfg, steps_per_epoch=100)
    params = clf.init_params(jax.random.key(0), mean=0.0, std=1.0)
    norm = params.get("norm", {"mean": jnp.float32(0), "std": jnp.float32(1)})
    rng = np.random.default_rng(0)
    b = args.batch
    if clf.family == "iqbal":
        shape, n = (b, C.CHUNK_FRAMES, C.N_MELS), C.CHUNK_FRAMES
    else:
        shape, n = (b, C.AUTHORS_BLOCK), C.AUTHORS_BLOCK
    x1 = rng.standard_normal(shape).astype(np.float32) * 0.1
    x2 = rng.standard_normal(shape).astype(np.float32) * 0.1
    lens = np.full((b,), n, np.int32)
    y1 = rng.integers(0, C.NUM_CLASSES, b).astype(np.int32)
    y2 = rng.integers(0, C.NUM_CLASSES, b).astype(np.int32)
    w = np.ones((b,), np.float32)
    lam = rng.beta(1.0, 1.0, b).astype(np.float32)
    state = {
        "params": params["model"]["params"],
        "batch_stats": params["model"]["batch_stats"],
        "opt_state": opt.init(params["model"]["params"]),
        "step": jnp.zeros((), jnp.int32),
    }
    times = []
    for i in range(args.repeats + 1):  # the first call compiles
        t, (state, _) = _common.timed(
            lambda state=state: train_step(
                clf, opt, state, norm, x1, x2, lens, lens, y1, y2, w, w, lam
            )
        )
        if i:
            times.append(t)
    step_s = statistics.median(times)
    per_ex = step_s / b
    return {
        "model": name,
        "width": args.width,
        "batch": b,
        "s_per_step": step_s,
        "ms_per_example": 1e3 * per_ex,
        "epoch_min_fsdkaggle": per_ex * args.examples / 60,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="vgg13,crnn,gcnn,dense_mel,dense_wav")
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--examples", type=int, default=36000, help="training chunks per epoch")
    _common.add_common_args(p)
    args = p.parse_args(argv)
    _common.apply_conv_vjp(args.conv_vjp)
    machine = _common.machine_info()
    _common.print_machine(machine)
    rows = [run_model(m.strip(), args) for m in args.models.split(",") if m.strip()]
    cols = ["model", "width", "batch", "s_per_step", "ms_per_example", "epoch_min_fsdkaggle"]
    _common.print_table(rows, cols)
    print(f"record appended to {_common.write_record('train_step', args, machine, rows, args.out)}")


if __name__ == "__main__":
    main()
