"""Benchmark fixture: a quickly trained, reduced-width VGG13 for the end-to-end attack benchmarks.

NOT one of the demo models (those are trained elsewhere and land under ``jaxadv/demo/models``):
this is a stand-in so that ``vs_foolbox.py`` and ``lbfgs_vs_scipy.py`` attack a model that
actually classifies real clips. Recipe: Iqbal log-mel chunks (``iqbal`` front-end, 128 x 64) of
the rendered demo training clips (FSDKaggle2018 layout: ``train.csv`` + ``audio_train/``),
standardised with the training set's mean and std (Iqbal's scalars), VGG13 at ``--width`` with
41 outputs, Adam on the chunk cross-entropy (each chunk carries its clip's label), batch norm in
training mode, for ``--minutes`` of wall time or ``--epochs``; the clip-level accuracy on the
embedded demo eval clips is printed and stored in the checkpoint's sidecar. Saved with
``jaxadv.checkpoint.save_checkpoint`` (default ``benchmarks/.fixtures/vgg13_w<width>``, ignored by
git).

Usage::

    PYTHONPATH=. python benchmarks/fixture_model.py --data /work/data/demo_train --minutes 6
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxadv import config as C
from jaxadv import datasets, demo
from jaxadv.checkpoint import save_checkpoint
from jaxadv.classifier import Classifier
from jaxadv.frontend import standardise

FIXTURES = Path(__file__).resolve().parent / ".fixtures"


def default_dir(width: float) -> Path:
    return FIXTURES / f"vgg13_w{width:g}"


def chunk_features(clf: Classifier, clips: list[datasets.Clip], batch: int = 32):
    """Un-standardised log-mel chunks ``[M, 128, 64]`` and their labels ``[M]`` (valid chunks)."""
    fe = jax.jit(lambda x, n: clf.frontend(x, n))
    feats, labels = [], []
    for b in datasets.iter_batches(clips, batch):
        out = fe(jnp.asarray(b.x), jnp.asarray(b.lengths))
        chunks, mask = np.asarray(out.chunks), np.asarray(out.mask)
        rows, cols = np.nonzero(mask)
        feats.append(chunks[rows, cols])
        labels.append(b.label_indices[rows])
    return np.concatenate(feats), np.concatenate(labels).astype(np.int32)


def clip_accuracy(clf: Classifier, params: Any, clips: list[datasets.Clip], batch: int = 32):
    """Clip-level accuracy (argmax of the merged chunk probabilities) and the predictions."""
    correct, preds = [], {}
    for b in datasets.iter_batches(clips, batch):
        p = np.asarray(clf.predict(params, jnp.asarray(b.x), jnp.asarray(b.lengths)))
        for c, row in zip(b.clips, p, strict=True):
            preds[c.fname] = int(np.argmax(row))
            correct.append(preds[c.fname] == c.label_index)
    return float(np.mean(correct)), preds


def train(args: argparse.Namespace) -> dict[str, Any]:
    clf = Classifier.build("vgg13", width=args.width, frontend="iqbal")
    clips = datasets.read_train(args.data)
    t0 = time.perf_counter()
    x, y = chunk_features(clf, clips)
    mean, std = float(x.mean()), float(x.std())
    print(f"{len(clips)} clips -> {len(y)} chunks in {time.perf_counter() - t0:.0f} s")
    params = clf.init_params(jax.random.key(args.seed), mean=mean, std=std)
    module = clf.module()
    opt = optax.adam(args.lr)
    opt_state = opt.init(params["model"]["params"])

    @jax.jit
    def step(variables, opt_state, xb, yb):
        z = standardise(xb, mean, std)[..., None]

        def loss_fn(p):
            logits, upd = module.apply(
                {"params": p, "batch_stats": variables["batch_stats"]},
                z,
                train=True,
                mutable=["batch_stats"],
            )
            ce = optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()
            return ce, (upd["batch_stats"], jnp.mean(jnp.argmax(logits, -1) == yb))

        (loss, (stats, acc)), g = jax.value_and_grad(loss_fn, has_aux=True)(variables["params"])
        updates, opt_state = opt.update(g, opt_state)
        p = optax.apply_updates(variables["params"], updates)
        return {"params": p, "batch_stats": stats}, opt_state, loss, acc

    rng = np.random.default_rng(args.seed)
    variables = params["model"]
    deadline = time.perf_counter() + 60 * args.minutes
    epoch = 0
    while epoch < args.epochs and time.perf_counter() < deadline:
        order = rng.permutation(len(y))
        losses, accs = [], []
        for i in range(0, len(order) - args.batch + 1, args.batch):
            idx = order[i : i + args.batch]
            variables, opt_state, loss, acc = step(
                variables, opt_state, jnp.asarray(x[idx]), jnp.asarray(y[idx])
            )
            losses.append(float(loss))
            accs.append(float(acc))
            if time.perf_counter() > deadline:
                break
        epoch += 1
        print(f"epoch {epoch}: loss {np.mean(losses):.3f}, chunk accuracy {np.mean(accs):.3f}")
    params = {**params, "model": variables}
    eval_clips = demo.eval_clips()
    acc, _ = clip_accuracy(clf, params, eval_clips)
    print(f"demo eval clips ({len(eval_clips)}): clip accuracy {acc:.3f}")
    info = {
        "fixture": "benchmarks/fixture_model.py (benchmark stand-in, not a demo model)",
        "train_data": str(args.data),
        "train_clips": len(clips),
        "train_chunks": int(len(y)),
        "epochs": epoch,
        "width": args.width,
        "lr": args.lr,
        "batch": args.batch,
        "seed": args.seed,
        "train_seconds": round(time.perf_counter() - t0),
        "demo_eval_accuracy": acc,
    }
    out = Path(args.out) if args.out else default_dir(args.width)
    save_checkpoint(out, clf, params, extra={"benchmark_fixture": info}, overwrite=True)
    print(f"saved {out}")
    return info


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="/work/data/demo_train", help="FSDKaggle2018-layout folder")
    p.add_argument("--out", default=None, help="checkpoint directory (default .fixtures/...)")
    p.add_argument("--width", type=float, default=0.25, help="VGG13 width multiplier")
    p.add_argument("--minutes", type=float, default=6.0, help="training wall-time budget")
    p.add_argument("--epochs", type=int, default=100, help="at most this many epochs")
    p.add_argument("--batch", type=int, default=32, help="chunks per step")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if len(C.LABELS) != C.NUM_CLASSES:
        raise SystemExit("config.LABELS and NUM_CLASSES disagree")
    train(args)


if __name__ == "__main__":
    main()
