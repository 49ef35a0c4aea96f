"""Beyond the paper: do adversarial examples survive real audio formats?

``python -m jaxadv.experiments.compression`` takes the successful adversarial examples of an
untargeted or targeted run (``--from-untargeted DIR`` / ``--from-targeted DIR``, only read; or it
runs the untargeted attacks itself first), sends each one and its clean clip through every codec
of :data:`jaxadv.codecs.CODECS` (16/24-bit PCM; MP3, Vorbis and Opus from their highest rate to
about 32 kbps) and asks the model again. Writes in its run folder: ``compression.csv`` (one row
per model × attack × example × codec, plus a ``clean`` row per correctly classified clip and
codec), ``compression_survival`` (per model, attack and codec: the share of successful examples
still adversarial after the round trip, also among the clips whose clean version the codec alone
does not flip, and the SNR delivered), ``compression_clean`` (clean accuracy after each codec),
``compression_summary`` (survival % per attack × codec over all models) as Markdown and CSV,
``figure_compression.png`` (survival against the measured bit-rate, a line per attack and format,
a panel per model), ``report.html`` and ``config.json``. Resumable like the other commands.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxadv import cli
from jaxadv import codecs as K
from jaxadv import config as C
from jaxadv.experiments import arrays, flags, models, results, runner, tables, transfer
from jaxadv.experiments.untargeted import untargeted_jobs

SCHEMA = results.Schema(
    columns=(
        "model",
        "attack",  # the attack of the example, or "clean" for the clean clip alone
        "fname",
        "target",  # "" when untargeted
        "codec",  # a jaxadv.codecs.CODECS name
        "label",
        "kbps",  # the real bit-rate of this clip's file (container included)
        "prediction",  # the model's label for the clip after the round trip
        "survived",  # 1: still adversarial after the codec (untargeted: not the label;
        # targeted: the target); clean rows: 1 if still classified correctly
        "clean_correct",  # 1 if the codec alone leaves the clean clip correctly classified
        "snr_db",  # the attack's SNR before the codec (clean rows: empty)
        "snr_db_delivered",  # codec(adv) - codec(clean) against codec(clean), dB
        "snr_db_codec",  # codec(clean) - clean against clean, dB: the codec's own distortion
    ),
    key=("model", "attack", "fname", "target", "codec"),
    ints=frozenset({"survived", "clean_correct"}),
    floats=frozenset({"kbps", "snr_db", "snr_db_delivered", "snr_db_codec"}),
)
CLEAN = "clean"  # the attack name of a clean row
FILE = "compression.csv"


def snr_db(signal: np.ndarray, noise: np.ndarray) -> float:
    """``10 log10(Σ signal² / Σ noise²)`` (inf for no noise)."""
    s = float(np.sum(np.square(signal, dtype=np.float64)))
    n = float(np.sum(np.square(noise, dtype=np.float64)))
    return math.inf if n == 0 else 10 * math.log10(s / n) if s > 0 else -math.inf


def evaluate(
    run: runner.Run,
    source: Sequence[dict],
    store: Any,
    codec_names: Sequence[str],
    out_store: results.ResultStore,
    progress: bool = True,
) -> None:
    """Append the rows of every model × codec that ``out_store`` lacks (block by block, so a
    killed run resumes where it stopped)."""
    from tqdm import tqdm

    blocks = [(m, c) for m in run.models for c in codec_names]
    bar = tqdm(total=len(blocks), desc="codecs", unit="model×codec", disable=not progress,
               file=sys.stderr, dynamic_ncols=True)  # fmt: skip
    for m, name in blocks:
        codec = K.get(name)
        correct = models.correct_clips(run.clips, run.preds[m.name])
        names = {c.fname for c in correct}
        ok = [r for r in source if r["model"] == m.name and r["success"] and r["fname"] in names]
        keys = [(m.name, CLEAN, c.fname, "", name) for c in correct]
        keys += [(m.name, r["attack"], r["fname"], r["target"] or "", name) for r in ok]
        if all(k in out_store for k in keys):
            bar.update()
            continue
        clean = [run.waves[c.fname] for c in correct]
        coded_clean, sizes = K.roundtrip_clips(clean, codec)
        probs = models.predict_waves(m, coded_clean, run.args.batch_size)
        still = {c.fname: int(p.argmax() == c.label_index) for c, p in zip(correct, probs,
                                                                          strict=True)}  # fmt: skip
        by_clip = dict(zip((c.fname for c in correct), coded_clean, strict=True))
        rows = []
        for c, y, n, p in zip(correct, coded_clean, sizes, probs, strict=True):
            rows.append({
                "model": m.name, "attack": CLEAN, "fname": c.fname, "target": "",
                "codec": name, "label": c.label, "kbps": K.kbps(n, len(y)),
                "prediction": m.labels[int(p.argmax())], "survived": still[c.fname],
                "clean_correct": still[c.fname], "snr_db": None, "snr_db_delivered": None,
                "snr_db_codec": snr_db(run.waves[c.fname], y - run.waves[c.fname]),
            })  # fmt: skip
        advs = [arrays.adversarial(store, r, run.out) for r in ok]
        keep = [i for i, a in enumerate(advs) if a is not None]
        ok, advs = [ok[i] for i in keep], [np.asarray(advs[i], np.float32) for i in keep]
        coded, sizes = K.roundtrip_clips(advs, codec)
        probs = models.predict_waves(m, coded, run.args.batch_size) if coded else []
        for r, y, n, p in zip(ok, coded, sizes, probs, strict=True):
            pred = int(p.argmax())
            target = r["target"] or ""
            index = {lab: i for i, lab in enumerate(m.labels)}  # the model's class names
            label = index[r["label"]]
            survived = pred == index[target] if target else pred != label
            yc = by_clip[r["fname"]][: len(y)]
            rows.append({
                "model": m.name, "attack": r["attack"], "fname": r["fname"], "target": target,
                "codec": name, "label": r["label"], "kbps": K.kbps(n, len(y)),
                "prediction": m.labels[pred], "survived": int(survived),
                "clean_correct": still[r["fname"]], "snr_db": r["snr_db"],
                "snr_db_delivered": snr_db(yc, y - yc),
                "snr_db_codec": snr_db(run.waves[r["fname"]][: len(y)],
                                       yc - run.waves[r["fname"]][: len(y)]),
            })  # fmt: skip
        out_store.append(rows)
        bar.update()
    bar.close()


def _median(v: list[float]) -> float:
    v = [x for x in v if x is not None and not math.isnan(x)]
    return float(np.median(v)) if v else float("nan")


def survival(rows: Sequence[dict], codec_names: Sequence[str]) -> list[tuple]:
    """``(model, attack, codec, kbps, N, survival %, survival % where the codec keeps the clean
    clip correct, median delivered SNR)`` per model × attack × codec (kbps: the median real
    bit-rate of that codec's files of the model's examples)."""
    order = {c: i for i, c in enumerate(codec_names)}
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r["attack"] != CLEAN:
            groups.setdefault((r["model"], r["attack"], r["codec"]), []).append(r)
    out = []
    for (m, a, c), g in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1],
                                                                order.get(kv[0][2], 99))):  # fmt: skip
        kept = [r for r in g if r["clean_correct"]]
        out.append((
            m, a, c, _median([r["kbps"] for r in g]), len(g),
            100.0 * sum(r["survived"] for r in g) / len(g),
            100.0 * sum(r["survived"] for r in kept) / len(kept) if kept else float("nan"),
            _median([r["snr_db_delivered"] for r in g if math.isfinite(r["snr_db_delivered"])]),
        ))  # fmt: skip
    return out


def tables_of(rows: Sequence[dict], models_: Sequence[str]) -> dict[str, tables.Table]:
    """The compression tables from ``compression.csv`` rows, by file stem."""
    names = [c for c in K.CODECS if any(r["codec"] == c for r in rows)]
    surv = survival(rows, names)
    out = {
        "compression_survival": tables.Table(
            "Survival of successful adversarial examples through each codec",
            (
                "Model",
                "Attack",
                "Codec",
                "kbps",
                "N",
                "Survival %",
                "Survival % (clean kept)",
                "Delivered SNR (dB)",
            ),
            tuple(surv),
            note="Survival: still adversarial after the round trip (untargeted: not the label; "
            "targeted: the target). 'Clean kept': only clips whose clean version the codec leaves "
            "correctly classified. kbps: median real bit-rate of the files. Delivered SNR: median "
            "of codec(adversarial) - codec(clean) against codec(clean).",
        ),  # fmt: skip
    }
    clean_rows = []
    for m in models_:
        for c in names:
            g = [r for r in rows if r["model"] == m and r["codec"] == c and r["attack"] == CLEAN]
            if g:
                clean_rows.append((
                    m, c, _median([r["kbps"] for r in g]), len(g),
                    100.0 * sum(r["clean_correct"] for r in g) / len(g),
                    _median([r["snr_db_codec"] for r in g]),
                ))  # fmt: skip
    out["compression_clean"] = tables.Table(
        "Clean accuracy after each codec (clips the model classifies correctly before it)",
        ("Model", "Codec", "kbps", "Clips", "Still correct %", "Codec SNR (dB)"),
        tuple(clean_rows),
        note="Codec SNR: median of codec(clean) - clean against clean (inf: lossless).",
    )
    attacks = sorted({r["attack"] for r in rows if r["attack"] != CLEAN})
    summary = []
    for a in attacks:
        cells = []
        for c in names:
            g = [r for r in rows if r["attack"] == a and r["codec"] == c]
            cells.append(100.0 * sum(r["survived"] for r in g) / len(g) if g else float("nan"))
        summary.append((a, *cells))
    out["compression_summary"] = tables.Table(
        "Survival % per attack and codec (all models)", ("Attack", *names), tuple(summary)
    )
    return out


def figure(surv: Sequence[tuple], models_: Sequence[str], path: Path) -> Path:
    """Survival against the measured bit-rate: a panel per model, a colour per attack, a line
    style per format (PCM as single markers). The numbers are those of :func:`survival`."""
    from jaxadv.experiments.figures import _plt

    plt = _plt()
    from matplotlib import ticker

    fig, axes = plt.subplots(1, len(models_), figsize=(4.2 * len(models_), 4.2), squeeze=False)
    attacks = sorted({s[1] for s in surv})
    colours = {a: plt.get_cmap("tab10")(i % 10) for i, a in enumerate(attacks)}
    styles = {"mp3": "-o", "vorbis": "--s", "opus": ":^", "pcm16": "x", "pcm24": "+"}
    for ax, m in zip(axes[0], models_, strict=True):
        for a in attacks:
            for fmt, style in styles.items():
                pts = sorted((s[3], s[5]) for s in surv
                             if s[0] == m and s[1] == a and s[2].split("-")[0] == fmt)  # fmt: skip
                if pts:
                    xs, ys = zip(*pts, strict=True)
                    ax.plot(xs, ys, style, color=colours[a], ms=4, lw=1,
                            label=a if fmt == "mp3" else None)  # fmt: skip
        ax.set_xscale("log")
        ax.set_xticks([32, 64, 128, 256, 512, 768])
        ax.xaxis.set_major_formatter(ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_ylim(-3, 103)
        ax.set_title(m, fontsize=10)
        ax.set_xlabel("real bit-rate (kbit/s)")
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("still adversarial %")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(attacks), 3 * len(models_)),
               fontsize=8,
               title="attack (mp3 —, vorbis --, opus ···; x, +: pcm16, pcm24)",
               title_fontsize=7, frameon=False)  # fmt: skip
    fig.tight_layout(rect=(0, 0.24 if len(models_) < 2 else 0.16, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def parse_codecs(text: str | None) -> list[str]:
    """``--codecs`` (comma-separated :data:`jaxadv.codecs.CODECS` names; None: all)."""
    if not text:
        return list(K.CODECS)
    names = [c.strip() for c in text.split(",") if c.strip()]
    bad = [c for c in names if c not in K.CODECS]
    if bad or not names:
        raise cli.UserError(f"--codecs: unknown {bad}; choose from {list(K.CODECS)}")
    return names


def run(args: argparse.Namespace) -> runner.Run:
    """Run (or resume) the compression experiment with parsed flags; returns the run."""
    if args.from_untargeted and args.from_targeted:
        raise cli.UserError("give --from-untargeted or --from-targeted, not both")
    kind = "targeted" if args.from_targeted else "untargeted"
    src = args.from_targeted or args.from_untargeted
    base = Path(src) if src else None
    codec_names = parse_codecs(args.codecs)
    args.codecs = ",".join(codec_names)  # recorded in the fingerprint as resolved
    for c in codec_names:  # a setting the installed libsndfile lacks: one line, before any work
        try:
            K.get(c).encode(np.zeros(16, np.float32))
        except K.CodecError as e:
            raise cli.UserError(f"--codecs: {e}") from e
    doc = transfer.check_source(base, kind) if base is not None else None
    check = (lambda fp: transfer.same_source(base, doc, fp, kind)) if base is not None else None
    classes = C.MUSIC_CLASSES if kind == "targeted" and base is not None else None
    # the codecs take 32 kHz clips (jaxadv.codecs resamples to their own rates from there)
    r = runner.start_run(
        args, "compression", classes=classes, check=check, sample_rates=(C.SAMPLE_RATE,)
    )
    runner.clean_pass(r)
    if base is None:
        runner.attack_models(r, untargeted_jobs)
    if not runner.gather(r):  # process 0 of several (or the only one) runs the codecs
        return r
    names = [m.name for m in r.models]
    if base is not None:
        source = results.read_run_rows(base)
        store = arrays.ArrayStore(base / arrays.FOLDER, writable=False)
    else:
        source, store = r.store.rows(), r.arrays
    source = [x for x in source if x["model"] in names and x["fname"] in r.waves]
    out_store = results.ResultStore(r.out / FILE, SCHEMA)
    evaluate(r, source, store, codec_names, out_store, progress=not args.no_progress)
    rows = [x for x in out_store.rows() if x["model"] in names and x["codec"] in codec_names]
    all_tables = tables_of(rows, names)
    for stem, t in all_tables.items():
        t.write(r.out, stem)
    figure(survival(rows, codec_names), names, r.out / "figure_compression.png")
    runner.write_report(r, source, all_tables, store)
    runner.print_outputs(r, [all_tables["compression_summary"]])
    return r


def build_parser() -> argparse.ArgumentParser:
    """The command's flags (``--help``)."""
    p = flags.parser("compression", __doc__.split("\n\n")[0])
    p.add_argument(
        "--from-untargeted", default=None, metavar="DIR",
        help="the adversarial examples of an untargeted run folder (same data flags; only read)",
    )  # fmt: skip
    p.add_argument(
        "--from-targeted", default=None, metavar="DIR",
        help="the adversarial examples of a targeted run folder (same data flags; only read)",
    )  # fmt: skip
    p.add_argument(
        "--codecs", default=None, metavar="NAMES",
        help=f"comma-separated codecs (default: all of {', '.join(K.CODECS)})",
    )  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> None:
    """The command: a user error is one line on stderr and exit status 2 (``--debug``: raise)."""
    cli.main(build_parser(), run, argv, compile_cache=True)


if __name__ == "__main__":
    main()
