"""What the three experiment commands share: flags, presets, models, clips, and the sweep engine.

A *job* is one clip attacked towards one target (or untargeted) with one attack on one model. The
sweep groups a model's jobs by bucket length and streams each bucket's jobs through the slots of
one compiled attack program (:func:`jaxadv.attacks.sweep`: continuous batching — a finished job
leaves its slot to the next one; at most ``--batch-size`` slots, sharded over all local devices),
evaluates the finished jobs with one more forward pass, stores their adversarial waveforms
(:mod:`jaxadv.experiments.arrays`; WAV files too unless ``--no-audio``), and appends their rows
to the run's ``results.csv`` as they finish. A job whose row is present is
skipped, so the same command after a kill redoes only unfinished jobs.

A *run folder* is one whose ``config.json`` has ``"format": "jaxadv-run"`` (:data:`RUN_FORMAT`);
a command writes into a run folder of its own experiment, a new folder or an empty one, and
refuses any other. The ``fingerprint`` in ``config.json`` holds everything the rows depend on
(the settings, a digest of each checkpoint, a digest of each clip file); a resume whose
fingerprint differs is refused with one line naming what differs.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import math
import os
import platform
import shlex
import sys
import time
import typing
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxadv import config as C
from jaxadv.cli import UserError, add_debug_flag
from jaxadv.datasets import Clip, Failure
from jaxadv.experiments.configs import ALL_MODELS, PRESETS, family, get_config

log = logging.getLogger("jaxadv.experiments")

RUN_FORMAT = "jaxadv-run"  # the "format" of a run folder's config.json
RUN_FORMAT_VERSION = 1

# Shown in every report of a demo run: the settings are cut down to run in minutes on a laptop.
DEMO_NOTE = (
    "Preset 'demo': compact demo models, the embedded FluidR3 clips and FEWER attack iterations "
    "than the paper (see config.json); use --preset paper for the authors' settings."
)


# ---------------------------------------------------------------------------------------------
# Attack presets
# ---------------------------------------------------------------------------------------------


def attack_configs(experiment: str, preset: str, model: str) -> dict[str, tuple[str, Any]]:
    """Attacks of an experiment as ``{row name: (ATTACKS key, config)}`` for one model: the
    experiment's config module (:mod:`jaxadv.experiments.configs`) with ``preset``."""
    return get_config(experiment, preset).attacks(model)


def _coerce(text: str, current: Any, hint: Any) -> Any:
    if isinstance(current, bool) or hint is bool:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected a boolean, got {text!r}")
    if text.lower() == "none":
        return None
    if isinstance(current, int) and not isinstance(current, bool):
        return int(text)
    if isinstance(current, float):
        return float(text)
    if isinstance(current, tuple):
        return tuple(int(t) for t in text.split(",") if t)
    if current is None and hint is not None:
        for t in typing.get_args(hint) or (hint,):
            if t in (int, float):
                return t(text)
    return text


def apply_overrides(
    configs: dict[str, tuple[str, Any]], overrides: Sequence[str], warn: bool = True
) -> dict[str, tuple[str, Any]]:
    """Apply ``--set ATTACK.FIELD=VALUE`` overrides (e.g. ``cw.max_iterations=500``).

    An attack this experiment does not run (``lbfgs`` in the untargeted one) is skipped with a
    warning, so one set of flags serves all three commands; an unknown attack is an error.
    """
    from jaxadv.attacks import ATTACKS

    out = dict(configs)
    for item in overrides:
        try:
            lhs, value = item.split("=", 1)
            name, field = lhs.split(".", 1)
        except ValueError:
            raise UserError(f"--set {item!r}: expected ATTACK.FIELD=VALUE") from None
        if name not in out and name in ATTACKS:
            if warn:
                log.warning("--set %s: this experiment does not run %s; ignored", item, name)
            continue
        if name not in out:
            raise UserError(f"--set {item!r}: no attack {name!r} here; choose from {sorted(out)}")
        key, cfg = out[name]
        fields = {f.name: f for f in dataclasses.fields(cfg)}
        if field not in fields:
            raise UserError(
                f"--set {item!r}: {type(cfg).__name__} has no field {field!r}; choose from "
                f"{sorted(fields)}"
            )
        hints = typing.get_type_hints(type(cfg))
        try:
            new = _coerce(value, getattr(cfg, field), hints.get(field))
            out[name] = (key, dataclasses.replace(cfg, **{field: new}))
        except (ValueError, TypeError) as e:  # a bad value, or a range check in __post_init__
            raise UserError(f"--set {item!r}: {e}") from e
    return out


# ---------------------------------------------------------------------------------------------
# Command-line flags shared by every experiment
# ---------------------------------------------------------------------------------------------


