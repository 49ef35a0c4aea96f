"""What surviving a codec costs: FMN through the codec (BPDA) against plain FMN, in SNR.

On the demo VGG13 and ``--clips`` correctly classified demo clips, FMN L2 attacks the model
as it is (``plain``), the model hearing its input through 16-bit PCM (``through pcm16``: the
quantisation in JAX with a straight-through gradient, so the attack keeps going until the
*quantised* waveform is adversarial), through MP3 at 128 kbps (host codec, BPDA) and through
both MP3 128 and Opus at ~110 kbps at once (EOT). Each result is then saved for real
(:func:`jaxadv.codecs.roundtrip`) through every codec of ``--check`` and given to the plain
model: the table gives, per attack variant and codec, the share still adversarial, the median
SNR of the attack (before the codec) over those, and the median SNR of what the saved file
really carries (saved adversarial − clean; for the lossy codecs it includes the codec's own
distortion, about 26–30 dB).

    PYTHONPATH=. python benchmarks/codec_aware.py                 # 8 clips, about 10 minutes
    PYTHONPATH=. python benchmarks/codec_aware.py --clips 4 --steps 50
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as B  # noqa: E402
import numpy as np  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clips", type=int, default=8)
    p.add_argument("--steps", type=int, default=100, help="FMN steps")
    p.add_argument("--search-steps", type=int, default=200, help="FMN's uncounted search")
    p.add_argument("--check", default="pcm16,mp3-128,opus-l0.6,vorbis-l0.4")
    p.add_argument("--out", default=None)
    args = p.parse_args()

    import jax.numpy as jnp

    from jaxadv import attacks as A
    from jaxadv import codecs as K
    from jaxadv import datasets as D
    from jaxadv import demo
    from jaxadv.checkpoint import load_checkpoint
    from jaxadv.experiments.clips import load_waves, select_clips

    machine = B.machine_info()
    B.print_machine(machine)
    clf, params, _ = load_checkpoint(demo.models_dir() / "vgg13")
    clips = select_clips(None, "auto", 1, 0)
    waves = load_waves(clips, "demo", [])
    batch = D.pad_batch([waves[c.fname] for c in clips], clips)
    pred = np.asarray(clf(params, jnp.asarray(batch.x), jnp.asarray(batch.lengths)).probs)
    ok = np.flatnonzero(pred.argmax(-1) == batch.label_indices)[: args.clips]
    x, lens, labels = (jnp.asarray(a[ok]) for a in (batch.x, batch.lengths, batch.label_indices))
    cfg = A.FMNConfig(steps=args.steps, search_steps=args.search_steps)
    variants = {
        "plain": clf,
        "through pcm16": K.through(clf, "pcm16"),
        "through mp3-128": K.through(clf, "mp3-128"),
        "EOT mp3-128 + opus-l0.6": K.through(clf, "mp3-128", "opus-l0.6"),
    }
    checks = ["none", *args.check.split(",")]
    rows, results = [], {}
    for name, fn in variants.items():
        t0 = time.perf_counter()
        res = A.fmn(fn, params, x, lens, labels, config=cfg)
        adv = np.asarray(res.adversarial)
        secs = time.perf_counter() - t0
        snr = np.asarray(A.evaluate(clf, params, x, lens, labels, res).snr_db)
        own = float(np.asarray(res.success).mean())  # success on the classifier it attacked
        xs = np.asarray(x)
        for c in checks:
            heard = adv if c == "none" else K.roundtrip(adv, np.asarray(lens), c)
            out = clf(params, jnp.asarray(heard), lens)
            still = np.asarray(out.probs).argmax(-1) != np.asarray(labels)
            med = float(np.median(snr[still])) if still.any() else float("nan")
            # the perturbation the file really carries: saved adversarial - clean
            got = 10 * np.log10(np.sum(xs**2, -1) / np.maximum(np.sum((heard - xs) ** 2, -1),
                                                               1e-30))  # fmt: skip
            dmed = float(np.median(got[still])) if still.any() else float("nan")
            rows.append({"attack": f"FMN {name}", "own success %": round(100 * own, 1),
                         "saved as": c, "still adversarial %": round(100 * still.mean(), 1),
                         "median SNR (dB)": round(med, 1), "delivered SNR (dB)": round(dmed, 1),
                         "attack s": round(secs, 1)})  # fmt: skip
            results[f"{name}|{c}"] = {"own_success": own, "share": float(still.mean()),
                                      "median_snr_db": med, "delivered_snr_db": dmed,
                                      "seconds": secs}  # fmt: skip
    B.print_table(rows, ["attack", "own success %", "saved as", "still adversarial %",
                         "median SNR (dB)", "delivered SNR (dB)", "attack s"])  # fmt: skip
    print("record:", B.write_record("codec_aware", args, machine, results, args.out))


if __name__ == "__main__":
    main()
