"""Attacks on a model nobody here trained: Silero VAD 6.2.3, speech → no speech and noise → speech.

``python -m jaxadv.experiments.vad`` attacks the voice-activity detector of the ``silero-vad``
wheel (:mod:`jaxadv.vad`, weights read from the installed wheel, nothing downloaded) with the
minimal-norm attacks (DeepFool, FMN, DDN, C&W) on recorded speech (the committed clips of
``jaxadv/demo/data/speech``, or ``--speech`` files) and on the demo's non-speech clips (FluidR3
instrument notes, resampled to 16 kHz). Every clip the VAD gets right is attacked towards the
other class under each decision rule (``--decisions``, :class:`jaxadv.vad.SileroVAD`):

* ``mean``: a clip is speech when its mean window speech probability is at least 0.5;
* ``any``: a clip is speech when any 32 ms window reaches 0.5, as a pipeline gating on the VAD
  sees it: "speech → no speech" must then silence every window, "noise → speech" fire one.

With two classes an untargeted attack (leave the true class) and a targeted one (reach the
other) are the same goal, so each row is both; ``direction`` names it. Writes in the run folder:
``vad.csv`` (one row per decision rule, attack and clip: success, SNR in dB, the speech
probability and the share of speech windows before and after), ``clean.csv``, ``vad_table``
(Markdown and CSV: success % and SNR per rule, direction and attack), ``results.json``,
``figure_vad_<rule>.png`` (the speech probability over time before and after each attack),
listenable WAVs (16 kHz float) in ``audio/`` and ``config.json``. Rerunning the same command
resumes; other settings in the same folder are refused.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from jaxadv import cli
from jaxadv.cli import UserError

log = logging.getLogger("jaxadv.experiments")

ATTACK_ORDER = ("deepfool", "fmn", "ddn", "cw")
DIRECTIONS = {1: "speech → no speech", 0: "no speech → speech"}  # by the clip's true class
CLIP_SECONDS = 3.0  # every clip is cut to this (the committed speech clips are 3 s)
FILE = "vad.csv"


def _schema() -> Any:
    from jaxadv.experiments import results

    return results.Schema(
        columns=(
            "decision", "attack", "clip", "kind", "direction", "success", "snr_db", "l2", "linf",
            "steps", "seconds", "clean_speech_prob", "adv_speech_prob", "clean_speech_windows",
            "adv_speech_windows", "adv_file",
        ),
        key=("decision", "attack", "clip"),
        ints=frozenset({"success", "steps"}),
        floats=frozenset({
            "snr_db", "l2", "linf", "seconds", "clean_speech_prob", "adv_speech_prob",
            "clean_speech_windows", "adv_speech_windows",
        }),
    )  # fmt: skip


class VadClip(NamedTuple):
    """One clip of the experiment: its name, true class (1 speech, 0 no speech), 16 kHz samples
    and where it came from."""

    name: str
    label: int
    wave: np.ndarray
    source: str


def speech_dir() -> Path:
    """The committed speech clips (``jaxadv/demo/data/speech``, see its README for the source)."""
    from jaxadv import demo

    return demo.data_dir() / "speech"


def load_clips(speech: Sequence[str] | None, nonspeech: int, seed: int) -> list[VadClip]:
    """The speech clips (``speech`` files, default the committed ones) and ``nonspeech`` demo
    clips of distinct classes (seeded), all at 16 kHz, cut to :data:`CLIP_SECONDS`."""
    from jaxadv import audio, demo
    from jaxadv import vad as V

    n = int(CLIP_SECONDS * V.SAMPLE_RATE)
    paths = [Path(p) for p in speech] if speech else sorted(speech_dir().glob("*.flac"))
    out = []
    for p in paths:
        if not p.is_file():
            raise UserError(f"--speech {p}: no such file")
        out.append(VadClip(p.stem, 1, audio.load_audio(p, V.SAMPLE_RATE)[:n], str(p)))
    clips = demo.eval_clips()
    rng = np.random.default_rng(seed)
    by_class: dict[str, list[Any]] = {}
    for c in clips:
        by_class.setdefault(c.label, []).append(c)
    classes = sorted(by_class)
    for i in rng.permutation(len(classes))[:nonspeech]:
        c = by_class[classes[i]][0]
        w = audio.load_audio(c.path, V.SAMPLE_RATE)[:n]
        out.append(VadClip(f"{Path(c.fname).stem}_{c.label}", 0, w, f"demo {c.fname}"))
    names = [c.name for c in out]
    if len(set(names)) != len(names):
        raise UserError(f"--speech: two clips share a name ({names}); rename one")
    return out


def _batch(clips: Sequence[VadClip]) -> tuple[np.ndarray, np.ndarray]:
    n = max(len(c.wave) for c in clips)
    x = np.zeros((len(clips), n), np.float32)
    for i, c in enumerate(clips):
        x[i, : len(c.wave)] = c.wave
    return x, np.array([len(c.wave) for c in clips], np.int32)


def window_stats(clf: Any, params: Any, x: np.ndarray, lens: np.ndarray) -> tuple[Any, Any, Any]:
    """``(speech probability per window [B, Q], clip speech probability [B], share of valid
    windows at or above the threshold [B])``."""
    from jaxadv import vad as V

    p = np.asarray(clf.speech_probs(params, x, lens))
    mask = np.asarray(V.window_mask(x.shape[1], lens))
    prob = np.asarray(clf(params, x, lens).probs)[:, 1]
    share = ((p >= clf.threshold) & mask).sum(1) / np.maximum(mask.sum(1), 1)
    return np.where(mask, p, np.nan), prob, share


def _fingerprint(args: argparse.Namespace, clips, attacks, weights: str) -> dict[str, Any]:
    from jaxadv.experiments.runfolder import _jsonable

    return {
        "experiment": "vad",
        "weights_sha256": weights,
        "decisions": list(args.decisions),
        "seed": args.seed,
        "audio": not args.no_audio,
        "attacks": _jsonable({k: cfg for k, (_, cfg) in attacks.items()}),
        "clips": {
            c.name: f"{c.label}:{hashlib.sha256(c.wave.tobytes()).hexdigest()[:16]}" for c in clips
        },
    }


def _attacks(args: argparse.Namespace) -> dict[str, tuple[str, Any]]:
    """The chosen attacks with the waveform models' demo settings and the ``--set`` overrides."""
    from jaxadv.experiments.flags import apply_overrides, attack_configs

    base = attack_configs("untargeted", "demo", "dense_wav")
    names = [a.strip() for a in args.attacks.split(",") if a.strip()]
    bad = [a for a in names if a not in ATTACK_ORDER]
    if bad or not names:
        raise UserError(f"--attacks: unknown {bad}; choose from {list(ATTACK_ORDER)}")
    return apply_overrides({a: base[a] for a in names}, args.set)


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Run (or resume) the VAD experiment; returns its rows."""
    import jax
    from tqdm import tqdm

    from jaxadv import attacks as A
    from jaxadv import audio, logs
    from jaxadv import vad as V
    from jaxadv.experiments import results, runfolder

    logs.setup()
    out = Path(args.out)
    args.decisions = [d.strip() for d in args.decisions.split(",") if d.strip()]
    bad = [d for d in args.decisions if d not in V.DECISIONS]
    if bad or not args.decisions:
        raise UserError(f"--decisions: unknown {bad}; choose from {list(V.DECISIONS)}")
    if args.nonspeech < 0:
        raise UserError(f"--nonspeech must be >= 0, got {args.nonspeech}")
    attacks = _attacks(args)
    old = runfolder.check_out(out, "vad")
    weights = V.silero_weights()
    params = V.load_params(weights)
    clips = load_clips(args.speech, args.nonspeech, args.seed)
    sha = hashlib.sha256(weights.read_bytes()).hexdigest()
    fp = _fingerprint(args, clips, attacks, sha)
    if old is not None and old.get("fingerprint") != fp:
        was = old.get("fingerprint") or {}
        diff = sorted(k for k in set(was) | set(fp) if was.get(k) != fp.get(k))
        raise UserError(
            f"{out} holds a VAD run with other settings ({', '.join(diff)}); resume it with the "
            "same flags and clips, or choose another --out"
        )
    runfolder.make_out(out)
    runfolder.write_config(out, args, {"experiment": "vad", "fingerprint": fp,
                                       "weights": str(weights), "clips": {
                                           c.name: c.source for c in clips}})  # fmt: skip
    store = results.ResultStore(out / FILE, _schema())
    x_all, lens_all = _batch(clips)
    clean_rows = []
    for decision in args.decisions:
        clf = V.SileroVAD(decision=decision)
        _, prob, share = window_stats(clf, params, x_all, lens_all)
        for c, p, s in zip(clips, prob, share, strict=True):
            clean_rows.append({"decision": decision, "clip": c.name, "kind": _kind(c),
                               "speech_prob": float(p), "speech_windows": float(s),
                               "correct": int((p >= 0.5) == bool(c.label))})  # fmt: skip
    _write_clean(out / "clean.csv", clean_rows)
    bar = tqdm(total=len(args.decisions) * len(attacks), desc="vad", unit="attack",
               file=sys.stderr, disable=args.no_progress)  # fmt: skip
    for decision in args.decisions:
        clf = V.SileroVAD(decision=decision)
        right = {r["clip"] for r in clean_rows if r["decision"] == decision and r["correct"]}
        for name, (key, cfg) in attacks.items():
            todo = [c for c in clips if c.name in right and (decision, name, c.name) not in store]
            if todo:
                x, lens = _batch(todo)
                y = np.array([c.label for c in todo], np.int32)
                t0 = time.perf_counter()
                res = A.ATTACKS[key](clf, params, x, lens, y, config=cfg)
                met = jax.tree.map(np.asarray, A.evaluate(clf, params, x, lens, y, res))
                secs = (time.perf_counter() - t0) / len(todo)
                adv = np.asarray(res.adversarial)
                _, p0, s0 = window_stats(clf, params, x, lens)
                _, p1, s1 = window_stats(clf, params, adv, lens)
                rows = []
                for i, c in enumerate(todo):
                    rel = ""
                    if not args.no_audio:
                        rel = f"audio/{decision}/{name}/{c.name}.wav"
                        (out / rel).parent.mkdir(parents=True, exist_ok=True)
                        audio.write_audio(out / rel, adv[i, : lens[i]], V.SAMPLE_RATE,
                                          subtype="FLOAT")  # fmt: skip
                    np.save(_adv_path(out, decision, name, c.name), adv[i, : lens[i]])
                    rows.append({
                        "decision": decision, "attack": name, "clip": c.name, "kind": _kind(c),
                        "direction": DIRECTIONS[c.label], "success": int(met.success[i]),
                        "snr_db": float(met.snr_db[i]), "l2": float(met.l2[i]),
                        "linf": float(met.linf[i]), "steps": int(met.steps[i]), "seconds": secs,
                        "clean_speech_prob": float(p0[i]), "adv_speech_prob": float(p1[i]),
                        "clean_speech_windows": float(s0[i]),
                        "adv_speech_windows": float(s1[i]), "adv_file": rel,
                    })  # fmt: skip
                store.append(rows)
            bar.update(1)
    bar.close()
    rows = store.rows()
    results.write_json(out / "results.json", rows)
    table = vad_table(rows, list(attacks))
    table.write(out, "vad_table")
    for decision in args.decisions:
        figure(out, clips, params, decision, list(attacks), rows)
    print("\n" + table.to_markdown())
    print(f"Run folder: {out}")
    return rows


def _kind(c: VadClip) -> str:
    return "speech" if c.label == 1 else "no_speech"


def _adv_path(out: Path, decision: str, attack: str, clip: str) -> Path:
    p = out / "adversarial" / decision / attack / f"{clip}.npy"
    p.parent.mkdir(parents=True, exist_ok=True)
    return p


def _write_clean(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    import csv

    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, list(rows[0]) if rows else ["decision"])
        w.writeheader()
        w.writerows(rows)


def vad_table(rows: Sequence[dict[str, Any]], attacks: Sequence[str]) -> Any:
    """Success % and SNR (median and mean over successful examples, dB) per decision rule,
    direction and attack, with the share of speech windows before and after."""
    from jaxadv.experiments.tables import Table

    out = []
    for decision in dict.fromkeys(r["decision"] for r in rows):
        for direction in DIRECTIONS.values():
            for a in attacks:
                mine = [r for r in rows if (r["decision"], r["direction"], r["attack"])
                        == (decision, direction, a)]  # fmt: skip
                if not mine:
                    continue
                ok = [r for r in mine if r["success"]]
                snr = [r["snr_db"] for r in ok]
                out.append((
                    decision, direction, a, len(mine), 100.0 * len(ok) / len(mine),
                    float(np.median(snr)) if snr else float("nan"),
                    float(np.mean(snr)) if snr else float("nan"),
                    100.0 * float(np.mean([r["clean_speech_windows"] for r in mine])),
                    100.0 * float(np.mean([r["adv_speech_windows"] for r in mine])),
                ))  # fmt: skip
    return Table(
        "Silero VAD 6.2.3 under minimal-norm attacks (SNR of the successful examples)",
        ("Decision", "Direction", "Attack", "Clips", "Success %", "Median SNR dB",
         "Mean SNR dB", "Speech windows % before", "Speech windows % after"),
        tuple(out),
        note="Decision 'mean': the clip's mean window speech probability >= 0.5; 'any': any "
        "32 ms window >= 0.5. Only clips the VAD gets right are attacked.",
    )  # fmt: skip


def figure(
    out: Path,
    clips: Sequence[VadClip],
    params: Any,
    decision: str,
    attacks: Sequence[str],
    rows: Sequence[dict[str, Any]],
) -> Path:
    """``figure_vad_<decision>.png``: each clip's speech probability per 32 ms window, clean and
    after each attack (from the stored adversarial waveforms), with the 0.5 threshold."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib import pyplot as plt

    from jaxadv import vad as V

    clf = V.SileroVAD(decision=decision)
    done = {(r["attack"], r["clip"]): r for r in rows if r["decision"] == decision}
    fig, axes = plt.subplots(len(clips), 1, figsize=(9, 1.9 * len(clips)), squeeze=False)
    for ax, c in zip(axes[:, 0], clips, strict=True):
        x, lens = _batch([c])
        p, _, _ = window_stats(clf, params, x, lens)
        t = np.arange(p.shape[1]) * V.WINDOW / V.SAMPLE_RATE
        ax.plot(t, p[0], color="black", lw=2, label="clean")
        for a in attacks:
            path = out / "adversarial" / decision / a / f"{c.name}.npy"
            if (a, c.name) not in done or not path.is_file():
                continue
            pa, _, _ = window_stats(clf, params, np.load(path)[None], lens)
            r = done[(a, c.name)]
            ax.plot(t, pa[0], lw=1, label=f"{a} ({r['snr_db']:.1f} dB"
                    + ("" if r["success"] else ", failed") + ")")  # fmt: skip
        ax.axhline(0.5, color="grey", ls=":", lw=1)
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel("P(speech)")
        ax.set_title(f"{c.name} ({_kind(c)})", fontsize=9)
        ax.legend(fontsize=7, loc="center right", ncol=1)
    axes[-1, 0].set_xlabel("time (s)")
    fig.suptitle(f"Silero VAD speech probability, decision '{decision}'", fontsize=10)
    fig.tight_layout()
    path = out / f"figure_vad_{decision}.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def build_parser() -> argparse.ArgumentParser:
    """The command's flags (``--help``)."""
    p = argparse.ArgumentParser(
        prog="python -m jaxadv.experiments.vad",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--out", default="runs/vad", help="run folder; the same command resumes it")
    p.add_argument("--attacks", default=",".join(ATTACK_ORDER),
                   help=f"comma-separated attacks, of {','.join(ATTACK_ORDER)}")  # fmt: skip
    p.add_argument("--decisions", default="mean,any",
                   help="comma-separated clip decision rules: 'mean' (mean window probability) "
                   "and/or 'any' (any window)")  # fmt: skip
    p.add_argument("--speech", nargs="+", default=None, metavar="FILE",
                   help="speech recordings to attack (any rate; resampled to 16 kHz, cut to "
                   f"{CLIP_SECONDS:g} s); default: the committed clips")  # fmt: skip
    p.add_argument(
        "--nonspeech",
        type=int,
        default=3,
        help="demo instrument clips (distinct classes) attacked towards speech",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="ATTACK.FIELD=VALUE",
        help="override one attack setting, e.g. --set cw.max_iterations=200",
    )
    p.add_argument("--seed", type=int, default=0, help="seed for the choice of demo clips")
    p.add_argument("--no-audio", action="store_true", help="do not write WAV files")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> None:
    """The command: a user error is one line on stderr and exit status 2 (``--debug``: raise)."""
    cli.main(build_parser(), run, argv, compile_cache=True)


if __name__ == "__main__":
    main()