def parser(experiment: str, description: str) -> argparse.ArgumentParser:
    """The flags every experiment command takes."""
    p = argparse.ArgumentParser(
        prog=f"python -m jaxadv.experiments.{experiment}",
        description=description,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--out",
        default=None,
        help="run folder (default: runs/<experiment>-<preset>); rerunning the same command "
        "resumes it",
    )
    p.add_argument(
        "--preset",
        choices=PRESETS,
        default="demo",
        help="'demo': fast settings for the embedded demo; 'paper': the authors' settings",
    )
    p.add_argument(
        "--models",
        default=",".join(ALL_MODELS),
        help="comma-separated models to attack (registry names)",
    )
    p.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        metavar="MODEL=DIR",
        help="checkpoint folder of a model (jaxadv-convert / python -m jaxadv.train output); "
        "default: the committed demo model. Repeat per model",
    )
    p.add_argument(
        "--data",
        default=None,
        help="an FSDKaggle2018 folder (train.csv + audio_train/, or the test CSV + audio_test/); "
        "default: the embedded demo clips",
    )
    p.add_argument(
        "--split",
        choices=("auto", "train", "test"),
        default="auto",
        help="which CSV of --data to use; 'auto': train.csv with the authors' attack list "
        "(first 10 verified clips per class) if present, else the test CSV",
    )
    p.add_argument(
        "--per-class",
        type=int,
        default=None,
        help="clips per class (default: 6 as the paper with --preset paper, 1 for the demo)",
    )
    p.add_argument("--batch-size", type=int, default=16, help="rows per compiled attack batch")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="ATTACK.FIELD=VALUE",
        help="override one attack setting, e.g. --set cw.max_iterations=500 (repeatable)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed for clip choice and noise")
    p.add_argument(
        "--no-audio",
        action="store_true",
        help="do not write adversarial WAV files (the waveforms are stored in adversarial/ "
        "either way, for Figure 3 and transfer)",
    )
    add_debug_flag(p)
    return p


def parse_checkpoints(items: Sequence[str], models: Sequence[str]) -> dict[str, Path]:
    """``MODEL=DIR`` flags → ``{model: Path}``; every other model gets its demo checkpoint."""
    out: dict[str, Path] = {}
    for item in items:
        if "=" not in item:
            raise UserError(f"--checkpoint {item!r}: expected MODEL=DIR")
        name, d = item.split("=", 1)
        if name not in models:
            raise UserError(f"--checkpoint {item!r}: {name!r} is not among --models {list(models)}")
        out[name] = Path(d)
    for m in models:
        if m not in out:
            from jaxadv import demo

            out[m] = demo.models_dir() / m
    return out


def parse_models(text: str) -> list[str]:
    names = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in names if m not in ALL_MODELS]
    if bad or not names:
        raise UserError(f"--models: unknown {bad}; choose from {list(ALL_MODELS)}")
    return names


# ---------------------------------------------------------------------------------------------
# Models and clips
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    """A restored model: its registry name, classifier function, params and sidecar."""

    name: str
    classifier: Any
    params: Any
    meta: dict[str, Any]
    checkpoint: Path
    digest: str = ""  # jaxadv.checkpoint.digest of the arrays and sidecar


def load_models(
    names: Sequence[str], checkpoints: dict[str, Path], preset: str
) -> list[LoadedModel]:
    """Restore each model; with ``preset="paper"`` the Iqbal models use the authors' front-end.

    A checkpoint whose sidecar lists other labels than ``config.LABELS`` (the class order every
    row, table and target of a run assumes) is refused by name.
    """
    from jaxadv.checkpoint import check_labels, digest, load_checkpoint
    from jaxadv.frontend import IqbalAttackFrontend

    out = []
    for name in names:
        clf, params, meta = load_checkpoint(checkpoints[name], expect=name)
        check_labels(meta, checkpoints[name])
        if preset == "paper" and family(name) == "iqbal":
            # The authors' attack graph: zero-pad to 65536k, uncentred frames, offset log.
            new = dataclasses.replace(clf, frontend=IqbalAttackFrontend(), merge="mean")
            log.info(
                "--preset paper: %s runs with the authors' front-end (%s, merge 'mean') instead "
                "of its checkpoint's (%s, merge %r)",
                name, new.frontend.name, getattr(clf.frontend, "name", None), clf.merge,
            )  # fmt: skip
            clf = new
        path = Path(checkpoints[name])
        out.append(LoadedModel(name, clf, params, meta, path, digest(meta, params)))
    return out


def select_clips(
    data: str | None,
    split: str,
    per_class: int,
    seed: int,
    classes: Sequence[str] | None = None,
    failures: list[Failure] | None = None,
) -> list[Clip]:
    """The clips of a run: ``per_class`` clips of each class (of ``classes``, if given).

    Real data with ``train.csv``: the authors' attack list (first 10 verified clips per class,
    ORIGINALS.md §5.9), then a seeded ``per_class`` subset. A test CSV (or the demo): a seeded
    ``per_class`` subset of its clips. The embedded demo keeps only its clips of at most 65536
    samples (2.05 s; 3 of its 6 per class): one length bucket, so one compiled program per attack
    and model, which keeps the default commands within minutes on a CPU. A class with fewer than
    ``per_class`` clips contributes all of its clips (see :func:`shortfall`). A CSV row with an
    unknown label is skipped by name (logged once, appended to ``failures``).
    """
    from jaxadv import datasets as D
    from jaxadv import demo

    root = Path(data) if data else demo.data_dir()
    if data and not root.is_dir():
        raise UserError(f"--data {data}: no such folder; give an FSDKaggle2018 folder")
    has_train = (root / C.TRAIN_CSV).is_file()
    if split == "auto" and not has_train and not (root / C.TEST_CSV).is_file():
        raise D.DatasetError(
            f"--data {root}: neither {C.TRAIN_CSV} nor {C.TEST_CSV} is there; give an "
            "FSDKaggle2018 folder (the CSV next to audio_train/ or audio_test/)"
        )
    use_train = split == "train" or (split == "auto" and has_train)
    if use_train:
        clips = D.authors_attack_list(D.read_train(root, unknown_labels="skip", failures=failures))
    else:
        clips = D.read_test(root, unknown_labels="skip", failures=failures)
    if classes is not None:
        clips = D.music_subset(clips, classes)
    if data is None:
        import soundfile as sf

        def samples(c: Clip) -> float:
            info = sf.info(str(c.path))
            return info.frames * C.SAMPLE_RATE / info.samplerate

        clips = [c for c in clips if samples(c) <= C.AUTHORS_BLOCK]
    return D.untargeted_subset(clips, per_class, seed=seed, allow_fewer=True)


