"""``jaxadv-convert MODEL.h5 OUT_DIR`` (or ``python -m jaxadv.convert``): a Keras model .h5 → a
jaxadv checkpoint; ``jaxadv-convert MODEL.onnx OUT_DIR --labels L --sample-rate SR``: a user's
ONNX classifier → an ONNX checkpoint (imported into JAX when loaded, :mod:`jaxadv.onnx_import`).

Runs through :func:`jaxadv.cli.main`, like every jaxadv command: an expected failure (a missing
or damaged file, a malformed ``model_config``, an unsupported layer, a non-empty OUT without
``--overwrite``, ...; a :class:`~jaxadv.convert.ConversionError` or another
:class:`~jaxadv.cli.UserError`) is printed as one line on stderr, ``PROG: error: MESSAGE``, naming
the file and what to do, and exits with status 2; ``--debug`` re-raises it with its traceback.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from jaxadv import cli, models
from jaxadv import config as C

EPILOG = """\
examples:
  {prog} model.40-0.8708.h5 ckpt/vgg13 --mean -41.2 --std 17.3
  {prog} gcnn.h5 ckpt/gcnn --fit-audio FSDKaggle2018/audio_train
  {prog} saved_models/32000/mel_0.h5 ckpt/dense_mel
  {prog} some.h5 --inspect
  {prog} mine.onnx ckpt/mine --labels labels.txt --sample-rate 16000 --chunking 16000,8000
  {prog} mine.onnx --inspect

An ONNX model must take one input, a waveform batch [B, n] at --sample-rate, and return [B, C]
scores (--outputs); it is imported into JAX (parity with onnxruntime is checked when installed)
and the experiment commands take it as --models NAME --checkpoint NAME=OUT_DIR.

