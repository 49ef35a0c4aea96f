"""``python -m convert MODEL.h5 OUT_DIR``: a Keras model .h5 → a jaxadv checkpoint."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from jaxadv import config as C
from jaxadv import models

EPILOG = """\
examples:
  python -m convert model.40-0.8708.h5 ckpt/vgg13 --mean -41.2 --std 17.3
  python -m convert gcnn.h5 ckpt/gcnn --fit-audio FSDKaggle2018/audio_train
  python -m convert saved_models/32000/mel_0.h5 ckpt/dense_mel
  python -m convert some.h5 --inspect

The architecture is detected from the layer types (or forced with --model) and every layer's
config is checked against the Flax port. Iqbal models (vgg13, crnn, gcnn) need the scalar
standardisation mean/std of their training features, which no .h5 stores. See convert/README.md.
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m convert",
        description="Convert a full Keras model .h5 (Keras 2.2.x, tf-keras 2.x or Keras 3 legacy "
        "h5) of one of the five attacked models into a jaxadv checkpoint (orbax + jaxadv.json).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("h5", type=Path, help="the Keras model file (.h5, saved with model.save)")
    p.add_argument("out", type=Path, nargs="?", help="checkpoint directory to write")
    p.add_argument("--model", choices=sorted(models.MODELS), help="force the architecture")
    p.add_argument("--mean", type=float, help="Iqbal standardisation mean (dB)")
    p.add_argument("--std", type=float, help="Iqbal standardisation std (dB)")
    p.add_argument(
        "--fit-audio",
        type=Path,
        metavar="DIR",
        help="compute --mean/--std from the audio files in DIR (Iqbal's training set) as "
        "keras' ImageDataGenerator.fit does",
    )
    p.add_argument("--labels", type=Path, help="text file with one class name per line")
    p.add_argument(
        "--frontend",
        default="iqbal",
        choices=["iqbal", "iqbal_attack"],
        help="Iqbal models: front-end of the classifier (default: iqbal, as trained)",
    )
    p.add_argument("--merge", default="mean", choices=["mean", "gmean"], help="chunk merge")
    p.add_argument(
        "--cochlear-logits",
        default="probs",
        choices=["probs", "log_probs"],
        help="Cochlear models: what ModelOutput.logits holds (default: probs, as the authors)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT")
    p.add_argument(
        "--inspect", action="store_true", help="only parse and check the file; write nothing"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from convert.core import convert_file, load_keras
    from convert.keras_h5 import ConversionError

    t0 = time.perf_counter()
    try:
        if args.inspect:
            cfg, variables, km, plan = load_keras(args.h5, args.model)
            print(f"{km.path}: keras {km.keras_version} ({km.layout}), sha256 {km.sha256}")
            print(f"model {cfg.name}: {models.config_to_dict(cfg)}")
            print(f"{models.param_count(variables)} values in {len(plan.assigns)} layers")
            return 0
        if args.out is None:
            raise ConversionError("OUT (the checkpoint directory) is required unless --inspect")
        mean, std = args.mean, args.std
        if args.fit_audio is not None:
            if mean is not None or std is not None:
                raise ConversionError("give either --mean/--std or --fit-audio, not both")
            from convert.standardisation import fit_standardisation, load_folder

            mean, std = fit_standardisation(load_folder(args.fit_audio))
            print(f"standardisation from {args.fit_audio}: mean {mean:.6f}, std {std:.6f}")
        labels = None
        if args.labels is not None:
            labels = [s.strip() for s in args.labels.read_text().splitlines() if s.strip()]
        clf, params, meta = convert_file(
            args.h5,
            args.out,
            model=args.model,
            mean=mean,
            std=std,
            labels=labels,
            frontend=args.frontend,
            merge=args.merge,
            cochlear_logits=args.cochlear_logits,
            overwrite=args.overwrite,
        )
    except (ConversionError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    dt = time.perf_counter() - t0
    rate = getattr(clf.model_config, "sample_rate", C.SAMPLE_RATE)
    if rate != C.SAMPLE_RATE:
        print(
            f"warning: this {clf.model} expects {rate} Hz audio; jaxadv feeds {C.SAMPLE_RATE} Hz "
            "(the paper attacked the 32 kHz Cochlear models)",
            file=sys.stderr,
        )
    print(
        f"wrote {args.out}: {clf.model} ({meta['param_count']} values) from {args.h5.name} "
        f"[sha256 {meta['source']['sha256'][:12]}…] in {dt:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