def shortfall(clips: Sequence[Clip], per_class: int) -> dict[str, int]:
    """``{label: clips}`` of the classes that have fewer than ``per_class`` selected clips."""
    counts: dict[str, int] = {}
    for c in clips:
        counts[c.label] = counts.get(c.label, 0) + 1
    return {k: n for k, n in sorted(counts.items()) if n < per_class}


def clip_digest(clip: Clip) -> str:
    """``"LABEL:SHA256[:16]"`` of a clip's file: what its rows depend on besides the settings."""
    h = hashlib.sha256()
    with open(clip.path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return f"{clip.label}:{h.hexdigest()[:16]}"


def clip_loader(preset: str) -> Any:
    """``path -> [n] float32`` at 32 kHz: how the clips of a run are loaded.

    With ``preset="paper"`` the authors' loading: 22 050 Hz then 32 kHz, zero-padded to a
    multiple of 65536 samples, and the padded length is the clip's length (their attacks perturb
    the padding too, ORIGINALS.md §2.3).
    """
    from jaxadv import audio

    if preset != "paper":
        return audio.load_audio

    def load(path: Path) -> np.ndarray:
        w = audio.load_audio(path, authors_path=True)
        return np.pad(w, (0, (-len(w)) % C.AUTHORS_BLOCK))

    return load


def load_waves(
    clips: Sequence[Clip], preset: str, failures: list[Failure]
) -> dict[str, np.ndarray]:
    """Load each clip once (:func:`jaxadv.datasets.load_waves` with :func:`clip_loader`); bad
    files are reported by name in ``failures`` and left out."""
    from jaxadv import datasets as D

    return D.load_waves(clips, loader=clip_loader(preset), on_error="skip", failures=failures)


# ---------------------------------------------------------------------------------------------
# Devices
# ---------------------------------------------------------------------------------------------


def shard(
    arrays: Sequence[np.ndarray], n_rows: int, rows: int | None = None
) -> tuple[list[Any], int]:
    """Put batch arrays on all local devices, split along the batch axis.

    The batch is padded (by repeating its last row) to ``rows`` (default ``n_rows``) rounded up to
    a multiple of the device count; returns the device arrays and the number of real rows. With
    one device this is a plain transfer.
    """
    import jax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    devs = jax.local_devices()
    n = len(devs)
    pad = max(rows or n_rows, n_rows) - n_rows
    pad += (-(n_rows + pad)) % n
    if pad:
        arrays = [np.concatenate([a, np.repeat(a[-1:], pad, axis=0)]) for a in arrays]
    if n == 1:
        return [jax.device_put(a) for a in arrays], n_rows
    mesh = Mesh(np.array(devs), ("batch",))
    out = []
    for a in arrays:
        spec = PartitionSpec("batch", *([None] * (a.ndim - 1)))
        out.append(jax.device_put(a, NamedSharding(mesh, spec)))
    return out, n_rows


def replicate(tree: Any) -> Any:
    """Params on every local device (replicated), so sharded batches need no transfers."""
    import jax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    devs = jax.local_devices()
    if len(devs) == 1:
        return tree
    sharding = NamedSharding(Mesh(np.array(devs), ("batch",)), PartitionSpec())
    return jax.device_put(tree, sharding)


def example_key(seed: int, *parts: str) -> np.ndarray:
    """A PRNG key (uint32[2]) from a seed and strings, independent of batch composition."""
    h = hashlib.sha256(("|".join((str(seed), *parts))).encode()).digest()
    return np.frombuffer(h[:8], dtype=np.uint32).copy()


# ---------------------------------------------------------------------------------------------
# The sweep
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Job:
    """One clip, attacked towards ``target`` (a label index, or -1 when untargeted)."""

    clip: Clip
    target: int = -1

    @property
    def target_name(self) -> str:
        return C.LABELS[self.target] if self.target >= 0 else ""


def job_batches(jobs: Sequence[Job], lengths: dict[str, int], batch_size: int) -> list[list[Job]]:
    """Jobs in the fixed batches of :func:`jaxadv.datasets.balanced_batches` (by clip length)."""
    from jaxadv.datasets import balanced_batches

    plan = balanced_batches([lengths[j.clip.fname] for j in jobs], batch_size)
    return [[jobs[i] for i in b] for b in plan]


def job_batch(waves: dict[str, np.ndarray], jobs: Sequence[Job]) -> Any:
    """The jobs' clips as one :class:`jaxadv.datasets.Batch` (``x [B, N]`` zero-padded to the
    bucket, ``lengths [B]``, ``label_indices [B]``)."""
    from jaxadv.datasets import pad_batch

    return pad_batch([waves[j.clip.fname] for j in jobs], [j.clip for j in jobs])


def clean_predictions(
    model: LoadedModel, clips: Sequence[Clip], waves: dict[str, np.ndarray], batch_size: int
) -> dict[str, tuple[int, float]]:
    """``{fname: (predicted index, ground-truth probability)}`` on the clean clips.

    The clips go through :func:`jaxadv.datasets.predict_batches` (balanced bucket batches of the
    loaded ``waves``), sharded over the local devices.

    Raises:
      CheckpointError: the model's outputs on a clip are not finite (NaN/Inf arrays), naming the
        checkpoint and the clip.
    """
    import jax

    from jaxadv import datasets as D
    from jaxadv.checkpoint import REMAKE, CheckpointError

    fn = jax.jit(model.classifier)
    params = replicate(model.params)

    def predict(x: np.ndarray, lens: np.ndarray) -> np.ndarray:
        (xd, ld), n = shard([x, lens], len(x))
        return np.asarray(fn(params, xd, ld).probs)[:n]

    mine = [c for c in clips if c.fname in waves]
    by_path = {c.path: waves[c.fname] for c in mine}
    out: dict[str, tuple[int, float]] = {}
    for batch, probs in D.predict_batches(
        predict, mine, batch_size, loader=by_path.__getitem__,
        length_fn=lambda p: len(by_path[p]), balanced=True,
    ):  # fmt: skip
        bad = [c.fname for c, p in zip(batch.clips, probs, strict=True) if not np.isfinite(p).all()]
        if bad:
            raise CheckpointError(
                f"{model.checkpoint}: model {model.name} gives non-finite outputs (NaN or Inf) "
                f"on the clean clip {bad[0]}"
                + (f" and {len(bad) - 1} more" if len(bad) > 1 else "")
                + f"; its arrays are damaged or diverged: {REMAKE}"
            )
        for c, p in zip(batch.clips, probs, strict=True):
            out[c.fname] = (int(p.argmax()), float(p[c.label_index]))
    return out


def write_clean(path: Path, model: str, clips: Sequence[Clip], preds: dict) -> None:
    """Append the clean predictions of one model to ``clean.csv`` (model, fname, label, pred, gt)."""
    new = not path.exists()
    with open(path, "a") as f:
        if new:
            f.write("model,fname,label,prediction,gt_conf,correct\n")
        for c in clips:
            if c.fname in preds:
                p, g = preds[c.fname]
                f.write(
                    f"{model},{c.fname},{c.label},{C.LABELS[p]},{g:.6f},{int(p == c.label_index)}\n"
                )


def adv_filename(model: str, attack: str, job: Job) -> str:
    stem = Path(job.clip.fname).stem
    tgt = f"__to_{job.target_name}" if job.target >= 0 else ""
    return f"audio/{model}/{attack}/{stem}{tgt}.wav"


def run_batch(
    model: LoadedModel,
    attack_key: str,
    config: Any,
    jobs: Sequence[Job],
    waves: dict[str, np.ndarray],
    seed: int,
    rows: int | None = None,
) -> tuple[Any, np.ndarray, np.ndarray, float]:
    """Attack one batch; returns ``(metrics (host arrays), x, adversarial, seconds)``.

    ``rows``: pad the batch to this many rows (repeats of its last job, whose results are
    dropped), so that batches of one bucket share one compiled program.
    """
    import jax

    from jaxadv import attacks as A

    x, lens, labels, _ = job_batch(waves, jobs)
    targeted = any(j.target >= 0 for j in jobs)
    targets = np.array([j.target for j in jobs], np.int32) if targeted else None
    arrays = [x, lens, labels] + ([targets] if targeted else [])
    kwargs: dict[str, Any] = {"config": config}
    if attack_key == "noise":
        arrays.append(np.stack([example_key(seed, model.name, j.clip.fname) for j in jobs]))
    dev, n = shard(arrays, len(jobs), rows)
    xd, ld, yd = dev[:3]
    rest = dev[3:]
    if targeted:
        kwargs["targets"] = rest.pop(0)
    if attack_key == "noise":
        kwargs["key"] = rest.pop(0)
    params = replicate(model.params)
    t0 = time.perf_counter()
    res = A.ATTACKS[attack_key](model.classifier, params, xd, ld, yd, **kwargs)
    met = A.evaluate(model.classifier, params, xd, ld, yd, res, targets=kwargs.get("targets"))
    met = jax.tree.map(lambda a: np.asarray(a)[:n], met)
    adv = np.asarray(res.adversarial)[:n]
    return met, x, adv, time.perf_counter() - t0


def rows_for_batch(
    model: str, attack: str, jobs: Sequence[Job], met: Any, seconds: float, files: list[str]
) -> list[dict[str, Any]]:
    """Result rows (:data:`results.COLUMNS`) for one evaluated batch."""
    rows = []
    for i, j in enumerate(jobs):
        orig, new = int(met.original[i]), int(met.new_label[i])
        rows.append(
            {
                "model": model,
                "attack": attack,
                "fname": j.clip.fname,
                "label": j.clip.label,
                "target": j.target_name,
                "original": C.LABELS[orig],
                "adversarial": C.LABELS[new],
                "success": int(bool(met.success[i])),
                "gt_conf": float(met.gt_confidence[i]),
                "new_conf": float(met.new_confidence[i]),
                "gt_conf_adv": float(met.gt_confidence_adv[i]),
                "target_conf": float(met.target_confidence[i]) if j.target >= 0 else None,
                "snr_db": float(met.snr_db[i]),
                "l2": float(met.l2[i]),
                "linf": float(met.linf[i]),
                "steps": int(met.steps[i]),
                "seconds": seconds / len(jobs),
                "adv_file": files[i],
            }
        )
    return rows


def sweep_slots(jobs: int, batch_size: int) -> int:
    """Slots of an attack's sweep: :func:`jaxadv.attacks.engine.auto_slots` (about 4 jobs per
    slot, at most ``--batch-size``), rounded up to a multiple of the local devices."""
    import jax

    from jaxadv.attacks import engine

    d = jax.local_device_count()
    return -(-engine.auto_slots(jobs, batch_size) // d) * d


def run_sweep(
    model: LoadedModel,
    attack_key: str,
    config: Any,
    jobs: Sequence[Job],
    waves: dict[str, np.ndarray],
    seed: int,
    slots: int,
    on_rows: Any,
) -> None:
    """Attack ``jobs`` (one bucket) through ``slots`` slots of one program (continuous batching).

    As jobs finish, their metrics are computed (one fixed-size metrics program per bucket) and
    ``on_rows(jobs, metrics (host arrays), adversarial [k, N], seconds)`` is called, so results
    are stored job by job.
    """
    import jax

    from jaxadv import attacks as A

    x, lens, labels, _ = job_batch(waves, jobs)
    targeted = any(j.target >= 0 for j in jobs)
    targets = np.array([j.target for j in jobs], np.int32) if targeted else None
    key = None
    if A.ATTACKS[attack_key].keyed:
        key = np.stack([example_key(seed, model.name, j.clip.fname) for j in jobs])
    clf, params = model.classifier, model.params
    clock = [time.perf_counter()]

    def on_results(items: list[tuple[int, Any]]) -> None:
        idx = np.array([j for j, _ in items])
        pad = np.resize(np.arange(len(idx)), slots)  # fixed rows: one metrics program
        rows = idx[pad]
        res = jax.tree.map(lambda *a: np.stack(a)[pad], *[r for _, r in items])
        met = A.evaluate(
            clf, params, x[rows], lens[rows], labels[rows], res,
            targets=None if targets is None else targets[rows],
        )  # fmt: skip
        met = jax.tree.map(lambda a: np.asarray(a)[: len(idx)], met)
        now = time.perf_counter()
        secs, clock[0] = now - clock[0], now
        on_rows([jobs[i] for i in idx], met, np.asarray(res.adversarial)[: len(idx)], secs)

    A.sweep(
        attack_key, clf, params, x, lens, labels, targets=targets, config=config, key=key,
        slots=slots, on_results=on_results,
    )  # fmt: skip


def sweep(
    out: Path,
    store: Any,
    model: LoadedModel,
    attacks: dict[str, tuple[str, Any]],
    jobs: Sequence[Job],
    waves: dict[str, np.ndarray],
    *,
    batch_size: int,
    seed: int,
    write_audio: bool,
    arrays: Any = None,
    progress: bool = True,
) -> None:
    """Run every attack on every job of one model, skipping jobs already in ``store``.

    ``arrays``: the run's :class:`~jaxadv.experiments.arrays.ArrayStore`, which receives each
    finished job's adversarial waveform before its row (None: not stored); ``write_audio``: also
    write it as a WAV file for listening (the row's ``adv_file``).

    Each (attack, length bucket) streams its jobs through the slots of one compiled program
    (:func:`jaxadv.attacks.sweep`: finished jobs leave their slot to the next ones), and every
    finished job is stored at once, so a killed run resumes job by job. L-BFGS's host-side
    ``mode="scipy"`` runs in fixed batches instead (:func:`run_batch`).
    """
    from tqdm import tqdm

    from jaxadv import audio
    from jaxadv.frontend import bucket_length

    lengths = {k: len(v) for k, v in waves.items()}
    todo = [j for j in jobs if j.clip.fname in waves]
    buckets: dict[int, list[Job]] = {}
    for j in todo:
        buckets.setdefault(bucket_length(lengths[j.clip.fname]), []).append(j)
    for name, (key, cfg) in attacks.items():

        def finished(j: Job, name: str = name) -> bool:
            return (model.name, name, j.clip.fname, j.target_name) in store

        bar = tqdm(
            total=len(todo),
            initial=sum(finished(j) for j in todo),
            desc=f"{model.name}/{name}",
            unit="ex",
            disable=not progress,
            file=sys.stderr,
            dynamic_ncols=True,
        )

        def keep(b: Sequence[Job], met: Any, adv: np.ndarray, secs: float, name=name, bar=bar):
            if arrays is not None:  # before the rows: a stored row always has its waveform
                arrays.append(
                    {
                        (model.name, name, j.clip.fname, j.target_name): adv[
                            i, : lengths[j.clip.fname]
                        ]
                        for i, j in enumerate(b)
                    }
                )
            files = [""] * len(b)
            if write_audio:
                for i, j in enumerate(b):
                    rel = adv_filename(model.name, name, j)
                    (out / rel).parent.mkdir(parents=True, exist_ok=True)
                    audio.write_audio(out / rel, adv[i, : lengths[j.clip.fname]], subtype="FLOAT")
                    files[i] = rel
            store.append(rows_for_batch(model.name, name, b, met, secs, files))
            bar.update(len(b))

        for n in sorted(buckets):
            left = [j for j in buckets[n] if not finished(j)]
            if not left:
                continue
            if getattr(cfg, "mode", None) == "scipy":  # host-side fidelity mode: fixed batches
                for b in job_batches(left, lengths, batch_size):
                    met, _, adv, secs = run_batch(model, key, cfg, b, waves, seed, batch_size)
                    keep(b, met, adv, secs)
                continue
            # slots from the whole bucket, not what is left: a resumed run runs the same program
            # (same rows per convolution), so its rows equal an uninterrupted run's bit for bit
            slots = sweep_slots(len(buckets[n]), batch_size)
            run_sweep(model, key, cfg, left, waves, seed, slots, keep)
        bar.close()


# ---------------------------------------------------------------------------------------------
# Run folder bookkeeping
# ---------------------------------------------------------------------------------------------


def _jsonable(v: Any) -> Any:
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return {
            "type": type(v).__name__,
            **{k: _jsonable(x) for k, x in dataclasses.asdict(v).items()},
        }
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, Path):
        return str(v)
    return v


def command_line(args: argparse.Namespace, experiment: str) -> str:
    """The command as typed: ``python -m jaxadv.experiments.EXPERIMENT FLAGS``.

    The flags are ``args.argv`` (set by :func:`jaxadv.cli.main`); for :func:`run` called from
    Python without them, the command line of this process if it is this command, else none.
    """
    argv = getattr(args, "argv", None)
    if argv is None and Path(sys.argv[0]).name == f"{experiment}.py":
        argv = sys.argv[1:]
    cmd = f"python -m jaxadv.experiments.{experiment}"
    if argv is None:
        return cmd + "  # called from Python: see args"
    return " ".join([cmd, shlex.join(argv)]) if argv else cmd


def write_config(out: Path, args: argparse.Namespace, extra: dict[str, Any]) -> Path:
    """Write the resolved configuration of a run as ``config.json`` (atomically).

    Its ``"format": "jaxadv-run"`` marks the folder as a run folder (:func:`read_run_config`).
    """
    import jax

    import jaxadv

    experiment = extra.get("experiment", "")
    doc = {
        "format": RUN_FORMAT,
        "format_version": RUN_FORMAT_VERSION,
        "command": command_line(args, experiment),
        "args": _jsonable(vars(args)),
        "jaxadv": jaxadv.__version__,
        "jax": jax.__version__,
        "devices": [str(d) for d in jax.local_devices()],
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        **_jsonable(extra),
    }
    path = out / "config.json"
    tmp = out / "config.json.tmp"
    tmp.write_text(json.dumps(doc, indent=1))
    os.replace(tmp, path)
    return path


def read_run_config(folder: Path) -> dict[str, Any] | None:
    """The ``config.json`` of a run folder, or None if ``folder`` is not one (no such file, not
    JSON, or no ``"format": "jaxadv-run"``)."""
    path = Path(folder) / "config.json"
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(doc, dict) or doc.get("format") != RUN_FORMAT:
        return None
    return doc


def check_out(out: Path, experiment: str) -> dict[str, Any] | None:
    """Check that ``--out`` may be written: a new folder, an empty one, or a run folder of this
    experiment (returns its config, to resume). Anything else is refused before anything is
    written, so a folder of the user's own files is never touched."""
    if not out.exists():
        return None
    if not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder; choose a new or empty folder")
    if not any(out.iterdir()):
        return None
    doc = read_run_config(out)
    if doc is None and _older_run(out):
        raise UserError(
            f"--out {out} holds a run of an older jaxadv (its config.json has no run-folder "
            "marker or content fingerprint), which cannot be resumed safely; move it away or "
            "choose another --out"
        )
    if doc is None:
        raise UserError(
            f"--out {out} is not a jaxadv run folder (it is not empty and has no config.json "
            "written by a jaxadv experiment); nothing was written there: choose a new or empty "
            "folder"
        )
    if doc.get("experiment") != experiment:
        raise UserError(
            f"--out {out} holds a {doc.get('experiment')!r} run, not a {experiment!r} one; "
            "choose another --out"
        )
    return doc


def _older_run(out: Path) -> bool:
    try:
        doc = json.loads((out / "config.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(doc, dict) and "fingerprint" in doc and "format" not in doc


def make_out(out: Path) -> None:
    """Create the run folder (a folder that cannot be created is a one-line error)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(
            f"cannot create the run folder {out}: {e.strerror or e}; pass --out with a folder "
            "you can write to"
        ) from e


def setup_run(args: argparse.Namespace, experiment: str) -> Path:
    """The run folder (not created yet: :func:`start_run` creates it once every check passed)
    and logging (bad files are reported by name)."""
    out = Path(args.out or f"runs/{experiment}-{args.preset}")
    from jaxadv import logs

    logs.setup()
    return out


def report_failures(out: Path, failures: Iterable[Failure]) -> None:
    """Save the clips of this run that could not be used in ``skipped.txt`` (each was logged
    once when it failed) and print where they are; with none, an old ``skipped.txt`` goes."""
    failures = list(failures)
    path = out / "skipped.txt"
    if not failures:
        path.unlink(missing_ok=True)
        return
    lines = [f"{f.clip.fname}\t{f.message}" for f in failures]
    path.write_text("\n".join(lines) + "\n")
    print(f"skipped {len(failures)} clip(s) (unreadable audio or unknown label), listed in {path}")


def correct_clips(clips: Sequence[Clip], preds: dict[str, tuple[int, float]]) -> list[Clip]:
    """Clips the model classifies correctly (the authors attack only those, ORIGINALS.md §5.9)."""
    return [c for c in clips if c.fname in preds and preds[c.fname][0] == c.label_index]


def summary_lines(out: Path, files: Iterable[Path]) -> str:
    return "\n".join(f"  {p.relative_to(out) if p.is_relative_to(out) else p}" for p in files)


Factory = Callable[[], Any]


# ---------------------------------------------------------------------------------------------
# One run of an experiment: the parts every command shares
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Run:
    """The state of one run: folder, models, clips, waveforms, result store."""

    out: Path
    args: argparse.Namespace
    experiment: str
    models: list[LoadedModel]
    clips: list[Clip]
    waves: dict[str, np.ndarray]
    store: Any
    failures: list[Failure]
    preds: dict[str, dict[str, tuple[int, float]]] = dataclasses.field(default_factory=dict)
    write_audio: bool = True
    configs: dict[str, dict[str, tuple[str, Any]]] = dataclasses.field(default_factory=dict)
    arrays: Any = None  # the run's ArrayStore of adversarial waveforms

    def attacks(self, model: str) -> dict[str, tuple[str, Any]]:
        """The attacks of this experiment for one model, with the ``--set`` overrides."""
        if model not in self.configs:
            self.configs[model] = resolve_attacks(self.args, self.experiment, [model])[model]
        return self.configs[model]


def resolve_attacks(
    args: argparse.Namespace, experiment: str, models: Sequence[str]
) -> dict[str, dict[str, tuple[str, Any]]]:
    """``{model: attacks}`` with the ``--set`` overrides (a bad one is a one-line error; one for
    an attack this experiment does not run is warned about once)."""
    return {
        m: apply_overrides(attack_configs(experiment, args.preset, m), args.set, warn=i == 0)
        for i, m in enumerate(models)
    }


# Settings a row depends on, with the flag that sets each (for the message of a refused resume).
FINGERPRINT_FLAGS = {
    "experiment": "the experiment",
    "preset": "--preset",
    "data": "--data",
    "split": "--split",
    "per_class": "--per-class",
    "seed": "--seed",
    "batch_size": "--batch-size",
    "audio": "--no-audio",
    "from_untargeted": "--from-untargeted",
}


def writes_audio(args: argparse.Namespace, experiment: str) -> bool:
    """Whether the run writes adversarial WAV files (the waveforms themselves are always stored
    in the run's array store, :mod:`jaxadv.experiments.arrays`)."""
    return not args.no_audio


def fingerprint(
    args: argparse.Namespace,
    experiment: str,
    models: Sequence[LoadedModel],
    clips: dict[str, str],
    configs: dict[str, dict[str, tuple[str, Any]]],
) -> dict[str, Any]:
    """What the rows of a run depend on: the settings of :data:`FINGERPRINT_FLAGS`, per model
    its checkpoint's digest (arrays and sidecar) and resolved attack configs, per loaded clip
    its label and file digest (:func:`clip_digest`)."""
    fp: dict[str, Any] = {
        "experiment": experiment,
        "preset": args.preset,
        "data": str(Path(args.data).resolve()) if args.data else None,
        "split": args.split,
        "per_class": args.per_class,
        "seed": args.seed,
        "batch_size": args.batch_size,
        "audio": writes_audio(args, experiment),
    }
    if experiment == "transfer":
        src = getattr(args, "from_untargeted", None)
        fp["from_untargeted"] = str(Path(src).resolve()) if src else None
    fp["models"] = {
        m.name: {
            "checkpoint": str(m.checkpoint),
            "digest": m.digest,
            "attacks": _jsonable({k: cfg for k, (_, cfg) in configs[m.name].items()}),
        }
        for m in models
    }
    fp["clips"] = dict(clips)
    return fp


def _was(flag: str, old: Any, new: Any) -> str:
    if flag == "--no-audio":
        return (
            f"--no-audio (the run {'wrote' if old else 'did not write'} audio, this command "
            + ("would" if new else "would not")
            + ")"
        )
    return f"{flag} (the run's {old!r}, this command's {new!r})"


def fingerprint_diff(
    old: dict[str, Any],
    new: dict[str, Any],
    keys: Sequence[str] | None = None,
    attacks: bool = True,
) -> list[str]:
    """What differs between two fingerprints, one phrase each (empty: the same run).

    ``keys``: the settings compared (default all of :data:`FINGERPRINT_FLAGS` that ``new``
    has). Models and clips are compared where both have them, so a resume may add models or
    attack a clip that failed to load before.
    """
    out = []
    for k in keys if keys is not None else [k for k in FINGERPRINT_FLAGS if k in new]:
        if old.get(k) != new.get(k):
            out.append(_was(FINGERPRINT_FLAGS[k], old.get(k), new.get(k)))
    om, nm = old.get("models") or {}, new.get("models") or {}
    for name in [m for m in nm if m in om]:
        a, b = om[name], nm[name]
        if a.get("digest") != b.get("digest"):
            out.append(
                f"the {name} checkpoint {b.get('checkpoint')} (its arrays or sidecar differ from "
                f"those of the run's {a.get('checkpoint')})"
            )
        if attacks and a.get("attacks") != b.get("attacks"):
            for att in sorted(set(a.get("attacks", {})) | set(b.get("attacks", {}))):
                ca, cb = a.get("attacks", {}).get(att, {}), b.get("attacks", {}).get(att, {})
                for f in sorted(set(ca) | set(cb)):
                    if ca.get(f) != cb.get(f):
                        out.append(
                            f"{name} {att}.{f} (the run's {ca.get(f)!r}, this command's "
                            f"{cb.get(f)!r}; see --set)"
                        )
    oc, nc = old.get("clips") or {}, new.get("clips") or {}
    changed = [f for f in nc if f in oc and oc[f] != nc[f]]
    if changed:
        more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
        out.append(
            f"clip file(s) {', '.join(changed[:3])}{more} (content or label changed since the "
            "run started)"
        )
    return out


def merge_fingerprints(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """The fingerprint to record after a resume: ``new`` plus the models and clips only ``old``
    has (so a clip that fails to load now keeps its record for the next resume)."""
    if not old:
        return new
    out = dict(new)
    out["models"] = {**(old.get("models") or {}), **new["models"]}
    out["clips"] = {**(old.get("clips") or {}), **new["clips"]}
    return out


def start_run(
    args: argparse.Namespace,
    experiment: str,
    classes: Sequence[str] | None = None,
    check: Callable[[dict[str, Any]], None] | None = None,
) -> Run:
    """Resolve flags, load clips and models, check a resumed folder holds the same run.

    Nothing is written until every check passed (flags, ``--out``, data, checkpoints, labels,
    finite clean predictions, the fingerprint of a resumed run, and ``check(fingerprint)`` if
    given); then the run folder, ``config.json`` (first), ``skipped.txt`` and ``results.csv``.
    """
    from jaxadv.experiments.arrays import FOLDER as ARRAYS_FOLDER
    from jaxadv.experiments.arrays import ArrayStore
    from jaxadv.experiments.results import ResultStore

    out = setup_run(args, experiment)
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.per_class is None:
        args.per_class = get_config(experiment, args.preset).per_class
    if args.per_class < 1:
        raise UserError(f"--per-class must be at least 1, got {args.per_class}")
    names = parse_models(args.models)
    configs = resolve_attacks(args, experiment, names)  # every --set, checked before any work
    old_doc = check_out(out, experiment)
    checkpoints = parse_checkpoints(args.checkpoint, names)
    missing = [f"{m}: {d}" for m, d in checkpoints.items() if not d.is_dir()]
    if missing:
        raise UserError(
            "checkpoint folder(s) not found: " + "; ".join(missing) + " (check --checkpoint)"
        )
    failures: list[Failure] = []
    clips = select_clips(args.data, args.split, args.per_class, args.seed, classes, failures)
    if not clips:
        raise UserError("no clips selected (check --data, --split and --per-class)")
    short = shortfall(clips, args.per_class)
    if short:
        log.warning(
            "--per-class %d: %d class(es) have fewer clips, all of theirs are used: %s",
            args.per_class, len(short), ", ".join(f"{k} {n}" for k, n in short.items()),
        )  # fmt: skip
    waves = load_waves(clips, args.preset, failures)
    if not waves:
        f = failures[0]
        raise UserError(
            f"none of the {len(clips)} selected clip(s) could be loaded (the first: {f.message}); "
            "check the audio files of --data"
        )
    models = load_models(names, checkpoints, args.preset)
    digests = {c.fname: clip_digest(c) for c in clips if c.fname in waves}
    fp = fingerprint(args, experiment, models, digests, configs)
    old_fp = (old_doc or {}).get("fingerprint")
    if old_doc is not None:
        diff = fingerprint_diff(old_fp or {}, fp)
        if diff:
            raise UserError(
                f"{out} holds a run with other settings: {'; '.join(diff)}; resume it with the "
                "same flags, checkpoints and clips, or choose another --out"
            )
    if check is not None:
        check(fp)
    preds = {m.name: clean_predictions(m, clips, waves, args.batch_size) for m in models}
    make_out(out)
    run = Run(
        out, args, experiment, models, clips, waves, None, failures, preds,
        writes_audio(args, experiment), configs,
    )  # fmt: skip
    write_config(
        out,
        args,
        {
            "experiment": experiment,
            "fingerprint": merge_fingerprints(old_fp, fp),
            "note": DEMO_NOTE if args.preset == "demo" else "",
            "attacks": {m.name: run.attacks(m.name) for m in models},
            "models": {
                m.name: {
                    "checkpoint": str(m.checkpoint),
                    "digest": m.digest,
                    "frontend": getattr(m.classifier.frontend, "name", None),
                    "merge": m.classifier.merge,
                    "width": getattr(m.classifier.model_config, "width", None),
                    "source": m.meta.get("source"),
                }
                for m in models
            },
            "clips": [c.fname for c in clips if c.fname in waves],
            "per_class_shortfall": short,
            "skipped": [f.clip.fname for f in failures],
        },
    )
    report_failures(out, failures)
    run.arrays = ArrayStore(out / ARRAYS_FOLDER)
    run.store = ResultStore(out / "results.csv")
    return run


def clean_pass(run: Run) -> Path:
    """Clean predictions of every model (``clean.csv``) and a clean-accuracy table."""
    from jaxadv.experiments.tables import Table

    path = run.out / "clean.csv"
    path.unlink(missing_ok=True)
    rows = []
    for m in run.models:
        if m.name not in run.preds:
            run.preds[m.name] = clean_predictions(m, run.clips, run.waves, run.args.batch_size)
        preds = run.preds[m.name]
        write_clean(path, m.name, run.clips, preds)
        n = len(preds)
        ok = len(correct_clips(run.clips, preds))
        gt = [g for _, g in preds.values()]
        rows.append((m.name, n, 100.0 * ok / n if n else float("nan"), float(np.mean(gt))))
    Table(
        "Clean accuracy on the selected clips (only correctly classified clips are attacked)",
        ("Model", "Clips", "Accuracy %", "Mean GT confidence"),
        tuple(rows),
    ).write(run.out, "clean_accuracy")
    return path


def attack_models(
    run: Run,
    jobs_of: Callable[[Sequence[Clip]], list[Job]],
    *,
    write_audio: bool | None = None,
) -> None:
    """Sweep every model of ``run`` with its attacks over ``jobs_of(correctly classified clips)``.

    ``write_audio``: default ``run.write_audio`` (what the run's fingerprint records).
    """
    audio = run.write_audio if write_audio is None else write_audio
    for m in run.models:
        jobs = jobs_of(correct_clips(run.clips, run.preds[m.name]))
        sweep(
            run.out, run.store, m, run.attacks(m.name), jobs, run.waves,
            batch_size=run.args.batch_size, seed=run.args.seed, write_audio=audio,
            arrays=run.arrays,
        )  # fmt: skip


def print_outputs(run: Run, tables: Sequence[Any]) -> None:
    """Print the tables and where every file of the run went."""
    files = sorted(p for p in run.out.iterdir() if p.is_file())
    if run.args.preset == "demo":
        print("\n" + DEMO_NOTE)
    for t in tables:
        print("\n" + t.to_markdown())
    print(f"Run folder: {run.out}")
    print(summary_lines(run.out, files))
    if run.arrays is not None and len(run.arrays):
        print(
            f"  {run.arrays.folder.name}/: {len(run.arrays)} adversarial waveforms (.npz parts, "
            "keyed by model|attack|fname|target)"
        )
    n_audio = len(list((run.out / "audio").rglob("*.wav"))) if (run.out / "audio").is_dir() else 0
    if n_audio:
        print(f"  audio/: {n_audio} adversarial WAV files (32 kHz, float)")
