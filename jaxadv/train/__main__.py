"""``python -m jaxadv.train``: train one of the five architectures on an FSDKaggle2018 folder."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from jaxadv import config as C


def main(argv: Sequence[str] | None = None) -> None:
    from jaxadv.models import MODELS

    p = argparse.ArgumentParser(
        prog="python -m jaxadv.train",
        description="Train VGG13, CRNN, GCNN, dense-mel or dense-wav on FSDKaggle2018 with Iqbal "
        "et al.'s recipe (Adam 5e-4 x0.9 every 2 epochs, batch 128, 40 epochs, class-balanced "
        "mixup). Rerunning the same command resumes from the last saved step.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--model", required=True, choices=sorted(MODELS))
    p.add_argument("--data", required=True, help="FSDKaggle2018 folder (train.csv, audio_train/)")
    p.add_argument("--out", required=True, help="run folder (state, history, model, Table 1)")
    p.add_argument("--width", type=float, default=1.0, help="width multiplier (1.0 = the paper's)")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=5e-4, help="initial learning rate")
    p.add_argument("--train-csv", default=C.TRAIN_CSV, help="training CSV in --data (e.g. "
                   "Iqbal's training.csv with a fold column)")  # fmt: skip
    val = p.add_mutually_exclusive_group()
    val.add_argument("--val-fold", type=int, default=None, help="validate on this fold (needs a "
                     "'fold' column); its clips are left out of training")  # fmt: skip
    val.add_argument("--val-fraction", type=float, default=0.1, help="seeded fraction of clips "
                     "per class held out when there is no fold column; 0 trains on all")  # fmt: skip
    p.add_argument("--unverified-weight", type=float, default=1.0,
                   help="sample weight of clips with manually_verified=0 (Iqbal's --sample_weight)")  # fmt: skip
    p.add_argument("--seed", type=int, default=1000)
    p.add_argument("--save-every", type=int, default=200, help="steps between saved states")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)

    from jaxadv import datasets as D
    from jaxadv import logs
    from jaxadv.train import TrainConfig, fit, split_train_val

    logs.setup()
    root = Path(args.data)
    try:
        clips = D.read_train(root, csv_name=args.train_csv)
    except D.DatasetError as e:
        raise SystemExit(str(e)) from None
    test = D.read_test(root) if (root / C.TEST_CSV).is_file() else []
    cfg = TrainConfig(
        args.model, width=args.width, epochs=args.epochs, batch_size=args.batch_size,
        learning_rate=args.lr, val_fold=args.val_fold,
        val_fraction=0.0 if args.val_fold is not None else args.val_fraction,
        unverified_weight=args.unverified_weight, seed=args.seed, save_every=args.save_every,
    )  # fmt: skip
    train, val_clips = split_train_val(
        clips, val_fold=cfg.val_fold, val_fraction=cfg.val_fraction, seed=cfg.seed
    )
    try:
        fit(
            cfg,
            train,
            args.out,
            val_clips=val_clips,
            test_clips=test,
            progress=not args.no_progress,
        )
    except ValueError as e:
        raise SystemExit(str(e)) from None


if __name__ == "__main__":
    main()