The architecture is detected from the layer types (or forced with --model) and every layer's
config is checked against the Flax port. Iqbal models (vgg13, crnn, gcnn) need the scalar
standardisation mean/std of their training features, which no .h5 stores. Errors are one line on
stderr with exit status 2 (--debug shows the traceback). See jaxadv/convert/README.md.
"""


def build_parser(prog: str = "jaxadv-convert") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Convert a full Keras model .h5 (Keras 2.2.x, tf-keras 2.x or Keras 3 legacy "
        "h5) of one of the five attacked models into a jaxadv checkpoint (orbax + jaxadv.json).",
        epilog=EPILOG.format(prog=prog),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "h5", type=Path, help="the Keras model file (.h5, saved with model.save) or an .onnx file"
    )
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
    p.add_argument("--sample-rate", type=int, help="ONNX models: the rate of their input (Hz)")
    p.add_argument(
        "--chunking",
        metavar="WINDOW,HOP",
        help="ONNX models: classify windows of WINDOW samples every HOP and merge them",
    )
    p.add_argument(
        "--outputs",
        default="logits",
        choices=["logits", "probs", "log_probs"],
        help="ONNX models: what the output holds",
    )
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT")
    p.add_argument(
        "--inspect", action="store_true", help="only parse and check the file; write nothing"
    )
    return cli.add_debug_flag(p)


def main(argv: list[str] | None = None, prog: str = "jaxadv-convert") -> int:
    """Run the converter; returns 0, or exits with status 2 after a one-line error on stderr."""
    return cli.main(build_parser(prog), _run, argv)


def _run(args: argparse.Namespace) -> int:
    from jaxadv.convert.core import convert_file, load_keras
    from jaxadv.convert.keras_h5 import ConversionError

    t0 = time.perf_counter()
    if args.h5.suffix.lower() == ".onnx":
        return _run_onnx(args, t0)
    if args.inspect:
        cfg, variables, km, plan = load_keras(args.h5, args.model)
        print(f"{km.path}: keras {km.keras_version} ({km.layout}), sha256 {km.sha256}")
        print(f"model {cfg.name}: {models.config_to_dict(cfg)}")
        print(f"{models.param_count(variables)} values in {len(plan.assigns)} layers")
        return 0
    if args.out is None:
        raise ConversionError(
            "OUT (the checkpoint directory) is required unless --inspect: "
            f"{args.h5} OUT_DIR [options]"
        )
    # Checked before any work (--fit-audio can take minutes), with the command line's wording.
    if args.out.exists() and not args.overwrite:
        if not args.out.is_dir():
            raise ConversionError(f"{args.out} exists and is not a directory: choose another OUT")
        if any(args.out.iterdir()):
            raise ConversionError(
                f"{args.out} is not empty: pass --overwrite to replace it, or choose another OUT"
            )
    mean, std = args.mean, args.std
    if args.fit_audio is not None:
        if mean is not None or std is not None:
            raise ConversionError("give either --mean/--std or --fit-audio, not both")
        from jaxadv.convert.standardisation import fit_standardisation, load_folder

        mean, std = fit_standardisation(load_folder(args.fit_audio))
        print(f"standardisation from {args.fit_audio}: mean {mean:.6f}, std {std:.6f}")
    labels = None
    if args.labels is not None:
        labels = _read_labels(args.labels)
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


def _run_onnx(args: argparse.Namespace, t0: float) -> int:
    """An ONNX classifier: import it, check it against onnxruntime, write the checkpoint."""
    import importlib.util

    import numpy as np

    from jaxadv.checkpoint import save_onnx_checkpoint
    from jaxadv.convert.keras_h5 import ConversionError
    from jaxadv.onnx_import import from_onnx

    if not args.h5.is_file():
        raise ConversionError(f"{args.h5}: no such file")
    fn, params = from_onnx(args.h5)
    ops = ", ".join(f"{k} x{v}" for k, v in sorted(fn.ops.items()))
    print(f"{args.h5}: opset {fn.opset}, inputs {list(fn.input_names)}, outputs "
          f"{list(fn.output_names)}, {sum(np.size(p) for p in params.values())} parameters; "
          f"{ops}")  # fmt: skip
    chunking = None
    if args.chunking:
        try:
            w, h = (int(v) for v in args.chunking.split(","))
        except ValueError:
            raise ConversionError(
                f"--chunking {args.chunking!r}: expected WINDOW,HOP in samples, e.g. 16000,8000"
            ) from None
        chunking = (w, h)
    if args.sample_rate is not None and len(fn.input_names) == 1:
        n = chunking[0] if chunking else args.sample_rate
        x = np.random.default_rng(0).uniform(-0.5, 0.5, (2, n)).astype(np.float32)
        got = np.asarray(fn(params, x))
        if importlib.util.find_spec("onnxruntime") is not None:
            import onnxruntime as ort

            sess = ort.InferenceSession(str(args.h5), providers=["CPUExecutionProvider"])
            want = sess.run(None, {fn.input_names[0]: x})[0]
            print(f"parity with onnxruntime {ort.__version__} on [2, {n}] random samples: max "
                  f"abs difference {float(np.max(np.abs(got - want))):.2e}")  # fmt: skip
    if args.inspect:
        return 0
    if args.out is None or args.labels is None or args.sample_rate is None:
        raise ConversionError(
            f"an ONNX checkpoint needs OUT, --labels and --sample-rate: {args.h5} OUT_DIR "
            "--labels labels.txt --sample-rate 16000 [--chunking WINDOW,HOP] (or --inspect)"
        )
    if args.out.exists() and any(args.out.iterdir()) and not args.overwrite:
        raise ConversionError(
            f"{args.out} is not empty: pass --overwrite to replace it, or choose another OUT"
        )
    meta = save_onnx_checkpoint(
        args.out, args.h5, labels=_read_labels(args.labels), sample_rate=args.sample_rate,
        outputs=args.outputs, chunking=chunking, merge=args.merge, overwrite=args.overwrite,
    )  # fmt: skip
    print(f"wrote {args.out}: ONNX classifier ({len(meta['labels'])} labels, "
          f"{meta['sample_rate']} Hz) from {args.h5.name} in {time.perf_counter() - t0:.1f} s")  # fmt: skip
    return 0


def _read_labels(path: Path) -> list[str]:
    from jaxadv.convert.keras_h5 import ConversionError

    try:
        text = path.read_text(encoding="utf8")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise ConversionError(
            f"{path}: cannot read the --labels file ({reason}); give a UTF-8 text file with one "
            "class name per line"
        ) from e
    labels = [s.strip() for s in text.splitlines() if s.strip()]
    if not labels:
        raise ConversionError(f"{path}: the --labels file has no class names (one per line)")
    return labels


if __name__ == "__main__":
    sys.exit(main(prog="python -m jaxadv.convert"))
