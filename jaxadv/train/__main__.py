"""``python -m jaxadv.train``: train one of the five architectures on an FSDKaggle2018 folder.

A user error (a missing --data folder or CSV, a bad flag value, an --out that holds another run)
is one line on stderr and exit status 2; ``--debug`` shows its traceback (:mod:`jaxadv.cli`).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from jaxadv import cli
from jaxadv import config as C


def main(argv: Sequence[str] | None = None) -> None:
    """The command (``--help``)."""
    cli.main(build_parser(), _run, argv, compile_cache=True)


def build_parser() -> argparse.ArgumentParser:
    """The command's flags."""
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
    p.add_argument("--frontend", default="iqbal", choices=["iqbal", "stft", "cqt"],
                   help="features of the Iqbal models (vgg13, crnn, gcnn): Iqbal's log-mel, a "
                   "linear-frequency STFT or a constant-Q transform")  # fmt: skip
    adv = p.add_argument_group(
        "adversarial training", "PGD (Madry et al. 2018) on the waveform, at an SNR budget"
    )
    adv.add_argument("--adv-snr", type=float, default=None, metavar="DB",
                     help="train on PGD examples whose perturbations are at least DB below the "
                     "signal (radius ||x||*10^(-DB/20)); default: standard training")  # fmt: skip
    adv.add_argument("--adv-steps", type=int, default=5, help="PGD steps per batch")
    adv.add_argument("--adv-norm", default="l2", choices=["l2", "linf"], help="the PGD ball")
    adv.add_argument("--adv-fraction", type=float, default=0.5,
                     help="share of each batch replaced by its adversarial examples")  # fmt: skip
    adv.add_argument("--adv-rel-stepsize", type=float, default=0.5,
                     help="PGD step as a fraction of the radius")  # fmt: skip
    aug = p.add_argument_group(
        "augmentation",
        "random transforms of the (mixed) training waveforms, each applied with probability "
        "--aug-prob; all off by default (jaxadv/train/README.md)",
    )
    aug.add_argument("--aug-prob", type=float, default=0.5, help="probability of each transform")
    aug.add_argument("--aug-gain", type=float, default=0.0, metavar="DB",
                     help="random gain in [-DB, +DB]")  # fmt: skip
    aug.add_argument("--aug-noise-snr", type=_pair, default=None, metavar="LO,HI",
                     help="additive noise at an SNR uniform in [LO, HI] dB")  # fmt: skip
    aug.add_argument("--aug-noise-colours", default="white,pink,brown",
                     help="noise colours drawn from (white, pink, brown)")  # fmt: skip
    aug.add_argument("--aug-eq", type=float, default=0.0, metavar="DB",
                     help="random smooth EQ of at most DB dB")  # fmt: skip
    aug.add_argument("--aug-pitch", type=float, default=0.0, metavar="SEMITONES",
                     help="resampling pitch/speed shift in [-S, +S] semitones")  # fmt: skip
    aug.add_argument("--aug-shift", type=float, default=0.0, metavar="SECONDS",
                     help="random delay of up to this many seconds")  # fmt: skip
    aug.add_argument("--aug-reverb", type=_pair, default=None, metavar="LO,HI",
                     help="reverb with a synthetic room response of RT60 in [LO, HI] s")  # fmt: skip
    warm = p.add_argument_group(
        "warm start", "fine-tune a trained model instead of starting from a fresh initialisation"
    )
    warm.add_argument("--init", default=None, metavar="DIR",
                      help="checkpoint folder (a trained model of the same --model, --width and "
                      "--frontend) whose weights and standardisation start the run")  # fmt: skip
    warm.add_argument("--start-epoch", type=int, default=0, metavar="N",
                      help="with --init: the first epoch to train (the model was trained for N "
                      "epochs); the learning-rate schedule, the data order and the augmentation "
                      "continue from there, up to --epochs")  # fmt: skip
    p.add_argument("--seed", type=int, default=1000)
    p.add_argument("--save-every", type=int, default=200, help="steps between saved states")
    p.add_argument("--no-progress", action="store_true")
    return cli.add_debug_flag(p)


def _pair(text: str) -> tuple[float, float]:
    """``LO,HI`` → two numbers (an argparse type: a bad value is one line)."""
    try:
        lo, hi = (float(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two numbers LO,HI, got {text!r}") from None
    return lo, hi


def _run(args: argparse.Namespace) -> None:
    from jaxadv import datasets as D
    from jaxadv import logs
    from jaxadv.train import TrainConfig, fit, split_train_val
    from jaxadv.train.augment import Augment

    logs.setup()
    root = Path(args.data)
    if not root.is_dir():
        raise cli.UserError(f"--data {root}: no such folder; give an FSDKaggle2018 folder")
    clips = D.read_train(root, csv_name=args.train_csv)  # DatasetError: one line (jaxadv.cli)
    test = D.read_test(root) if (root / C.TEST_CSV).is_file() else []
    try:
        cfg = TrainConfig(
            args.model, width=args.width, epochs=args.epochs, batch_size=args.batch_size,
            learning_rate=args.lr, val_fold=args.val_fold,
            val_fraction=0.0 if args.val_fold is not None else args.val_fraction,
            unverified_weight=args.unverified_weight, seed=args.seed, save_every=args.save_every,
            frontend=args.frontend, adv_snr_db=args.adv_snr, adv_steps=args.adv_steps,
            adv_norm=args.adv_norm, adv_fraction=args.adv_fraction,
            adv_rel_stepsize=args.adv_rel_stepsize,
            augment=Augment(
                prob=args.aug_prob, gain_db=args.aug_gain, noise_snr_db=args.aug_noise_snr,
                noise_colours=tuple(c.strip() for c in args.aug_noise_colours.split(",")
                                    if c.strip()),
                eq_db=args.aug_eq, pitch_semitones=args.aug_pitch, shift_s=args.aug_shift,
                reverb_rt60_s=args.aug_reverb,
            ),
            start_epoch=args.start_epoch,
        )  # fmt: skip
        train, val_clips = split_train_val(
            clips, val_fold=cfg.val_fold, val_fraction=cfg.val_fraction, seed=cfg.seed
        )
    except ValueError as e:  # a flag value out of range, --val-fold without a fold column
        raise cli.UserError(str(e)) from e
    try:
        fit(
            cfg,
            train,
            args.out,
            val_clips=val_clips,
            test_clips=test,
            progress=not args.no_progress,
            init=args.init,
        )
    except cli.UserError:
        raise
    except ValueError as e:  # the training data or --out do not fit (no examples, another run)
        raise cli.UserError(str(e)) from e


if __name__ == "__main__":
    main()
